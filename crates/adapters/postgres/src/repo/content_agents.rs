//! `AgentRepo` on Postgres. Every write is one transaction over three tables: the
//! agent row (the current configuration), its `agent_tools` rows, and the
//! `agent_versions` row that keeps the configuration as that version. An update is a
//! compare-and-set on `version`, so two editors starting from the same version
//! cannot both win. Reads bring the tool ids along in the same query.

use super::content_common::db;
use super::kept_sql::{Bound, KeptSql};
use super::to_json;
use crate::content_mapper;
use crate::entity::agent::{self, ActiveModel, AgentRow, Column, Entity, TOOL_IDS};
use crate::entity::{agent_tool, agent_version, conversation};
use crate::store::{Decoders, Fetched, PgStore, by_position, finish_page, keyset};
use crate::txn::Txn;
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait as _, Query};
use sea_orm::sqlx::Row as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DbBackend, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, QueryTrait as _, Select, Set,
};
use trellis_content::{
    Agent, AgentConfig, AgentFilter, AgentId, AgentRepo, AgentVersion, ContentError,
    ConversationId, NewAgent, Result,
};
use trellis_kernel::{Page, PageRequest, TenantCtx, TenantId, UserId};

/// The agent's tool ids in order, as a JSON array (see [`AgentRow`]).
const TOOL_IDS_SQL: &str = r#"COALESCE((SELECT jsonb_agg(t.tool_id ORDER BY t.position)
    FROM agent_tools t
    WHERE t.tenant_id = "agents"."tenant_id" AND t.agent_id = "agents"."id"), '[]'::jsonb)"#;

/// What a read of agents by position selects, in the order [`decoders`] reads it:
/// every column of an agent, then its tool ids.
#[derive(Clone, Copy)]
enum ReadColumn {
    Agent(Column),
    ToolIds,
}

impl sea_orm::Iden for ReadColumn {
    fn unquoted(&self) -> &str {
        match self {
            Self::Agent(column) => sea_orm::IdenStatic::as_str(column),
            Self::ToolIds => TOOL_IDS,
        }
    }
}

const AGENT_READ: [ReadColumn; 21] = [
    ReadColumn::Agent(Column::TenantId),
    ReadColumn::Agent(Column::Id),
    ReadColumn::Agent(Column::Name),
    ReadColumn::Agent(Column::Description),
    ReadColumn::Agent(Column::Instructions),
    ReadColumn::Agent(Column::Provider),
    ReadColumn::Agent(Column::Model),
    ReadColumn::Agent(Column::Temperature),
    ReadColumn::Agent(Column::TopP),
    ReadColumn::Agent(Column::MaxTokens),
    ReadColumn::Agent(Column::KnowledgeCollectionIds),
    ReadColumn::Agent(Column::OutputFormat),
    ReadColumn::Agent(Column::Icon),
    ReadColumn::Agent(Column::Tier),
    ReadColumn::Agent(Column::Published),
    ReadColumn::Agent(Column::AllowedRoles),
    ReadColumn::Agent(Column::Version),
    ReadColumn::Agent(Column::CreatedBy),
    ReadColumn::Agent(Column::CreatedAt),
    ReadColumn::Agent(Column::UpdatedAt),
    ReadColumn::ToolIds,
];

/// Reads an agent row of [`AGENT_READ`] by position, from either client.
fn decoders() -> Decoders<AgentRow> {
    by_position!(|row| AgentRow {
        agent: agent::Model {
            tenant_id: row.try_get(0)?,
            id: row.try_get(1)?,
            name: row.try_get(2)?,
            description: row.try_get(3)?,
            instructions: row.try_get(4)?,
            provider: row.try_get(5)?,
            model: row.try_get(6)?,
            temperature: row.try_get(7)?,
            top_p: row.try_get(8)?,
            max_tokens: row.try_get(9)?,
            knowledge_collection_ids: row.try_get(10)?,
            output_format: row.try_get(11)?,
            icon: row.try_get(12)?,
            tier: row.try_get(13)?,
            published: row.try_get(14)?,
            allowed_roles: row.try_get(15)?,
            version: row.try_get(16)?,
            created_by: row.try_get(17)?,
            created_at: row.try_get(18)?,
            updated_at: row.try_get(19)?,
        },
        tool_ids: row.try_get(20)?,
    })
}

