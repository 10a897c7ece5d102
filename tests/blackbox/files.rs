//! Files attached to conversations over HTTP: a Markdown file is uploaded to a
//! conversation (type sniffed), referenced by a message, downloaded, sent to a
//! knowledge collection where the ingestion workers process it so search finds it;
//! other tenants and other users get 404; bad files are 4xx problems.

use crate::content::{
    configure_llm, create_agent, done_message, fake_llm, fake_llm_recording, start_conversation,
    stream,
};
use crate::rag::{HANDBOOK, collection, search};
use serde_json::{Value, json};
use trellis_tests::{TestApp, problem, spawn_app_with, spawn_ingesting_app_with};

pub(crate) async fn attach(
    app: &TestApp,
    token: &str,
    conv: &str,
    name: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
    let form = reqwest::multipart::Form::new().part("file", part);
    app.http
        .post(app.url(&format!("/v1/conversations/{conv}/files")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_markdown_file_attached_to_a_conversation_is_sent_to_a_collection_and_found_by_search() {
    let url = fake_llm().await;
    let app = spawn_ingesting_app_with(|c| c.llm_base_url = Some(url)).await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;

    let res = attach(
        &app,
        &t.admin_token,
        &conv,
        "handbook.md",
        HANDBOOK.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let file: Value = res.json().await.unwrap();
    let id = file["id"].as_str().unwrap().to_owned();
    assert_eq!(file["mime_type"], "text/markdown");
    assert_eq!(file["size_bytes"], HANDBOOK.len());
    assert_eq!(file["conversation_id"], conv.as_str());
    assert!(file.get("storage_key").is_none(), "{file}");
    // Timestamps read like every other of the API: RFC 3339 in UTC with a `Z`.
    let created = file["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z'), "{file}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{file}"
    );

    let list: Value = app
        .get(
            &format!("/v1/conversations/{conv}/files"),
            Some(&t.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["id"], id.as_str(), "{list}");

    let res = app
        .get(&format!("/v1/files/{id}/content"), Some(&t.admin_token))
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("handbook.md")
    );
    assert_eq!(res.text().await.unwrap(), HANDBOOK);

    // A message can carry the file.
    let events = stream(
        &app,
        &t.admin_token,
        &format!("/v1/conversations/{conv}/messages"),
        &json!({"content": "Summarise the attached handbook", "file_ids": [id]}),
    )
    .await;
    let (_, first) = &events[0];
    assert_eq!(first["message"]["files"], json!([id]), "{first}");
    done_message(&events);

    let coll = collection(&app, &t, "From chat").await;
    let res = app
        .post_json(
            &format!("/v1/files/{id}/send-to-collection"),
            Some(&t.admin_token),
            &json!({"collection_id": coll}),
        )
        .await;
    assert_eq!(
        res.status(),
        200,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let sent: Value = res.json().await.unwrap();
    let document = sent["knowledge_document_id"].as_str().unwrap().to_owned();
    let doc = app.wait_processed(&t.admin_token, &document).await;
    assert_eq!(doc["status"], "processed", "{doc}");
    assert_eq!(doc["collection_id"], coll.as_str(), "{doc}");

    let hits = search(
        &app,
        &t.admin_token,
        json!({"query": "refund within fourteen days", "mode": "text", "top_k": 3}),
    )
    .await;
    let top = hits.first().expect("no results");
    assert_eq!(top["citation"]["document_id"], document.as_str(), "{top}");
    assert_eq!(top["citation"]["filename"], "handbook.md", "{top}");
    // The file remembers what it became.
    let again: Value = app
        .get(&format!("/v1/files/{id}"), Some(&t.admin_token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["knowledge_document_id"], document.as_str());
}

#[tokio::test]
async fn the_model_reads_a_file_attached_to_the_question_and_to_later_turns() {
    let (url, requests) = fake_llm_recording().await;
    let app = spawn_app_with(|c| c.llm_base_url = Some(url)).await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;
    let lease = "# Lease\n\nThe tenancy ends on 31 May 2027 unless renewed in writing.\n";
    let res = attach(
        &app,
        &t.admin_token,
        &conv,
        "lease.md",
        lease.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let events = stream(
        &app,
        &t.admin_token,
        &format!("/v1/conversations/{conv}/messages"),
        &json!({"content": "When does the tenancy end?", "file_ids": [id]}),
    )
    .await;
    let answer = done_message(&events);
    // A follow-up without the file still has it in context.
    let events = stream(
        &app,
        &t.admin_token,
        &format!("/v1/conversations/{conv}/messages"),
        &json!({"content": "And how is it renewed?", "parent_id": answer["id"]}),
    )
    .await;
    done_message(&events);

    let sent = requests.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    for body in &sent {
        let body: Value = serde_json::from_str(body).unwrap();
        let system = body["messages"][0]["content"].as_str().unwrap_or_default();
        assert!(
            system.contains("<file name=\"lease.md\">")
                && system.contains("The tenancy ends on 31 May 2027 unless renewed in writing."),
            "the file's text was not in the prompt: {body}"
        );
    }
}

#[tokio::test]
async fn another_tenant_and_another_user_get_404_on_a_file() {
    let url = fake_llm().await;
    let app = spawn_app_with(|c| c.llm_base_url = Some(url)).await;
    let t = app.tenant().await;
    let other = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let email = format!("client@{}.example.com", t.slug);
    app.create_user(&t.admin_token, &email, "client").await;
    let client = app.login(&t.slug, &email, "user-password-1").await;
    let email2 = format!("nosy@{}.example.com", t.slug);
    app.create_user(&t.admin_token, &email2, "client").await;
    let nosy = app.login(&t.slug, &email2, "user-password-1").await;
    let conv = start_conversation(&app, &client, &agent).await;
    let res = attach(
        &app,
        &client,
        &conv,
        "notes.md",
        b"# Notes\n\nPrivate.\n".to_vec(),
    )
    .await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let coll = collection(&app, &other, "Theirs").await;

    for token in [&other.admin_token, &nosy] {
        for path in [
            format!("/v1/files/{id}"),
            format!("/v1/files/{id}/content"),
            format!("/v1/conversations/{conv}/files"),
        ] {
            problem(app.get(&path, Some(token)).await, 404).await;
        }
        problem(
            app.delete(&format!("/v1/files/{id}"), Some(token)).await,
            404,
        )
        .await;
        problem(
            app.post_json(
                &format!("/v1/files/{id}/send-to-collection"),
                Some(token),
                &json!({"collection_id": coll}),
            )
            .await,
            404,
        )
        .await;
        problem(
            attach(&app, token, &conv, "mine.md", b"# Mine\n".to_vec()).await,
            404,
        )
        .await;
    }
    // Nor can another user's message carry it.
    let nosy_conv = start_conversation(&app, &nosy, &agent).await;
    problem(
        app.post_json(
            &format!("/v1/conversations/{nosy_conv}/messages"),
            Some(&nosy),
            &json!({"content": "Look", "file_ids": [id]}),
        )
        .await,
        404,
    )
    .await;
    // The owner still has it, and can delete it.
    assert_eq!(
        app.get(&format!("/v1/files/{id}"), Some(&client))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.delete(&format!("/v1/files/{id}"), Some(&client))
            .await
            .status(),
        204
    );
    problem(
        app.get(&format!("/v1/files/{id}"), Some(&client)).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn an_unsupported_empty_or_oversized_file_is_refused_with_a_problem() {
    let url = fake_llm().await;
    let app = spawn_app_with(|c| {
        c.llm_base_url = Some(url);
        c.rag.max_upload_bytes = 4096;
    })
    .await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;

    let png = [&b"\x89PNG\r\n\x1a\n"[..], &[0u8; 64]].concat();
    problem(
        attach(&app, &t.admin_token, &conv, "notes.md", png).await,
        415,
    )
    .await;
    problem(
        attach(&app, &t.admin_token, &conv, "empty.txt", Vec::new()).await,
        422,
    )
    .await;
    let big = "a".repeat(5000).into_bytes();
    problem(
        attach(&app, &t.admin_token, &conv, "big.txt", big).await,
        413,
    )
    .await;
    let list: Value = app
        .get(
            &format!("/v1/conversations/{conv}/files"),
            Some(&t.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
}
