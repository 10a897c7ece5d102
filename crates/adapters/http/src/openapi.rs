//! The OpenAPI 3.1 document, assembled from the `#[utoipa::path]` annotations on the
//! handlers and the `ToSchema` derives on the request and response types. Served at
//! `/openapi.json` and browsable at `/docs`.

use crate::problem::{FieldError, Problem};
use crate::routes::{
    api_keys, auth, content, files, guests, openai, ops, platform, quotas, rag, tenancy, tools,
    users,
};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

/// Adds the two ways to authenticate: a bearer token (JWT or API key) and the
/// `X-API-Key` header.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from /v1/auth/login, or an API key (trl_…)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// Documents the problems any operation may answer with, by what it takes, where its
/// annotation names only its own: a body may be malformed (400), too large (413), of
/// another type (415) or invalid (422); a path id may be malformed (400) or name nothing
/// (404); query parameters may be malformed or out of range (400) or invalid (422); an authenticated
/// operation may meet a missing or bad credential (401) or a role without the
/// permission or a suspended tenant (403). Clients generated from the document then
/// know every status they must handle, and the black-box spec test holds the API to it.
struct CommonProblems;

/// `(status, description)` of the problems [`CommonProblems`] adds.
const BAD_REQUEST: (&str, &str) = (
    "400",
    "The request cannot be read: malformed JSON, an unknown or mistyped field, or an \
     unparsable id or query parameter (`malformed-body`, `bad-request`).",
);
const UNAUTHENTICATED: (&str, &str) = (
    "401",
    "No valid access token or API key (`unauthenticated`).",
);
const FORBIDDEN: (&str, &str) = (
    "403",
    "The caller's role lacks the permission, or the tenant is suspended (`forbidden`, \
     `tenant-suspended`).",
);
const NOT_FOUND: (&str, &str) = (
    "404",
    "Nothing with this id in the caller's tenant (`not-found`).",
);
const TOO_LARGE: (&str, &str) = (
    "413",
    "The body is larger than allowed (`payload-too-large`).",
);
const MEDIA_TYPE: (&str, &str) = (
    "415",
    "The body is not of the documented content type (`unsupported-media-type`).",
);
const INVALID: (&str, &str) = (
    "422",
    "A field failed validation (`validation`); `errors` names each.",
);

impl CommonProblems {
    fn add_to(operation: &mut Operation, in_path: bool) {
        let params = operation.parameters.as_deref().unwrap_or_default();
        let has_query = params
            .iter()
            .any(|p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)));
        let mut wanted = Vec::new();
        if operation.request_body.is_some() {
            wanted.extend([BAD_REQUEST, TOO_LARGE, MEDIA_TYPE, INVALID]);
        }
        if in_path {
            wanted.extend([BAD_REQUEST, NOT_FOUND]);
        }
        if has_query {
            wanted.extend([BAD_REQUEST, INVALID]);
        }
        if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
            wanted.extend([UNAUTHENTICATED, FORBIDDEN]);
        }
        for (status, description) in wanted {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| {
                    RefOr::T(
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                "application/problem+json",
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("Problem")))
                                    .build(),
                            )
                            .build(),
                    )
                });
        }
    }
}

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in &mut openapi.paths.paths {
            let in_path = path.contains('{');
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                Self::add_to(operation, in_path);
            }
        }
    }
}

/// Links what names a resource to the operations on it, so a client generator or a
/// fuzzer can follow a response to what it names, and the document says which id goes
/// where:
/// - an operation that creates one (a `POST` answering 201 with it) to the operations
///   on it, with the `id` it answers;
/// - a list (a `GET` of a collection answering `{"items": [...]}`) to the operations on
///   its first item.
///
/// The operations on a resource are those at its path (`…/{id}`) and below it with no
/// other path parameter. A resource made below another one (a conversation's file, a
/// collection's document) lives where a `GET …/{id}` answers with the same schema
/// (`/v1/files/{id}`, `/v1/rag/documents/{id}`).
struct ResourceLinks;

