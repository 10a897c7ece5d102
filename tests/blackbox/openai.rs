//! The OpenAI-compatible API over HTTP: `/v1/models` lists a tenant's agents and
//! `/v1/chat/completions` answers with them (whole or streamed) through a fake
//! OpenAI-compatible provider; errors are problem documents with an OpenAI-style
//! `error` member; and the official `openai` Python SDK works against it unchanged.

use crate::content::{Requests, fake_llm_recording};
use serde_json::{Value, json};
use trellis_tests::{TestApp, TestTenant, problem, spawn_app_with};

/// An app whose OpenAI-compatible provider is a fresh fake.
async fn app() -> (TestApp, Requests) {
    let (url, seen) = fake_llm_recording().await;
    (spawn_app_with(|c| c.llm_base_url = Some(url)).await, seen)
}

/// Points the tenant at the fake provider and creates a published agent `name`.
async fn tenant_with_agent(app: &TestApp, name: &str) -> TestTenant {
    let t = app.tenant().await;
    let res = app
        .put_json(
            "/v1/tenant/llm",
            Some(&t.admin_token),
            &json!({"provider": "openai_compatible", "model": "fake-model",
                    "temperature": 0.2, "max_tokens": 256, "api_key": "sk-test-0000"}),
        )
        .await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    create_agent(app, &t, name, true).await;
    t
}

async fn create_agent(app: &TestApp, t: &TestTenant, name: &str, published: bool) {
    let res = app
        .post_json(
            "/v1/agents",
            Some(&t.admin_token),
            &json!({"name": name, "instructions": "Be brief.", "provider": "openai_compatible",
                    "model": "fake-model", "published": published,
                    "parameters": {"temperature": 0.2}}),
        )
        .await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

/// A new API key of the tenant's admin: `(id, key)`.
async fn api_key(app: &TestApp, t: &TestTenant) -> (String, String) {
    let res = app
        .post_json(
            "/v1/api-keys",
            Some(&t.admin_token),
            &json!({"name": "sdk"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "Answer in English."},
        {"role": "user", "content": "Say hello"}]})
}

