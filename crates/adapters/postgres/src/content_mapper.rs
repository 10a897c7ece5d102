//! Content rows to domain models, and the few domain values that need an encoding of
//! their own in storage (budgets, role lists, token counts). As in `crate::mapper`,
//! every stored value is re-validated through the domain's parsers (sampling
//! parameters, input schemas, enums), so a malformed row surfaces as an `Unexpected`
//! error naming the table, row and field, never as a panic or an invalid domain value.

use crate::entity::{
    agent, agent_version, conversation, file, llm_model, memory, message, tenant_quota, tool_config,
};
use crate::error::bad_row;
use anyhow::Context as _;
use trellis_content::{
    Agent, AgentConfig, AgentId, AgentTier, AgentVersion, BudgetPeriod, Citation, Conversation,
    ConversationId, FileAttachment, FileId, FinishReason, InputSchema, KnowledgeCollectionId,
    KnowledgeDocumentId, LlmModel, Memory, MemoryId, MemorySource, Message, MessageId, MessageRole,
    MicroUsd, ModelParameters, Quota, TokenBudget, TokenUsage, ToolConfig, ToolId, ToolKind,
};
use trellis_kernel::{Role, TenantId, UserId};
use trellis_tenancy::LlmProvider;

pub(crate) fn llm_model(row: llm_model::Model) -> anyhow::Result<LlmModel> {
    let key = format!("{}/{}", row.provider, row.name);
    let bad = |field| bad_row("llm_models", &key, field);
    let model = LlmModel {
        provider: LlmProvider::parse(&row.provider).with_context(|| bad("provider"))?,
        context_window: u32::try_from(row.context_window).with_context(|| bad("context_window"))?,
        supports_streaming: row.supports_streaming,
        input_price_per_1k: MicroUsd(
            u64::try_from(row.input_micro_usd_per_1k)
                .with_context(|| bad("input_micro_usd_per_1k"))?,
        ),
        output_price_per_1k: MicroUsd(
            u64::try_from(row.output_micro_usd_per_1k)
                .with_context(|| bad("output_micro_usd_per_1k"))?,
        ),
        name: row.name,
    };
    model.validate().with_context(|| bad("model"))?;
    Ok(model)
}

/// A tenant's budgets; no row means no budgets (unlimited).
pub(crate) fn quota(row: Option<tenant_quota::Model>) -> anyhow::Result<Quota> {
    let Some(row) = row else {
        return Ok(Quota::default());
    };
    let bad = |field| bad_row("tenant_quotas", row.tenant_id, field);
    Ok(Quota {
        tenant: budget(row.tenant_limit_tokens, row.tenant_period.as_deref())
            .with_context(|| bad("tenant budget"))?,
        per_user: budget(row.per_user_limit_tokens, row.per_user_period.as_deref())
            .with_context(|| bad("per-user budget"))?,
    })
}

fn budget(limit: Option<i64>, period: Option<&str>) -> anyhow::Result<Option<TokenBudget>> {
    match (limit, period) {
        (None, None) => Ok(None),
        (Some(limit), Some(period)) => Ok(Some(TokenBudget {
            limit_tokens: u64::try_from(limit)?,
            period: match period {
                "day" => BudgetPeriod::Day,
                "month" => BudgetPeriod::Month,
                other => anyhow::bail!("unknown period `{other}`"),
            },
        })),
        _ => anyhow::bail!("a limit without a period, or a period without a limit"),
    }
}

/// The `*_limit_tokens` and `*_period` columns of a budget.
pub(crate) fn budget_columns(
    budget: Option<TokenBudget>,
) -> anyhow::Result<(Option<i64>, Option<String>)> {
    let Some(b) = budget else {
        return Ok((None, None));
    };
    let limit = i64::try_from(b.limit_tokens).context("a token budget is out of range")?;
    let period = match b.period {
        BudgetPeriod::Day => "day",
        BudgetPeriod::Month => "month",
    };
    Ok((Some(limit), Some(period.to_owned())))
}

/// The `temperature`, `top_p` and `max_tokens` columns of sampling parameters.
pub(crate) fn parameter_columns(
    p: ModelParameters,
) -> anyhow::Result<(Option<f32>, Option<f32>, Option<i32>)> {
    let max_tokens = p
        .max_tokens()
        .map(i32::try_from)
        .transpose()
        .context("max_tokens is out of range")?;
    Ok((p.temperature(), p.top_p(), max_tokens))
}

fn parameters(
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<i32>,
) -> anyhow::Result<ModelParameters> {
    let max_tokens = max_tokens.map(u32::try_from).transpose()?;
    Ok(ModelParameters::new(temperature, top_p, max_tokens)?)
}