impl ResourceLinks {
    /// The operations of `item`, with their method names.
    fn operations(
        item: &utoipa::openapi::PathItem,
    ) -> impl Iterator<Item = (&'static str, &Operation)> {
        [
            ("get", &item.get),
            ("put", &item.put),
            ("post", &item.post),
            ("delete", &item.delete),
            ("patch", &item.patch),
        ]
        .into_iter()
        .filter_map(|(method, operation)| operation.as_ref().map(|o| (method, o)))
    }

    /// The component schema `status` answers `operation` with, as a `$ref`; for a
    /// schema that extends another (`allOf` starting with a `$ref`), that other one.
    fn answered(
        openapi: &utoipa::openapi::OpenApi,
        operation: &Operation,
        status: &str,
    ) -> Option<String> {
        let RefOr::T(response) = operation.responses.responses.get(status)? else {
            return None;
        };
        let RefOr::T(content) = response.content.get("application/json")? else {
            return None;
        };
        let RefOr::Ref(named) = content.schema.as_ref()? else {
            return None;
        };
        let name = named.ref_location.rsplit('/').next()?;
        let components = openapi.components.as_ref()?;
        match components.schemas.get(name) {
            Some(RefOr::T(utoipa::openapi::schema::Schema::AllOf(all))) => {
                match all.items.first() {
                    Some(RefOr::Ref(base)) => Some(base.ref_location.clone()),
                    _ => Some(named.ref_location.clone()),
                }
            }
            _ => Some(named.ref_location.clone()),
        }
    }

    /// Whether `schema` (a `$ref`) is a page of a list: an object with `items`.
    fn is_page(openapi: &utoipa::openapi::OpenApi, schema: &str) -> bool {
        let name = schema.rsplit('/').next().unwrap_or_default();
        openapi
            .components
            .as_ref()
            .and_then(|c| c.schemas.get(name))
            .is_some_and(|s| {
                matches!(s, RefOr::T(utoipa::openapi::schema::Schema::Object(o))
                    if o.properties.contains_key("items"))
            })
    }

    /// Links from one response to every operation on the resource at `home`, whose id
    /// is at `id` (a runtime expression) in that response.
    fn to_resource(
        openapi: &utoipa::openapi::OpenApi,
        home: &str,
        id: &str,
    ) -> Vec<(String, utoipa::openapi::link::Link)> {
        let mut links = Vec::new();
        for (target, target_item) in &openapi.paths.paths {
            let below = target == home || target.starts_with(&format!("{home}/"));
            if !below || target.matches('{').count() != 1 {
                continue;
            }
            for (method, operation) in Self::operations(target_item) {
                let name = operation
                    .operation_id
                    .clone()
                    .unwrap_or_else(|| format!("{method} {target}"));
                // A JSON pointer to the operation: operation ids are not unique across
                // the document (two handlers are called `upload`).
                let pointer = format!(
                    "#/paths/{}/{method}",
                    target.replace('~', "~0").replace('/', "~1")
                );
                let link = utoipa::openapi::link::LinkBuilder::new()
                    .operation_ref(pointer)
                    .parameter("id", id)
                    .build();
                links.push((name, link));
            }
        }
        links
    }
}

