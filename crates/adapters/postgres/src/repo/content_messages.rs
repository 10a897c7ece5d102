//! `MessageRepo` on Postgres. Inserting is one transaction whatever the batch size:
//! multi-row `INSERT`s of the messages (a parent may be an earlier row of the batch:
//! foreign keys are checked at the end of each statement), one of their file
//! attachments, and one `UPDATE` of the conversations' `last_message_at`. A broken
//! parent or conversation key rolls all of it back. Full-text search ranks the
//! generated `tsv` column against the query's words, ORed (see `any_word_query`).

use super::content_common::db;
use super::rag_common::without_nul;
use super::to_json;
use crate::content_mapper;
use crate::entity::message::{self, ActiveModel, Column, Entity, FILE_IDS, MessageRow};
use crate::entity::{conversation, message_file};
use crate::store::{Decoders, Fetched, PgStore, by_position};
use crate::txn::Txn;
use anyhow::Context as _;
use async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::sqlx::Row as _;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, DbBackend, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, QueryTrait as _, Select, Set, Statement, Value,
};
use std::collections::HashMap;
use trellis_content::{
    ContentError, ConversationId, Message, MessageHit, MessageId, MessageRepo, NewMessage,
    PendingMessage, Result,
};
use trellis_kernel::search::any_word_query;
use trellis_kernel::{TenantCtx, TenantId, UserId};

/// Rows per `INSERT`. A message binds 15 parameters (Postgres allows 65 535 per
/// statement); a fork of a very long conversation still takes only a few statements.
const INSERT_BATCH_ROWS: usize = 1_000;

/// The message's attached file ids in order, as a JSON array (see [`MessageRow`]).
const FILE_IDS_SQL: &str = r#"COALESCE((SELECT jsonb_agg(f.file_id ORDER BY f.position)
    FROM message_files f
    WHERE f.tenant_id = "messages"."tenant_id" AND f.message_id = "messages"."id"), '[]'::jsonb)"#;

/// What a read of messages selects, in the order [`read_messages`] reads it by
/// position (SeaORM's [`MessageRow`] reads the same by name): every column of a
/// message, then its file ids.
#[derive(Clone, Copy)]
enum ReadColumn {
    Message(Column),
    FileIds,
}

impl sea_orm::Iden for ReadColumn {
    fn unquoted(&self) -> &str {
        match self {
            Self::Message(column) => sea_orm::IdenStatic::as_str(column),
            Self::FileIds => FILE_IDS,
        }
    }
}

const MESSAGE_READ: [ReadColumn; 17] = [
    ReadColumn::Message(Column::TenantId),
    ReadColumn::Message(Column::Id),
    ReadColumn::Message(Column::ConversationId),
    ReadColumn::Message(Column::ParentId),
    ReadColumn::Message(Column::Role),
    ReadColumn::Message(Column::Content),
    ReadColumn::Message(Column::AuthorId),
    ReadColumn::Message(Column::Provider),
    ReadColumn::Message(Column::Model),
    ReadColumn::Message(Column::FinishReason),
    ReadColumn::Message(Column::PromptTokens),
    ReadColumn::Message(Column::CompletionTokens),
    ReadColumn::Message(Column::Error),
    ReadColumn::Message(Column::Unfinished),
    ReadColumn::Message(Column::Citations),
    ReadColumn::Message(Column::CreatedAt),
    ReadColumn::FileIds,
];

/// Messages of `tenant`, each with its files, as [`MESSAGE_READ`].
fn select(tenant: TenantId) -> Select<Entity> {
    let mut select = Entity::find().select_only();
    for column in MESSAGE_READ {
        select = match column {
            ReadColumn::Message(c) => select.column(c),
            ReadColumn::FileIds => select.expr_as(Expr::cust(FILE_IDS_SQL), FILE_IDS),
        };
    }
    select.filter(Column::TenantId.eq(tenant.as_uuid()))
}

/// A conversation's messages, oldest first.
fn of_conversation_select(tenant: TenantId, conversation: ConversationId) -> Select<Entity> {
    select(tenant)
        .filter(Column::ConversationId.eq(conversation.as_uuid()))
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
}

fn row(tenant: TenantId, n: &NewMessage) -> Result<ActiveModel> {
    let usage = n.usage;
    Ok(ActiveModel {
        tenant_id: Set(tenant.as_uuid()),
        id: Set(n.id.as_uuid()),
        conversation_id: Set(n.conversation_id.as_uuid()),
        parent_id: Set(n.parent_id.map(|p| p.as_uuid())),
        role: Set(n.role.as_str().to_owned()),
        // Text cannot hold NUL, which a model could emit; a stored answer with a space
        // in its place beats losing the answer.
        content: Set(without_nul(&n.content).into_owned()),
        author_id: Set(n.author_id.map(|a| a.as_uuid())),
        provider: Set(n.provider.map(|p| p.as_str().to_owned())),
        model: Set(n.model.clone()),
        finish_reason: Set(n.finish_reason.map(|f| f.as_str().to_owned())),
        prompt_tokens: Set(usage.map(|u| content_mapper::tokens(u.prompt_tokens))),
        completion_tokens: Set(usage.map(|u| content_mapper::tokens(u.completion_tokens))),
        error: Set(n.error.as_deref().map(|e| without_nul(e).into_owned())),
        unfinished: Set(n.unfinished),
        citations: Set(to_json(&n.citations, "citations")?),
        created_at: sea_orm::NotSet,
    })
}

