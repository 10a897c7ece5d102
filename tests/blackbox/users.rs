//! Managing users, with the validation and paging a client relies on.

use serde_json::{Value, json};
use trellis_tests::{problem, spawn_app};

#[tokio::test]
async fn an_admin_creates_a_user_who_can_then_log_in() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let user = app
        .create_user(&t.admin_token, "Ann@Example.com", "sales")
        .await;
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!(user["role"], "sales");
    let token = app
        .login(&t.slug, "ann@example.com", "user-password-1")
        .await;
    let me: Value = app
        .get("/v1/auth/me", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "sales");
}

#[tokio::test]
async fn a_duplicate_email_in_a_tenant_gets_409() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    app.create_user(&t.admin_token, "dup@example.com", "user")
        .await;
    let res = app
        .post_json(
            "/v1/users",
            Some(&t.admin_token),
            &json!({"email": "DUP@example.com", "name": "Again", "role": "user"}),
        )
        .await;
    let body = problem(res, 409).await;
    assert_eq!(body["type"], "https://trellis.dev/problems/conflict");
}

#[tokio::test]
async fn taking_another_users_username_gets_409_and_changes_nothing() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let first = app
        .create_user(&t.admin_token, "first@example.com", "user")
        .await;
    let second = app
        .create_user(&t.admin_token, "second@example.com", "user")
        .await;
    let tok = Some(t.admin_token.as_str());
    let path = |u: &Value| format!("/v1/users/{}", u["id"].as_str().unwrap());
    let res = app
        .patch_json(&path(&first), tok, &json!({"username": "taken.name"}))
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .patch_json(
            &path(&second),
            tok,
            &json!({"username": "taken.name", "name": "Renamed"}),
        )
        .await;
    let body = problem(res, 409).await;
    assert_eq!(body["type"], "https://trellis.dev/problems/conflict");
    let after: Value = app.get(&path(&second), tok).await.json().await.unwrap();
    assert_eq!(after["username"], Value::Null);
    assert_eq!(after["name"], second["name"]);
}

#[tokio::test]
async fn listing_users_pages_with_a_cursor_without_repeats() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    for i in 0..4 {
        app.create_user(&t.admin_token, &format!("u{i}@example.com"), "user")
            .await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/users?limit=2".to_owned();
    loop {
        let page: Value = app
            .get(&path, Some(&t.admin_token))
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/users?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], t.admin_email);
    let filtered: Value = app
        .get("/v1/users?role=tenant_admin", Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_problem_never_a_500() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let tok = Some(t.admin_token.as_str());
    let malformed = app
        .http
        .post(app.url("/v1/users"))
        .bearer_auth(&t.admin_token)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(malformed, 400).await["type"],
        "https://trellis.dev/problems/malformed-body"
    );
    let unknown = json!({"email": "x@example.com", "name": "X", "role": "user", "is_admin": true});
    problem(app.post_json("/v1/users", tok, &unknown).await, 400).await;
    let wrong_type = json!({"email": 42, "name": "X", "role": "user"});
    problem(app.post_json("/v1/users", tok, &wrong_type).await, 400).await;
    let bad_email = json!({"email": "not-an-email", "name": "X", "role": "user"});
    let body = problem(app.post_json("/v1/users", tok, &bad_email).await, 422).await;
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "email")
    );
    let bad_role = json!({"email": "r@example.com", "name": "X", "role": "emperor"});
    problem(app.post_json("/v1/users", tok, &bad_role).await, 422).await;
    let short_pw =
        json!({"email": "p@example.com", "name": "X", "role": "user", "password": "short"});
    problem(app.post_json("/v1/users", tok, &short_pw).await, 422).await;
    problem(app.get("/v1/users?limit=101", tok).await, 400).await;
    problem(app.get("/v1/users?cursor=zzz", tok).await, 400).await;
    problem(app.get("/v1/users/not-a-uuid", tok).await, 400).await;
    let huge =
        json!({"email": "h@example.com", "name": "x".repeat(2 * 1024 * 1024), "role": "user"});
    problem(app.post_json("/v1/users", tok, &huge).await, 413).await;
}

#[tokio::test]
async fn a_plain_user_cannot_manage_users_or_promote_themselves() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let u = app
        .create_user(&t.admin_token, "plain@example.com", "user")
        .await;
    let token = app
        .login(&t.slug, "plain@example.com", "user-password-1")
        .await;
    let body = json!({"email": "x@example.com", "name": "X", "role": "user"});
    problem(app.post_json("/v1/users", Some(&token), &body).await, 403).await;
    let path = format!("/v1/users/{}", u["id"].as_str().unwrap());
    problem(
        app.patch_json(&path, Some(&token), &json!({"role": "tenant_admin"}))
            .await,
        403,
    )
    .await;
    // A user may change their own name.
    let res = app
        .patch_json(&path, Some(&token), &json!({"name": "Plain Jane"}))
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_deleted_user_can_no_longer_log_in_or_refresh() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let u = app
        .create_user(&t.admin_token, "leaver@example.com", "user")
        .await;
    let res = app
        .login_raw(&t.slug, "leaver@example.com", "user-password-1")
        .await;
    let session: Value = res.json().await.unwrap();
    let res = app
        .delete(
            &format!("/v1/users/{}", u["id"].as_str().unwrap()),
            Some(&t.admin_token),
        )
        .await;
    assert_eq!(res.status(), 204);
    problem(
        app.login_raw(&t.slug, "leaver@example.com", "user-password-1")
            .await,
        401,
    )
    .await;
    let rt = session["refresh_token"].as_str().unwrap();
    problem(
        app.post_json("/v1/auth/refresh", None, &json!({"refresh_token": rt}))
            .await,
        401,
    )
    .await;
}

#[tokio::test]
async fn a_guest_logs_in_to_the_host_tenant_with_the_membership_role() {
    let app = spawn_app().await;
    let home = app.tenant().await;
    let host = app.tenant().await;
    app.create_user(&home.admin_token, "wanderer@example.com", "user")
        .await;
    let res = app
        .post_json(
            "/v1/guests",
            Some(&host.admin_token),
            &json!({"home_tenant": home.slug, "email": "wanderer@example.com", "role": "content_writer"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let token = app
        .login(&host.slug, "wanderer@example.com", "user-password-1")
        .await;
    let me: Value = app
        .get("/v1/auth/me", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            me["tenant_id"].as_str().unwrap(),
            me["role"].as_str().unwrap()
        ),
        (host.id.as_str(), "content_writer")
    );
    assert_eq!(me["guest"], true);
}