/// A token count column from the domain's `u32`.
pub(crate) fn tokens(n: u32) -> i64 {
    i64::from(n)
}

fn usage(prompt: Option<i64>, completion: Option<i64>) -> anyhow::Result<Option<TokenUsage>> {
    match (prompt, completion) {
        (None, None) => Ok(None),
        (Some(p), Some(c)) => Ok(Some(TokenUsage {
            prompt_tokens: u32::try_from(p)?,
            completion_tokens: u32::try_from(c)?,
        })),
        _ => anyhow::bail!("prompt and completion tokens must both be set or both be NULL"),
    }
}

fn roles(value: serde_json::Value) -> anyhow::Result<Vec<Role>> {
    Ok(serde_json::from_value(value)?)
}

fn ids<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> anyhow::Result<Vec<T>> {
    Ok(serde_json::from_value(value)?)
}

pub(crate) fn tool(row: tool_config::Model) -> anyhow::Result<ToolConfig> {
    let bad = |field| bad_row("tool_configs", row.id, field);
    Ok(ToolConfig {
        id: ToolId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        kind: ToolKind::parse(&row.kind).with_context(|| bad("kind"))?,
        input_schema: InputSchema::parse(row.input_schema).with_context(|| bad("input_schema"))?,
        allowed_roles: roles(row.allowed_roles).with_context(|| bad("allowed_roles"))?,
        name: row.name,
        description: row.description,
        config: row.config,
        enabled: row.enabled,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn agent(row: agent::AgentRow) -> anyhow::Result<Agent> {
    let a = row.agent;
    let bad = |field| bad_row("agents", a.id, field);
    let config = AgentConfig {
        provider: LlmProvider::parse(&a.provider).with_context(|| bad("provider"))?,
        parameters: parameters(a.temperature, a.top_p, a.max_tokens)
            .with_context(|| bad("parameters"))?,
        tools: ids::<ToolId>(row.tool_ids).with_context(|| bad("tools"))?,
        knowledge_collections: ids::<KnowledgeCollectionId>(a.knowledge_collection_ids)
            .with_context(|| bad("knowledge_collection_ids"))?,
        tier: AgentTier::parse(&a.tier).with_context(|| bad("tier"))?,
        allowed_roles: roles(a.allowed_roles).with_context(|| bad("allowed_roles"))?,
        name: a.name,
        description: a.description,
        instructions: a.instructions,
        model: a.model,
        output_format: a.output_format,
        icon: a.icon,
        published: a.published,
    };
    Ok(Agent {
        id: AgentId::from_uuid(a.id),
        tenant_id: TenantId::from_uuid(a.tenant_id),
        config,
        version: u32::try_from(a.version).with_context(|| bad("version"))?,
        created_by: a.created_by.map(UserId::from_uuid),
        created_at: a.created_at,
        updated_at: a.updated_at,
    })
}

pub(crate) fn agent_version(row: agent_version::Model) -> anyhow::Result<AgentVersion> {
    let key = format!("{}@{}", row.agent_id, row.version);
    let bad = |field| bad_row("agent_versions", &key, field);
    Ok(AgentVersion {
        agent_id: AgentId::from_uuid(row.agent_id),
        version: u32::try_from(row.version).with_context(|| bad("version"))?,
        // AgentConfig deserialises through the domain's checked types (parameters).
        config: serde_json::from_value(row.config).with_context(|| bad("config"))?,
        saved_by: row.saved_by.map(UserId::from_uuid),
        saved_at: row.saved_at,
    })
}

pub(crate) fn conversation(row: conversation::Model) -> anyhow::Result<Conversation> {
    let bad = |field| bad_row("conversations", row.id, field);
    Ok(Conversation {
        id: ConversationId::from_uuid(row.id),
        tenant_id: TenantId::from_uuid(row.tenant_id),
        owner_id: UserId::from_uuid(row.owner_id),
        provider: LlmProvider::parse(&row.provider).with_context(|| bad("provider"))?,
        agent_id: row.agent_id.map(AgentId::from_uuid),
        parameters: parameters(row.temperature, row.top_p, row.max_tokens)
            .with_context(|| bad("parameters"))?,
        title: row.title,
        model: row.model,
        archived: row.archived,
        last_message_at: row.last_message_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn message(row: message::MessageRow) -> anyhow::Result<Message> {
    let m = row.message;
    let bad = |field| bad_row("messages", m.id, field);
    Ok(Message {
        id: MessageId::from_uuid(m.id),
        conversation_id: ConversationId::from_uuid(m.conversation_id),
        parent_id: m.parent_id.map(MessageId::from_uuid),
        role: MessageRole::parse(&m.role).with_context(|| bad("role"))?,
        author_id: m.author_id.map(UserId::from_uuid),
        provider: m
            .provider
            .as_deref()
            .map(LlmProvider::parse)
            .transpose()
            .with_context(|| bad("provider"))?,
        finish_reason: m
            .finish_reason
            .as_deref()
            .map(FinishReason::parse)
            .transpose()
            .with_context(|| bad("finish_reason"))?,
        usage: usage(m.prompt_tokens, m.completion_tokens).with_context(|| bad("tokens"))?,
        files: ids::<FileId>(row.file_ids).with_context(|| bad("files"))?,
        citations: serde_json::from_value::<Vec<Citation>>(m.citations)
            .with_context(|| bad("citations"))?,
        content: m.content,
        model: m.model,
        error: m.error,
        unfinished: m.unfinished,
        created_at: m.created_at,
    })
}

pub(crate) fn file(row: file::Model) -> anyhow::Result<FileAttachment> {
    let bad = |field| bad_row("files", row.id, field);
    Ok(FileAttachment {
        id: FileId::from_uuid(row.id),
        owner_id: UserId::from_uuid(row.owner_id),
        conversation_id: row.conversation_id.map(ConversationId::from_uuid),
        size_bytes: u64::try_from(row.size_bytes).with_context(|| bad("size_bytes"))?,
        knowledge_document_id: row
            .knowledge_document_id
            .map(KnowledgeDocumentId::from_uuid),
        filename: row.filename,
        mime_type: row.mime_type,
        checksum: row.checksum,
        storage_key: row.storage_key,
        created_at: row.created_at,
    })
}

pub(crate) fn memory(row: memory::Model) -> anyhow::Result<Memory> {
    let bad = |field| bad_row("memories", row.id, field);
    Ok(Memory {
        id: MemoryId::from_uuid(row.id),
        owner_id: UserId::from_uuid(row.owner_id),
        source: MemorySource::parse(&row.source).with_context(|| bad("source"))?,
        key: row.key,
        value: row.value,
        category: row.category,
        source_id: row.source_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent_row(temperature: Option<f32>, tools: serde_json::Value) -> agent::AgentRow {
        let now = chrono::Utc::now();
        agent::AgentRow {
            agent: agent::Model {
                tenant_id: uuid::Uuid::now_v7(),
                id: uuid::Uuid::now_v7(),
                name: "Helper".into(),
                description: None,
                instructions: String::new(),
                provider: "openai".into(),
                model: "gpt-4o".into(),
                temperature,
                top_p: None,
                max_tokens: Some(800),
                knowledge_collection_ids: json!([]),
                output_format: None,
                icon: None,
                tier: "pro".into(),
                published: true,
                allowed_roles: json!(["support"]),
                version: 3,
                created_by: None,
                created_at: now,
                updated_at: now,
            },
            tool_ids: tools,
        }
    }

    #[test]
    fn an_agent_row_reads_back_with_its_tools_in_order() {
        let (t1, t2) = (ToolId::new(), ToolId::new());
        let a = agent(agent_row(Some(0.3), json!([t2, t1]))).unwrap();
        assert_eq!(a.config.tools, [t2, t1]);
        assert_eq!(a.config.parameters.temperature(), Some(0.3));
        assert_eq!(a.config.allowed_roles, [Role::Support]);
        assert_eq!((a.version, a.config.tier), (3, AgentTier::Pro));
    }

    #[test]
    fn parameters_outside_the_domains_bounds_are_an_error_not_a_panic() {
        let err = agent(agent_row(Some(7.0), json!([]))).unwrap_err();
        assert!(err.to_string().contains("invalid parameters"), "{err}");
        assert!(agent(agent_row(None, json!(["not-a-uuid"]))).is_err());
    }

    #[test]
    fn budgets_round_trip_through_their_columns() {
        let b = TokenBudget {
            limit_tokens: 50_000,
            period: BudgetPeriod::Month,
        };
        let (limit, period) = budget_columns(Some(b)).unwrap();
        assert_eq!(budget(limit, period.as_deref()).unwrap(), Some(b));
        assert_eq!(budget_columns(None).unwrap(), (None, None));
        assert!(budget(Some(1), None).is_err());
        assert!(budget(Some(1), Some("week")).is_err());
        assert!(
            budget_columns(Some(TokenBudget {
                limit_tokens: u64::MAX,
                period: BudgetPeriod::Day
            }))
            .is_err()
        );
    }

    #[test]
    fn half_a_token_usage_is_an_error() {
        assert!(usage(Some(1), None).is_err());
        assert_eq!(
            usage(Some(2), Some(3)).unwrap(),
            Some(TokenUsage {
                prompt_tokens: 2,
                completion_tokens: 3
            })
        );
    }
}