/// Reads a message row of a [`select`] query by position, from either client.
fn decoders() -> Decoders<MessageRow> {
    by_position!(|row| MessageRow {
        message: message::Model {
            tenant_id: row.try_get(0)?,
            id: row.try_get(1)?,
            conversation_id: row.try_get(2)?,
            parent_id: row.try_get(3)?,
            role: row.try_get(4)?,
            content: row.try_get(5)?,
            author_id: row.try_get(6)?,
            provider: row.try_get(7)?,
            model: row.try_get(8)?,
            finish_reason: row.try_get(9)?,
            prompt_tokens: row.try_get(10)?,
            completion_tokens: row.try_get(11)?,
            error: row.try_get(12)?,
            unfinished: row.try_get(13)?,
            citations: row.try_get(14)?,
            created_at: row.try_get(15)?,
        },
        file_ids: row.try_get(16)?,
    })
}

/// Message rows as the domain's messages.
fn to_messages(rows: Vec<MessageRow>) -> Result<Vec<Message>> {
    rows.into_iter()
        .map(|r| Ok(content_mapper::message(r)?))
        .collect()
}

/// Runs a [`select`] query as a read of its own (`PgStore::read_by_position`):
/// one pipeline on a loopback server instead of three round trips. A chat client reads
/// a conversation's messages each time it opens one.
async fn read_messages(
    store: &PgStore,
    ctx: &TenantCtx,
    select: Select<Entity>,
    what: &'static str,
) -> Result<Vec<Message>> {
    let rows = store
        .read_by_position::<_, ContentError, _>(
            ctx,
            select.build(DbBackend::Postgres),
            &MESSAGE_READ,
            decoders(),
            what,
        )
        .await?;
    to_messages(rows)
}

/// The statement that reads every message of `conversation`, for a read of several
/// statements ([`PgStore::fetch`]); [`decode_conversation_messages`] reads its rows.
pub(super) fn conversation_messages(
    tenant: TenantId,
    conversation: ConversationId,
) -> sea_orm::Statement {
    of_conversation_select(tenant, conversation).build(DbBackend::Postgres)
}

/// The messages in statement `i` of `fetched`, a [`conversation_messages`] statement.
pub(super) fn decode_conversation_messages(fetched: &Fetched, i: usize) -> Result<Vec<Message>> {
    to_messages(fetched.decode(i, &MESSAGE_READ, decoders())?)
}

/// A column of a raw search row.
fn read<T: sea_orm::TryGetable>(row: &sea_orm::QueryResult, column: &str) -> Result<T> {
    row.try_get("", column).map_err(db("read message hit"))
}

