//! `/v1/agents`, `/v1/conversations` and `/v1/memories`: versioned agents, the caller's
//! conversations with their branching message trees, answers streamed as Server-Sent
//! Events (`citations`, `delta`, `usage`, then `done` or `error`), forks, full-text
//! search over one's messages, and memories.
//!
//! Response bodies are the content domain's own serialised types, written straight
//! from them; their OpenAPI schemas come from the same types (`trellis-content`'s
//! `openapi` feature), so the document cannot drift from what is sent.

use super::{PageQuery, created};
use crate::auth::TenantAuth;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, FieldError, Problem, ProblemType};
use crate::state::AppState;
use crate::validate::double_option;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use trellis_content::tree::MessageTree;
use trellis_content::{
    Agent, AgentConfig, AgentId, AgentPatch, AgentTier, AgentVersion, Answer, AnswerEvent,
    ContentError, ContentService, Conversation, ConversationId, ConversationPatch,
    ConversationQuery, KnowledgeCollectionId, Memory, MemoryId, MemoryPatch, MemorySource,
    MessageHit, MessageId, ModelParameters, Remember, StartConversation, ToolId, UserMessage,
    Whose,
};
use trellis_kernel::Role;
use trellis_tenancy::LlmProvider;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agents", get(list_agents).post(create_agent))
        .route(
            "/v1/agents/{id}",
            get(get_agent).patch(update_agent).delete(delete_agent),
        )
        .route("/v1/agents/{id}/versions", get(agent_versions))
        .route(
            "/v1/conversations",
            get(list_conversations).post(create_conversation),
        )
        .route("/v1/conversations/search", get(search_conversations))
        .route(
            "/v1/conversations/{id}",
            get(get_conversation)
                .patch(update_conversation)
                .delete(delete_conversation),
        )
        .route("/v1/conversations/{id}/fork", post(fork_conversation))
        .route(
            "/v1/conversations/{id}/messages",
            get(message_tree).post(send_message),
        )
        .route(
            "/v1/conversations/{id}/messages/{mid}/edit",
            post(edit_message),
        )
        .route(
            "/v1/conversations/{id}/messages/{mid}/regenerate",
            post(regenerate),
        )
        .route("/v1/memories", get(list_memories).post(create_memory))
        .route(
            "/v1/memories/{id}",
            get(get_memory).patch(update_memory).delete(delete_memory),
        )
}

pub(crate) fn content(state: &AppState) -> Result<Arc<ContentService>, ApiError> {
    state.content.clone().ok_or_else(|| {
        ApiError::new(
            ProblemType::NotReady,
            "chat is not configured on this server",
        )
    })
}

impl From<ContentError> for ApiError {
    fn from(e: ContentError) -> Self {
        match e {
            ContentError::NotFound(what) => Self::not_found(format!("{what} not found")),
            ContentError::Conflict(msg) => Self::new(ProblemType::Conflict, msg),
            ContentError::Invalid(v) => Self::validation(vec![v.into()]),
            ContentError::Page(p) => p.into(),
            ContentError::Forbidden => Self::forbidden("you may not do this"),
            e @ ContentError::QuotaExceeded { resets_at, .. } => {
                let secs = (resets_at - chrono::Utc::now()).num_seconds().max(1);
                Self::quota_exceeded(
                    e.to_string(),
                    u64::try_from(secs).unwrap_or(1),
                    // The same form as every timestamp of the API (`…Z`).
                    resets_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                )
            }
            e @ ContentError::TooLarge { .. } => {
                Self::new(ProblemType::PayloadTooLarge, e.to_string())
            }
            e @ ContentError::Unsupported(_) => {
                Self::new(ProblemType::UnsupportedMediaType, e.to_string())
            }
            ContentError::ModelUnavailable(model) => Self::validation(vec![FieldError::new(
                "model",
                format!("`{model}` is not available"),
            )]),
            ContentError::Provider(p) => Self::new(ProblemType::NotReady, p.message),
            ContentError::Unexpected(e) => Self::internal(e),
        }
    }
}

/// A domain value as a JSON response, written straight from the value (a value JSON
/// cannot express becomes a 500 problem there).
pub(crate) fn json<T: Serialize>(value: T) -> Result<Response, ApiError> {
    Ok(Json(value).into_response())
}

/// Every result, in one list.
#[derive(Serialize, ToSchema)]
pub(crate) struct Items<T> {
    items: Vec<T>,
}

/// A page of results, oldest or best first as the operation says.
#[derive(Serialize, ToSchema)]
pub(crate) struct PageBody<T> {
    items: Vec<T>,
    /// Pass as `cursor` for the next page; absent or null on the last page.
    next_cursor: Option<String>,
}

