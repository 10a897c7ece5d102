//! Moving a collection to another embedding model: search keeps answering from the old
//! vectors while the new ones are made, then switches; over HTTP and through the
//! `trellis reindex` code path. The target is the real local model (all-MiniLM-L6-v2,
//! fetched by `cargo xtask test`), so the switch is visible in what search finds.

use serde_json::{Value, json};
use trellis_tests::{TestApp, TestTenant, problem, spawn_ingesting_app_with};

const HANDBOOK: &str = "# Employee Handbook\n\n## Refund policy\n\nCustomers may request a refund within fourteen days of purchase. \
Refunds are paid to the original payment method.\n\n## Holidays\n\nEmployees receive twenty-five days of paid holiday per year.\n";

const LOCAL: &str = "local/all-minilm-l6-v2";

fn model_dir() -> std::path::PathBuf {
    let dir = match std::env::var("TRELLIS_EMBED_MODEL_DIR") {
        Ok(dir) if !dir.trim().is_empty() => std::path::PathBuf::from(dir),
        _ => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../.trellis/models/all-minilm-l6-v2"),
    };
    assert!(
        dir.join("model.safetensors").is_file(),
        "the local embedding model is missing from {}: run `cargo xtask fetch-model`",
        dir.display()
    );
    dir
}

/// An app that runs both the hash embedder (the default here) and the local model.
async fn app(workers: usize) -> TestApp {
    let dir = model_dir();
    spawn_ingesting_app_with(move |c| {
        c.rag.embed_model_dir = Some(dir);
        c.rag.embed_default = Some("hash/384".into());
        c.rag.workers = workers;
    })
    .await
}

