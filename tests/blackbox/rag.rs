//! Retrieval over HTTP: collections, uploads processed by the ingestion workers, and
//! cited search in every mode, isolated per tenant.

use serde_json::{Value, json};
use trellis_tests::{
    TestApp, TestTenant, problem, spawn_app, spawn_app_with, spawn_ingesting_app,
    spawn_ingesting_app_with,
};

pub(crate) const HANDBOOK: &str = "# Employee Handbook\n\n## Refund policy\n\nCustomers may request a refund within fourteen days of purchase. \
Refunds are paid to the original payment method.\n\n## Holidays\n\nEmployees receive twenty-five days of paid holiday per year.\n";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../crates/adapters/extract/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub(crate) async fn collection(app: &TestApp, t: &TestTenant, name: &str) -> String {
    let res = app
        .post_json(
            "/v1/rag/collections",
            Some(&t.admin_token),
            &json!({"name": name}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn upload_processed(
    app: &TestApp,
    t: &TestTenant,
    coll: &str,
    name: &str,
    bytes: Vec<u8>,
) -> Value {
    let res = app.upload(&t.admin_token, coll, name, bytes).await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let doc: Value = res.json().await.unwrap();
    app.wait_processed(&t.admin_token, doc["id"].as_str().unwrap())
        .await
}

pub(crate) async fn search(app: &TestApp, token: &str, body: Value) -> Vec<Value> {
    let res = app.post_json("/v1/rag/search", Some(token), &body).await;
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["results"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn an_uploaded_markdown_file_is_processed_and_found_with_a_citation_in_every_mode() {
    let app = spawn_ingesting_app().await;
    let t = app.tenant().await;
    let coll = collection(&app, &t, "Handbook").await;
    let doc = upload_processed(&app, &t, &coll, "handbook.md", HANDBOOK.as_bytes().to_vec()).await;
    assert_eq!(doc["status"], "processed", "{doc}");
    assert_eq!(doc["mime_type"], "text/markdown");
    assert!(doc["chunk_count"].as_u64().unwrap() >= 2);

    for mode in ["vector", "text", "hybrid"] {
        let hits = search(
            &app,
            &t.admin_token,
            json!({"query": "refund within fourteen days", "mode": mode, "top_k": 3}),
        )
        .await;
        let top = hits.first().unwrap_or_else(|| panic!("{mode}: no results"));
        assert!(
            top["content"].as_str().unwrap().contains("refund"),
            "{mode}: {top}"
        );
        let citation = &top["citation"];
        assert_eq!(citation["filename"], "handbook.md");
        assert_eq!(citation["document_id"], doc["id"]);
        assert_eq!(
            citation["span"]["section"], "Employee Handbook > Refund policy",
            "{mode}"
        );
        let (start, end) = (
            citation["span"]["start"].as_u64().unwrap() as usize,
            citation["span"]["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            &HANDBOOK[start..end],
            top["content"].as_str().unwrap(),
            "the span cites the exact text"
        );
    }
}

#[tokio::test]
async fn a_question_finds_passages_by_any_of_its_words_and_a_search_box_by_all() {
    let app = spawn_ingesting_app().await;
    let t = app.tenant().await;
    let coll = collection(&app, &t, "Handbook").await;
    upload_processed(&app, &t, &coll, "handbook.md", HANDBOOK.as_bytes().to_vec()).await;
    let question = "How many days of holiday do employees get?";
    let holiday = |hit: &Value| hit["content"].as_str().unwrap().contains("paid holiday");

    // By default the text half requires every word: no passage holds all eight, so
    // only vectors rank.
    let hits = search(&app, &t.admin_token, json!({"query": question, "top_k": 5})).await;
    assert!(hits.iter().all(|h| h["text_score"].is_null()), "{hits:?}");

    // Asked to match any of them, it ranks the holiday passage, which holds four.
    let hits = search(
        &app,
        &t.admin_token,
        json!({"query": question, "text_match": "any", "top_k": 5}),
    )
    .await;
    let found = hits
        .iter()
        .find(|h| holiday(h))
        .expect("the holiday passage");
    assert!(found["text_score"].as_f64().unwrap() > 0.0, "{found}");

    // The same in a text search.
    let text = |text_match: Option<&str>| {
        let mut body = json!({"query": question, "mode": "text", "top_k": 5});
        if let Some(m) = text_match {
            body["text_match"] = json!(m);
        }
        body
    };
    assert!(search(&app, &t.admin_token, text(None)).await.is_empty());
    let hits = search(&app, &t.admin_token, text(Some("any"))).await;
    assert!(hits.first().is_some_and(holiday), "{hits:?}");
    let hits = search(
        &app,
        &t.admin_token,
        json!({"query": "\"paid holiday\" employees", "mode": "text"}),
    )
    .await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(holiday(&hits[0]));
}

#[tokio::test]
async fn a_pdf_is_processed_with_page_numbers_in_its_citations() {
    let app = spawn_ingesting_app().await;
    let t = app.tenant().await;
    let coll = collection(&app, &t, "Manuals").await;
    let doc = upload_processed(&app, &t, &coll, "manual.pdf", fixture("two-pages.pdf")).await;
    assert_eq!(
        (doc["status"].as_str(), doc["mime_type"].as_str()),
        (Some("processed"), Some("application/pdf")),
        "{doc}"
    );
    let chunks: Value = app
        .get(
            &format!("/v1/rag/documents/{}/chunks", doc["id"].as_str().unwrap()),
            Some(&t.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    let pages: Vec<u64> = chunks["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["span"]["page"].as_u64())
        .collect();
    assert!(
        pages.contains(&1) && pages.contains(&2),
        "pages seen: {pages:?}"
    );
}

#[tokio::test]
async fn another_tenant_finds_nothing_of_ours_and_cannot_touch_it() {
    let app = spawn_ingesting_app().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let coll = collection(&app, &a, "Secret").await;
    let doc = upload_processed(&app, &a, &coll, "handbook.md", HANDBOOK.as_bytes().to_vec()).await;
    let id = doc["id"].as_str().unwrap();
    for mode in ["vector", "text", "hybrid"] {
        let hits = search(
            &app,
            &b.admin_token,
            json!({"query": "refund within fourteen days", "mode": mode}),
        )
        .await;
        assert!(hits.is_empty(), "{mode}: tenant B saw {hits:?}");
    }
    let foreign = json!({"query": "refund", "collection_ids": [coll]});
    problem(
        app.post_json("/v1/rag/search", Some(&b.admin_token), &foreign)
            .await,
        404,
    )
    .await;
    problem(
        app.get(&format!("/v1/rag/documents/{id}"), Some(&b.admin_token))
            .await,
        404,
    )
    .await;
    problem(
        app.get(&format!("/v1/rag/collections/{coll}"), Some(&b.admin_token))
            .await,
        404,
    )
    .await;
    problem(
        app.delete(&format!("/v1/rag/documents/{id}"), Some(&b.admin_token))
            .await,
        404,
    )
    .await;
    problem(
        app.upload(&b.admin_token, &coll, "x.md", b"# hi\n\ntext".to_vec())
            .await,
        404,
    )
    .await;
    // A's document is untouched.
    let still: Value = app
        .get(&format!("/v1/rag/documents/{id}"), Some(&a.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["status"], "processed");
}

#[tokio::test]
async fn re_uploading_the_same_file_does_not_duplicate_chunks() {
    let app = spawn_ingesting_app().await;
    let t = app.tenant().await;
    let coll = collection(&app, &t, "Dupes").await;
    let first =
        upload_processed(&app, &t, &coll, "handbook.md", HANDBOOK.as_bytes().to_vec()).await;
    let again = app
        .upload(
            &t.admin_token,
            &coll,
            "copy-of-handbook.md",
            HANDBOOK.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        (again["duplicate"].as_bool(), &again["id"]),
        (Some(true), &first["id"])
    );
    let hits = search(
        &app,
        &t.admin_token,
        json!({"query": "holiday", "mode": "text", "top_k": 50}),
    )
    .await;
    assert_eq!(hits.len(), 1, "one chunk, not two: {hits:?}");
}

#[tokio::test]
async fn unsupported_and_corrupt_files_never_get_stuck() {
    let app = spawn_ingesting_app().await;
    let t = app.tenant().await;
    let coll = collection(&app, &t, "Mixed").await;
    let png = app
        .upload(
            &t.admin_token,
            &coll,
            "photo.pdf",
            fixture("image-named.pdf"),
        )
        .await;
    problem(png, 415).await;
    let doc = upload_processed(&app, &t, &coll, "broken.pdf", fixture("truncated.pdf")).await;
    assert_eq!(doc["status"], "error", "{doc}");
    assert!(!doc["error"].as_str().unwrap_or_default().is_empty());
}

#[tokio::test]
async fn a_document_whose_worker_died_mid_job_is_finished_by_another_worker() {
    let app = spawn_ingesting_app_with(|c| c.rag.workers = 0).await;
    let t = app.tenant().await;
    let coll = collection(&app, &t, "Crash").await;
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
    let id = doc["id"].as_str().unwrap();
    // A worker takes the job and dies without a word: it never renews or reports.
    // (Leftover jobs of other runs may come first; they are left to the pool too.)
    let ours = trellis_rag::JobKind::ProcessDocument(id.parse().unwrap());
    let mut claimed = None;
    while let Some(job) = app
        .app
        .rag
        .jobs()
        .claim(chrono::Duration::seconds(2))
        .await
        .unwrap()
    {
        if job.kind == ours {
            claimed = Some(job);
            break;
        }
    }
    assert_eq!(claimed.expect("the upload queued a job").attempt, 1);
    // A healthy worker starts; once the dead one's lease runs out it takes over.
    let _pool = trellis_app::workers::Workers::spawn(
        app.app.rag.clone(),
        1,
        std::time::Duration::from_secs(3),
    );
    let doc = app.wait_processed(&t.admin_token, id).await;
    assert_eq!(doc["status"], "processed", "{doc}");
    let hits = search(
        &app,
        &t.admin_token,
        json!({"query": "refund", "mode": "text"}),
    )
    .await;
    assert_eq!(hits.len(), 1, "{hits:?}");
}

#[tokio::test]
async fn deleting_a_document_removes_it_from_search() {
    let app = spawn_ingesting_app().await;
    let t = app.tenant().await;
    let coll = collection(&app, &t, "Gone").await;
    let doc = upload_processed(&app, &t, &coll, "handbook.md", HANDBOOK.as_bytes().to_vec()).await;
    let res = app
        .delete(
            &format!("/v1/rag/documents/{}", doc["id"].as_str().unwrap()),
            Some(&t.admin_token),
        )
        .await;
    assert_eq!(res.status(), 204);
    for mode in ["vector", "text"] {
        assert!(
            search(
                &app,
                &t.admin_token,
                json!({"query": "refund", "mode": mode})
            )
            .await
            .is_empty()
        );
    }
}

#[tokio::test]
async fn an_upload_over_the_limit_gets_413() {
    let app = spawn_app_with(|c| c.rag.max_upload_bytes = 64 * 1024).await;
    let t = app.tenant().await;
    let coll = collection(&app, &t, "Small").await;
    let big = "word ".repeat(40_000).into_bytes();
    problem(app.upload(&t.admin_token, &coll, "big.txt", big).await, 413).await;
}

#[tokio::test]
async fn bad_search_requests_get_422() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let tok = Some(t.admin_token.as_str());
    problem(
        app.post_json("/v1/rag/search", tok, &json!({"query": ""}))
            .await,
        422,
    )
    .await;
    problem(
        app.post_json("/v1/rag/search", tok, &json!({"query": "x", "top_k": 500}))
            .await,
        422,
    )
    .await;
    problem(
        app.post_json(
            "/v1/rag/search",
            tok,
            &json!({"query": "x", "mode": "psychic"}),
        )
        .await,
        422,
    )
    .await;
    let body = problem(
        app.post_json(
            "/v1/rag/search",
            tok,
            &json!({"query": "x", "text_match": "some"}),
        )
        .await,
        422,
    )
    .await;
    assert!(body.to_string().contains("text_match"), "{body}");
    let ids: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let body = problem(
        app.post_json(
            "/v1/rag/search",
            tok,
            &json!({"query": "x", "collection_ids": ids}),
        )
        .await,
        422,
    )
    .await;
    assert!(body.to_string().contains("collection_ids"), "{body}");
}

#[tokio::test]
async fn a_chunk_overlap_too_large_to_double_is_a_422_and_no_collection_is_made() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let tok = Some(t.admin_token.as_str());
    for overlap in [2_147_483_648_u64, 4_294_967_295] {
        let body = problem(
            app.post_json(
                "/v1/rag/collections",
                tok,
                &json!({"name": "Docs", "chunking": {"max_tokens": 200, "overlap_tokens": overlap}}),
            )
            .await,
            422,
        )
        .await;
        assert!(body.to_string().contains("chunk_overlap_tokens"), "{body}");
    }
    let list: Value = app
        .get("/v1/rag/collections", tok)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
}