/// The statement that reads the agent `conversation` answers with (no row when it
/// has none, or the agent is gone), for a read of several statements
/// ([`PgStore::fetch`]); [`decode_conversation_agent`] reads its rows.
pub(super) fn conversation_agent(
    tenant: TenantId,
    conversation: ConversationId,
) -> sea_orm::Statement {
    let agent_of_conversation = Query::select()
        .column(conversation::Column::AgentId)
        .from(conversation::Entity)
        .and_where(conversation::Column::TenantId.eq(tenant.as_uuid()))
        .and_where(conversation::Column::Id.eq(conversation.as_uuid()))
        .to_owned();
    read_select(tenant)
        .filter(Column::Id.in_subquery(agent_of_conversation))
        .build(DbBackend::Postgres)
}

/// Agents of `tenant` as [`AGENT_READ`] selects them, their tool ids included.
fn read_select(tenant: TenantId) -> Select<Entity> {
    let mut select = Entity::find().select_only();
    for column in AGENT_READ {
        select = match column {
            ReadColumn::Agent(c) => select.column(c),
            ReadColumn::ToolIds => select.expr_as(Expr::cust(TOOL_IDS_SQL), TOOL_IDS),
        };
    }
    select.filter(Column::TenantId.eq(tenant.as_uuid()))
}

/// Runs a [`read_select`] query as a read of its own (`PgStore::read_by_position`):
/// one pipeline on a loopback server instead of three round trips. Chat clients list
/// the agents a user may talk to on every visit.
async fn read_agents(
    store: &PgStore,
    ctx: &TenantCtx,
    select: Select<Entity>,
    what: &'static str,
) -> Result<Vec<AgentRow>> {
    read_agents_by(store, ctx, select.build(DbBackend::Postgres), what).await
}

/// [`read_agents`] of a statement that selects what [`read_select`] does.
async fn read_agents_by(
    store: &PgStore,
    ctx: &TenantCtx,
    stmt: sea_orm::Statement,
    what: &'static str,
) -> Result<Vec<AgentRow>> {
    store
        .read_by_position::<_, ContentError, _>(ctx, stmt, &AGENT_READ, decoders(), what)
        .await
}

/// The list's query as sea-query builds it: filtered by the published flag, the role
/// that may use an agent and a tool it uses, after the cursor, one more than the limit.
fn list_select(tenant: TenantId, filter: &AgentFilter, page: PageRequest) -> sea_orm::Statement {
    let mut select = read_select(tenant);
    if let Some(published) = filter.published {
        select = select.filter(Column::Published.eq(published));
    }
    if let Some(role) = filter.usable_by_role {
        // The role as text, not as a JSON value: a read binding only ids, text,
        // flags and numbers can be pipelined.
        select = select.filter(Expr::cust_with_values(
            r#"("agents"."allowed_roles" = '[]'::jsonb OR "agents"."allowed_roles" @> jsonb_build_array($1::text))"#,
            [role.as_str()],
        ));
    }
    if let Some(tool) = filter.uses_tool {
        select = select.filter(Expr::cust_with_values(
            r#"EXISTS (SELECT 1 FROM agent_tools t
                WHERE t.tenant_id = "agents"."tenant_id" AND t.agent_id = "agents"."id"
                  AND t.tool_id = $1)"#,
            [tool.as_uuid()],
        ));
    }
    keyset(select, Column::Id, page).build(DbBackend::Postgres)
}

/// The list's SQL for each shape of request: each of the three filters or not, a
/// cursor or not.
static LIST_SQL: KeptSql<16> = KeptSql::new();

/// [`list_select`]'s statement, with the SQL rendered once per shape.
fn list_statement(tenant: TenantId, filter: &AgentFilter, page: PageRequest) -> sea_orm::Statement {
    let bound = Bound::tenant(tenant.as_uuid())
        .optional(filter.published)
        .optional(filter.usable_by_role.map(|role| role.as_str()))
        .optional(filter.uses_tool.map(|tool| tool.as_uuid()))
        .page(page);
    LIST_SQL.statement(bound, || list_select(tenant, filter, page))
}