/// A `{items, next_cursor}` page of domain values.
pub(crate) fn page_json<T: Serialize>(page: trellis_kernel::Page<T>) -> Result<Response, ApiError> {
    json(PageBody {
        items: page.items,
        next_cursor: page.next_cursor,
    })
}

// ----- agents ------------------------------------------------------------------------

/// An agent to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentBody {
    /// Unique in the tenant; one line of 1 to 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub name: String,
    /// Up to 2000 characters; line breaks and tabs are the only control characters.
    #[schema(
        max_length = 2000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub description: Option<String>,
    /// The system prompt: up to 32,000 characters (default none).
    #[serde(default)]
    #[schema(
        max_length = 32000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub instructions: String,
    pub provider: LlmProvider,
    /// A model of `provider` in the tenant's catalogue (`GET /v1/models`).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$",
        example = "gpt-4o-mini"
    )]
    pub model: String,
    #[serde(default)]
    pub parameters: ModelParameters,
    /// Ids of the tenant's tools (`/v1/tools`), at most 32.
    #[serde(default)]
    #[schema(max_items = 32)]
    pub tools: Vec<Uuid>,
    /// Ids of the tenant's knowledge collections, at most 16.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub knowledge_collections: Vec<Uuid>,
    /// A template the answer should follow: up to 8000 characters.
    #[schema(
        max_length = 8000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub output_format: Option<String>,
    /// An icon URL or emoji: one line of up to 500 characters.
    #[schema(max_length = 500, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub icon: Option<String>,
    /// Default `free`.
    #[serde(default)]
    pub tier: AgentTier,
    #[serde(default)]
    pub published: bool,
    #[serde(default)]
    pub allowed_roles: Vec<Role>,
}

impl From<CreateAgentBody> for AgentConfig {
    fn from(b: CreateAgentBody) -> Self {
        AgentConfig {
            name: b.name,
            description: b.description,
            instructions: b.instructions,
            provider: b.provider,
            model: b.model,
            parameters: b.parameters,
            tools: b.tools.into_iter().map(ToolId::from_uuid).collect(),
            knowledge_collections: b
                .knowledge_collections
                .into_iter()
                .map(KnowledgeCollectionId::from_uuid)
                .collect(),
            output_format: b.output_format,
            icon: b.icon,
            tier: b.tier,
            published: b.published,
            allowed_roles: b.allowed_roles,
        }
    }
}

/// A partial change of an agent; every change makes a new version.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentBody {
    /// Refuse the change (409) unless the agent is still at this version.
    #[schema(minimum = 1)]
    pub expected_version: Option<u32>,
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 2000, pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$")]
    pub description: Option<Option<String>>,
    #[schema(
        max_length = 32000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub instructions: Option<String>,
    pub provider: Option<LlmProvider>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub model: Option<String>,
    pub parameters: Option<ModelParameters>,
    #[schema(max_items = 32)]
    pub tools: Option<Vec<Uuid>>,
    #[schema(max_items = 16)]
    pub knowledge_collections: Option<Vec<Uuid>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 8000, pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$")]
    pub output_format: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 500, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub icon: Option<Option<String>>,
    pub tier: Option<AgentTier>,
    pub published: Option<bool>,
    pub allowed_roles: Option<Vec<Role>>,
}

impl UpdateAgentBody {
    fn into_domain(self) -> (AgentPatch, Option<u32>) {
        let patch = AgentPatch {
            name: self.name,
            description: self.description,
            instructions: self.instructions,
            provider: self.provider,
            model: self.model,
            parameters: self.parameters,
            tools: self
                .tools
                .map(|t| t.into_iter().map(ToolId::from_uuid).collect()),
            knowledge_collections: self.knowledge_collections.map(|c| {
                c.into_iter()
                    .map(KnowledgeCollectionId::from_uuid)
                    .collect()
            }),
            output_format: self.output_format,
            icon: self.icon,
            tier: self.tier,
            published: self.published,
            allowed_roles: self.allowed_roles,
        };
        (patch, self.expected_version)
    }
}

