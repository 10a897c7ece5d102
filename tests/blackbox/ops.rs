//! Operational endpoints: health, readiness, metrics, OpenAPI, request ids.

use serde_json::{Value, json};
use trellis_tests::{
    TestApp, TestTenant, problem, spawn_app, spawn_app_with, spawn_ingesting_app_with,
    spawn_per_core_app, unique,
};

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

#[tokio::test]
async fn metrics_count_the_database_reads_that_were_sent_again() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    app.get("/v1/users?limit=20", Some(&t.admin_token)).await;
    let text = app.get("/metrics", None).await.text().await.unwrap();
    // Reads are pipelined wherever the app's store can (not over TLS, say); the
    // counters come with them.
    let store = trellis_postgres::PgStore::connect(&trellis_tests::database_url(), 1)
        .await
        .unwrap();
    if store.pipelines_reads() {
        for series in [
            "trellis_db_reads_resent_total",
            "trellis_db_reads_resent_answered_first_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {series} counter\n{series} ")),
                "{text}"
            );
        }
    } else {
        assert!(!text.contains("trellis_db_reads_resent"), "{text}");
    }
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
    // With the ingestion workers, so that the documents it uploads and reindexes are
    // processed (and their chunks listed) rather than left queued in the shared
    // database for other tests' queues to step over.
    let llm = crate::content::fake_llm().await;
    let app = spawn_ingesting_app_with(|c| c.llm_base_url = Some(llm)).await;
    let t = app.tenant().await;
    let seeded = seed_fuzz_tenant(&app, &t).await;
    let stdout = fuzz_spec(&app, &t.admin_token, &seeded.config(), &[]).await;
    assert!(stdout.contains("passed"), "{stdout}");
}

/// A request parameter (`path.id`, `body.model`, …) drawn from one of the seeded
/// dictionaries with this probability.
type Binding = (&'static str, &'static str, f32);

/// What [`seed_fuzz_tenant`] made, by id.
struct Seeded {
    agent: String,
    conversation: String,
    messages: Vec<String>,
    file: String,
    collection: String,
    document: String,
    memory: String,
    tool: String,
    user: String,
    api_key: String,
    guest: String,
    home_tenant: String,
}

/// Stateful sequences follow the document's links (a creation to the operations on
/// what it made, a list to its first item) for up to this many steps, instead of
/// schemathesis's 6, so chains such as conversation → message → file reach their end.
const STATEFUL_STEPS: &str = "[phases.stateful]\nmax-steps = 10\n";