/// The one agent a [`read_select`] query narrowed to a key finds, if any.
async fn one_agent(
    store: &PgStore,
    ctx: &TenantCtx,
    select: Select<Entity>,
    what: &'static str,
) -> Result<Option<Agent>> {
    let row = read_agents(store, ctx, select, what).await?.pop();
    Ok(row.map(content_mapper::agent).transpose()?)
}

/// The agent in statement `i` of `fetched`, a [`conversation_agent`] statement.
pub(super) fn decode_conversation_agent(fetched: &Fetched, i: usize) -> Result<Option<Agent>> {
    let row = fetched.decode(i, &AGENT_READ, decoders())?.pop();
    Ok(row.map(content_mapper::agent).transpose()?)
}

/// The agent as `txn` sees it, if it exists (a write's own reads go here).
async fn load(txn: &Txn, tenant: TenantId, id: AgentId) -> Result<Option<Agent>> {
    let row = read_select(tenant)
        .filter(Column::Id.eq(id.as_uuid()))
        .into_model::<AgentRow>()
        .one(txn)
        .await
        .map_err(db("load agent"))?;
    Ok(row.map(content_mapper::agent).transpose()?)
}

/// The columns a configuration sets on the agent row (all but the tools), as an
/// active model with nothing else set: the insert adds the keys, the update the
/// version bump.
fn config_model(config: &AgentConfig) -> Result<ActiveModel> {
    let (temperature, top_p, max_tokens) = content_mapper::parameter_columns(config.parameters)?;
    Ok(ActiveModel {
        name: Set(config.name.clone()),
        description: Set(config.description.clone()),
        instructions: Set(config.instructions.clone()),
        provider: Set(config.provider.as_str().to_owned()),
        model: Set(config.model.clone()),
        temperature: Set(temperature),
        top_p: Set(top_p),
        max_tokens: Set(max_tokens),
        knowledge_collection_ids: Set(to_json(
            &config.knowledge_collections,
            "knowledge collections",
        )?),
        output_format: Set(config.output_format.clone()),
        icon: Set(config.icon.clone()),
        tier: Set(config.tier.as_str().to_owned()),
        published: Set(config.published),
        allowed_roles: Set(to_json(&config.allowed_roles, "allowed roles")?),
        ..Default::default()
    })
}

/// Stores `config`'s tools as the agent's (after any previous ones were removed).
async fn insert_tools(
    txn: &Txn,
    tenant: TenantId,
    agent: AgentId,
    config: &AgentConfig,
) -> Result<()> {
    let mut rows = Vec::with_capacity(config.tools.len());
    for (position, tool) in config.tools.iter().enumerate() {
        rows.push(agent_tool::ActiveModel {
            tenant_id: Set(tenant.as_uuid()),
            agent_id: Set(agent.as_uuid()),
            tool_id: Set(tool.as_uuid()),
            position: Set(i32::try_from(position).context("too many tools")?),
        });
    }
    agent_tool::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await
        .map_err(db("store agent tools"))?;
    Ok(())
}

/// Keeps `config` as `version` of the agent.
async fn insert_version(
    txn: &Txn,
    tenant: TenantId,
    agent: AgentId,
    version: i32,
    config: &AgentConfig,
    by: Option<UserId>,
) -> Result<()> {
    agent_version::ActiveModel {
        tenant_id: Set(tenant.as_uuid()),
        agent_id: Set(agent.as_uuid()),
        version: Set(version),
        config: Set(to_json(config, "agent configuration")?),
        saved_by: Set(by.map(|u| u.as_uuid())),
        saved_at: sea_orm::NotSet,
    }
    .insert(txn)
    .await
    .map_err(db("save agent version"))?;
    Ok(())
}

/// The agent as just written: the stored row with the tools it was given.
fn written(row: agent::Model, config: &AgentConfig) -> Result<Agent> {
    let tool_ids = to_json(&config.tools, "tools")?;
    Ok(content_mapper::agent(AgentRow {
        agent: row,
        tool_ids,
    })?)
}