/// A problem document that also carries the OpenAI-style `error` member.
async fn openai_problem(res: reqwest::Response, status: u16) -> Value {
    let body = problem(res, status).await;
    assert_eq!(body["status"], status, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn an_api_key_gets_a_whole_completion_from_the_agent_named_as_the_model() {
    let (app, seen) = app().await;
    let t = tenant_with_agent(&app, "Helper").await;
    let (_, key) = api_key(&app, &t).await;

    let mut body = ask("Helper");
    body["temperature"] = json!(0.9);
    body["user"] = json!("end-user-7");
    let res = app
        .post_json("/v1/chat/completions", Some(&key), &body)
        .await;
    let status = res.status();
    let c: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["object"], "chat.completion");
    assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"), "{c}");
    assert!(c["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(c["model"], "Helper");
    assert_eq!(c["choices"][0]["index"], 0);
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["message"]["content"], "Hello world");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        c["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14})
    );
    assert_eq!(c["citations"], json!([]));

    // The provider was asked with the agent's model, instructions first, and the
    // request's temperature over the agent's.
    let sent: Value = serde_json::from_str(seen.lock().unwrap().last().unwrap()).unwrap();
    assert_eq!(sent["model"], "fake-model");
    let temperature = sent["temperature"].as_f64().unwrap();
    assert!((temperature - 0.9).abs() < 1e-6, "{sent}");
    let system = sent["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("Be brief."), "{system}");
    assert!(system.contains("Answer in English."), "{system}");
    assert_eq!(sent["messages"][1]["content"], "Say hello");

    // Nothing is stored: the caller has no conversation afterwards.
    let convs: Value = app
        .get("/v1/conversations", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(convs["items"], json!([]));
}

/// The `data:` payloads of an OpenAI-style event stream, `[DONE]` included.
fn data_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn a_streamed_completion_sends_chunks_then_usage_then_done() {
    let (app, _) = app().await;
    let t = tenant_with_agent(&app, "Helper").await;
    let (_, key) = api_key(&app, &t).await;

    let mut body = ask("Helper");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let res = app
        .post_json("/v1/chat/completions", Some(&key), &body)
        .await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let lines = data_lines(&res.text().await.unwrap());

    assert_eq!(
        lines.last().map(String::as_str),
        Some("[DONE]"),
        "{lines:?}"
    );
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    assert!(id.as_str().unwrap().starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        assert_eq!(&c["id"], id, "one id for the whole stream");
        assert_eq!(c["model"], "Helper");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 14);
}

#[tokio::test]
async fn the_models_are_the_agents_the_caller_may_use() {
    let (app, _) = app().await;
    let t = tenant_with_agent(&app, "Helper").await;
    create_agent(&app, &t, "Draft", false).await;
    let (_, key) = api_key(&app, &t).await;

    let list: Value = app
        .get("/v1/models", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["Draft", "Helper"],
        "an admin may use unpublished agents"
    );
    assert_eq!(list["data"][0]["object"], "model");
    assert_eq!(list["data"][0]["owned_by"], t.slug.as_str());

    // A plain user sees (and may use) only published agents.
    app.create_user(&t.admin_token, "plain@example.com", "user")
        .await;
    let user = app
        .login(&t.slug, "plain@example.com", "user-password-1")
        .await;
    let list: Value = app
        .get("/v1/models", Some(&user))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["Helper"]);
    let res = app
        .post_json("/v1/chat/completions", Some(&user), &ask("Draft"))
        .await;
    openai_problem(res, 404).await;
}

#[tokio::test]
async fn an_unknown_model_is_404_with_an_openai_model_not_found_error() {
    let (app, _) = app().await;
    let t = tenant_with_agent(&app, "Helper").await;
    let (_, key) = api_key(&app, &t).await;
    let res = app
        .post_json("/v1/chat/completions", Some(&key), &ask("gpt-4o"))
        .await;
    assert!(res.headers().contains_key("x-request-id"));
    let body = openai_problem(res, 404).await;
    assert_eq!(body["type"], "https://trellis.dev/problems/not-found");
    assert_eq!(body["instance"], "/v1/chat/completions");
    assert!(body["request_id"].is_string());
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-4o"),
        "{body}"
    );
}

#[tokio::test]
async fn another_tenants_api_key_cannot_use_the_agent() {
    let (app, _) = app().await;
    let _owner = tenant_with_agent(&app, "Helper").await;
    let other = app.tenant().await;
    let (_, key) = api_key(&app, &other).await;
    let res = app
        .post_json("/v1/chat/completions", Some(&key), &ask("Helper"))
        .await;
    openai_problem(res, 404).await;
    let list: Value = app
        .get("/v1/models", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn a_revoked_api_key_is_401_with_an_authentication_error() {
    let (app, _) = app().await;
    let t = tenant_with_agent(&app, "Helper").await;
    let (id, key) = api_key(&app, &t).await;
    let res = app
        .delete(&format!("/v1/api-keys/{id}"), Some(&t.admin_token))
        .await;
    assert!(res.status().is_success());
    let res = app
        .post_json("/v1/chat/completions", Some(&key), &ask("Helper"))
        .await;
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let body = openai_problem(res, 401).await;
    assert_eq!(body["error"]["type"], "authentication_error");
    openai_problem(app.get("/v1/models", Some(&key)).await, 401).await;
}

#[tokio::test]
async fn a_bad_body_is_a_client_error_problem_with_an_openai_error() {
    let (app, seen) = app().await;
    let t = tenant_with_agent(&app, "Helper").await;
    let (_, key) = api_key(&app, &t).await;
    let user = |c: &str| json!({"role": "user", "content": c});
    let cases = [
        (json!({"model": "Helper"}), 400),
        (json!({"model": "Helper", "messages": "hi"}), 400),
        (json!({"model": "Helper", "messages": []}), 422),
        (
            json!({"model": "Helper", "messages": [user("hi")], "n": 2}),
            400,
        ),
        (
            json!({"model": "Helper", "messages": [user("hi"), {"role": "tool", "content": "{}"}]}),
            422,
        ),
        (
            json!({"model": "Helper", "messages": [user("hi")], "temperature": 7}),
            422,
        ),
        (
            json!({"model": "Helper", "messages": [user(&"x".repeat(40_000))]}),
            422,
        ),
    ];
    for (body, status) in cases {
        let res = app
            .post_json("/v1/chat/completions", Some(&key), &body)
            .await;
        let p = openai_problem(res, status).await;
        assert_eq!(p["error"]["type"], "invalid_request_error", "{p}");
    }
    let res = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    openai_problem(res, 400).await;
    let res = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    openai_problem(res, 413).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "the model was never called"
    );
}

/// The interpreter `cargo xtask test` prepared, with the `openai` package installed.
pub(crate) fn sdk_python() -> String {
    match std::env::var("TRELLIS_SDK_PYTHON") {
        Ok(p) if !p.trim().is_empty() => p,
        _ => panic!(
            "TRELLIS_SDK_PYTHON is not set: run the tests with `cargo xtask test`, which \
             creates .trellis/sdk-venv with the official `openai` Python package and \
             `schemathesis` and sets it (or point TRELLIS_SDK_PYTHON at a Python that has \
             both installed)"
        ),
    }
}

/// Runs `TRELLIS_SDK_PYTHON` with `args` and returns what it printed; panics, showing
/// both streams, when it fails. The peers it runs are synchronous: they run on a
/// blocking thread, so the app keeps serving on the test's runtime meanwhile.
pub(crate) async fn run_python(args: &[&str]) -> (String, String) {
    let python = sdk_python();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let what = args.join(" ");
    // schemathesis keeps a cache in its working directory: give it the checkout's
    // git-ignored `.trellis`, not the source tree.
    let workdir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.trellis/peers");
    std::fs::create_dir_all(&workdir)
        .unwrap_or_else(|e| panic!("could not create {}: {e}", workdir.display()));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args(&args)
            .current_dir(&workdir)
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .unwrap()
    .expect("could not start the TRELLIS_SDK_PYTHON interpreter");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "TRELLIS_SDK_PYTHON {what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

#[tokio::test]
async fn the_official_openai_python_sdk_lists_models_and_gets_whole_and_streamed_answers() {
    let (app, _) = app().await;
    let t = tenant_with_agent(&app, "Helper").await;
    let (_, key) = api_key(&app, &t).await;
    let script = format!("{}/sdk/openai_sdk.py", env!("CARGO_MANIFEST_DIR"));
    let base = app.url("/v1");
    let (stdout, stderr) = run_python(&[&script, &base, &key, "Helper"]).await;
    let out: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the SDK script printed no JSON ({e}):\n{stdout}\n{stderr}"));

    assert_eq!(out["models"], json!(["Helper"]), "{out}");
    let c = &out["completion"];
    assert_eq!(c["object"], "chat.completion", "{out}");
    assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(c["model"], "Helper");
    assert_eq!(c["role"], "assistant");
    assert_eq!(c["content"], "Hello world");
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(c["usage"]["total_tokens"], 14);
    let s = &out["stream"];
    assert_eq!(s["content"], "Hello world", "{out}");
    assert_eq!(s["role"], "assistant");
    assert_eq!(s["finish_reason"], "stop");
    assert_eq!(s["usage"]["prompt_tokens"], 12);
    assert!(s["chunks"].as_u64().unwrap() >= 4, "{out}");
    let e = &out["unknown_model"];
    assert_eq!(e["raised"], "NotFoundError", "{out}");
    assert_eq!(e["status"], 404);
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["type"], "invalid_request_error");
    assert!(
        e["message"].as_str().unwrap().contains("no-such-agent"),
        "{out}"
    );
}
