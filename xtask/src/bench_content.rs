//! `cargo xtask bench api --content`: the lists a chat client polls most, measured in
//! the same run (same server, database and machine moment) as the users list, so each
//! can be read as a ratio to it. The bench tenant gets 30 published agents, its admin
//! 30 conversations, the first holding a chain of 20 messages of about 1 KB, and a
//! collection of 30 processed documents. Rows are written with `psql` as the app role
//! under the tenant's scope (row-level security applies as it does to the app): going
//! through the API would need a model to answer and an embedder to ingest, and neither
//! is what is measured.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};
use serde_json::json;

use crate::bench_http::{http_request, str_field};
use crate::db::ConnUrl;
use crate::sys;

/// Agents, conversations of the admin, and documents in the collection.
const ROWS: u32 = 30;
/// Messages in the first conversation (the one `?limit=1` lists), alternating user and assistant.
const CHAIN: u32 = 20;

/// The endpoints measured, once their data exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPaths {
    pub agents: String,
    pub conversations: String,
    pub messages: String,
    pub documents: String,
}

impl ContentPaths {
    pub fn all(&self) -> [&str; 4] {
        [
            &self.agents,
            &self.conversations,
            &self.messages,
            &self.documents,
        ]
    }
}

/// Writes the rows for `tenant_id`'s admin (the holder of `token`) and returns the
/// paths to load, each checked to answer 200 with full pages first.
pub fn seed(
    addr: SocketAddr,
    token: &str,
    tenant_id: &str,
    psql: &Path,
    url: &ConnUrl,
) -> Result<ContentPaths> {
    let me = http_request(addr, "GET", "/v1/auth/me", Some(token), None)?
        .json(&[200], "reading the bench admin")?;
    let owner = str_field(&me["user"], "id", "the bench admin")?;
    let collection = http_request(
        addr,
        "POST",
        "/v1/rag/collections",
        Some(token),
        Some(&json!({"name": format!("bench documents {}", sys::random_hex(4)?)})),
    )?
    .json(&[201], "creating the bench collection")?;
    let collection = str_field(&collection, "id", "the bench collection")?;
    for id in [tenant_id, owner.as_str(), collection.as_str()] {
        if !crate::bench::is_uuid(id) {
            bail!("{id:?} is not a UUID");
        }
    }
    say!(
        "bench: writing {ROWS} agents, {ROWS} conversations, a chain of {CHAIN} messages and {ROWS} documents"
    );
    let mut cmd = Command::new(psql);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    url.apply(&mut cmd);
    sys::run_with_stdin(&mut cmd, &seed_sql(tenant_id, &owner, &collection))?;

    let first = http_request(addr, "GET", "/v1/conversations?limit=1", Some(token), None)?
        .json(&[200], "listing the bench conversations")?;
    let conversation = first["items"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no bench conversation was listed: {first}"))?;
    let paths = ContentPaths {
        agents: "/v1/agents?limit=20".to_owned(),
        conversations: "/v1/conversations?limit=20".to_owned(),
        messages: format!("/v1/conversations/{conversation}/messages"),
        documents: format!("/v1/rag/documents?collection_id={collection}&limit=20"),
    };
    for (path, field, expected) in [
        (&paths.agents, "items", 20),
        (&paths.conversations, "items", 20),
        (&paths.messages, "nodes", CHAIN as usize),
        (&paths.documents, "items", 20),
    ] {
        let body = http_request(addr, "GET", path, Some(token), None)?.json(&[200], path)?;
        let got = body[field].as_array().map_or(0, Vec::len);
        if got != expected {
            bail!("{path} returned {got} {field}, expected {expected}");
        }
    }
    Ok(paths)
}

/// One transaction under the tenant's scope. The ids are UUIDv7 from PostgreSQL 18's
/// `uuidv7()`, in insertion order as the app's are.
fn seed_sql(tenant: &str, owner: &str, collection: &str) -> String {
    format!(
        r"BEGIN;
SET LOCAL trellis.tenant_id = '{tenant}';
INSERT INTO agents (tenant_id, id, name, description, instructions, provider, model,
                    published, created_by)
SELECT '{tenant}', uuidv7(), 'Bench agent ' || i, 'An agent of the bench',
       repeat('Answer as a careful support agent would. ', 8), 'openai_compatible',
       'bench-model', true, '{owner}'
  FROM generate_series(1, {ROWS}) AS i;
INSERT INTO conversations (tenant_id, id, owner_id, title, provider, model)
SELECT '{tenant}', uuidv7(), '{owner}', 'Bench conversation ' || i, 'openai_compatible', 'bench-model'
  FROM generate_series(1, {ROWS}) AS i;
DO $$
DECLARE
    conversation uuid := (SELECT id FROM conversations
                           WHERE tenant_id = '{tenant}' AND owner_id = '{owner}'
                           ORDER BY id LIMIT 1);
    parent uuid;
    message uuid;
BEGIN
    FOR i IN 1..{CHAIN} LOOP
        message := uuidv7();
        INSERT INTO messages (tenant_id, id, conversation_id, parent_id, role, content,
                              author_id, provider, model, finish_reason,
                              prompt_tokens, completion_tokens, created_at)
        VALUES ('{tenant}', message, conversation, parent,
                CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END,
                repeat('A sentence of a bench conversation, as a reader would write it. ', 16),
                CASE WHEN i % 2 = 1 THEN '{owner}'::uuid END,
                CASE WHEN i % 2 = 0 THEN 'openai_compatible' END,
                CASE WHEN i % 2 = 0 THEN 'bench-model' END,
                CASE WHEN i % 2 = 0 THEN 'stop' END,
                CASE WHEN i % 2 = 0 THEN 900 END,
                CASE WHEN i % 2 = 0 THEN 250 END,
                now() + i * interval '1 millisecond');
        parent := message;
    END LOOP;
    UPDATE conversations SET last_message_at = now()
     WHERE tenant_id = '{tenant}' AND id = conversation;
END
$$;
INSERT INTO documents (tenant_id, id, collection_id, filename, original_name, mime_type,
                       size_bytes, checksum, storage_key, status, processed_at, source_type,
                       chunk_count, uploaded_by)
SELECT '{tenant}', uuidv7(), '{collection}', 'bench-' || i || '.md', 'Bench ' || i || '.md',
       'text/markdown', 4096, md5('bench ' || i) || md5('document ' || i),
       'bench/{collection}/' || i, 'processed', now(), 'upload', 8, '{owner}'
  FROM generate_series(1, {ROWS}) AS i;
COMMIT;
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_sql_scopes_one_transaction_to_the_tenant_and_writes_every_row_kind() {
        let sql = seed_sql("t-id", "o-id", "c-id");
        assert!(sql.starts_with("BEGIN;\nSET LOCAL trellis.tenant_id = 't-id';"));
        assert!(sql.trim_end().ends_with("COMMIT;"));
        for table in ["agents", "conversations", "messages", "documents"] {
            assert!(sql.contains(&format!("INSERT INTO {table} ")), "{table}");
        }
        assert!(sql.contains("FOR i IN 1..20 LOOP"));
    }
}
