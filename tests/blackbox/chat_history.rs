//! What users do with their chat history and agents, over HTTP against Postgres:
//! editing a message branches the tree, forking copies a path, message search stays
//! within one's own conversations, memories are private, agent changes are
//! versioned, and an agent bound to a real collection answers with citations whose
//! passages reached the model.

use crate::content::{
    app, configure_llm, create_agent, done_message, fake_llm_recording, start_conversation, stream,
};
use crate::rag::{HANDBOOK, collection, upload_processed};
use serde_json::{Value, json};
use trellis_tests::{TestApp, problem, spawn_ingesting_app_with};

async fn tree(app: &TestApp, token: &str, conv: &str) -> Value {
    app.get(&format!("/v1/conversations/{conv}/messages"), Some(token))
        .await
        .json()
        .await
        .unwrap()
}

async fn ask(app: &TestApp, token: &str, conv: &str, content: &str) -> (Value, Value) {
    let events = stream(
        app,
        token,
        &format!("/v1/conversations/{conv}/messages"),
        &json!({ "content": content }),
    )
    .await;
    let question = events[0].1["message"].clone();
    (question, done_message(&events))
}

#[tokio::test]
async fn editing_a_message_adds_a_sibling_branch_and_the_active_path_follows_it() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;
    let (question, answer) = ask(&app, &t.admin_token, &conv, "Say hello").await;
    let qid = question["id"].as_str().unwrap();

    let events = stream(
        &app,
        &t.admin_token,
        &format!("/v1/conversations/{conv}/messages/{qid}/edit"),
        &json!({"content": "Say hello politely"}),
    )
    .await;
    let edited = events[0].1["message"].clone();
    let new_answer = done_message(&events);
    assert_ne!(edited["id"], question["id"]);
    assert_eq!(edited["parent_id"], question["parent_id"]);
    assert_eq!(edited["content"], "Say hello politely");

    let now = tree(&app, &t.admin_token, &conv).await;
    assert_eq!(
        now["active_path"],
        json!([edited["id"], new_answer["id"]]),
        "{now}"
    );
    // The original branch is still there and can be shown.
    let old = app
        .get(
            &format!("/v1/conversations/{conv}/messages?through={qid}"),
            Some(&t.admin_token),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(old["active_path"], json!([question["id"], answer["id"]]));
}