impl Seeded {
    /// schemathesis's configuration: the path ids (and the body and query fields that
    /// name things) of each operation drawn mostly from what was seeded, so that its
    /// requests reach past the lookup; the rest stay generated, which keeps asking
    /// for ids of nothing.
    fn config(&self) -> String {
        let quoted = |ids: &[&String]| {
            ids.iter()
                .map(|id| format!("\"{id}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let messages: Vec<&String> = self.messages.iter().collect();
        let dictionaries = [
            ("agents", quoted(&[&self.agent])),
            ("conversations", quoted(&[&self.conversation])),
            ("messages", quoted(&messages)),
            ("files", quoted(&[&self.file])),
            ("collections", quoted(&[&self.collection])),
            ("documents", quoted(&[&self.document])),
            ("memories", quoted(&[&self.memory])),
            ("tools", quoted(&[&self.tool])),
            ("users", quoted(&[&self.user])),
            ("api_keys", quoted(&[&self.api_key])),
            ("guests", quoted(&[&self.guest])),
            ("tenants", quoted(&[&self.home_tenant])),
            // What the fake LLM configuration and agent answer to.
            ("providers", "\"openai_compatible\"".to_owned()),
            ("models", "\"fake-model\"".to_owned()),
            ("agent_names", "\"Helper\"".to_owned()),
        ];
        // A path id names the thing the operation acts on: mostly a seeded one. A field
        // naming something else: half the time. The LLM configuration always keeps the
        // fake model, or one generated change would make every chat after it a 422.
        const ID: f32 = 0.9;
        const REF: f32 = 0.5;
        let model = [
            ("body.provider", "providers", REF),
            ("body.model", "models", REF),
        ];
        let agent_fields = [
            ("body.knowledge_collections[*]", "collections", REF),
            ("body.tools[*]", "tools", REF),
        ];
        let operations: Vec<(&str, Vec<Binding>)> = vec![
            ("^/v1/agents$", [&model[..], &agent_fields].concat()),
            (
                "^/v1/agents/",
                [&[("path.id", "agents", ID)], &model[..], &agent_fields].concat(),
            ),
            (
                "^/v1/tenant/llm$",
                vec![
                    ("body.provider", "providers", 1.0),
                    ("body.model", "models", 1.0),
                ],
            ),
            (
                "^/v1/chat/completions$",
                vec![("body.model", "agent_names", REF)],
            ),
            (
                "^/v1/conversations$",
                [&[("body.agent_id", "agents", REF)], &model[..]].concat(),
            ),
            (
                "^/v1/conversations/\\{id\\}/messages/",
                vec![
                    ("path.id", "conversations", ID),
                    ("path.mid", "messages", ID),
                ],
            ),
            (
                "^/v1/conversations/\\{id\\}/messages$",
                vec![
                    ("path.id", "conversations", ID),
                    ("body.parent_id", "messages", REF),
                    ("body.file_ids[*]", "files", REF),
                ],
            ),
            (
                "^/v1/conversations/\\{id\\}/fork$",
                vec![
                    ("path.id", "conversations", ID),
                    ("body.message_id", "messages", REF),
                ],
            ),
            (
                "^/v1/conversations/\\{id\\}",
                vec![("path.id", "conversations", ID)],
            ),
            (
                "^/v1/files/",
                vec![
                    ("path.id", "files", ID),
                    ("body.collection_id", "collections", REF),
                ],
            ),
            (
                "^/v1/rag/collections/",
                vec![("path.id", "collections", ID)],
            ),
            (
                "^/v1/rag/documents$",
                vec![("query.collection_id", "collections", REF)],
            ),
            ("^/v1/rag/documents/", vec![("path.id", "documents", ID)]),
            (
                "^/v1/rag/search$",
                vec![("body.collection_ids[*]", "collections", REF)],
            ),
            ("^/v1/memories/", vec![("path.id", "memories", ID)]),
            ("^/v1/tools/", vec![("path.id", "tools", ID)]),
            ("^/v1/guests$", vec![("body.home_tenant", "tenants", REF)]),
            ("^/v1/users/", vec![("path.id", "users", ID)]),
            ("^/v1/api-keys/", vec![("path.id", "api_keys", ID)]),
            ("^/v1/guests/", vec![("path.id", "guests", ID)]),
        ];
        let mut toml = String::from(STATEFUL_STEPS);
        for (name, values) in dictionaries {
            toml.push_str(&format!("\n[dictionaries.{name}]\nvalues = [{values}]\n"));
        }
        // Deletes keep generated ids (the first entry that matches an operation decides
        // its parameters): deleting what was seeded early would leave the rest of the
        // run with 404s. The stateful sequences delete what they made themselves.
        toml.push_str("\n[[operations]]\ninclude-method = \"DELETE\"\nparameters = {}\n");
        for (regex, bindings) in operations {
            let params = bindings
                .iter()
                .map(|(param, dict, p)| {
                    format!("\"{param}\" = {{ dictionary = \"{dict}\", probability = {p} }}")
                })
                .collect::<Vec<_>>()
                .join(", ");
            toml.push_str(&format!(
                "\n[[operations]]\ninclude-path-regex = '{regex}'\nparameters = {{ {params} }}\n"
            ));
        }
        toml
    }
}

/// One of each thing the tenant operations act on, so that the fuzzer's requests
/// reach past the lookup of what they name: an LLM configuration answered by a fake
/// server, an agent, a conversation with an exchange and an attached file, a
/// collection with a document, a memory, a tool, a user, an API key and a guest from
/// another tenant.
async fn seed_fuzz_tenant(app: &TestApp, t: &TestTenant) -> Seeded {
    use crate::content::{configure_llm, create_agent, done_message, start_conversation, stream};
    configure_llm(app, t).await;
    let token = t.admin_token.as_str();
    let agent = create_agent(app, token).await;
    let conversation = start_conversation(app, token, &agent).await;
    let events = stream(
        app,
        token,
        &format!("/v1/conversations/{conversation}/messages"),
        &json!({"content": "Say hello"}),
    )
    .await;
    // The question (the first event) and the answer (the last).
    let messages: Vec<String> = [&events[0].1["message"], &done_message(&events)]
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let file = crate::files::attach(
        app,
        token,
        &conversation,
        "notes.md",
        b"# Notes\n\nHello.\n".to_vec(),
    )
    .await;
    let file = id_of(file, 201).await;
    let collection = crate::rag::collection(app, t, "Fuzzed").await;
    let document = app
        .upload(
            token,
            &collection,
            "handbook.md",
            crate::rag::HANDBOOK.as_bytes().to_vec(),
        )
        .await;
    let document = id_of(document, 201).await;
    let mut made = Vec::new();
    for (path, body) in [
        (
            "/v1/memories",
            json!({"key": "diet", "value": "Vegetarian", "category": "food"}),
        ),
        ("/v1/tools", json!({"kind": "function", "name": "Clock"})),
        ("/v1/api-keys", json!({"name": "fuzz"})),
    ] {
        made.push(id_of(app.post_json(path, Some(token), &body).await, 201).await);
    }
    let [memory, tool, api_key] = <[String; 3]>::try_from(made).unwrap();
    let user = app
        .create_user(
            token,
            &format!("{}@example.com", unique("member")),
            "client",
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let home = app.tenant().await;
    app.create_user(&home.admin_token, "visitor@example.com", "client")
        .await;
    let guest = app
        .post_json(
            "/v1/guests",
            Some(token),
            &json!({"home_tenant": home.slug, "email": "visitor@example.com", "role": "client"}),
        )
        .await;
    Seeded {
        agent,
        conversation,
        messages,
        file,
        collection,
        document,
        memory,
        tool,
        user,
        api_key,
        guest: id_of(guest, 201).await,
        home_tenant: home.slug,
    }
}

/// The `id` of a response's JSON body, once its status is `status`.
async fn id_of(res: reqwest::Response, status: u16) -> String {
    let code = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(code, status, "{body}");
    body["id"].as_str().unwrap().to_owned()
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
    let stdout = fuzz_spec(&app, &root, STATEFUL_STEPS, &["--include-tag", "platform"]).await;
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
async fn fuzz_spec(app: &TestApp, token: &str, config: &str, extra: &[&str]) -> String {
    let spec = app.url("/openapi.json");
    let auth = format!("Authorization: Bearer {token}");
    let seed = std::env::var("TRELLIS_SPEC_SEED").unwrap_or_else(|_| SPEC_FUZZ_SEED.into());
    let examples = std::env::var("TRELLIS_SPEC_EXAMPLES").unwrap_or_else(|_| "10".into());
    let config_file = std::env::temp_dir().join(format!("{}.toml", unique("trellis-spec")));
    std::fs::write(&config_file, config).unwrap();
    let config_path = config_file.to_string_lossy().into_owned();
    let mut args = vec![
        "-m",
        "schemathesis.cli",
        "--config-file",
        &config_path,
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
    let _ = std::fs::remove_file(&config_file);
    // A passing run's warnings (operations whose generated requests are mostly
    // rejected) say where the document is looser than the API; kept when asked.
    if let Ok(path) = std::env::var("TRELLIS_SPEC_OUTPUT") {
        let path = format!("{path}{}", if extra.is_empty() { "" } else { ".platform" });
        std::fs::write(&path, &stdout).unwrap();
    }
    stdout
}

#[tokio::test]
async fn servers_listening_with_reuse_port_share_one_address_and_both_get_connections() {
    use trellis_app::listen::listen;
    let first = listen("127.0.0.1:0".parse().unwrap(), true).unwrap();
    let addr = first.local_addr().unwrap();
    let second = listen(addr, true).expect("a second server may share the port");
    let (mut to_first, mut to_second) = (0, 0);
    for _ in 0..40 {
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::select! {
            accepted = first.accept() => { accepted.unwrap(); to_first += 1; }
            accepted = second.accept() => { accepted.unwrap(); to_second += 1; }
        }
    }
    assert_eq!(to_first + to_second, 40);
    assert!(
        to_first > 0 && to_second > 0,
        "the kernel spreads connections over both: {to_first} and {to_second}"
    );
}

#[tokio::test]
async fn without_reuse_port_a_second_server_cannot_take_a_listening_address() {
    use trellis_app::listen::listen;
    let first = listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
    let addr = first.local_addr().unwrap();
    let err = listen(addr, false).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let err = listen(addr, true).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::AddrInUse,
        "both sides must opt in"
    );
}

#[tokio::test]
async fn a_server_with_a_runtime_per_core_serves_every_connection_its_tenants_rows() {
    let app = spawn_per_core_app(2).await;
    let (ours, theirs) = (app.tenant().await, app.tenant().await);
    for n in 0..4 {
        let body =
            json!({"email": format!("pc{n}@example.com"), "name": "Per Core", "role": "user"});
        let res = app
            .post_json("/v1/users", Some(&ours.admin_token), &body)
            .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    // A client of its own for each: a connection each, handed to the runtimes in turn.
    let lists = (0..8).map(|i| {
        let (url, tenant) = (
            app.url("/v1/users?limit=20"),
            if i % 2 == 0 { &ours } else { &theirs },
        );
        async move {
            let client = reqwest::Client::new();
            let mut emails = Vec::new();
            for _ in 0..5 {
                let page: Value = client
                    .get(&url)
                    .bearer_auth(&tenant.admin_token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                emails = page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| u["email"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>();
            }
            (tenant.admin_email.clone(), emails)
        }
    });
    for (admin, mut emails) in futures::future::join_all(lists).await {
        emails.sort();
        if admin == ours.admin_email {
            let mut expected: Vec<String> = (0..4).map(|n| format!("pc{n}@example.com")).collect();
            expected.push(admin);
            expected.sort();
            assert_eq!(emails, expected);
        } else {
            assert_eq!(emails, vec![admin], "the other tenant sees only its admin");
        }
    }
}
