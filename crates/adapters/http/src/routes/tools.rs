//! `/v1/tools` and `/v1/tool-kinds`: the tenant's tool configurations (instances of a
//! base tool type with their own settings and a JSON Schema for the model's input) and
//! the base types they are made from. `allowed_roles` on a tool (as on an agent) is the
//! per-tenant permission: which of the tenant's roles may use it; empty means all.
//!
//! Kinds, schemas and roles arrive as plain JSON and are checked here field by field,
//! so a bad one is a 422 naming the field rather than a 400 for the whole body.

use super::content::{PageBody, content, json, page_json};
use super::{PageQuery, created};
use crate::auth::TenantAuth;
use crate::extract::{Json, Path, Query};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;
use crate::validate::{Fields, double_option};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::str::FromStr as _;
use trellis_content::{CreateTool, InputSchema, ToolConfig, ToolId, ToolKind, ToolPatch};
use trellis_kernel::{InvalidValue, Role};
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tool-kinds", get(list_tool_kinds))
        .route("/v1/tools", get(list_tools).post(create_tool))
        .route(
            "/v1/tools/{id}",
            get(get_tool).patch(update_tool).delete(delete_tool),
        )
}

/// A base tool type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolKindResponse {
    /// `rag`, `http`, `web_search` or `function`.
    pub kind: &'static str,
    pub description: &'static str,
    /// What `config` must hold for a tool of this kind.
    pub config: &'static str,
}

/// The base tool types.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ToolKindListResponse {
    pub items: Vec<ToolKindResponse>,
}

fn describe(kind: ToolKind) -> ToolKindResponse {
    let (description, config) = match kind {
        ToolKind::Rag => (
            "Searches knowledge collections",
            "a JSON object (any settings)",
        ),
        ToolKind::Http => (
            "Calls an HTTP endpoint",
            "a JSON object with an http(s) `url`",
        ),
        ToolKind::WebSearch => ("Searches the web", "a JSON object (any settings)"),
        ToolKind::Function => (
            "A function the client application executes",
            "a JSON object (any settings)",
        ),
    };
    ToolKindResponse {
        kind: kind.as_str(),
        description,
        config,
    }
}

/// A tool to create.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToolBody {
    /// A base tool type: `rag`, `http`, `web_search` or `function`. Never changes.
    #[schema(value_type = ToolKind)]
    pub kind: String,
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
    /// Kind-specific settings, a JSON object (default `{}`) of at most 64 KiB, with no
    /// NUL characters. An `http` tool's holds its http(s) `url`. No secrets.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// A JSON Schema of `"type": "object"` for the input the model produces
    /// (default: no input); at most 64 KiB.
    #[schema(value_type = Option<InputSchemaDoc>)]
    pub input_schema: Option<Value>,
    /// Roles that may use the tool; empty (default) means every role.
    #[serde(default)]
    #[schema(value_type = Vec<Role>)]
    pub allowed_roles: Vec<String>,
    /// Default `true`.
    pub enabled: Option<bool>,
}

/// What a tool's `input_schema` must be, as documented: a JSON Schema of type
/// `object` (other JSON Schema keywords are kept as sent).
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the document only; bodies arrive as JSON values.
pub struct InputSchemaDoc {
    #[schema(rename = "type")]
    kind: ObjectType,
    /// A schema (a JSON object) for each property.
    #[schema(value_type = HashMap<String, Object>, required = false)]
    properties: Value,
    /// Names of `properties` the model must always give.
    #[schema(required = false)]
    required: Vec<String>,
}

/// The one type a tool's input schema has.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ObjectType {
    Object,
}

