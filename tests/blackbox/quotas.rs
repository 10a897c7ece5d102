//! Token budgets over HTTP: only platform superadmins set a tenant's budgets; a user
//! sees their usage and budgets at `/v1/usage`; and once a budget is used up, sending
//! a message is a 429 problem with `Retry-After` and `resets_at` that never reaches
//! the model.

use crate::content::{
    configure_llm, create_agent, done_message, fake_llm_recording, start_conversation, stream,
};
use serde_json::{Value, json};
use trellis_tests::{problem, spawn_app_with};

#[tokio::test]
async fn a_tenant_over_its_quota_gets_429_with_retry_after_and_the_model_is_not_called() {
    let (url, requests) = fake_llm_recording().await;
    let app = spawn_app_with(|c| c.llm_base_url = Some(url)).await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;
    let root = app.superadmin().await;
    let res = app
        .put_json(
            &format!("/v1/tenants/{}/quota", t.id),
            Some(&root),
            &json!({"tenant": {"limit_tokens": 0, "period": "month"}}),
        )
        .await;
    assert_eq!(res.status(), 200);

    let res = app
        .post_json(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&t.admin_token),
            &json!({"content": "Say hello"}),
        )
        .await;
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = problem(res, 429).await;
    assert!(
        body["type"].as_str().unwrap().ends_with("quota-exceeded"),
        "{body}"
    );
    let resets_at = body["resets_at"].as_str().unwrap();
    let resets_at = chrono::DateTime::parse_from_rfc3339(resets_at).unwrap();
    assert!(resets_at > chrono::Utc::now());
    assert!(requests.lock().unwrap().is_empty(), "the model was called");
    // Nothing was stored either.
    let tree: Value = app
        .get(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&t.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tree["active_path"].as_array().unwrap().len(), 0, "{tree}");
}

#[tokio::test]
async fn a_user_sees_their_usage_and_is_refused_once_their_daily_budget_is_used_up() {
    let (url, requests) = fake_llm_recording().await;
    let app = spawn_app_with(|c| c.llm_base_url = Some(url)).await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let email = format!("client@{}.example.com", t.slug);
    app.create_user(&t.admin_token, &email, "client").await;
    let client = app.login(&t.slug, &email, "user-password-1").await;
    let conv = start_conversation(&app, &client, &agent).await;
    let root = app.superadmin().await;
    let res = app
        .put_json(
            &format!("/v1/tenants/{}/quota", t.id),
            Some(&root),
            &json!({"per_user": {"limit_tokens": 10, "period": "day"}}),
        )
        .await;
    assert_eq!(res.status(), 200);

    let before: Value = app
        .get("/v1/usage", Some(&client))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["user_tokens_today"], 0, "{before}");
    assert_eq!(before["budgets"][0]["remaining_tokens"], 10, "{before}");

    // The fake model reports 14 tokens: the first answer overdraws the budget.
    done_message(
        &stream(
            &app,
            &client,
            &format!("/v1/conversations/{conv}/messages"),
            &json!({"content": "Say hello"}),
        )
        .await,
    );
    let after: Value = app
        .get("/v1/usage", Some(&client))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after["user_tokens_today"], 14, "{after}");
    assert_eq!(after["user_tokens_this_month"], 14, "{after}");
    let budget = &after["budgets"][0];
    assert_eq!(
        (
            &budget["scope"],
            &budget["used_tokens"],
            &budget["remaining_tokens"]
        ),
        (&json!("user"), &json!(14), &json!(0)),
        "{after}"
    );

    let res = app
        .post_json(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&client),
            &json!({"content": "Again"}),
        )
        .await;
    assert!(res.headers().contains_key("retry-after"));
    let body = problem(res, 429).await;
    assert_eq!(body["resets_at"], budget["resets_at"], "{body}");
    assert!(
        body["resets_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
    assert_eq!(requests.lock().unwrap().len(), 1);

    // The admin has a budget of their own and may still chat.
    let admin_usage: Value = app
        .get("/v1/usage", Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admin_usage["budgets"][0]["remaining_tokens"], 10);
}

#[tokio::test]
async fn only_a_superadmin_sets_budgets_and_bad_ones_are_422() {
    let app = spawn_app_with(|_| {}).await;
    let t = app.tenant().await;
    let root = app.superadmin().await;
    let path = format!("/v1/tenants/{}/quota", t.id);

    let unlimited: Value = app.get(&path, Some(&root)).await.json().await.unwrap();
    assert_eq!(
        (&unlimited["tenant"], &unlimited["per_user"]),
        (&Value::Null, &Value::Null)
    );
    let budgets = json!({"tenant": {"limit_tokens": 1000000, "period": "month"},
                         "per_user": {"limit_tokens": 20000, "period": "day"}});
    problem(
        app.put_json(&path, Some(&t.admin_token), &budgets).await,
        403,
    )
    .await;
    problem(app.get(&path, Some(&t.admin_token)).await, 403).await;

    let bad = json!({"tenant": {"limit_tokens": -1, "period": "month"},
                     "per_user": {"limit_tokens": 5, "period": "week"}});
    let body = problem(app.put_json(&path, Some(&root), &bad).await, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["tenant", "per_user"], "{body}");

    let res = app.put_json(&path, Some(&root), &budgets).await;
    assert_eq!(res.status(), 200);
    let set: Value = app.get(&path, Some(&root)).await.json().await.unwrap();
    assert_eq!(set["tenant"], budgets["tenant"], "{set}");
    assert_eq!(set["per_user"], budgets["per_user"], "{set}");

    // An empty body lifts every budget.
    let lifted: Value = app
        .put_json(&path, Some(&root), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lifted["tenant"], Value::Null, "{lifted}");

    let nobody = format!("/v1/tenants/{}/quota", uuid::Uuid::now_v7());
    problem(app.put_json(&nobody, Some(&root), &budgets).await, 404).await;
}