#[utoipa::path(get, path = "/v1/agents", tag = "chat", params(PageQuery),
    responses((status = 200, body = PageBody<Agent>)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_agents(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    page_json(content(&state)?.list_agents(&ctx, q.page()?).await?)
}

#[utoipa::path(post, path = "/v1/agents", tag = "chat", request_body = CreateAgentBody,
    responses((status = 201, body = Agent),
              (status = 404, description = "A tool or knowledge collection it names is not the tenant's", body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_agent(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<CreateAgentBody>,
) -> Result<Response, ApiError> {
    let agent = content(&state)?.create_agent(&ctx, body.into()).await?;
    Ok(created(format!("/v1/agents/{}", agent.id), &agent))
}

#[utoipa::path(get, path = "/v1/agents/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, body = Agent),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_agent(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    json(
        &content(&state)?
            .get_agent(&ctx, AgentId::from_uuid(id))
            .await?,
    )
}

#[utoipa::path(patch, path = "/v1/agents/{id}", tag = "chat", params(("id" = Uuid, Path)),
    request_body = UpdateAgentBody,
    responses((status = 200, body = Agent),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update_agent(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateAgentBody>,
) -> Result<Response, ApiError> {
    let (patch, expected) = body.into_domain();
    json(
        &content(&state)?
            .update_agent(&ctx, AgentId::from_uuid(id), patch, expected)
            .await?,
    )
}

#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 204),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_agent(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    content(&state)?
        .delete_agent(&ctx, AgentId::from_uuid(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every saved configuration, oldest first.
#[utoipa::path(get, path = "/v1/agents/{id}/versions", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, body = Items<AgentVersion>),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn agent_versions(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let versions = content(&state)?
        .agent_versions(&ctx, AgentId::from_uuid(id))
        .await?;
    json(Items { items: versions })
}

// ----- conversations -----------------------------------------------------------------

/// Which conversations to list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConversationListQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub archived: Option<bool>,
    pub agent_id: Option<Uuid>,
    pub title_contains: Option<String>,
    /// Another user's conversations (needs `chat_support`).
    pub owner_id: Option<Uuid>,
}

/// A conversation to start: with an agent, or with a provider and model.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversationBody {
    /// One line of up to 200 characters.
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub title: Option<String>,
    /// An agent the caller may use; it sets the provider and model.
    pub agent_id: Option<Uuid>,
    /// Without an agent: a provider and one of its models in the tenant's catalogue
    /// (`GET /v1/models`).
    pub provider: Option<LlmProvider>,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$",
        example = "gpt-4o-mini"
    )]
    pub model: Option<String>,
    #[serde(default)]
    pub parameters: ModelParameters,
}

/// Rename or (un)archive a conversation.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConversationBody {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub title: Option<Option<String>>,
    pub archived: Option<bool>,
    pub parameters: Option<ModelParameters>,
}

/// Where to fork.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkBody {
    /// The last message the fork keeps.
    pub message_id: Uuid,
}

/// `?q=` for message search.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQueryParams {
    /// One line of 1 to 200 characters.
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub q: String,
    /// 1–50 (default 20).
    #[param(minimum = 1, maximum = 50)]
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/conversations", tag = "chat", params(ConversationListQuery),
    responses((status = 200, body = PageBody<Conversation>)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_conversations(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<ConversationListQuery>,
) -> Result<Response, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor.clone(),
    }
    .page()?;
    let query = ConversationQuery {
        whose: q.owner_id.map_or(Whose::Mine, |u| {
            Whose::Of(trellis_kernel::UserId::from_uuid(u))
        }),
        archived: q.archived,
        agent: q.agent_id.map(AgentId::from_uuid),
        title_contains: q.title_contains,
    };
    page_json(
        content(&state)?
            .list_conversations(&ctx, query, page)
            .await?,
    )
}

#[utoipa::path(post, path = "/v1/conversations", tag = "chat", request_body = CreateConversationBody,
    responses((status = 201, body = Conversation),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_conversation(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<CreateConversationBody>,
) -> Result<Response, ApiError> {
    let cmd = StartConversation {
        title: body.title,
        agent_id: body.agent_id.map(AgentId::from_uuid),
        provider: body.provider,
        model: body.model,
        parameters: body.parameters,
    };
    let c = content(&state)?.create_conversation(&ctx, cmd).await?;
    Ok(created(format!("/v1/conversations/{}", c.id), &c))
}

/// Full-text search over the caller's messages, best first.
#[utoipa::path(get, path = "/v1/conversations/search", tag = "chat", params(SearchQueryParams),
    responses((status = 200, body = Items<MessageHit>),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn search_conversations(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<SearchQueryParams>,
) -> Result<Response, ApiError> {
    let hits = content(&state)?
        .search_messages(&ctx, Whose::Mine, &q.q, q.limit.unwrap_or(20))
        .await?;
    json(Items { items: hits })
}

#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, body = Conversation),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_conversation(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    json(
        &content(&state)?
            .get_conversation(&ctx, ConversationId::from_uuid(id))
            .await?,
    )
}