/// A partial change of a tool; the kind never changes.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateToolBody {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$"
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(
        value_type = Option<String>,
        max_length = 2000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub description: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    #[schema(value_type = Option<InputSchemaDoc>)]
    pub input_schema: Option<Value>,
    #[schema(value_type = Option<Vec<Role>>)]
    pub allowed_roles: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

fn roles(names: &[String]) -> Result<Vec<Role>, InvalidValue> {
    names
        .iter()
        .map(|n| {
            Role::from_str(n)
                .map_err(|_| InvalidValue::new("allowed_roles", format!("unknown role `{n}`")))
        })
        .collect()
}

impl CreateToolBody {
    /// # Errors
    /// A 422 naming every invalid field.
    pub fn try_into_domain(self) -> Result<CreateTool, ApiError> {
        let mut f = Fields::new();
        let kind = f.check(ToolKind::parse(&self.kind));
        let input_schema = match self.input_schema {
            None => Some(InputSchema::default()),
            Some(v) => f.check(InputSchema::parse(v)),
        };
        let allowed_roles = f.check(roles(&self.allowed_roles));
        f.finish(|| {
            Some(CreateTool {
                kind: kind?,
                name: self.name,
                description: self.description,
                config: self
                    .config
                    .unwrap_or_else(|| Value::Object(Default::default())),
                input_schema: input_schema?,
                allowed_roles: allowed_roles?,
                enabled: self.enabled.unwrap_or(true),
            })
        })
    }
}

impl UpdateToolBody {
    /// # Errors
    /// A 422 naming every invalid field.
    pub fn try_into_domain(self) -> Result<ToolPatch, ApiError> {
        let mut f = Fields::new();
        let input_schema = match self.input_schema {
            None => Some(None),
            Some(v) => f.check(InputSchema::parse(v)).map(Some),
        };
        let allowed_roles = match &self.allowed_roles {
            None => Some(None),
            Some(r) => f.check(roles(r)).map(Some),
        };
        f.finish(|| {
            Some(ToolPatch {
                name: self.name,
                description: self.description,
                config: self.config,
                input_schema: input_schema?,
                allowed_roles: allowed_roles?,
                enabled: self.enabled,
            })
        })
    }
}

/// The base tool types tools are made from.
#[utoipa::path(get, path = "/v1/tool-kinds", tag = "chat",
    responses((status = 200, body = ToolKindListResponse)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_tool_kinds(TenantAuth(_ctx): TenantAuth) -> Json<ToolKindListResponse> {
    Json(ToolKindListResponse {
        items: ToolKind::ALL.into_iter().map(describe).collect(),
    })
}

#[utoipa::path(get, path = "/v1/tools", tag = "chat", params(PageQuery),
    responses((status = 200, body = PageBody<ToolConfig>),
              (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_tools(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    page_json(content(&state)?.list_tools(&ctx, q.page()?).await?)
}

#[utoipa::path(post, path = "/v1/tools", tag = "chat", request_body = CreateToolBody,
    responses((status = 201, body = ToolConfig),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_tool(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Json(body): Json<CreateToolBody>,
) -> Result<Response, ApiError> {
    let cmd = body.try_into_domain()?;
    let tool = content(&state)?.create_tool(&ctx, cmd).await?;
    Ok(created(format!("/v1/tools/{}", tool.id), &tool))
}

#[utoipa::path(get, path = "/v1/tools/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 200, body = ToolConfig),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_tool(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    json(
        &content(&state)?
            .get_tool(&ctx, ToolId::from_uuid(id))
            .await?,
    )
}

#[utoipa::path(patch, path = "/v1/tools/{id}", tag = "chat", params(("id" = Uuid, Path)),
    request_body = UpdateToolBody,
    responses((status = 200, body = ToolConfig),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update_tool(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateToolBody>,
) -> Result<Response, ApiError> {
    let patch = body.try_into_domain()?;
    json(
        &content(&state)?
            .update_tool(&ctx, ToolId::from_uuid(id), patch)
            .await?,
    )
}

/// Deletes a tool no agent uses (409 while one does).
#[utoipa::path(delete, path = "/v1/tools/{id}", tag = "chat", params(("id" = Uuid, Path)),
    responses((status = 204),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_tool(
    State(state): State<AppState>,
    TenantAuth(ctx): TenantAuth,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    content(&state)?
        .delete_tool(&ctx, ToolId::from_uuid(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
