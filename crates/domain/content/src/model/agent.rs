//! Agents (seeds 000, 002, 004): instructions, the model they run on with validated
//! parameters, their tools and knowledge collections, an output-format template, and
//! who in the tenant may use them. Every change bumps `version` and the repository
//! keeps each version's configuration as an [`AgentVersion`].

use crate::model::text;
use crate::{AgentId, KnowledgeCollectionId, ToolId};
use serde::{Deserialize, Serialize};
use trellis_kernel::{InvalidValue, Permission, Role, TenantCtx, TenantId, Timestamp, UserId};
use trellis_tenancy::LlmProvider;

/// At most this many tools per agent.
pub const MAX_AGENT_TOOLS: usize = 32;
/// At most this many knowledge collections per agent.
pub const MAX_AGENT_COLLECTIONS: usize = 16;

/// Sampling parameters of a model call. Every field is optional: unset means "the
/// provider's default" (or, for a conversation, "the agent's").
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawParameters", into = "RawParameters")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelParameters {
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 2))]
    temperature: Option<f32>,
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 1))]
    top_p: Option<f32>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    max_tokens: Option<u32>,
}

/// The unchecked wire form; deserialising goes through [`ModelParameters::new`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct RawParameters {
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
}

impl TryFrom<RawParameters> for ModelParameters {
    type Error = InvalidValue;
    fn try_from(r: RawParameters) -> Result<Self, Self::Error> {
        ModelParameters::new(r.temperature, r.top_p, r.max_tokens)
    }
}

impl From<ModelParameters> for RawParameters {
    fn from(p: ModelParameters) -> Self {
        Self {
            temperature: p.temperature,
            top_p: p.top_p,
            max_tokens: p.max_tokens,
        }
    }
}

impl ModelParameters {
    /// # Errors
    /// When the temperature is outside 0–2, `top_p` outside (0, 1] or `max_tokens`
    /// outside 1–1,000,000 (NaN is never accepted).
    pub fn new(
        temperature: Option<f32>,
        top_p: Option<f32>,
        max_tokens: Option<u32>,
    ) -> Result<Self, InvalidValue> {
        if let Some(t) = temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(InvalidValue::new("temperature", "must be between 0 and 2"));
        }
        if let Some(p) = top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(InvalidValue::new(
                "top_p",
                "must be greater than 0 and at most 1",
            ));
        }
        if let Some(m) = max_tokens
            && !(1..=1_000_000).contains(&m)
        {
            return Err(InvalidValue::new(
                "max_tokens",
                "must be between 1 and 1000000",
            ));
        }
        Ok(Self {
            temperature,
            top_p,
            max_tokens,
        })
    }

    #[must_use]
    pub fn temperature(&self) -> Option<f32> {
        self.temperature
    }

    #[must_use]
    pub fn top_p(&self) -> Option<f32> {
        self.top_p
    }

    #[must_use]
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_tokens
    }

    /// These parameters where set, `base`'s elsewhere (a conversation over its agent).
    #[must_use]
    pub fn over(self, base: ModelParameters) -> ModelParameters {
        ModelParameters {
            temperature: self.temperature.or(base.temperature),
            top_p: self.top_p.or(base.top_p),
            max_tokens: self.max_tokens.or(base.max_tokens),
        }
    }
}

/// Which subscription tier an agent is meant for (seed 002 `tier`). Stored and shown;
/// the HTTP layer, which knows the user's tier, decides whether it gates access.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AgentTier {
    #[default]
    Free,
    Pro,
}

impl AgentTier {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AgentTier::Free => "free",
            AgentTier::Pro => "pro",
        }
    }

    /// # Errors
    /// For an unknown tier.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "free" => Ok(AgentTier::Free),
            "pro" => Ok(AgentTier::Pro),
            _ => Err(InvalidValue::new("tier", "must be free or pro")),
        }
    }
}

