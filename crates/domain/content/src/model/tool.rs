//! Tools agents can call (seed 004): instances of a base tool type (`rag`, `http`,
//! ...) with their own configuration and a JSON Schema for the input the model must
//! produce. Schemas are checked to be object schemas whose `required` names exist, so
//! providers that validate function schemas never reject one at answer time.

use crate::ToolId;
use crate::model::text;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use trellis_kernel::{HttpUrl, InvalidValue, Role, TenantId, Timestamp};

/// Serialised schemas and configurations are at most this large.
pub const MAX_TOOL_JSON_BYTES: usize = 64 * 1024;

/// The base tool types (seed 004 `base_tools`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ToolKind {
    /// Search knowledge collections.
    Rag,
    /// Call an HTTP endpoint.
    Http,
    /// Search the web.
    WebSearch,
    /// A function the client application executes.
    Function,
}

impl ToolKind {
    pub const ALL: [ToolKind; 4] = [
        ToolKind::Rag,
        ToolKind::Http,
        ToolKind::WebSearch,
        ToolKind::Function,
    ];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Rag => "rag",
            ToolKind::Http => "http",
            ToolKind::WebSearch => "web_search",
            ToolKind::Function => "function",
        }
    }

    /// # Errors
    /// For an unknown tool type.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        ToolKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| InvalidValue::new("kind", "must be rag, http, web_search or function"))
    }

    /// Checks a configuration for this kind: always a JSON object; an `http` tool
    /// needs an `http(s)` `url`.
    ///
    /// # Errors
    /// When the configuration does not fit the kind.
    pub fn validate_config(self, config: &Value) -> Result<(), InvalidValue> {
        let Value::Object(map) = config else {
            return Err(InvalidValue::new("config", "must be a JSON object"));
        };
        if serde_json::to_vec(config).map_or(usize::MAX, |v| v.len()) > MAX_TOOL_JSON_BYTES {
            return Err(InvalidValue::new(
                "config",
                format!("must be at most {MAX_TOOL_JSON_BYTES} bytes"),
            ));
        }
        if holds_nul(config) {
            return Err(InvalidValue::new("config", NUL_REASON));
        }
        if self == ToolKind::Http {
            let url = map
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| InvalidValue::new("config", "an http tool needs a `url` string"))?;
            HttpUrl::parse(url).map_err(|e| InvalidValue::new("config", e.reason))?;
        }
        Ok(())
    }
}

/// Why JSON holding U+0000 is refused: Postgres's `jsonb` (and `text`) cannot store
/// it, so it could never be saved.
const NUL_REASON: &str = "must not contain the NUL character (\\u0000)";

/// Whether any key or string anywhere in `v` holds U+0000.
fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// A JSON Schema describing a tool's input: an object schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct InputSchema(Value);

impl TryFrom<Value> for InputSchema {
    type Error = InvalidValue;
    fn try_from(v: Value) -> Result<Self, Self::Error> {
        InputSchema::parse(v)
    }
}

impl From<InputSchema> for Value {
    fn from(s: InputSchema) -> Self {
        s.0
    }
}

impl Default for InputSchema {
    /// An object with no properties: a tool that takes no input.
    fn default() -> Self {
        InputSchema(serde_json::json!({"type": "object", "properties": {}}))
    }
}

impl InputSchema {
    /// # Errors
    /// When the value is not an object schema (`"type": "object"`), `properties` is
    /// not an object of schemas, `required` names something that is not a property,
    /// or the schema is larger than [`MAX_TOOL_JSON_BYTES`].
    pub fn parse(v: Value) -> Result<Self, InvalidValue> {
        let bad = |reason: &str| InvalidValue::new("input_schema", reason);
        let Value::Object(map) = &v else {
            return Err(bad("must be a JSON object"));
        };
        if holds_nul(&v) {
            return Err(bad(NUL_REASON));
        }
        if map.get("type").and_then(Value::as_str) != Some("object") {
            return Err(bad("must have \"type\": \"object\""));
        }
        let properties = match map.get("properties") {
            None => None,
            Some(Value::Object(p)) => {
                if p.values().any(|s| !s.is_object()) {
                    return Err(bad("every property must be a schema object"));
                }
                Some(p)
            }
            Some(_) => return Err(bad("`properties` must be an object")),
        };
        match map.get("required") {
            None => {}
            Some(Value::Array(names)) => {
                for n in names {
                    let Some(name) = n.as_str() else {
                        return Err(bad("`required` must list property names"));
                    };
                    if !properties.is_some_and(|p| p.contains_key(name)) {
                        return Err(InvalidValue::new(
                            "input_schema",
                            format!("required property `{name}` is not defined"),
                        ));
                    }
                }
            }
            Some(_) => return Err(bad("`required` must be an array")),
        }
        if serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len()) > MAX_TOOL_JSON_BYTES {
            return Err(bad("is too large"));
        }
        Ok(InputSchema(v))
    }

    #[must_use]
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

