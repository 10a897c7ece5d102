//! Operational endpoints: health, readiness, metrics, OpenAPI, request ids.

use serde_json::Value;
use trellis_tests::{TestApp, problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness_answer_ok_with_a_live_database() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    assert_eq!(app.get("/readyz", None).await.status(), 200);
}

#[tokio::test]
async fn the_openapi_document_lists_the_api() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/auth/login",
        "/v1/users",
        "/v1/users/{id}",
        "/v1/api-keys",
        "/v1/tenants",
        "/v1/tenant/llm",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert_eq!(app.get("/docs/", None).await.status(), 200);
}

#[tokio::test]
async fn every_response_carries_a_request_id_that_problems_repeat() {
    let app = spawn_app().await;
    let res = app.get("/v1/nowhere", None).await;
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = problem(res, 404).await;
    assert_eq!(body["request_id"], rid.as_str());
    let res = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn metrics_count_requests_in_prometheus_format() {
    let app = spawn_app().await;
    app.get("/healthz", None).await;
    let text = app.get("/metrics", None).await.text().await.unwrap();
    assert!(text.contains("# TYPE"), "{text}");
    assert!(text.contains("/healthz"));
}

/// Seed of the generated requests, fixed so that CI is repeatable and a failure can be
/// replayed (`schemathesis run … --seed 20261204`). `TRELLIS_SPEC_SEED` and
/// `TRELLIS_SPEC_EXAMPLES` (default 10 per operation) explore further by hand;
/// `TRELLIS_SPEC_OUTPUT=<file>` keeps schemathesis's report (`<file>.platform` for
/// the platform run).
const SPEC_FUZZ_SEED: &str = "20261204";

#[tokio::test]
async fn requests_generated_from_the_openapi_document_get_no_server_error_and_only_documented_answers()
 {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let stdout = fuzz_spec(&app, &t.admin_token, &[]).await;
    assert!(stdout.contains("passed"), "{stdout}");
}

/// The platform operations (tenants and their budgets) as a superadmin, in a database
/// of their own: schemathesis follows the links from the tenant list to its items, so
/// in the shared database it would update and delete other tests' tenants.
/// `cargo xtask test` makes that database (it needs a superuser URL) and passes it in
/// `TRELLIS_PLATFORM_FUZZ_DATABASE_URL`; without it the test says so and does nothing.
#[tokio::test]
async fn platform_requests_generated_from_the_openapi_document_get_no_server_error_and_only_documented_answers()
 {
    let Ok(url) = std::env::var("TRELLIS_PLATFORM_FUZZ_DATABASE_URL") else {
        eprintln!(
            "skipped: TRELLIS_PLATFORM_FUZZ_DATABASE_URL is not set (`cargo xtask test` sets it)"
        );
        return;
    };
    let app = spawn_app_with(|c| c.database_url = Some(url)).await;
    let root = app.superadmin().await;
    // A tenant for the item operations to find before any is created.
    app.tenant().await;
    let stdout = fuzz_spec(&app, &root, &["--include-tag", "platform"]).await;
    assert!(stdout.contains("passed"), "{stdout}");
    // The summary's "Selected: 7/87" and "Tested: 7".
    let count = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.trim().split(['/', ' ']).next())
            .and_then(|n| n.trim().parse::<u32>().ok())
    };
    let (selected, tested) = (count("Selected:"), count("Tested:"));
    assert!(
        selected >= Some(7) && tested == selected,
        "every platform operation (tenants and their budgets) is tested: {stdout}"
    );
}

/// Runs schemathesis against the app's OpenAPI document with `token`, and gives its
/// output. It derives requests for every operation (narrowed by `extra`) from the
/// document, valid and not (wrong types, missing fields, odd strings, ids of nothing),
/// runs stateful sequences through the links, and fails (showing the request) on any
/// 5xx, and on any status, body or content type the document does not describe.
async fn fuzz_spec(app: &TestApp, token: &str, extra: &[&str]) -> String {
    let spec = app.url("/openapi.json");
    let auth = format!("Authorization: Bearer {token}");
    let seed = std::env::var("TRELLIS_SPEC_SEED").unwrap_or_else(|_| SPEC_FUZZ_SEED.into());
    let examples = std::env::var("TRELLIS_SPEC_EXAMPLES").unwrap_or_else(|_| "10".into());
    let mut args = vec![
        "-m",
        "schemathesis.cli",
        "run",
        &spec,
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
        "--max-examples",
        &examples,
        "--seed",
        &seed,
        "--request-timeout",
        "20",
        "--header",
        &auth,
    ];
    args.extend_from_slice(extra);
    let (stdout, _) = crate::openai::run_python(&args).await;
    // A passing run's warnings (operations whose generated requests are mostly
    // rejected) say where the document is looser than the API; kept when asked.
    if let Ok(path) = std::env::var("TRELLIS_SPEC_OUTPUT") {
        let path = format!("{path}{}", if extra.is_empty() { "" } else { ".platform" });
        std::fs::write(&path, &stdout).unwrap();
    }
    stdout
}
