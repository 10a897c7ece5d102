//! `ConversationRepo` on Postgres. Deleting a conversation is one `DELETE`: the
//! foreign keys cascade to its messages (and their file attachments) and detach its
//! files, in the same statement.

use super::content_common::db;
use super::kept_sql::{Bound, KeptSql};
use super::{content_agents, content_messages};
use crate::content_mapper;
use crate::entity::conversation::{ActiveModel, Column, Entity, Model};
use crate::store::{Decoders, Fetched, PgStore, by_position, finish_page, keyset, select_columns};
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::sqlx::Row as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, Select, Set,
};
use trellis_content::{
    ContentError, Conversation, ConversationFilter, ConversationId, ConversationPatch,
    ConversationRepo, Message, NewConversation, Result, Thread,
};
use trellis_kernel::{Page, PageRequest, TenantCtx, TenantId};

/// Every column of a conversation, in the order [`read_conversations`] reads them.
const CONVERSATION_COLUMNS: [Column; 14] = [
    Column::TenantId,
    Column::Id,
    Column::OwnerId,
    Column::Title,
    Column::Provider,
    Column::Model,
    Column::AgentId,
    Column::Temperature,
    Column::TopP,
    Column::MaxTokens,
    Column::Archived,
    Column::LastMessageAt,
    Column::CreatedAt,
    Column::UpdatedAt,
];

/// Reads a conversation row of [`CONVERSATION_COLUMNS`] by position, from either client.
fn decoders() -> Decoders<Model> {
    by_position!(|row| Model {
        tenant_id: row.try_get(0)?,
        id: row.try_get(1)?,
        owner_id: row.try_get(2)?,
        title: row.try_get(3)?,
        provider: row.try_get(4)?,
        model: row.try_get(5)?,
        agent_id: row.try_get(6)?,
        temperature: row.try_get(7)?,
        top_p: row.try_get(8)?,
        max_tokens: row.try_get(9)?,
        archived: row.try_get(10)?,
        last_message_at: row.try_get(11)?,
        created_at: row.try_get(12)?,
        updated_at: row.try_get(13)?,
    })
}

/// The statement that reads one conversation, for a read of several statements
/// ([`PgStore::fetch`]); [`decode_one`] reads its row.
fn by_id(tenant: TenantId, id: ConversationId) -> sea_orm::Statement {
    select_columns(
        Entity::find_by_id((tenant.as_uuid(), id.as_uuid())),
        &CONVERSATION_COLUMNS,
    )
}

/// The conversation in statement `i` of `fetched`, a [`by_id`] statement;
/// `NotFound` when it found none.
fn decode_one(fetched: &Fetched, i: usize) -> Result<Conversation> {
    let row = fetched
        .decode(i, &CONVERSATION_COLUMNS, decoders())?
        .pop()
        .ok_or(ContentError::NotFound("conversation"))?;
    Ok(content_mapper::conversation(row)?)
}

/// Runs a query of conversations as a read of its own (`PgStore::read_columns`):
/// one pipeline on a loopback server instead of three round trips, as for users. Chat
/// clients list and open conversations on every visit.
async fn read_conversations(
    store: &PgStore,
    ctx: &TenantCtx,
    select: Select<Entity>,
    what: &'static str,
) -> Result<Vec<Model>> {
    read_conversations_by(
        store,
        ctx,
        select_columns(select, &CONVERSATION_COLUMNS),
        what,
    )
    .await
}

/// [`read_conversations`] of a statement that selects [`CONVERSATION_COLUMNS`].
async fn read_conversations_by(
    store: &PgStore,
    ctx: &TenantCtx,
    stmt: sea_orm::Statement,
    what: &'static str,
) -> Result<Vec<Model>> {
    store
        .read_by_position(ctx, stmt, &CONVERSATION_COLUMNS, decoders(), what)
        .await
}

/// The list's query as sea-query builds it: filtered by the given owner, archived
/// flag, agent and title, after the cursor, one more than the limit.
fn list_select(
    tenant: TenantId,
    filter: &ConversationFilter,
    page: PageRequest,
) -> sea_orm::Statement {
    let mut select = Entity::find().filter(Column::TenantId.eq(tenant.as_uuid()));
    if let Some(owner) = filter.owner {
        select = select.filter(Column::OwnerId.eq(owner.as_uuid()));
    }
    if let Some(archived) = filter.archived {
        select = select.filter(Column::Archived.eq(archived));
    }
    if let Some(agent) = filter.agent {
        select = select.filter(Column::AgentId.eq(agent.as_uuid()));
    }
    if let Some(needle) = &filter.title_contains {
        // strpos rather than ILIKE: no wildcard in the needle to escape.
        select = select.filter(Expr::cust_with_values(
            r#"strpos(lower("conversations"."title"), lower($1)) > 0"#,
            [needle.clone()],
        ));
    }
    select_columns(keyset(select, Column::Id, page), &CONVERSATION_COLUMNS)
}

/// The list's SQL for each shape of request: each of the four filters or not, a
/// cursor or not.
static LIST_SQL: KeptSql<32> = KeptSql::new();

/// [`list_select`]'s statement, with the SQL rendered once per shape.
fn list_statement(
    tenant: TenantId,
    filter: &ConversationFilter,
    page: PageRequest,
) -> sea_orm::Statement {
    let bound = Bound::tenant(tenant.as_uuid())
        .optional(filter.owner.map(|o| o.as_uuid()))
        .optional(filter.archived)
        .optional(filter.agent.map(|a| a.as_uuid()))
        .optional(filter.title_contains.clone())
        .page(page);
    LIST_SQL.statement(bound, || list_select(tenant, filter, page))
}