#[tokio::test]
async fn forking_at_a_message_makes_a_new_conversation_with_the_path_up_to_it() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let conv = start_conversation(&app, &t.admin_token, &agent).await;
    let (q1, a1) = ask(&app, &t.admin_token, &conv, "First question").await;
    ask(&app, &t.admin_token, &conv, "Second question").await;

    let res = app
        .post_json(
            &format!("/v1/conversations/{conv}/fork"),
            Some(&t.admin_token),
            &json!({"message_id": a1["id"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let fork: Value = res.json().await.unwrap();
    let fork_id = fork["id"].as_str().unwrap();
    assert_ne!(fork_id, conv);

    let copied = tree(&app, &t.admin_token, fork_id).await;
    let path = copied["active_path"].as_array().unwrap();
    assert_eq!(path.len(), 2, "{copied}");
    let text = copied["nodes"].to_string();
    assert!(text.contains("First question"), "{copied}");
    assert!(!text.contains("Second question"), "{copied}");
    // Copies, not the originals.
    assert_ne!(path[0], q1["id"]);
    // The original keeps all four messages.
    let original = tree(&app, &t.admin_token, &conv).await;
    assert_eq!(original["active_path"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn message_search_finds_the_users_own_messages_and_not_another_users() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let mut tokens = Vec::new();
    for name in ["ann", "bob"] {
        let email = format!("{name}@{}.example.com", t.slug);
        app.create_user(&t.admin_token, &email, "client").await;
        tokens.push(app.login(&t.slug, &email, "user-password-1").await);
    }
    let ann_conv = start_conversation(&app, &tokens[0], &agent).await;
    let (q, _) = ask(&app, &tokens[0], &ann_conv, "Where is the zanzibar invoice").await;
    let bob_conv = start_conversation(&app, &tokens[1], &agent).await;
    ask(&app, &tokens[1], &bob_conv, "Another zanzibar question").await;

    let hits: Value = app
        .get("/v1/conversations/search?q=zanzibar", Some(&tokens[0]))
        .await
        .json()
        .await
        .unwrap();
    let items = hits["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{hits}");
    assert_eq!(items[0]["message_id"], q["id"]);
    assert_eq!(items[0]["conversation_id"], ann_conv.as_str());
    let res = app
        .get("/v1/conversations/search?q=", Some(&tokens[0]))
        .await;
    problem(res, 422).await;
}

#[tokio::test]
async fn memories_are_created_listed_edited_and_deleted_and_private_to_their_owner() {
    let app = app().await;
    let t = app.tenant().await;
    let email = format!("client@{}.example.com", t.slug);
    app.create_user(&t.admin_token, &email, "client").await;
    let client = app.login(&t.slug, &email, "user-password-1").await;
    let email2 = format!("other@{}.example.com", t.slug);
    app.create_user(&t.admin_token, &email2, "client").await;
    let other = app.login(&t.slug, &email2, "user-password-1").await;

    let res = app
        .post_json(
            "/v1/memories",
            Some(&client),
            &json!({"key": "diet", "value": "Vegetarian", "category": "food"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let memory: Value = res.json().await.unwrap();
    let path = format!("/v1/memories/{}", memory["id"].as_str().unwrap());
    let list: Value = app
        .get("/v1/memories", Some(&client))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    let res = app
        .patch_json(
            &path,
            Some(&client),
            &json!({"value": "Vegan", "category": null}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let edited: Value = res.json().await.unwrap();
    assert_eq!(
        (&edited["value"], &edited["category"]),
        (&json!("Vegan"), &Value::Null)
    );

    problem(app.get(&path, Some(&other)).await, 404).await;
    problem(
        app.patch_json(&path, Some(&other), &json!({"value": "Hacked"}))
            .await,
        404,
    )
    .await;
    problem(app.delete(&path, Some(&other)).await, 404).await;
    let theirs: Value = app
        .get("/v1/memories", Some(&other))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0, "{theirs}");

    assert_eq!(app.delete(&path, Some(&client)).await.status(), 204);
    problem(app.get(&path, Some(&client)).await, 404).await;
}

#[tokio::test]
async fn changing_an_agent_bumps_its_version_and_the_previous_versions_are_listed() {
    let app = app().await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let agent = create_agent(&app, &t.admin_token).await;
    let res = app
        .patch_json(
            &format!("/v1/agents/{agent}"),
            Some(&t.admin_token),
            &json!({"instructions": "Be thorough.", "expected_version": 1}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let changed: Value = res.json().await.unwrap();
    assert_eq!(changed["version"], 2);
    // A change based on the old version is refused.
    let res = app
        .patch_json(
            &format!("/v1/agents/{agent}"),
            Some(&t.admin_token),
            &json!({"instructions": "Be terse.", "expected_version": 1}),
        )
        .await;
    problem(res, 409).await;

    let versions: Value = app
        .get(
            &format!("/v1/agents/{agent}/versions"),
            Some(&t.admin_token),
        )
        .await
        .json()
        .await
        .unwrap();
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{versions}");
    assert_eq!(items[0]["version"], 1);
    assert_eq!(items[0]["config"]["instructions"], "Be brief.");
    assert_eq!(items[1]["version"], 2);
    assert_eq!(items[1]["config"]["instructions"], "Be thorough.");
}

#[tokio::test]
async fn an_agent_bound_to_a_collection_answers_with_citations_from_its_documents() {
    let (url, requests) = fake_llm_recording().await;
    let app = spawn_ingesting_app_with(|c| c.llm_base_url = Some(url)).await;
    let t = app.tenant().await;
    configure_llm(&app, &t).await;
    let coll = collection(&app, &t, "Handbook").await;
    let doc = upload_processed(&app, &t, &coll, "handbook.md", HANDBOOK.as_bytes().to_vec()).await;
    assert_eq!(doc["status"], "processed", "{doc}");
    let res = app
        .post_json(
            "/v1/agents",
            Some(&t.admin_token),
            &json!({"name": "Handbook helper", "instructions": "Answer from the sources.",
                    "provider": "openai_compatible", "model": "fake-model", "published": true,
                    "knowledge_collections": [coll]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let agent = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let conv = start_conversation(&app, &t.admin_token, &agent).await;

    let events = stream(
        &app,
        &t.admin_token,
        &format!("/v1/conversations/{conv}/messages"),
        &json!({"content": "Within how many days may customers request a refund?"}),
    )
    .await;
    let (_, cited) = events
        .iter()
        .find(|(e, _)| e == "citations")
        .unwrap_or_else(|| panic!("no citations event: {events:?}"));
    let citations = cited["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{cited}");
    let refund = citations
        .iter()
        .find(|c| c["document_id"] == doc["id"] && c["filename"] == "handbook.md")
        .unwrap_or_else(|| panic!("the handbook is not cited: {cited}"));
    let answer = done_message(&events);
    assert!(
        !answer["citations"].as_array().unwrap().is_empty(),
        "{answer}"
    );

    // The passage the answer cites reached the model.
    let (start, end) = (
        refund["span_start"].as_u64().unwrap() as usize,
        refund["span_end"].as_u64().unwrap() as usize,
    );
    assert!(HANDBOOK[start..end].contains("fourteen days"), "{refund}");
    let sent = requests.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_str(&sent[0]).unwrap();
    assert!(
        body["messages"]
            .to_string()
            .contains("within fourteen days of purchase"),
        "the chunk text was not in the prompt: {body}"
    );
}
