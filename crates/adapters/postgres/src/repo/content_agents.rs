//! `AgentRepo` on Postgres. Every write is one transaction over three tables: the
//! agent row (the current configuration), its `agent_tools` rows, and the
//! `agent_versions` row that keeps the configuration as that version. An update is a
//! compare-and-set on `version`, so two editors starting from the same version
//! cannot both win. Reads bring the tool ids along in the same query.

use super::content_common::db;
use super::to_json;
use crate::content_mapper;
use crate::entity::agent::{self, ActiveModel, AgentRow, Column, Entity, TOOL_IDS};
use crate::entity::{agent_tool, agent_version};
use crate::store::{PgStore, finish_page, keyset};
use crate::txn::Txn;
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _, Select, Set,
};
use trellis_content::{
    Agent, AgentConfig, AgentFilter, AgentId, AgentRepo, AgentVersion, ContentError, NewAgent,
    Result,
};
use trellis_kernel::{Page, PageRequest, TenantCtx, TenantId, UserId};

/// The agent's tool ids in order, as a JSON array (see [`AgentRow`]).
const TOOL_IDS_SQL: &str = r#"COALESCE((SELECT jsonb_agg(t.tool_id ORDER BY t.position)
    FROM agent_tools t
    WHERE t.tenant_id = "agents"."tenant_id" AND t.agent_id = "agents"."id"), '[]'::jsonb)"#;

/// Agents of `tenant`, each with its tools.
fn select(tenant: TenantId) -> Select<Entity> {
    Entity::find()
        .expr_as(Expr::cust(TOOL_IDS_SQL), TOOL_IDS)
        .filter(Column::TenantId.eq(tenant.as_uuid()))
}

pub(super) async fn load(txn: &Txn, tenant: TenantId, id: AgentId) -> Result<Option<Agent>> {
    first(
        txn,
        select(tenant).filter(Column::Id.eq(id.as_uuid())),
        "load agent",
    )
    .await
}

/// The first agent `query` finds, if any.
async fn first(txn: &Txn, query: Select<Entity>, what: &'static str) -> Result<Option<Agent>> {
    let row = query
        .into_model::<AgentRow>()
        .one(txn)
        .await
        .map_err(db(what))?;
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
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                load(txn, tenant, id)
                    .await?
                    .ok_or(ContentError::NotFound("agent"))
            })
        })
        .await
    }

    async fn find_by_name(&self, ctx: &TenantCtx, name: &str) -> Result<Option<Agent>> {
        let tenant = ctx.tenant_id();
        let name = name.to_owned();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                first(
                    txn,
                    select(tenant).filter(Column::Name.eq(name)),
                    "find agent by name",
                )
                .await
            })
        })
        .await
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> Result<Page<Agent>> {
        let tenant = ctx.tenant_id();
        let filter = filter.clone();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let mut select = select(tenant);
                if let Some(published) = filter.published {
                    select = select.filter(Column::Published.eq(published));
                }
                if let Some(role) = filter.usable_by_role {
                    let one = to_json(&[role], "role")?;
                    select = select.filter(Expr::cust_with_values(
                        r#"("agents"."allowed_roles" = '[]'::jsonb OR "agents"."allowed_roles" @> $1)"#,
                        [one],
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
                let rows = keyset(select, Column::Id, page)
                    .into_model::<AgentRow>()
                    .all(txn)
                    .await
                    .map_err(db("list agents"))?;
                Ok(finish_page(
                    page,
                    rows,
                    |r| r.agent.id,
                    content_mapper::agent,
                )?)
            })
        })
        .await
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