async fn processed_collection(app: &TestApp, t: &TestTenant) -> String {
    let res = app
        .post_json(
            "/v1/rag/collections",
            Some(&t.admin_token),
            &json!({"name": "Handbook"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let coll: Value = res.json().await.unwrap();
    assert_eq!(coll["embedding_model"], "hash/384");
    let id = coll["id"].as_str().unwrap().to_owned();
    let res = app
        .upload(
            &t.admin_token,
            &id,
            "handbook.md",
            HANDBOOK.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201);
    let doc: Value = res.json().await.unwrap();
    let doc = app
        .wait_processed(&t.admin_token, doc["id"].as_str().unwrap())
        .await;
    assert_eq!(doc["status"], "processed", "{doc}");
    id
}

async fn top_hit(app: &TestApp, token: &str, query: &str) -> Value {
    let res = app
        .post_json(
            "/v1/rag/search",
            Some(token),
            &json!({"query": query, "mode": "vector", "top_k": 3}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["results"][0].clone()
}

#[tokio::test]
async fn a_collection_moves_to_another_model_while_search_keeps_answering() {
    let app = app(2).await;
    let t = app.tenant().await;
    let coll = processed_collection(&app, &t).await;
    let path = format!("/v1/rag/collections/{coll}/embedding-model");

    let models: Value = app
        .get("/v1/rag/embedding-models", Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&LOCAL) && ids.contains(&"hash/384"), "{ids:?}");

    let res = app
        .put_json(&path, Some(&t.admin_token), &json!({"model": LOCAL}))
        .await;
    assert_eq!(res.status(), 202);
    let started: Value = res.json().await.unwrap();
    assert_eq!(started["embedding_model"], "hash/384");
    assert_eq!(started["change"]["target_model"], LOCAL);
    assert_eq!(started["change"]["status"], "running");
    // Search answers throughout, from whichever vectors are live.
    assert!(!top_hit(&app, &t.admin_token, "refund").await.is_null());

    let mut done = Value::Null;
    for _ in 0..600 {
        let now: Value = app
            .get(&path, Some(&t.admin_token))
            .await
            .json()
            .await
            .unwrap();
        if now["change"].is_null() {
            done = now;
            break;
        }
        assert_eq!(now["change"]["status"], "running", "{now}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(done["embedding_model"], LOCAL, "the change never finished");
    assert_eq!(done["embedding_dimension"], 384);
    assert_eq!(done["embedded"], done["total"]);

    // The semantic model finds the refund section with none of its words.
    let hit = top_hit(&app, &t.admin_token, "How do I get my money back?").await;
    assert!(
        hit["content"].as_str().unwrap().contains("refund"),
        "top hit: {hit}"
    );
    let coll_now: Value = app
        .get(&format!("/v1/rag/collections/{coll}"), Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(coll_now["embedding_model"], LOCAL);
    assert!(coll_now["model_change"].is_null());
}

#[tokio::test]
async fn a_model_change_is_refused_for_unknown_or_current_models_and_other_tenants() {
    let app = app(0).await;
    let t = app.tenant().await;
    let other = app.tenant().await;
    let coll = processed_collection_without_workers(&app, &t).await;
    let path = format!("/v1/rag/collections/{coll}/embedding-model");
    problem(
        app.put_json(
            &path,
            Some(&t.admin_token),
            &json!({"model": "no/such-model"}),
        )
        .await,
        422,
    )
    .await;
    problem(
        app.put_json(&path, Some(&t.admin_token), &json!({"model": "hash/384"}))
            .await,
        422,
    )
    .await;
    problem(
        app.put_json(&path, Some(&other.admin_token), &json!({"model": LOCAL}))
            .await,
        404,
    )
    .await;
    problem(app.get(&path, Some(&other.admin_token)).await, 404).await;

    // Started, then cancelled: the collection stays on its model.
    let res = app
        .put_json(&path, Some(&t.admin_token), &json!({"model": LOCAL}))
        .await;
    assert_eq!(res.status(), 202);
    let res = app.delete(&path, Some(&t.admin_token)).await;
    assert_eq!(res.status(), 204);
    let now: Value = app
        .get(&path, Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["embedding_model"], "hash/384");
    assert!(now["change"].is_null(), "{now}");
}

/// A collection with no documents (no workers run in this app).
async fn processed_collection_without_workers(app: &TestApp, t: &TestTenant) -> String {
    let res = app
        .post_json(
            "/v1/rag/collections",
            Some(&t.admin_token),
            &json!({"name": "Empty"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn trellis_reindex_runs_the_change_itself_and_reports_progress_to_the_end() {
    // No server workers: the reindex command's own pool must do the work.
    let app = app(0).await;
    let t = app.tenant().await;
    let coll = processed_collection_without_workers(&app, &t).await;
    // Documents need processing first; run a pool just for that.
    let pool = trellis_app::workers::Workers::spawn(
        app.app.rag.clone(),
        1,
        std::time::Duration::from_secs(3),
    );
    let res = app
        .upload(
            &t.admin_token,
            &coll,
            "handbook.md",
            HANDBOOK.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(res.status(), 201);
    let doc: Value = res.json().await.unwrap();
    app.wait_processed(&t.admin_token, doc["id"].as_str().unwrap())
        .await;
    pool.shutdown().await;

    let tenant = trellis_app::reindex::resolve_tenant(&app.app, &t.slug)
        .await
        .unwrap();
    assert_eq!(tenant.to_string(), t.id);
    let mut seen = Vec::new();
    let outcome = trellis_app::reindex::change_model(
        &app.app,
        tenant,
        coll.parse().unwrap(),
        LOCAL,
        1,
        std::time::Duration::from_secs(3),
        |p| seen.push((p.embedded, p.total)),
    )
    .await
    .unwrap();
    let (model, chunks) = match outcome {
        trellis_app::reindex::Outcome::Switched { model, chunks } => (model, chunks),
        trellis_app::reindex::Outcome::Failed(e) => panic!("the change failed: {e}"),
    };
    assert_eq!(model, LOCAL);
    assert!(chunks >= 2, "{chunks} chunks");
    assert_eq!(seen.last(), Some(&(chunks, chunks)), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
}
