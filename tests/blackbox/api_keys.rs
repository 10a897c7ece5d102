//! API keys: created once, scoped, and dead the moment they are revoked.

use serde_json::{Value, json};
use trellis_tests::{TestApp, problem, spawn_app};

/// The first API key `token`'s holder sees listed.
async fn first_listed_key(app: &TestApp, token: &str) -> Value {
    let listed: Value = app
        .get("/v1/api-keys", Some(token))
        .await
        .json()
        .await
        .unwrap();
    listed["items"][0].clone()
}

/// Creates an API key with `body` as the holder of `token`; its secret.
async fn new_key(app: &TestApp, token: &str, body: Value) -> String {
    let res = app.post_json("/v1/api-keys", Some(token), &body).await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn an_api_key_works_until_revoked_and_then_stops_at_once() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let res = app
        .post_json("/v1/api-keys", Some(&t.admin_token), &json!({"name": "ci"}))
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("trl_"));

    let res = app.get("/v1/users", Some(&key)).await;
    assert_eq!(res.status(), 200);
    let via_header = app
        .http
        .get(app.url("/v1/users"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(via_header.status(), 200);

    let listed = &first_listed_key(&app, &t.admin_token).await;
    assert_eq!(listed["prefix"], created["prefix"]);
    assert!(listed.get("key").is_none(), "the secret is never listed");
    assert!(listed["last_used_at"].is_string());

    let id = created["id"].as_str().unwrap();
    let res = app
        .delete(&format!("/v1/api-keys/{id}"), Some(&t.admin_token))
        .await;
    assert!(res.status().is_success());
    problem(app.get("/v1/users", Some(&key)).await, 401).await;
}

#[tokio::test]
async fn an_api_key_can_do_only_what_its_scopes_allow() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let key = new_key(
        &app,
        &t.admin_token,
        json!({"name": "read-only", "scopes": ["users_read"]}),
    )
    .await;
    assert_eq!(app.get("/v1/users", Some(&key)).await.status(), 200);
    let body = json!({"email": "k@example.com", "name": "K", "role": "user"});
    problem(app.post_json("/v1/users", Some(&key), &body).await, 403).await;
}

#[tokio::test]
async fn a_key_cannot_be_scoped_beyond_its_creators_role() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    app.create_user(&t.admin_token, "writer@example.com", "content_writer")
        .await;
    let writer = app
        .login(&t.slug, "writer@example.com", "user-password-1")
        .await;
    let res = app
        .post_json(
            "/v1/api-keys",
            Some(&writer),
            &json!({"name": "x", "scopes": ["users_manage"]}),
        )
        .await;
    problem(res, 403).await;
}

#[tokio::test]
async fn a_deleted_users_api_keys_stop_working() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let u = app
        .create_user(&t.admin_token, "keyholder@example.com", "tenant_admin")
        .await;
    let token = app
        .login(&t.slug, "keyholder@example.com", "user-password-1")
        .await;
    let key = new_key(&app, &token, json!({"name": "mine"})).await;
    assert_eq!(app.get("/v1/users", Some(&key)).await.status(), 200);
    let res = app
        .delete(
            &format!("/v1/users/{}", u["id"].as_str().unwrap()),
            Some(&t.admin_token),
        )
        .await;
    assert_eq!(res.status(), 204);
    problem(app.get("/v1/users", Some(&key)).await, 401).await;
}

#[tokio::test]
async fn an_api_keys_last_use_is_recorded_to_the_minute_not_on_every_request() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let key = new_key(&app, &t.admin_token, json!({"name": "busy"})).await;
    let last_used =
        || async { first_listed_key(&app, &t.admin_token).await["last_used_at"].clone() };
    assert!(last_used().await.is_null(), "never used yet");
    assert_eq!(app.get("/v1/users", Some(&key)).await.status(), 200);
    let first = last_used().await;
    assert!(first.is_string(), "the first use is recorded");
    for _ in 0..3 {
        assert_eq!(app.get("/v1/users", Some(&key)).await.status(), 200);
    }
    assert_eq!(
        last_used().await,
        first,
        "uses within the minute change nothing"
    );
}