impl Modify for ResourceLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Where each schema's resource is read: the `GET …/{id}` answering with it.
        let homes: std::collections::HashMap<String, String> = openapi
            .paths
            .paths
            .iter()
            .filter(|(path, _)| path.ends_with("/{id}") && path.matches('{').count() == 1)
            .filter_map(|(path, item)| {
                let schema = Self::answered(openapi, item.get.as_ref()?, "200")?;
                Some((schema, path.clone()))
            })
            .collect();
        // (path, method, status, link name, link)
        let mut links = Vec::new();
        for (path, item) in &openapi.paths.paths {
            if let Some(post) = &item.post
                && post.responses.responses.contains_key("201")
            {
                let home = if path.contains('{') {
                    Self::answered(openapi, post, "201").and_then(|s| homes.get(&s).cloned())
                } else {
                    Some(format!("{path}/{{id}}"))
                };
                for (name, link) in home
                    .map(|home| Self::to_resource(openapi, &home, "$response.body#/id"))
                    .unwrap_or_default()
                {
                    links.push((path.clone(), "post", "201", name, link));
                }
            }
            if let Some(get) = &item.get
                && !path.contains('{')
                && Self::answered(openapi, get, "200").is_some_and(|s| Self::is_page(openapi, &s))
            {
                let home = format!("{path}/{{id}}");
                for (name, link) in Self::to_resource(openapi, &home, "$response.body#/items/0/id")
                {
                    links.push((path.clone(), "get", "200", name, link));
                }
            }
        }
        for (path, method, status, name, link) in links {
            let item = openapi.paths.paths.get_mut(&path);
            let operation = item.and_then(|item| match method {
                "post" => item.post.as_mut(),
                _ => item.get.as_mut(),
            });
            if let Some(RefOr::T(response)) =
                operation.and_then(|o| o.responses.responses.get_mut(status))
            {
                response.links.insert(name, RefOr::T(link));
            }
        }
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Trellis API",
        description = "Multi-tenant platform core. Errors are RFC 9457 problem documents \
                       (application/problem+json) whose `type` URI is stable.",
    ),
    paths(
        auth::login,
        auth::refresh,
        auth::logout,
        auth::me,
        auth::change_own_password,
        platform::list_tenants,
        platform::create_tenant,
        platform::get_tenant,
        platform::set_status,
        platform::delete_tenant,
        tenancy::get_settings,
        tenancy::update_settings,
        tenancy::get_widget,
        tenancy::put_widget,
        tenancy::get_llm,
        tenancy::put_llm,
        users::list_users,
        users::create_user,
        users::get_user,
        users::update_user,
        users::delete_user,
        users::reset_password,
        guests::list_guests,
        guests::add_guest,
        guests::remove_guest,
        api_keys::list_api_keys,
        api_keys::create_api_key,
        api_keys::revoke_api_key,
        rag::list_collections,
        rag::create_collection,
        rag::get_collection,
        rag::update_collection,
        rag::delete_collection,
        rag::reindex_collection,
        rag::change_model,
        rag::get_model_change,
        rag::cancel_model_change,
        rag::list_embedding_models,
        rag::upload,
        rag::list_documents,
        rag::get_document,
        rag::delete_document,
        rag::reindex_document,
        rag::document_chunks,
        rag::search,
        content::list_agents,
        content::create_agent,
        content::get_agent,
        content::update_agent,
        content::delete_agent,
        content::agent_versions,
        content::list_conversations,
        content::create_conversation,
        content::search_conversations,
        content::get_conversation,
        content::update_conversation,
        content::delete_conversation,
        content::fork_conversation,
        content::message_tree,
        content::send_message,
        content::edit_message,
        content::regenerate,
        content::list_memories,
        content::create_memory,
        content::get_memory,
        content::update_memory,
        content::delete_memory,
        tools::list_tool_kinds,
        tools::list_tools,
        tools::create_tool,
        tools::get_tool,
        tools::update_tool,
        tools::delete_tool,
        quotas::get_quota,
        quotas::put_quota,
        quotas::usage,
        files::upload,
        files::list_files,
        files::get_file,
        files::download,
        files::delete_file,
        files::send_to_collection,
        openai::list_models,
        openai::chat_completions,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(Problem, FieldError)),
    modifiers(&SecuritySchemes, &CommonProblems, &ResourceLinks),
    tags(
        (name = "auth", description = "Sessions and the signed-in user"),
        (name = "chat", description = "Agents, conversations with streamed answers, and memories"),
        (name = "openai", description = "OpenAI-compatible chat completions with the tenant's agents as models"),
        (name = "rag", description = "Knowledge collections, documents and cited search"),
        (name = "platform", description = "Tenants, for platform superadmins"),
        (name = "tenant", description = "The caller's own tenant"),
        (name = "users", description = "Users of the caller's tenant"),
        (name = "guests", description = "Users of other tenants admitted as guests"),
        (name = "api-keys", description = "API keys of the caller's tenant"),
        (name = "ops", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The document, built once per call (cheap; the router builds it once at start-up).
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn creating_or_listing_a_resource_links_to_the_operations_on_it_and_every_link_resolves() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let links = &doc["paths"]["/v1/conversations"]["post"]["responses"]["201"]["links"];
        let tree = &links["message_tree"];
        assert_eq!(
            tree["operationRef"],
            "#/paths/~1v1~1conversations~1{id}~1messages/get"
        );
        assert_eq!(tree["parameters"]["id"], "$response.body#/id");
        // Operations needing a second id (a message's) are not linked from the first.
        assert!(links.get("edit_message").is_none());
        assert!(
            doc["paths"]["/v1/agents"]["post"]["responses"]["201"]["links"]["agent_versions"]
                .is_object()
        );
        assert!(
            doc["paths"]["/v1/tenants"]["post"]["responses"]["201"]["links"]["put_quota"]
                .is_object()
        );
        // Made below another resource, read at its own path: a conversation's file.
        let file = &doc["paths"]["/v1/conversations/{id}/files"]["post"]["responses"]["201"]["links"]
            ["get_file"];
        assert_eq!(file["operationRef"], "#/paths/~1v1~1files~1{id}/get");
        assert_eq!(file["parameters"]["id"], "$response.body#/id");
        // An upload answers a document (its schema extends the document's).
        assert!(
            doc["paths"]["/v1/rag/collections/{id}/documents"]["post"]["responses"]["201"]["links"]
                ["document_chunks"]
                .is_object()
        );
        // A list links to the operations on its first item.
        let first = &doc["paths"]["/v1/rag/documents"]["get"]["responses"]["200"]["links"]["reindex_document"];
        assert_eq!(
            first["operationRef"],
            "#/paths/~1v1~1rag~1documents~1{id}~1reindex/post"
        );
        assert_eq!(first["parameters"]["id"], "$response.body#/items/0/id");
        // Not a list of items: the model catalogue.
        assert!(
            doc["paths"]["/v1/models"]["get"]["responses"]["200"]
                .get("links")
                .is_none()
        );

        let mut count = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let Some(responses) = operation.get("responses") else {
                    continue;
                };
                for response in responses.as_object().unwrap().values() {
                    let Some(links) = response.get("links") else {
                        continue;
                    };
                    for link in links.as_object().unwrap().values() {
                        let pointer = link["operationRef"].as_str().unwrap();
                        let target = doc.pointer(pointer.trim_start_matches('#'));
                        assert!(
                            target.is_some_and(|t| t.get("responses").is_some()),
                            "{pointer} is no operation"
                        );
                        count += 1;
                    }
                }
            }
        }
        assert!(count >= 80, "only {count} links");
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_area() {
        let json = serde_json::to_value(openapi()).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = json["paths"].as_object().unwrap();
        for p in [
            "/v1/auth/login",
            "/v1/tenants/{id}",
            "/v1/tenant/llm",
            "/v1/users",
            "/v1/guests/{id}",
            "/v1/api-keys",
            "/v1/chat/completions",
            "/v1/models",
            "/healthz",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    }

    /// Every `$ref` string anywhere under `v`.
    fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_json_success_body_has_a_schema_with_fields_and_every_reference_resolves() {
        let json = serde_json::to_value(openapi()).unwrap();
        let schemas = json["components"]["schemas"].as_object().unwrap();
        let mut untyped = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(responses) = op["responses"].as_object() else {
                    continue;
                };
                for (status, response) in responses {
                    let schema = &response["content"]["application/json"]["schema"];
                    if !status.starts_with('2') || schema.is_null() {
                        continue;
                    }
                    let resolved = match schema["$ref"].as_str() {
                        Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
                        None => schema,
                    };
                    let typed = ["properties", "items", "allOf", "oneOf"]
                        .iter()
                        .any(|k| !resolved[*k].is_null());
                    if !typed {
                        untyped.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        assert!(
            untyped.is_empty(),
            "success bodies without fields: {untyped:?}"
        );

        let mut all = Vec::new();
        refs(&json, &mut all);
        assert!(all.len() > 100, "only {} references", all.len());
        for r in all {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(schemas.contains_key(name), "{r} points nowhere");
        }
    }
}
