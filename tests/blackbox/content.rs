//! Agents and chat over HTTP: an agent answers over Server-Sent Events from a fake
//! OpenAI-compatible server the tenant's LLM configuration points at; answers are
//! stored in the conversation's tree, regenerating makes a sibling, and neither other
//! tenants nor other users see any of it.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use trellis_tests::{TestApp, TestTenant, problem, spawn_app_with};

/// The streamed answer the fake server sends for every request.
const FAKE_STREAM: &str = concat!(
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\" world\"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}\n\n",
    "data: [DONE]\n\n",
);

/// Reads one HTTP request (headers and a `Content-Length` body) off the socket and
/// returns its body.
pub(crate) async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return String::new();
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body_end = buf.len().min(end + 4 + length);
            return String::from_utf8_lossy(&buf[end + 4..body_end]).into_owned();
        }
    }
}

/// The request bodies a fake LLM server received, in order.
pub(crate) type Requests = Arc<Mutex<Vec<String>>>;

/// A fake OpenAI-compatible server on 127.0.0.1; returns its `/v1` base URL.
pub(crate) async fn fake_llm() -> String {
    fake_llm_recording().await.0
}

/// Like [`fake_llm`], also returning the bodies of the requests it received.
pub(crate) async fn fake_llm_recording() -> (String, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let body = read_request(&mut socket).await;
                seen.lock().unwrap().push(body);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    FAKE_STREAM.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(FAKE_STREAM.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/v1"), requests)
}

/// An app whose OpenAI-compatible base URL is a fresh fake server.
pub(crate) async fn app() -> TestApp {
    let url = fake_llm().await;
    spawn_app_with(|c| c.llm_base_url = Some(url)).await
}

/// Points the tenant's LLM configuration at the fake server's model.
pub(crate) async fn configure_llm(app: &TestApp, t: &TestTenant) {
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
}

pub(crate) async fn create_agent(app: &TestApp, token: &str) -> String {
    let res = app
        .post_json(
            "/v1/agents",
            Some(token),
            &json!({"name": "Helper", "instructions": "Be brief.", "provider": "openai_compatible",
                    "model": "fake-model", "published": true}),
        )
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    body["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn start_conversation(app: &TestApp, token: &str, agent: &str) -> String {
    let res = app
        .post_json(
            "/v1/conversations",
            Some(token),
            &json!({"agent_id": agent, "title": "First chat"}),
        )
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// `(event, data)` pairs of a complete `text/event-stream` body.
pub(crate) fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            Some((event?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}

/// Posts and reads the whole SSE answer.
pub(crate) async fn stream(
    app: &TestApp,
    token: &str,
    path: &str,
    body: &Value,
) -> Vec<(String, Value)> {
    let res = app.post_json(path, Some(token), body).await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("text/event-stream"), "content type {ct}");
    sse_events(&res.text().await.unwrap())
}

pub(crate) fn done_message(events: &[(String, Value)]) -> Value {
    let (name, data) = events.last().expect("no events");
    assert_eq!(name, "done", "events: {events:?}");
    data["message"].clone()
}

#[tokio::test]
async fn an_agent_answers_a_question_as_server_sent_events_and_the_answer_is_stored() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;

    let events = stream(
        &app,
        &t.admin_token,
        &format!("/v1/conversations/{conv}/messages"),
        &json!({"content": "Say hello"}),
    )
    .await;
    let deltas: String = events
        .iter()
        .filter(|(e, _)| e == "delta")
        .map(|(_, d)| d["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, "Hello world");
    assert!(events.iter().any(|(e, _)| e == "usage"));
    let answer = done_message(&events);
    assert_eq!(answer["content"], "Hello world");
    assert_eq!(answer["role"], "assistant");

    let tree: Value = app
        .get(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&t.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    let path = tree["active_path"].as_array().unwrap();
    assert_eq!(path.len(), 2, "{tree}");
    assert_eq!(path[1], answer["id"]);
}

#[tokio::test]
async fn regenerating_an_answer_creates_a_sibling() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;
    let first = done_message(
        &stream(
            &app,
            &t.admin_token,
            &format!("/v1/conversations/{conv}/messages"),
            &json!({"content": "Say hello"}),
        )
        .await,
    );
    let id = first["id"].as_str().unwrap();

    let second = done_message(
        &stream(
            &app,
            &t.admin_token,
            &format!("/v1/conversations/{conv}/messages/{id}/regenerate"),
            &json!({}),
        )
        .await,
    );
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["parent_id"], first["parent_id"]);

    let tree: Value = app
        .get(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&t.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    let text = tree.to_string();
    assert!(text.contains(first["id"].as_str().unwrap()), "{tree}");
    assert!(text.contains(second["id"].as_str().unwrap()), "{tree}");
}

#[tokio::test]
async fn a_full_conversation_refuses_another_question_with_409_and_stores_nothing() {
    let url = fake_llm().await;
    let app = spawn_app_with(|c| {
        c.llm_base_url = Some(url);
        c.max_conversation_messages = 3;
    })
    .await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;
    let path = format!("/v1/conversations/{conv}/messages");
    let first = done_message(
        &stream(
            &app,
            &t.admin_token,
            &path,
            &json!({"content": "Say hello"}),
        )
        .await,
    );

    // Two messages held, room for one: another question and its answer do not fit.
    let body = problem(
        app.post_json(
            &path,
            Some(&t.admin_token),
            &json!({"content": "And again"}),
        )
        .await,
        409,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("start a new conversation"),
        "{body}"
    );
    let tree: Value = app
        .get(&path, Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tree["active_path"].as_array().unwrap().len(), 2, "{tree}");

    // A regenerated answer does fit, once.
    let id = first["id"].as_str().unwrap();
    let regenerate = format!("{path}/{id}/regenerate");
    done_message(&stream(&app, &t.admin_token, &regenerate, &json!({})).await);
    problem(
        app.post_json(&regenerate, Some(&t.admin_token), &json!({}))
            .await,
        409,
    )
    .await;
}

#[tokio::test]
async fn an_agents_temperature_reads_back_as_it_was_written() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let res = app
        .post_json(
            "/v1/agents",
            Some(&t.admin_token),
            &json!({"name": "Precise", "instructions": "Be exact.", "provider": "openai_compatible", "model": "fake-model",
                    "parameters": {"temperature": 0.7}}),
        )
        .await;
    let status = res.status();
    let created: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    // Not 0.699999988079071: the stored f32 is written as the number it was given.
    assert_eq!(
        created["config"]["parameters"]["temperature"].as_f64(),
        Some(0.7),
        "{created}"
    );
    let id = created["id"].as_str().unwrap();
    let read: Value = app
        .get(&format!("/v1/agents/{id}"), Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        read["config"]["parameters"]["temperature"].as_f64(),
        Some(0.7),
        "{read}"
    );
}

#[tokio::test]
async fn an_agent_naming_another_tenants_tool_is_a_404_and_is_not_created() {
    let app = app().await;
    let t = app.tenant().await;
    let other = app.tenant().await;
    configure_llm(&app, &t).await;
    let res = app
        .post_json(
            "/v1/tools",
            Some(&other.admin_token),
            &json!({"kind": "function", "name": "Theirs"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let theirs: Value = res.json().await.unwrap();
    let body = problem(
        app.post_json(
            "/v1/agents",
            Some(&t.admin_token),
            &json!({"name": "Borrower", "provider": "openai_compatible", "model": "fake-model",
                    "tools": [theirs["id"]]}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(body["detail"], "tool not found", "{body}");
    let agents: Value = app
        .get("/v1/agents", Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(agents["items"], json!([]));
}

#[tokio::test]
async fn another_tenant_gets_404_on_the_conversation_and_the_agent() {
    let app = app().await;
    let t = app.tenant().await;
    let other = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;

    let res = app
        .get(&format!("/v1/agents/{agent}"), Some(&other.admin_token))
        .await;
    problem(res, 404).await;
    let res = app
        .get(
            &format!("/v1/conversations/{conv}"),
            Some(&other.admin_token),
        )
        .await;
    problem(res, 404).await;
    let res = app
        .get(
            &format!("/v1/conversations/{conv}/messages"),
            Some(&other.admin_token),
        )
        .await;
    problem(res, 404).await;
}

#[tokio::test]
async fn a_user_cannot_see_another_users_conversation() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let email = format!("client@{}.example.com", t.slug);
    app.create_user(&t.admin_token, &email, "client").await;
    let client = app.login(&t.slug, &email, "user-password-1").await;
    let conv = start_conversation(&app, &client, &agent).await;

    // The client's own conversation answers for them...
    let answer = done_message(
        &stream(
            &app,
            &client,
            &format!("/v1/conversations/{conv}/messages"),
            &json!({"content": "Say hello"}),
        )
        .await,
    );
    assert_eq!(answer["content"], "Hello world");
    // ...while another user of the same tenant sees nothing of it.
    let email2 = format!("other@{}.example.com", t.slug);
    app.create_user(&t.admin_token, &email2, "client").await;
    let other = app.login(&t.slug, &email2, "user-password-1").await;
    let res = app
        .get(&format!("/v1/conversations/{conv}"), Some(&other))
        .await;
    problem(res, 404).await;
    let list: Value = app
        .get("/v1/conversations", Some(&other))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}

/// A tenant's LLM configuration naming `base_url` as its endpoint.
async fn put_llm_endpoint(app: &TestApp, t: &TestTenant, base_url: &str) -> reqwest::Response {
    app.put_json(
        "/v1/tenant/llm",
        Some(&t.admin_token),
        &json!({"provider": "openai_compatible", "model": "fake-model", "temperature": 0.2,
                "max_tokens": 256, "api_key": format!("sk-{}", t.slug), "base_url": base_url}),
    )
    .await
}

/// Asks one question in a fresh conversation and returns the answer's events.
async fn ask(app: &TestApp, t: &TestTenant) -> Vec<(String, Value)> {
    let agent = create_agent(app, &t.admin_token).await;
    let conv = start_conversation(app, &t.admin_token, &agent).await;
    stream(
        app,
        &t.admin_token,
        &format!("/v1/conversations/{conv}/messages"),
        &json!({"content": "Say hello"}),
    )
    .await
}

#[tokio::test]
async fn each_tenant_is_answered_by_its_own_allowed_endpoint_and_others_are_refused() {
    let (a_url, a_seen) = fake_llm_recording().await;
    let (b_url, b_seen) = fake_llm_recording().await;
    let origin = |u: &str| u.trim_end_matches("/v1").to_owned();
    let allowed = format!("{}, {}", origin(&a_url), origin(&b_url));
    let app = spawn_app_with(|c| {
        c.llm_allowed_endpoints = trellis_tenancy::LlmEndpointPolicy::parse_list(&allowed).unwrap();
    })
    .await;
    let (a, b) = (app.tenant().await, app.tenant().await);

    let res = put_llm_endpoint(&app, &a, &a_url).await;
    assert_eq!(res.status(), 200);
    let saved: Value = res.json().await.unwrap();
    assert_eq!(saved["base_url"], a_url.as_str());
    assert_eq!(put_llm_endpoint(&app, &b, &b_url).await.status(), 200);

    assert_eq!(done_message(&ask(&app, &a).await)["content"], "Hello world");
    assert_eq!(
        (a_seen.lock().unwrap().len(), b_seen.lock().unwrap().len()),
        (1, 0)
    );
    assert_eq!(done_message(&ask(&app, &b).await)["content"], "Hello world");
    assert_eq!(
        (a_seen.lock().unwrap().len(), b_seen.lock().unwrap().len()),
        (1, 1)
    );

    // Anything off the list, cloud metadata included, is refused and nothing changes.
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:1/v1",
        "https://user:pw@example.com/v1",
    ] {
        let res = put_llm_endpoint(&app, &a, url).await;
        let p = problem(res, 422).await;
        assert_eq!(p["errors"][0]["field"], "base_url", "{url}: {p}");
    }
    let llm: Value = app
        .get("/v1/tenant/llm", Some(&a.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(llm["base_url"], a_url.as_str());
}

#[tokio::test]
async fn an_endpoint_the_operator_no_longer_allows_is_not_called() {
    let (url, seen) = fake_llm_recording().await;
    let allowed = url.trim_end_matches("/v1").to_owned();
    let secret = b"the same signing key for both servers, 32+ bytes".to_vec();
    let (s1, s2) = (secret.clone(), secret);
    let before = spawn_app_with(|c| {
        c.jwt_secret = Some(s1);
        c.llm_allowed_endpoints = trellis_tenancy::LlmEndpointPolicy::parse_list(&allowed).unwrap();
    })
    .await;
    let t = before.tenant().await;
    assert_eq!(put_llm_endpoint(&before, &t, &url).await.status(), 200);

    // The same database, restarted with the endpoint taken off the list.
    let after = spawn_app_with(|c| c.jwt_secret = Some(s2)).await;
    let events = ask(&after, &t).await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert!(data.to_string().contains("no longer allowed"), "{events:?}");
    assert!(seen.lock().unwrap().is_empty());
}