/// Everything about an agent that a version captures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentConfig {
    /// Unique in the tenant: the OpenAI-compatible API names agents by it.
    pub name: String,
    pub description: Option<String>,
    /// The system prompt.
    pub instructions: String,
    pub provider: LlmProvider,
    pub model: String,
    pub parameters: ModelParameters,
    pub tools: Vec<ToolId>,
    /// The knowledge collections answers are grounded in.
    pub knowledge_collections: Vec<KnowledgeCollectionId>,
    /// A template the answer should follow (seed 004 output formats).
    pub output_format: Option<String>,
    /// An icon URL or emoji.
    pub icon: Option<String>,
    pub tier: AgentTier,
    /// Unpublished agents are visible only to those who manage content.
    pub published: bool,
    /// The roles that may use the agent; empty means every role that may chat. This
    /// is the per-tenant permission on an agent (seed 004 `tenant_agent_permissions`).
    pub allowed_roles: Vec<Role>,
}

impl AgentConfig {
    /// The configuration with text trimmed and lists deduplicated.
    ///
    /// # Errors
    /// When a field breaks its bounds.
    pub fn normalized(self) -> Result<Self, InvalidValue> {
        let instructions = self.instructions.trim();
        if instructions.chars().count() > 32_000 {
            return Err(InvalidValue::new(
                "instructions",
                "must be at most 32000 characters",
            ));
        }
        let instructions = if instructions.is_empty() {
            String::new()
        } else {
            text::body("instructions", instructions, 32_000)?
        };
        let tools = dedup(self.tools);
        if tools.len() > MAX_AGENT_TOOLS {
            return Err(InvalidValue::new(
                "tools",
                format!("at most {MAX_AGENT_TOOLS} tools"),
            ));
        }
        let knowledge_collections = dedup(self.knowledge_collections);
        if knowledge_collections.len() > MAX_AGENT_COLLECTIONS {
            return Err(InvalidValue::new(
                "knowledge_collections",
                format!("at most {MAX_AGENT_COLLECTIONS} collections"),
            ));
        }
        Ok(Self {
            name: text::line("name", &self.name, 100)?,
            description: text::opt_body("description", self.description.as_deref(), 2000)?,
            instructions,
            provider: self.provider,
            model: text::line("model", &self.model, 200)?,
            parameters: self.parameters,
            tools,
            knowledge_collections,
            output_format: text::opt_body("output_format", self.output_format.as_deref(), 8000)?,
            icon: text::opt_line("icon", self.icon.as_deref(), 500)?,
            tier: self.tier,
            published: self.published,
            allowed_roles: dedup(self.allowed_roles),
        })
    }
}

/// Keeps the first occurrence of each item, in order.
fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    pub id: AgentId,
    pub tenant_id: TenantId,
    pub config: AgentConfig,
    /// 1 when created; +1 on every change.
    pub version: u32,
    pub created_by: Option<UserId>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: Timestamp,
}

impl Agent {
    /// Whether the acting user may see and chat with this agent: content managers see
    /// every agent; others only published ones their role is allowed.
    #[must_use]
    pub fn usable_by(&self, ctx: &TenantCtx) -> bool {
        ctx.can(Permission::ContentManage)
            || (self.config.published
                && (self.config.allowed_roles.is_empty()
                    || self.config.allowed_roles.contains(&ctx.role())))
    }
}

/// One saved configuration of an agent; the current one is the highest version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentVersion {
    pub agent_id: AgentId,
    pub version: u32,
    pub config: AgentConfig,
    pub saved_by: Option<UserId>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub saved_at: Timestamp,
}

/// An agent to insert (as version 1).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgent {
    pub id: AgentId,
    pub config: AgentConfig,
    pub created_by: Option<UserId>,
}

/// A partial change; `None` keeps a field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub instructions: Option<String>,
    pub provider: Option<LlmProvider>,
    pub model: Option<String>,
    pub parameters: Option<ModelParameters>,
    pub tools: Option<Vec<ToolId>>,
    pub knowledge_collections: Option<Vec<KnowledgeCollectionId>>,
    pub output_format: Option<Option<String>>,
    pub icon: Option<Option<String>>,
    pub tier: Option<AgentTier>,
    pub published: Option<bool>,
    pub allowed_roles: Option<Vec<Role>>,
}

