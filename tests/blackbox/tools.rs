//! Tools and permissions over HTTP: content managers configure tools from the base
//! types with input schemas; bad kinds, schemas and roles are 422s naming the field;
//! another tenant finds nothing; and an agent's `allowed_roles` hides it (404) from
//! users whose role is not allowed until a PATCH lets them in.

use crate::content::{app, configure_llm, create_agent};
use serde_json::{Value, json};
use trellis_tests::problem;

fn weather_tool() -> Value {
    json!({
        "kind": "http",
        "name": "Weather",
        "description": "Current weather for a city",
        "config": {"url": "https://weather.example.com/v1/now"},
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        },
        "allowed_roles": ["client", "support"]
    })
}

#[tokio::test]
async fn a_content_manager_creates_lists_changes_and_deletes_a_tool() {
    let app = app().await;
    let t = app.tenant().await;

    let kinds: Value = app
        .get("/v1/tool-kinds", Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = kinds["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rag", "http", "web_search", "function"]);

    let res = app
        .post_json("/v1/tools", Some(&t.admin_token), &weather_tool())
        .await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let tool: Value = res.json().await.unwrap();
    let id = tool["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/tools/{id}"));
    assert_eq!(tool["kind"], "http");
    assert_eq!(tool["enabled"], true);
    assert_eq!(tool["allowed_roles"], json!(["client", "support"]));

    let list: Value = app
        .get("/v1/tools", Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    let res = app
        .patch_json(
            &format!("/v1/tools/{id}"),
            Some(&t.admin_token),
            &json!({"name": "Weather now", "allowed_roles": ["client"], "enabled": false,
                    "description": null}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let changed: Value = res.json().await.unwrap();
    assert_eq!(changed["name"], "Weather now");
    assert_eq!(changed["allowed_roles"], json!(["client"]));
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["description"], Value::Null);
    assert_eq!(changed["input_schema"], weather_tool()["input_schema"]);

    let res = app
        .delete(&format!("/v1/tools/{id}"), Some(&t.admin_token))
        .await;
    assert_eq!(res.status(), 204);
    let res = app
        .get(&format!("/v1/tools/{id}"), Some(&t.admin_token))
        .await;
    problem(res, 404).await;
}

#[tokio::test]
async fn a_bad_kind_schema_or_role_is_a_422_naming_the_field() {
    let app = app().await;
    let t = app.tenant().await;
    let mut bad = weather_tool();
    bad["kind"] = json!("telepathy");
    bad["input_schema"] = json!({"type": "object", "required": ["ghost"]});
    bad["allowed_roles"] = json!(["wizard"]);
    let body = problem(
        app.post_json("/v1/tools", Some(&t.admin_token), &bad).await,
        422,
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["kind", "input_schema", "allowed_roles"], "{body}");

    let mut no_url = weather_tool();
    no_url["config"] = json!({});
    let body = problem(
        app.post_json("/v1/tools", Some(&t.admin_token), &no_url)
            .await,
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "config", "{body}");

    let tool: Value = app
        .post_json("/v1/tools", Some(&t.admin_token), &weather_tool())
        .await
        .json()
        .await
        .unwrap();
    let id = tool["id"].as_str().unwrap();
    let res = app
        .patch_json(
            &format!("/v1/tools/{id}"),
            Some(&t.admin_token),
            &json!({"input_schema": {"type": "array"}}),
        )
        .await;
    problem(res, 422).await;
    let res = app
        .post_json("/v1/tools", Some(&t.admin_token), &weather_tool())
        .await;
    problem(res, 409).await;
}

#[tokio::test]
async fn a_nul_character_in_a_tools_json_is_a_422_not_a_500_and_nothing_is_stored() {
    let app = app().await;
    let t = app.tenant().await;
    let mut bad = weather_tool();
    bad["kind"] = json!("web_search");
    bad["config"] = json!({"engine\u{0}": {"list": ["x\u{0}"]}});
    let body = problem(
        app.post_json("/v1/tools", Some(&t.admin_token), &bad).await,
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "config", "{body}");
    let list: Value = app
        .get("/v1/tools", Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn numbers_at_the_ends_of_the_double_range_in_a_tools_json_read_back_as_sent() {
    // Postgres prints a jsonb number in full (1.7976931348623157e308 as 309 digits),
    // which the reader must turn back into the same double, not call out of range.
    let app = app().await;
    let t = app.tenant().await;
    let numbers = json!({
        "max": f64::MAX,
        "near_max": -1.797_693_134_862_315_5e308,
        "smallest": 5e-324,
        "tiny": -1.492_673_728_494_612_9e-300,
        "big_integer": 21_130_516_851_159_i64,
    });
    let mut tool = weather_tool();
    tool["kind"] = json!("function");
    tool["config"] = numbers.clone();
    tool["input_schema"]["properties"]["city"]["maximum"] = json!(f64::MAX);
    let res = app
        .post_json("/v1/tools", Some(&t.admin_token), &tool)
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["config"], numbers);
    let id = created["id"].as_str().unwrap();
    let changed = app
        .patch_json(
            &format!("/v1/tools/{id}"),
            Some(&t.admin_token),
            &json!({"config": {"min": f64::MIN}}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let read: Value = app
        .get(&format!("/v1/tools/{id}"), Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["config"], json!({"min": f64::MIN}));
    assert_eq!(
        read["input_schema"]["properties"]["city"]["maximum"],
        json!(f64::MAX)
    );
}

#[tokio::test]
async fn another_tenant_gets_404_on_a_tool() {
    let app = app().await;
    let t = app.tenant().await;
    let other = app.tenant().await;
    let tool: Value = app
        .post_json("/v1/tools", Some(&t.admin_token), &weather_tool())
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/v1/tools/{}", tool["id"].as_str().unwrap());

    problem(app.get(&path, Some(&other.admin_token)).await, 404).await;
    problem(
        app.patch_json(&path, Some(&other.admin_token), &json!({"name": "Mine"}))
            .await,
        404,
    )
    .await;
    problem(app.delete(&path, Some(&other.admin_token)).await, 404).await;
    let list: Value = app
        .get("/v1/tools", Some(&other.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    // Still there for its owner.
    assert_eq!(app.get(&path, Some(&t.admin_token)).await.status(), 200);
}

#[tokio::test]
async fn a_tool_an_agent_uses_cannot_be_deleted() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let tool: Value = app
        .post_json("/v1/tools", Some(&t.admin_token), &weather_tool())
        .await
        .json()
        .await
        .unwrap();
    let tool_id = tool["id"].as_str().unwrap();
    let agent = create_agent(&app, &t.admin_token).await;
    let res = app
        .patch_json(
            &format!("/v1/agents/{agent}"),
            Some(&t.admin_token),
            &json!({"tools": [tool_id]}),
        )
        .await;
    assert_eq!(res.status(), 200);

    let body = problem(
        app.delete(&format!("/v1/tools/{tool_id}"), Some(&t.admin_token))
            .await,
        409,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("Helper"),
        "{body}"
    );
}

#[tokio::test]
async fn an_agent_is_hidden_from_roles_it_does_not_allow_until_a_patch_allows_them() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let res = app
        .patch_json(
            &format!("/v1/agents/{agent}"),
            Some(&t.admin_token),
            &json!({"allowed_roles": ["support"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let email = format!("client@{}.example.com", t.slug);
    app.create_user(&t.admin_token, &email, "client").await;
    let client = app.login(&t.slug, &email, "user-password-1").await;

    problem(
        app.get(&format!("/v1/agents/{agent}"), Some(&client)).await,
        404,
    )
    .await;
    let list: Value = app
        .get("/v1/agents", Some(&client))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    problem(
        app.post_json(
            "/v1/conversations",
            Some(&client),
            &json!({"agent_id": agent}),
        )
        .await,
        404,
    )
    .await;

    let res = app
        .patch_json(
            &format!("/v1/agents/{agent}"),
            Some(&t.admin_token),
            &json!({"allowed_roles": ["support", "client"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.get(&format!("/v1/agents/{agent}"), Some(&client))
            .await
            .status(),
        200
    );
    let res = app
        .post_json(
            "/v1/conversations",
            Some(&client),
            &json!({"agent_id": agent}),
        )
        .await;
    assert_eq!(res.status(), 201);
}