#[utoipa::path(patch, path = "/v1/conversations/{id}", tag = "chat", params(("id" = Uuid, Path)),
    request_body = UpdateConversationBody,
    responses((status = 200, body = Conversation),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update_conversation(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateConversationBody>,
) -> Result<Response, ApiError> {
    let patch = ConversationPatch {
        title: body.title,
        archived: body.archived,
        parameters: body.parameters,
    };
    json(
        &content(&state)?
            .update_conversation(&ctx, ConversationId::from_uuid(id), patch)
            .await?,
    )
}

#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 204),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_conversation(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    content(&state)?
        .delete_conversation(&ctx, ConversationId::from_uuid(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new conversation holding the path from the root to `message_id`.
#[utoipa::path(post, path = "/v1/conversations/{id}/fork", tag = "chat", params(("id" = Uuid, Path)),
    request_body = ForkBody,
    responses((status = 201, body = Conversation),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn fork_conversation(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<ForkBody>,
) -> Result<Response, ApiError> {
    let c = content(&state)?
        .fork_conversation(
            &ctx,
            ConversationId::from_uuid(id),
            MessageId::from_uuid(body.message_id),
        )
        .await?;
    Ok(created(format!("/v1/conversations/{}", c.id), &c))
}

// ----- messages ----------------------------------------------------------------------

/// `?through=` picks the branch shown as the active path.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TreeQuery {
    pub through: Option<Uuid>,
}

/// A message to send.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageBody {
    /// The text, up to 32,000 characters: line breaks and tabs are the only control
    /// characters.
    #[schema(
        min_length = 1,
        max_length = 32000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]+$"
    )]
    pub content: String,
    /// The message it answers; default: the end of the current branch.
    pub parent_id: Option<Uuid>,
    /// Files the sender uploaded to this conversation, at most 10.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub file_ids: Vec<Uuid>,
}

/// The new text of an edited user message.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessageBody {
    #[schema(
        min_length = 1,
        max_length = 32000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]+$"
    )]
    pub content: String,
}

/// The whole tree (`nodes`) and the `active_path` (root first).
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "chat",
    params(("id" = Uuid, Path), TreeQuery),
    responses((status = 200, body = MessageTree),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn message_tree(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Query(q): Query<TreeQuery>,
) -> Result<Response, ApiError> {
    json(
        &content(&state)?
            .message_tree(
                &ctx,
                ConversationId::from_uuid(id),
                q.through.map(MessageId::from_uuid),
            )
            .await?,
    )
}

/// An SSE event named `name` whose data is `data` as JSON, written straight from it.
fn json_event<T: Serialize>(name: &'static str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, event = name, "an answer event could not be written as JSON");
            Event::default().event(name).data("{}")
        })
}

/// `{"<key>": value}`, the shape most answer events carry.
fn keyed<'a, T>(key: &'static str, value: &'a T) -> BTreeMap<&'static str, &'a T> {
    BTreeMap::from([(key, value)])
}

/// One SSE event for an answer event.
fn sse_event(e: AnswerEvent) -> Event {
    #[derive(Serialize)]
    struct Failure<'a> {
        code: &'a str,
        detail: &'a str,
        message: &'a Option<trellis_content::Message>,
    }
    match &e {
        AnswerEvent::Citations(c) => json_event("citations", &keyed("citations", c)),
        AnswerEvent::Delta(text) => json_event("delta", &keyed("content", text)),
        AnswerEvent::Usage(u) => json_event("usage", u),
        AnswerEvent::Done(m) => json_event("done", &keyed("message", m)),
        AnswerEvent::Error {
            message,
            code,
            detail,
        } => json_event(
            "error",
            &Failure {
                code,
                detail,
                message,
            },
        ),
    }
}