/// A configured tool of a tenant (seed 004 `tool_configs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolConfig {
    pub id: ToolId,
    pub tenant_id: TenantId,
    pub kind: ToolKind,
    /// Unique in the tenant.
    pub name: String,
    pub description: Option<String>,
    /// Kind-specific settings (a JSON object). Secrets do not belong here.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Value,
    /// A JSON Schema of type `object`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub input_schema: InputSchema,
    /// Roles whose agents may call it; empty means any (seed 004
    /// `tenant_tool_permissions`, narrowed to roles inside the tenant).
    pub allowed_roles: Vec<Role>,
    pub enabled: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    #[serde(serialize_with = "trellis_kernel::timestamp::rfc3339")]
    pub updated_at: Timestamp,
}

/// A tool to insert.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTool {
    pub id: ToolId,
    pub kind: ToolKind,
    pub name: String,
    pub description: Option<String>,
    pub config: Value,
    pub input_schema: InputSchema,
    pub allowed_roles: Vec<Role>,
    pub enabled: bool,
}

impl NewTool {
    /// The tool with text trimmed, roles deduplicated and the configuration checked.
    ///
    /// # Errors
    /// When a field breaks its bounds or the configuration does not fit the kind.
    pub fn normalized(self) -> Result<Self, InvalidValue> {
        self.kind.validate_config(&self.config)?;
        let mut roles = Vec::with_capacity(self.allowed_roles.len());
        for r in self.allowed_roles {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
        Ok(Self {
            id: self.id,
            kind: self.kind,
            name: text::line("name", &self.name, 100)?,
            description: text::opt_body("description", self.description.as_deref(), 2000)?,
            config: self.config,
            input_schema: self.input_schema,
            allowed_roles: roles,
            enabled: self.enabled,
        })
    }
}

/// A partial change; `None` keeps a field. The kind never changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub config: Option<Value>,
    pub input_schema: Option<InputSchema>,
    pub allowed_roles: Option<Vec<Role>>,
    pub enabled: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nul_character_anywhere_in_a_config_or_input_schema_is_refused() {
        for config in [
            json!({"a\u{0}b": 1}),
            json!({"nested": {"list": ["ok", "x\u{0}"]}}),
        ] {
            let e = ToolKind::WebSearch.validate_config(&config).unwrap_err();
            assert_eq!(e.field, "config");
        }
        assert!(
            ToolKind::WebSearch
                .validate_config(&json!({"ok": ["fine"]}))
                .is_ok()
        );
        let e = InputSchema::parse(json!({
            "type": "object",
            "properties": {"q\u{0}": {"type": "string"}}
        }))
        .unwrap_err();
        assert_eq!(e.field, "input_schema");
    }

    #[test]
    fn an_object_schema_with_defined_required_properties_is_accepted() {
        let s = InputSchema::parse(json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }));
        assert!(s.is_ok());
    }

    #[test]
    fn a_schema_that_is_not_an_object_schema_is_refused() {
        for v in [
            json!("string"),
            json!({"type": "string"}),
            json!({"type": "object", "properties": []}),
            json!({"type": "object", "properties": {"a": 1}}),
            json!({"type": "object", "required": ["ghost"]}),
            json!({"type": "object", "properties": {}, "required": "a"}),
        ] {
            assert!(InputSchema::parse(v.clone()).is_err(), "{v} was accepted");
        }
    }

    #[test]
    fn a_schema_cannot_be_smuggled_in_through_deserialisation() {
        let bad: Result<InputSchema, _> = serde_json::from_str(r#"{"type": "array"}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn an_http_tool_needs_a_web_url() {
        assert!(ToolKind::Http.validate_config(&json!({})).is_err());
        assert!(
            ToolKind::Http
                .validate_config(&json!({"url": "file:///etc/passwd"}))
                .is_err()
        );
        assert!(
            ToolKind::Http
                .validate_config(&json!({"url": "https://api.example.com/v1"}))
                .is_ok()
        );
        assert!(ToolKind::Rag.validate_config(&json!([])).is_err());
    }

    #[test]
    fn tool_kinds_round_trip_through_their_names() {
        for k in ToolKind::ALL {
            assert_eq!(ToolKind::parse(k.as_str()).unwrap(), k);
        }
    }
}