#[async_trait]
impl ConversationRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewConversation) -> Result<Conversation> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let (temperature, top_p, max_tokens) =
                    content_mapper::parameter_columns(new.parameters)?;
                let row = ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(new.id.as_uuid()),
                    owner_id: Set(new.owner_id.as_uuid()),
                    title: Set(new.title),
                    provider: Set(new.provider.as_str().to_owned()),
                    model: Set(new.model),
                    agent_id: Set(new.agent_id.map(|a| a.as_uuid())),
                    temperature: Set(temperature),
                    top_p: Set(top_p),
                    max_tokens: Set(max_tokens),
                    ..Default::default()
                }
                .insert(txn)
                .await
                .map_err(db("insert conversation"))?;
                Ok(content_mapper::conversation(row)?)
            })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: ConversationId) -> Result<Conversation> {
        let select = Entity::find_by_id((ctx.tenant_id().as_uuid(), id.as_uuid()));
        let row = read_conversations(self, ctx, select, "load conversation")
            .await?
            .pop()
            .ok_or(ContentError::NotFound("conversation"))?;
        Ok(content_mapper::conversation(row)?)
    }

    async fn with_messages(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
    ) -> Result<(Conversation, Vec<Message>)> {
        let tenant = ctx.tenant_id();
        // Both statements in one read, on one snapshot: one round trip where reading
        // the conversation and then its messages took two.
        let fetched = self
            .fetch::<ContentError>(
                ctx,
                vec![
                    by_id(tenant, id),
                    content_messages::conversation_messages(tenant, id),
                ],
                "open conversation",
            )
            .await?;
        Ok((
            decode_one(&fetched, 0)?,
            content_messages::decode_conversation_messages(&fetched, 1)?,
        ))
    }

    async fn thread(&self, ctx: &TenantCtx, id: ConversationId) -> Result<Thread> {
        let tenant = ctx.tenant_id();
        // One read of three statements on one snapshot, so a message or agent change
        // committed meanwhile is seen by all three or by none; pipelined, it is one
        // round trip where three statements one after another took three.
        let fetched = self
            .fetch::<ContentError>(
                ctx,
                vec![
                    by_id(tenant, id),
                    content_messages::conversation_messages(tenant, id),
                    content_agents::conversation_agent(tenant, id),
                ],
                "read conversation thread",
            )
            .await?;
        Ok(Thread {
            conversation: decode_one(&fetched, 0)?,
            messages: content_messages::decode_conversation_messages(&fetched, 1)?,
            agent: content_agents::decode_conversation_agent(&fetched, 2)?,
        })
    }

    async fn list(
        &self,
        ctx: &TenantCtx,
        filter: &ConversationFilter,
        page: PageRequest,
    ) -> Result<Page<Conversation>> {
        let stmt = list_statement(ctx.tenant_id(), filter, page);
        let rows = read_conversations_by(self, ctx, stmt, "list conversations").await?;
        Ok(finish_page(
            page,
            rows,
            |r| r.id,
            content_mapper::conversation,
        )?)
    }

    async fn update(
        &self,
        ctx: &TenantCtx,
        id: ConversationId,
        patch: ConversationPatch,
    ) -> Result<Conversation> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let mut values: Vec<(Column, SimpleExpr)> = Vec::new();
                if let Some(title) = patch.title {
                    values.push((Column::Title, Expr::value(title)));
                }
                if let Some(archived) = patch.archived {
                    values.push((Column::Archived, Expr::value(archived)));
                }
                if let Some(parameters) = patch.parameters {
                    let (temperature, top_p, max_tokens) =
                        content_mapper::parameter_columns(parameters)?;
                    values.push((Column::Temperature, Expr::value(temperature)));
                    values.push((Column::TopP, Expr::value(top_p)));
                    values.push((Column::MaxTokens, Expr::value(max_tokens)));
                }
                let mut update =
                    Entity::update_many().col_expr(Column::UpdatedAt, Expr::current_timestamp());
                for (col, value) in values {
                    update = update.col_expr(col, value);
                }
                let row = update
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec_with_returning(txn)
                    .await
                    .map_err(db("update conversation"))?
                    .into_iter()
                    .next()
                    .ok_or(ContentError::NotFound("conversation"))?;
                Ok(content_mapper::conversation(row)?)
            })
        })
        .await
    }

    async fn delete(&self, ctx: &TenantCtx, id: ConversationId) -> Result<()> {
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move {
                let done = Entity::delete_many()
                    .filter(Column::TenantId.eq(tenant.as_uuid()))
                    .filter(Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await
                    .map_err(db("delete conversation"))?;
                if done.rows_affected == 0 {
                    return Err(ContentError::NotFound("conversation"));
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
    use trellis_content::AgentId;
    use trellis_kernel::UserId;

    #[test]
    fn the_lists_statement_is_the_one_sea_query_builds_for_every_shape_and_value() {
        // Each shape twice with other values: the second is served from the kept SQL.
        for (tenant, title) in [(1_u128, "Plans"), (2, "q3 budget")] {
            let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(tenant));
            for shape in 0..32_u8 {
                let filter = ConversationFilter {
                    owner: (shape & 1 != 0).then(|| UserId::from_uuid(uuid::Uuid::now_v7())),
                    archived: (shape & 2 != 0).then_some(title == "Plans"),
                    agent: (shape & 4 != 0).then(|| AgentId::from_uuid(uuid::Uuid::now_v7())),
                    title_contains: (shape & 8 != 0).then(|| title.to_owned()),
                };
                for page in pages(shape & 16 != 0) {
                    let kept = list_statement(tenant, &filter, page);
                    let built = list_select(tenant, &filter, page);
                    assert_eq!(kept.sql, built.sql, "shape {shape}");
                    assert_eq!(kept.values, built.values, "shape {shape}");
                }
            }
        }
    }
}
