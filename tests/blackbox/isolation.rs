//! Tenant isolation through the API: a user of tenant B acting on tenant A's
//! resources gets 404 on every tenant-scoped endpoint, and A's data is unchanged.

use serde_json::{Value, json};
use trellis_tests::{TestApp, TestTenant, problem, spawn_app};

/// Tenant A with a user, an API key and a guest; tenant B's admin as the attacker.
struct Scene {
    app: TestApp,
    a: TestTenant,
    b: TestTenant,
    a_user: Value,
    a_key: Value,
    a_guest: Value,
}

async fn scene() -> Scene {
    let app = spawn_app().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let home = app.tenant().await;
    let a_user = app
        .create_user(&a.admin_token, "victim@example.com", "sales")
        .await;
    let res = app
        .post_json(
            "/v1/api-keys",
            Some(&a.admin_token),
            &json!({"name": "a-key"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let a_key: Value = res.json().await.unwrap();
    app.create_user(&home.admin_token, "visitor@example.com", "user")
        .await;
    let res = app
        .post_json(
            "/v1/guests",
            Some(&a.admin_token),
            &json!({"home_tenant": home.slug, "email": "visitor@example.com", "role": "client"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let a_guest: Value = res.json().await.unwrap();
    Scene {
        app,
        a,
        b,
        a_user,
        a_key,
        a_guest,
    }
}

#[tokio::test]
async fn a_member_of_another_tenant_gets_404_on_every_user_endpoint_and_changes_nothing() {
    let s = scene().await;
    let id = s.a_user["id"].as_str().unwrap();
    let path = format!("/v1/users/{id}");
    let attacker = Some(s.b.admin_token.as_str());

    problem(s.app.get(&path, attacker).await, 404).await;
    let patch = json!({"name": "Owned", "role": "tenant_admin", "active": false});
    problem(s.app.patch_json(&path, attacker, &patch).await, 404).await;
    let reset = json!({"new_password": "attacker-password"});
    problem(
        s.app
            .post_json(&format!("{path}/password"), attacker, &reset)
            .await,
        404,
    )
    .await;
    problem(s.app.delete(&path, attacker).await, 404).await;

    let res = s.app.get(&path, Some(&s.a.admin_token)).await;
    assert_eq!(res.status(), 200);
    let after: Value = res.json().await.unwrap();
    assert_eq!(after, s.a_user, "tenant A's user is unchanged");
    s.app
        .login(&s.a.slug, "victim@example.com", "user-password-1")
        .await;
}

#[tokio::test]
async fn another_tenants_user_list_never_shows_our_users() {
    let s = scene().await;
    let res = s
        .app
        .get("/v1/users?limit=100", Some(&s.b.admin_token))
        .await;
    let list: Value = res.json().await.unwrap();
    let emails: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec![s.b.admin_email.as_str()]);
}

#[tokio::test]
async fn a_member_of_another_tenant_cannot_see_or_revoke_our_api_keys() {
    let s = scene().await;
    let id = s.a_key["id"].as_str().unwrap();
    problem(
        s.app
            .delete(&format!("/v1/api-keys/{id}"), Some(&s.b.admin_token))
            .await,
        404,
    )
    .await;
    let list: Value = s
        .app
        .get("/v1/api-keys", Some(&s.b.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());
    // A's key still works.
    let key = s.a_key["key"].as_str().unwrap();
    let res = s.app.get("/v1/users", Some(key)).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_member_of_another_tenant_cannot_see_or_remove_our_guests() {
    let s = scene().await;
    let id = s.a_guest["id"].as_str().unwrap();
    problem(
        s.app
            .delete(&format!("/v1/guests/{id}"), Some(&s.b.admin_token))
            .await,
        404,
    )
    .await;
    let list: Value = s
        .app
        .get("/v1/guests", Some(&s.b.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());
    let ours: Value = s
        .app
        .get("/v1/guests", Some(&s.a.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ours["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn tenant_settings_are_always_the_callers_own() {
    let s = scene().await;
    let b_settings: Value = s
        .app
        .get("/v1/tenant", Some(&s.b.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(b_settings["id"], s.b.id.as_str());
    let res = s
        .app
        .patch_json(
            "/v1/tenant",
            Some(&s.b.admin_token),
            &json!({"name": "B renamed"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let a_settings: Value = s
        .app
        .get("/v1/tenant", Some(&s.a.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(a_settings["name"], "B renamed");
}

#[tokio::test]
async fn an_api_key_from_one_tenant_cannot_reach_another() {
    let s = scene().await;
    // Forge a key that names tenant B but carries tenant A's prefix and secret.
    let key = s.a_key["key"].as_str().unwrap();
    let parts: Vec<&str> = key.splitn(4, '_').collect();
    let b_simple = s.b.id.replace('-', "");
    let forged = format!("{}_{}_{}_{}", parts[0], b_simple, parts[2], parts[3]);
    problem(s.app.get("/v1/users", Some(&forged)).await, 401).await;
}

#[tokio::test]
async fn a_tenant_user_cannot_use_platform_endpoints() {
    let s = scene().await;
    problem(s.app.get("/v1/tenants", Some(&s.a.admin_token)).await, 403).await;
    problem(
        s.app
            .get(&format!("/v1/tenants/{}", s.b.id), Some(&s.a.admin_token))
            .await,
        403,
    )
    .await;
}