/// The answer as `text/event-stream`; the user message (if any) leads as `message`.
fn stream_answer(answer: Answer) -> Response {
    let first = answer
        .user_message
        .map(|m| json_event("message", &keyed("message", &m)));
    let head = futures::stream::iter(first);
    let events = head
        .chain(answer.events.map(sse_event))
        .map(Ok::<Event, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Send a message; the answer streams back as Server-Sent Events: `message` (the
/// stored user message), `citations`, `delta`…, `usage`, then `done` (the stored
/// answer) or `error` (with the stored error message).
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "chat",
    params(("id" = Uuid, Path)), request_body = SendMessageBody,
    responses((status = 200, description = "text/event-stream of answer events", content_type = "text/event-stream"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 429, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn send_message(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<SendMessageBody>,
) -> Result<Response, ApiError> {
    let answer = content(&state)?
        .answer(
            &ctx,
            ConversationId::from_uuid(id),
            UserMessage {
                content: body.content,
                parent: body.parent_id.map(MessageId::from_uuid),
                files: body
                    .file_ids
                    .into_iter()
                    .map(trellis_content::FileId::from_uuid)
                    .collect(),
            },
        )
        .await?;
    Ok(stream_answer(answer))
}

/// Edit a user message: a sibling with the new text, answered (streamed as above).
#[utoipa::path(post, path = "/v1/conversations/{id}/messages/{mid}/edit", tag = "chat",
    params(("id" = Uuid, Path), ("mid" = Uuid, Path)), request_body = EditMessageBody,
    responses((status = 200, description = "text/event-stream of answer events", content_type = "text/event-stream"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The conversation is archived or full", body = Problem, content_type = "application/problem+json"),
              (status = 429, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn edit_message(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path((id, mid)): Path<(Uuid, Uuid)>,
    Json(body): Json<EditMessageBody>,
) -> Result<Response, ApiError> {
    let answer = content(&state)?
        .edit_and_answer(
            &ctx,
            ConversationId::from_uuid(id),
            MessageId::from_uuid(mid),
            body.content,
        )
        .await?;
    Ok(stream_answer(answer))
}

/// Another answer to the question `mid` answered, as its sibling (streamed as above).
#[utoipa::path(post, path = "/v1/conversations/{id}/messages/{mid}/regenerate", tag = "chat",
    params(("id" = Uuid, Path), ("mid" = Uuid, Path)),
    responses((status = 200, description = "text/event-stream of answer events", content_type = "text/event-stream"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "The conversation is archived or full", body = Problem, content_type = "application/problem+json"),
              (status = 422, description = "The conversation's model is no longer available to the tenant", body = Problem, content_type = "application/problem+json"),
              (status = 429, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn regenerate(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path((id, mid)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let answer = content(&state)?
        .regenerate(
            &ctx,
            ConversationId::from_uuid(id),
            MessageId::from_uuid(mid),
        )
        .await?;
    Ok(stream_answer(answer))
}

// ----- memories ----------------------------------------------------------------------

/// A memory to save.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemoryBody {
    /// One line; unique per user.
    #[schema(min_length = 1, max_length = 200)]
    pub key: String,
    #[schema(min_length = 1, max_length = 2000)]
    pub value: String,
    /// One line.
    #[schema(min_length = 1, max_length = 100)]
    pub category: Option<String>,
    /// Default `manual`.
    pub source: Option<MemorySource>,
    /// One line.
    #[schema(min_length = 1, max_length = 200)]
    pub source_id: Option<String>,
}

/// A partial change of a memory.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMemoryBody {
    #[schema(min_length = 1, max_length = 200)]
    pub key: Option<String>,
    #[schema(min_length = 1, max_length = 2000)]
    pub value: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub category: Option<Option<String>>,
}

#[utoipa::path(get, path = "/v1/memories", tag = "chat", params(PageQuery),
    responses((status = 200, body = PageBody<Memory>)), security(("bearer" = []), ("api_key" = [])))]
pub async fn list_memories(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    page_json(
        content(&state)?
            .list_memories(&ctx, None, q.page()?)
            .await?,
    )
}

#[utoipa::path(post, path = "/v1/memories", tag = "chat", request_body = CreateMemoryBody,
    responses((status = 201, body = Memory),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_memory(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<CreateMemoryBody>,
) -> Result<Response, ApiError> {
    let m = content(&state)?
        .create_memory(
            &ctx,
            Remember {
                key: body.key,
                value: body.value,
                category: body.category,
                source: body.source.unwrap_or(MemorySource::Manual),
                source_id: body.source_id,
            },
        )
        .await?;
    Ok(created(format!("/v1/memories/{}", m.id), &m))
}

#[utoipa::path(get, path = "/v1/memories/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, body = Memory),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_memory(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    json(
        &content(&state)?
            .get_memory(&ctx, MemoryId::from_uuid(id))
            .await?,
    )
}

#[utoipa::path(patch, path = "/v1/memories/{id}", tag = "chat", params(("id" = Uuid, Path)),
    request_body = UpdateMemoryBody,
    responses((status = 200, body = Memory),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, description = "Another of your memories has this key", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update_memory(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateMemoryBody>,
) -> Result<Response, ApiError> {
    let patch = MemoryPatch {
        key: body.key,
        value: body.value,
        category: body.category,
    };
    json(
        &content(&state)?
            .update_memory(&ctx, MemoryId::from_uuid(id), patch)
            .await?,
    )
}

#[utoipa::path(delete, path = "/v1/memories/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 204),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_memory(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    content(&state)?
        .delete_memory(&ctx, MemoryId::from_uuid(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