impl AgentPatch {
    /// `config` with this patch applied (not yet normalised).
    #[must_use]
    pub fn apply(self, config: &AgentConfig) -> AgentConfig {
        let c = config.clone();
        AgentConfig {
            name: self.name.unwrap_or(c.name),
            description: self.description.unwrap_or(c.description),
            instructions: self.instructions.unwrap_or(c.instructions),
            provider: self.provider.unwrap_or(c.provider),
            model: self.model.unwrap_or(c.model),
            parameters: self.parameters.unwrap_or(c.parameters),
            tools: self.tools.unwrap_or(c.tools),
            knowledge_collections: self
                .knowledge_collections
                .unwrap_or(c.knowledge_collections),
            output_format: self.output_format.unwrap_or(c.output_format),
            icon: self.icon.unwrap_or(c.icon),
            tier: self.tier.unwrap_or(c.tier),
            published: self.published.unwrap_or(c.published),
            allowed_roles: self.allowed_roles.unwrap_or(c.allowed_roles),
        }
    }
}

/// Which agents to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentFilter {
    pub published: Option<bool>,
    /// Only agents this role may use (no restriction, or the role is allowed).
    pub usable_by_role: Option<Role>,
    /// Only agents that have this tool.
    pub uses_tool: Option<ToolId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_kernel::Actor;

    pub(crate) fn config() -> AgentConfig {
        AgentConfig {
            name: " Helper ".into(),
            description: Some("  ".into()),
            instructions: "Be brief.".into(),
            provider: LlmProvider::Openai,
            model: "gpt-4o".into(),
            parameters: ModelParameters::default(),
            tools: vec![],
            knowledge_collections: vec![],
            output_format: None,
            icon: None,
            tier: AgentTier::Free,
            published: true,
            allowed_roles: vec![],
        }
    }

    #[test]
    fn parameters_outside_their_ranges_are_refused() {
        assert!(ModelParameters::new(Some(2.5), None, None).is_err());
        assert!(ModelParameters::new(Some(f32::NAN), None, None).is_err());
        assert!(ModelParameters::new(None, Some(0.0), None).is_err());
        assert!(ModelParameters::new(None, Some(1.5), None).is_err());
        assert!(ModelParameters::new(None, None, Some(0)).is_err());
        assert!(ModelParameters::new(Some(0.0), Some(1.0), Some(4096)).is_ok());
    }

    #[test]
    fn parameters_cannot_be_smuggled_in_through_deserialisation() {
        let bad: Result<ModelParameters, _> = serde_json::from_str(r#"{"temperature": 9.0}"#);
        assert!(bad.is_err());
        let good: ModelParameters = serde_json::from_str(r#"{"max_tokens": 100}"#).unwrap();
        assert_eq!(good.max_tokens(), Some(100));
    }

    #[test]
    fn conversation_parameters_override_the_agents_only_where_set() {
        let agent = ModelParameters::new(Some(0.2), Some(0.9), Some(500)).unwrap();
        let conv = ModelParameters::new(Some(1.0), None, None).unwrap();
        let merged = conv.over(agent);
        assert_eq!(
            (merged.temperature(), merged.top_p(), merged.max_tokens()),
            (Some(1.0), Some(0.9), Some(500))
        );
    }

    #[test]
    fn normalising_trims_text_and_drops_duplicate_tools() {
        let t = ToolId::new();
        let c = AgentConfig {
            tools: vec![t, t],
            ..config()
        }
        .normalized()
        .unwrap();
        assert_eq!(c.name, "Helper");
        assert_eq!(c.description, None);
        assert_eq!(c.tools, vec![t]);
    }

    #[test]
    fn a_plain_user_sees_only_published_agents_their_role_may_use() {
        let ctx = |role| {
            TenantCtx::authenticated(TenantId::new(), Actor::User(UserId::new()), role, None)
        };
        let mut agent = Agent {
            id: AgentId::new(),
            tenant_id: TenantId::new(),
            config: config(),
            version: 1,
            created_by: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        assert!(agent.usable_by(&ctx(Role::User)));
        agent.config.allowed_roles = vec![Role::Support];
        assert!(!agent.usable_by(&ctx(Role::User)));
        assert!(agent.usable_by(&ctx(Role::Support)));
        agent.config.published = false;
        assert!(!agent.usable_by(&ctx(Role::Support)));
        assert!(agent.usable_by(&ctx(Role::ContentManager)));
    }
}