/// Stores `new` in order; the caller's transaction makes it all or nothing.
async fn insert_all(txn: &Txn, tenant: TenantId, new: Vec<NewMessage>) -> Result<Vec<Message>> {
    let mut stored: HashMap<uuid::Uuid, message::Model> = HashMap::with_capacity(new.len());
    for batch in new.chunks(INSERT_BATCH_ROWS) {
        let rows = batch
            .iter()
            .map(|n| row(tenant, n))
            .collect::<Result<Vec<_>>>()?;
        let inserted = Entity::insert_many(rows)
            .exec_with_returning(txn)
            .await
            .map_err(db("insert messages"))?;
        stored.extend(inserted.into_iter().map(|m| (m.id, m)));
    }

    let mut files = Vec::new();
    for n in &new {
        for (position, file) in n.files.iter().enumerate() {
            files.push(message_file::ActiveModel {
                tenant_id: Set(tenant.as_uuid()),
                message_id: Set(n.id.as_uuid()),
                position: Set(i32::try_from(position).context("too many files")?),
                file_id: Set(file.as_uuid()),
            });
        }
    }
    for batch in files.chunks(INSERT_BATCH_ROWS) {
        message_file::Entity::insert_many(batch.to_vec())
            .exec_without_returning(txn)
            .await
            .map_err(db("attach files to messages"))?;
    }

    let mut conversations: Vec<uuid::Uuid> =
        new.iter().map(|n| n.conversation_id.as_uuid()).collect();
    conversations.sort_unstable();
    conversations.dedup();
    // now() is the transaction's start, which is also every new message's created_at.
    // GREATEST (which skips NULL) never moves the time back behind a message that a
    // later-started transaction committed first.
    conversation::Entity::update_many()
        .col_expr(
            conversation::Column::LastMessageAt,
            Expr::cust(r#"GREATEST("last_message_at", now())"#),
        )
        .filter(conversation::Column::TenantId.eq(tenant.as_uuid()))
        .filter(conversation::Column::Id.is_in(conversations))
        .exec(txn)
        .await
        .map_err(db("touch conversations"))?;

    new.into_iter()
        .map(|n| {
            let message = stored
                .remove(&n.id.as_uuid())
                .context("an inserted message was not returned")?;
            let file_ids = to_json(&n.files, "files")?;
            Ok(content_mapper::message(MessageRow { message, file_ids })?)
        })
        .collect()
}

#[async_trait]
impl MessageRepo for PgStore {
    async fn insert(&self, ctx: &TenantCtx, new: NewMessage) -> Result<Message> {
        let mut out = self.insert_many(ctx, vec![new]).await?;
        out.pop()
            .ok_or_else(|| ContentError::Unexpected(anyhow::anyhow!("nothing was inserted")))
    }

    async fn prepare_insert(&self, ctx: &TenantCtx, new: NewMessage) -> Result<PendingMessage> {
        if !self.can_hold_uncommitted() {
            // A pool of one cannot keep a transaction open while the caller reads:
            // the whole insert waits for the commit instead.
            let (store, ctx) = (self.clone(), ctx.clone());
            return Ok(PendingMessage::new(async move {
                MessageRepo::insert(&store, &ctx, new).await
            }));
        }
        let tenant = ctx.tenant_id();
        let (mut stored, txn) = self
            .in_tenant_uncommitted(ctx, move |txn| {
                Box::pin(async move { insert_all(txn, tenant, vec![new]).await })
            })
            .await?;
        let message = stored
            .pop()
            .ok_or_else(|| ContentError::Unexpected(anyhow::anyhow!("nothing was inserted")))?;
        Ok(PendingMessage::new(async move {
            txn.commit().await.map_err(db("commit the message"))?;
            Ok(message)
        }))
    }

    async fn insert_many(&self, ctx: &TenantCtx, new: Vec<NewMessage>) -> Result<Vec<Message>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = ctx.tenant_id();
        self.in_tenant(ctx, move |txn| {
            Box::pin(async move { insert_all(txn, tenant, new).await })
        })
        .await
    }

    async fn get(&self, ctx: &TenantCtx, id: MessageId) -> Result<Message> {
        let select = select(ctx.tenant_id()).filter(Column::Id.eq(id.as_uuid()));
        read_messages(self, ctx, select, "load message")
            .await?
            .pop()
            .ok_or(ContentError::NotFound("message"))
    }

    async fn for_conversation(
        &self,
        ctx: &TenantCtx,
        conversation: ConversationId,
    ) -> Result<Vec<Message>> {
        let select = of_conversation_select(ctx.tenant_id(), conversation);
        read_messages(self, ctx, select, "list messages").await
    }

    async fn search(
        &self,
        ctx: &TenantCtx,
        owner: Option<UserId>,
        query: &str,
        limit: usize,
    ) -> Result<Vec<MessageHit>> {
        let Some(words) = any_word_query(query) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).context("the search limit is out of range")?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tenant = ctx.tenant_id();
        self.in_tenant_read(ctx, move |txn| {
            Box::pin(async move {
                let mut values: Vec<Value> =
                    vec![tenant.as_uuid().into(), words.into(), limit.into()];
                let owned = match owner {
                    Some(o) => {
                        values.push(o.as_uuid().into());
                        "JOIN conversations c ON c.tenant_id = m.tenant_id
                                           AND c.id = m.conversation_id AND c.owner_id = $4"
                    }
                    None => "",
                };
                // Rank first and cut to the limit, then make snippets of the hits only:
                // ts_headline re-parses each text, which is the expensive part.
                let sql = format!(
                    "WITH hits AS (
                         SELECT m.id, m.conversation_id, m.content,
                                ts_rank(m.tsv, websearch_to_tsquery('simple', $2)) AS rank
                           FROM messages m {owned}
                          WHERE m.tenant_id = $1
                            AND m.tsv @@ websearch_to_tsquery('simple', $2)
                          ORDER BY rank DESC, m.id
                          LIMIT $3)
                     SELECT id, conversation_id, rank,
                            ts_headline('simple', content, websearch_to_tsquery('simple', $2),
                                        'StartSel=\"\", StopSel=\"\", MinWords=10, MaxWords=30')
                                AS snippet
                       FROM hits
                      ORDER BY rank DESC, id"
                );
                let rows = txn
                    .query_all_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        sql,
                        values,
                    ))
                    .await
                    .map_err(db("search messages"))?;
                rows.into_iter()
                    .map(|r| {
                        Ok(MessageHit {
                            message_id: MessageId::from_uuid(read(&r, "id")?),
                            conversation_id: ConversationId::from_uuid(read(
                                &r,
                                "conversation_id",
                            )?),
                            snippet: read(&r, "snippet")?,
                            score: read(&r, "rank")?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }
}