#[async_trait]
impl AgentRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewAgent) -> Result<Agent> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    created_by: Set(new.created_by.map(|u| u.as_uuid())),
                    ..config_model(&new.config)?
                }
                .insert(txn)
                .await
                .map_err(db("insert agent"))?;
                insert_tools(txn, tenant, new.id, &new.config).await?;
                insert_version(
                    txn,
                    tenant,
                    new.id,
                    row.version,
                    &new.config,
                    new.created_by,
                )
                .await?;
                written(row, &new.config)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: AgentId) -> Result<Agent> {
        let select = read_select(ctx.tenant_id()).filter(Column::Id.eq(id.as_uuid()));
        one_agent(self, ctx, select, "load agent")
            .await?
            .ok_or(ContentError::NotFound("agent"))
    }

    async fn find_by_name(&self, ctx: &TenantCtx, name: &str) -> Result<Option<Agent>> {
        let select = read_select(ctx.tenant_id()).filter(Column::Name.eq(name));
        one_agent(self, ctx, select, "find agent by name").await
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> Result<Page<Agent>> {
        let stmt = list_statement(ctx.tenant_id(), filter, page);
        let rows = read_agents_by(self, ctx, stmt, "list agents").await?;
        Ok(finish_page(
            page,
            rows,
            |r| r.agent.id,
            content_mapper::agent,
        )?)
    }

    async fn update(
        &self,
        ctx: &TenantCtx,
        id: AgentId,
        expected_version: u32,
        config: AgentConfig,
        by: Option<UserId>,
    ) -> Result<Agent> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let row = Entity::update_many()
                    .set(config_model(&config)?)
                    .col_expr(Column::Version, Expr::col(Column::Version).add(1))
                    .col_expr(Column::UpdatedAt, Expr::current_timestamp())
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .filter(Column::Version.eq(i64::from(expected_version)))
                    .exec_with_returning(txn)
                    .await
                    .map_err(db("update agent"))?
                    .into_iter()
                    .next();
                let Some(row) = row else {
                    // Missing, or no longer at the expected version.
                    let current = load(txn, tenant, id)
                        .await?
                        .ok_or(ContentError::NotFound("agent"))?;
                    return Err(ContentError::Conflict(format!(
                        "the agent was changed meanwhile (now version {})",
                        current.version
                    )));
                };
                agent_tool::Entity::delete_many()
                    .filter(agent_tool::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(agent_tool::Column::AgentId.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(db("replace agent tools"))?;
                insert_tools(txn, tenant, id, &config).await?;
                insert_version(txn, tenant, id, row.version, &config, by).await?;
                written(row, &config)
            })
        })
        .await
    }

    async fn versions(&self, ctx: &TenantCtx, id: AgentId) -> Result<Vec<AgentVersion>> {
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let exists = Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .select_only()
                    .column(Column::Id)
                    .into_tuple::<uuid::Uuid>()
                    .one(txn)
                    .await
                    .map_err(db("load agent"))?
                    .is_some();
                if !exists {
                    return Err(ContentError::NotFound("agent"));
                }
                let rows = agent_version::Entity::find()
                    .filter(agent_version::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(agent_version::Column::AgentId.eq(id.as_uuid()))
                    .order_by_asc(agent_version::Column::Version)
                    .all(txn)
                    .await
                    .map_err(db("list agent versions"))?;
                rows.into_iter()
                    .map(|r| Ok(content_mapper::agent_version(r)?))
                    .collect()
            })
        })
        .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: AgentId) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                // Its tools and versions go with it (ON DELETE CASCADE).
                let done = Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(db("delete agent"))?;
                if done.rows_affected == 0 {
                    return Err(ContentError::NotFound("agent"));
                }
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::kept_sql::tests::pages;
    use trellis_content::ToolId;
    use trellis_kernel::Role;

    #[test]
    fn the_lists_statement_is_the_one_sea_query_builds_for_every_shape_and_value() {
        // Each shape twice with other values: the second is served from the kept SQL.
        for (tenant, role) in [(1_u128, Role::Client), (2, Role::Support)] {
            let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(tenant));
            for shape in 0..16_u8 {
                let filter = AgentFilter {
                    published: (shape & 1 != 0).then_some(role == Role::Client),
                    usable_by_role: (shape & 2 != 0).then_some(role),
                    uses_tool: (shape & 4 != 0).then(|| ToolId::from_uuid(uuid::Uuid::now_v7())),
                };
                for page in pages(shape & 8 != 0) {
                    let kept = list_statement(tenant, &filter, page);
                    let built = list_select(tenant, &filter, page);
                    assert_eq!(kept.sql, built.sql, "shape {shape}");
                    assert_eq!(kept.values, built.values, "shape {shape}");
                }
            }
        }
    }
}
