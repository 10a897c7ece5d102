//! The RAG repositories against PostgreSQL: collections, documents and chunks keep to
//! their tenant (in the adapter and, underneath it, in row-level security), chunk
//! replacement is atomic and idempotent, and deletes cascade.

use super::rag_support::{
    Rng, chunk, collection, document, meta, new_document, rag_tenant, store_chunks, visible_chunks,
};
use super::support::{app_url, begin_in, owner_url, query, raw, stmt_with, store};
use sea_orm::ConnectionTrait;
use std::collections::HashSet;
use trellis_kernel::PageRequest;
use trellis_rag::index::{ChunkId, CollectionId};
use trellis_rag::{
    ChunkRepo, ChunkingSettings, CollectionPatch, CollectionRepo, DocumentFilter, DocumentRepo,
    DocumentStatus, EmbeddingModel, NewCollection, RagError, SourceType, StatusChange,
};

fn new_collection(name: &str) -> NewCollection {
    NewCollection {
        id: CollectionId::new(),
        name: name.into(),
        description: Some("Product manuals".into()),
        agent_id: Some(uuid::Uuid::now_v7()),
        source_type: SourceType::Manual,
        chunking: ChunkingSettings::new(256, 32).unwrap(),
        embedding_model: EmbeddingModel::new("local/all-minilm-l6-v2", 384).unwrap(),
        created_by: None,
    }
}

#[tokio::test]
async fn a_collection_round_trips_and_its_name_is_unique_within_the_tenant_only() {
    let store = store().await;
    let a = rag_tenant(&store).await;
    let b = rag_tenant(&store).await;
    let new = new_collection("Manuals");
    let created = CollectionRepo::insert(&store, &a, new.clone())
        .await
        .unwrap();
    assert_eq!(created.name, "Manuals");
    assert_eq!(created.chunking, new.chunking);
    assert_eq!(created.embedding_model, new.embedding_model);
    assert_eq!(created.agent_id, new.agent_id);
    assert_eq!(
        CollectionRepo::get(&store, &a, new.id).await.unwrap(),
        created
    );

    let err = CollectionRepo::insert(&store, &a, new_collection("Manuals"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RagError::Conflict(ref m) if m.contains("name")),
        "{err:?}"
    );
    CollectionRepo::insert(&store, &b, new_collection("Manuals"))
        .await
        .unwrap();

    // Another tenant's collection does not exist as far as B can tell.
    let err = CollectionRepo::get(&store, &b, new.id).await.unwrap_err();
    assert!(matches!(err, RagError::NotFound("collection")), "{err:?}");
    let err = CollectionRepo::delete(&store, &b, new.id)
        .await
        .unwrap_err();
    assert!(matches!(err, RagError::NotFound("collection")), "{err:?}");
}

#[tokio::test]
async fn a_collection_patch_changes_only_what_it_names_and_the_model_changes_apart() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = CollectionRepo::insert(&store, &ctx, new_collection("Before"))
        .await
        .unwrap();
    let patch = CollectionPatch {
        name: Some("After".into()),
        description: Some(None),
        ..Default::default()
    };
    let updated = CollectionRepo::update(&store, &ctx, c.id, patch)
        .await
        .unwrap();
    assert_eq!(updated.name, "After");
    assert_eq!(updated.description, None);
    assert_eq!(updated.agent_id, c.agent_id);
    assert_eq!(updated.chunking, c.chunking);
    assert!(updated.updated_at >= c.updated_at);

    let model = EmbeddingModel::new("openai/text-embedding-3-small", 1536).unwrap();
    store
        .set_embedding_model(&ctx, c.id, model.clone())
        .await
        .unwrap();
    let reloaded = CollectionRepo::get(&store, &ctx, c.id).await.unwrap();
    assert_eq!(reloaded.embedding_model, model);

    let page = CollectionRepo::list(&store, &ctx, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items, vec![reloaded]);
}

#[tokio::test]
async fn a_document_cannot_be_put_into_another_tenants_collection() {
    let store = store().await;
    let a = rag_tenant(&store).await;
    let b = rag_tenant(&store).await;
    let c = collection(&store, &a, 8).await;
    let err = DocumentRepo::insert(
        &store,
        &b,
        new_document(c.id, SourceType::Upload, meta(&[])),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RagError::NotFound("collection")), "{err:?}");
}

#[tokio::test]
async fn the_same_bytes_are_one_document_per_collection() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let other = collection(&store, &ctx, 8).await;
    let first = new_document(c.id, SourceType::Upload, meta(&[("lang", "en")]));
    let stored = DocumentRepo::insert(&store, &ctx, first.clone())
        .await
        .unwrap();
    assert_eq!(stored.status, DocumentStatus::Uploaded);
    assert_eq!(stored.metadata, first.metadata);
    assert_eq!(
        store
            .find_by_checksum(&ctx, c.id, &first.checksum)
            .await
            .unwrap(),
        Some(stored)
    );
    assert_eq!(
        store
            .find_by_checksum(&ctx, c.id, "no-such-checksum")
            .await
            .unwrap(),
        None
    );

    let mut again = new_document(c.id, SourceType::Upload, meta(&[]));
    again.checksum = first.checksum.clone();
    let err = DocumentRepo::insert(&store, &ctx, again.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, RagError::Conflict(_)), "{err:?}");
    // The same file in another collection is another document.
    again.collection_id = other.id;
    DocumentRepo::insert(&store, &ctx, again).await.unwrap();
}

#[tokio::test]
async fn documents_list_by_collection_and_status_in_pages() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let other = collection(&store, &ctx, 8).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            document(&store, &ctx, c.id, SourceType::Upload, meta(&[]))
                .await
                .id,
        );
    }
    document(&store, &ctx, other.id, SourceType::Upload, meta(&[])).await;
    let done = StatusChange {
        status: DocumentStatus::Processed,
        error: None,
        processed_at: Some(chrono::Utc::now()),
        chunk_count: Some(3),
    };
    DocumentRepo::set_status(&store, &ctx, ids[1], done)
        .await
        .unwrap();

    let filter = DocumentFilter {
        collection: Some(c.id),
        status: None,
    };
    let first = DocumentRepo::list(
        &store,
        &ctx,
        &filter,
        PageRequest::new(Some(3), None).unwrap(),
    )
    .await
    .unwrap();
    let cursor = first.next_cursor.clone().unwrap();
    let second = DocumentRepo::list(
        &store,
        &ctx,
        &filter,
        PageRequest::new(Some(3), Some(&cursor)).unwrap(),
    )
    .await
    .unwrap();
    let listed: Vec<_> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, ids);
    assert!(second.next_cursor.is_none());

    let processed = DocumentFilter {
        collection: None,
        status: Some(DocumentStatus::Processed),
    };
    let page = DocumentRepo::list(&store, &ctx, &processed, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, ids[1]);
    assert_eq!(page.items[0].chunk_count, 3);
}

#[tokio::test]
async fn a_status_change_records_the_error_and_a_later_one_clears_it() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let d = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let failed = DocumentRepo::set_status(
        &store,
        &ctx,
        d.id,
        StatusChange {
            status: DocumentStatus::Error,
            error: Some("the file is corrupt".into()),
            processed_at: None,
            chunk_count: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(failed.status, DocumentStatus::Error);
    assert_eq!(failed.error.as_deref(), Some("the file is corrupt"));
    assert_eq!(failed.chunk_count, 0);

    let at = chrono::Utc::now();
    let done = DocumentRepo::set_status(
        &store,
        &ctx,
        d.id,
        StatusChange {
            status: DocumentStatus::Processed,
            error: None,
            processed_at: Some(at),
            chunk_count: Some(7),
        },
    )
    .await
    .unwrap();
    assert_eq!(done.error, None);
    assert_eq!(done.chunk_count, 7);
    // timestamptz keeps microseconds.
    assert_eq!(
        done.processed_at.map(|t| t.timestamp_micros()),
        Some(at.timestamp_micros())
    );

    let err = DocumentRepo::set_status(
        &store,
        &rag_tenant(&store).await,
        d.id,
        StatusChange {
            status: DocumentStatus::Processing,
            error: None,
            processed_at: None,
            chunk_count: None,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RagError::NotFound("document")), "{err:?}");
}

#[tokio::test]
async fn replacing_a_documents_chunks_twice_leaves_only_the_second_set_in_order() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let d = document(
        &store,
        &ctx,
        c.id,
        SourceType::Upload,
        meta(&[("lang", "en")]),
    )
    .await;
    let mut rng = Rng::new(1);
    let first: Vec<_> = (0..3)
        .map(|i| chunk(&d, i, &format!("first {i}"), rng.vector(8)))
        .collect();
    store_chunks(&store, &ctx, &d, first.clone()).await;
    // More than one INSERT batch (500 rows), given in reverse order.
    let second: Vec<_> = (0..700)
        .rev()
        .map(|i| chunk(&d, i, &format!("second {i}\0"), rng.vector(8)))
        .collect();
    store_chunks(&store, &ctx, &d, second.clone()).await;
    store_chunks(&store, &ctx, &d, second.clone()).await;

    let stored = store.for_document(&ctx, d.id).await.unwrap();
    assert_eq!(stored.len(), 700);
    let positions: Vec<u32> = stored.iter().map(|c| c.position).collect();
    assert_eq!(positions, (0..700).collect::<Vec<_>>());
    let mut expected = second
        .iter()
        .find(|c| c.chunk.position == 5)
        .unwrap()
        .chunk
        .clone();
    // NUL cannot be stored; it becomes a space of the same length.
    expected.content = "second 5 ".into();
    assert_eq!(stored[5], expected);

    // get_many skips ids it does not know, including the replaced first set.
    let ids = [first[0].chunk.id, second[0].chunk.id, ChunkId::new()];
    let got = store.get_many(&ctx, &ids).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, second[0].chunk.id);
    assert!(store.get_many(&ctx, &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_replacement_that_fails_midway_leaves_the_old_chunks_in_place() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let d = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let mut rng = Rng::new(2);
    let old: Vec<_> = (0..4).map(|i| chunk(&d, i, "old", rng.vector(8))).collect();
    store_chunks(&store, &ctx, &d, old.clone()).await;

    // The delete and the first 500-row batch succeed; the last chunk, in the second
    // batch, has a vector of another model's size, which the database refuses.
    let mut new: Vec<_> = (0..600)
        .map(|i| chunk(&d, i, "new", rng.vector(8)))
        .collect();
    new.push(chunk(&d, 600, "wrong model", rng.vector(16)));
    let err = store
        .replace_for_document(&ctx, d.id, new)
        .await
        .unwrap_err();
    assert!(matches!(err, RagError::Unexpected(_)), "{err:?}");
    assert!(
        format!("{err:#}").contains("chunks_embedding_dim_check"),
        "{err:#}"
    );

    let stored = store.for_document(&ctx, d.id).await.unwrap();
    let ids: Vec<_> = stored.iter().map(|c| c.id).collect();
    let old_ids: Vec<_> = old.iter().map(|c| c.chunk.id).collect();
    assert_eq!(ids, old_ids);
}

#[tokio::test]
async fn chunks_must_belong_to_the_document_they_are_stored_under() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let d = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let e = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let stray = chunk(&e, 0, "of e", Rng::new(3).vector(8));
    let err = store
        .replace_for_document(&ctx, d.id, vec![stray])
        .await
        .unwrap_err();
    assert!(matches!(err, RagError::Unexpected(_)), "{err:?}");

    let other = rag_tenant(&store).await;
    let mine = chunk(&d, 0, "of d", Rng::new(4).vector(8));
    let err = store
        .replace_for_document(&other, d.id, vec![mine])
        .await
        .unwrap_err();
    assert!(matches!(err, RagError::NotFound("document")), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replacements_of_one_document_leave_exactly_one_of_the_sets() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let d = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let mut rng = Rng::new(5);
    let sets: Vec<Vec<_>> = (0..4)
        .map(|s| {
            (0..50)
                .map(|i| chunk(&d, i, &format!("set {s}"), rng.vector(8)))
                .collect()
        })
        .collect();
    let tasks: Vec<_> = sets
        .iter()
        .cloned()
        .map(|set| {
            let (store, ctx) = (store.clone(), ctx.clone());
            tokio::spawn(async move { store.replace_for_document(&ctx, d.id, set).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stored: HashSet<ChunkId> = store
        .for_document(&ctx, d.id)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    let matches = sets
        .iter()
        .filter(|set| set.iter().map(|c| c.chunk.id).collect::<HashSet<_>>() == stored)
        .count();
    assert_eq!(
        matches,
        1,
        "stored {} chunks that are not one whole set",
        stored.len()
    );
}

#[tokio::test]
async fn deleting_a_document_removes_its_chunks_and_only_its_chunks() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let d = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let e = document(&store, &ctx, c.id, SourceType::Upload, meta(&[])).await;
    let mut rng = Rng::new(6);
    let gone = store_chunks(&store, &ctx, &d, vec![chunk(&d, 0, "d", rng.vector(8))]).await;
    let kept = store_chunks(&store, &ctx, &e, vec![chunk(&e, 0, "e", rng.vector(8))]).await;

    DocumentRepo::delete(&store, &ctx, d.id).await.unwrap();
    assert!(matches!(
        DocumentRepo::get(&store, &ctx, d.id).await,
        Err(RagError::NotFound("document"))
    ));
    let ids = [gone[0].chunk.id, kept[0].chunk.id];
    let left = store.get_many(&ctx, &ids).await.unwrap();
    assert_eq!(
        left.iter().map(|c| c.id).collect::<Vec<_>>(),
        [kept[0].chunk.id]
    );
    let err = DocumentRepo::delete(&store, &ctx, d.id).await.unwrap_err();
    assert!(matches!(err, RagError::NotFound("document")), "{err:?}");
}

#[tokio::test]
async fn deleting_a_collection_removes_its_documents_chunks_and_sync_runs() {
    let store = store().await;
    let ctx = rag_tenant(&store).await;
    let c = collection(&store, &ctx, 8).await;
    let d = document(&store, &ctx, c.id, SourceType::Shopify, meta(&[])).await;
    store_chunks(
        &store,
        &ctx,
        &d,
        vec![chunk(&d, 0, "x", Rng::new(7).vector(8))],
    )
    .await;
    // No port writes sync runs yet; insert one as the application would.
    let db = raw(&app_url()).await;
    let txn = begin_in(&db, ctx.tenant_id()).await;
    txn.execute_raw(stmt_with(
        "INSERT INTO sync_runs (tenant_id, id, collection_id, sync_type, status)
         VALUES ($1, $2, $3, 'shopify_products', 'completed')",
        vec![
            ctx.tenant_id().as_uuid().into(),
            uuid::Uuid::now_v7().into(),
            c.id.as_uuid().into(),
        ],
    ))
    .await
    .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(visible_chunks(&app_url(), ctx.tenant_id()).await, 1);

    CollectionRepo::delete(&store, &ctx, c.id).await.unwrap();
    assert!(matches!(
        DocumentRepo::get(&store, &ctx, d.id).await,
        Err(RagError::NotFound("document"))
    ));
    let txn = begin_in(&db, ctx.tenant_id()).await;
    for table in ["documents", "chunks", "sync_runs"] {
        let rows = query(&txn, &format!("SELECT count(*) AS n FROM {table}")).await;
        let n: i64 = rows[0].try_get("", "n").unwrap();
        assert_eq!(n, 0, "{table} kept {n} rows of the deleted collection");
    }
    txn.commit().await.unwrap();
}

#[tokio::test]
async fn another_tenants_chunks_are_invisible_to_a_raw_select_under_row_security() {
    let store = store().await;
    let a = rag_tenant(&store).await;
    let b = rag_tenant(&store).await;
    let c = collection(&store, &a, 8).await;
    let d = document(&store, &a, c.id, SourceType::Upload, meta(&[])).await;
    let chunks: Vec<_> = (0..3)
        .map(|i| chunk(&d, i, "secret", Rng::new(8).vector(8)))
        .collect();
    store_chunks(&store, &a, &d, chunks).await;

    // No WHERE tenant_id: whatever isolation shows here is the database's.
    assert_eq!(visible_chunks(&app_url(), a.tenant_id()).await, 3);
    let db = raw(&app_url()).await;
    let txn = begin_in(&db, b.tenant_id()).await;
    for table in ["knowledge_collections", "documents", "chunks"] {
        let rows = txn
            .query_all_raw(stmt_with(
                &format!("SELECT id FROM {table} WHERE id = ANY($1::uuid[])"),
                vec![format!("{{{},{},{}}}", c.id, d.id, uuid::Uuid::nil()).into()],
            ))
            .await
            .unwrap();
        assert!(rows.is_empty(), "B saw A's {table}");
    }
    // Nor can B point a chunk of its own at A's document.
    let err = txn
        .execute_raw(stmt_with(
            "INSERT INTO chunks (tenant_id, id, document_id, collection_id, position, content,
                 start_offset, end_offset, token_count, source_type, embedding, embedding_dim)
             VALUES ($1, $2, $3, $4, 0, 'x', 0, 1, 1, 'upload', '[1,0]', 2)",
            vec![
                b.tenant_id().as_uuid().into(),
                uuid::Uuid::now_v7().into(),
                d.id.as_uuid().into(),
                c.id.as_uuid().into(),
            ],
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("foreign key"), "{err}");
    txn.rollback().await.unwrap();

    // And without any tenant, nothing at all.
    let none = raw(&app_url()).await;
    for table in [
        "knowledge_collections",
        "documents",
        "chunks",
        "sync_runs",
        "jobs",
    ] {
        let rows = query(&none, &format!("SELECT count(*) AS n FROM {table}")).await;
        let n: i64 = rows[0].try_get("", "n").unwrap();
        assert_eq!(n, 0, "{table} leaked {n} rows without a tenant");
    }
}

#[tokio::test]
async fn the_rag_tables_are_keyed_and_isolated_like_every_tenant_table() {
    // The general schema test checks every table with a tenant_id; this makes sure it
    // saw these, and that the indexes search depends on exist in their partial form.
    let db = raw(&owner_url()).await;
    let rows = query(
        &db,
        "SELECT c.relname::text AS name, c.relrowsecurity AND c.relforcerowsecurity AS forced,
                (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid
                   AND pg_get_expr(p.polqual, p.polrelid) LIKE '%trellis.tenant_id%') AS policies
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public'
            AND c.relname IN ('knowledge_collections', 'documents', 'chunks', 'sync_runs', 'jobs')",
    )
    .await;
    assert_eq!(rows.len(), 5);
    for r in rows {
        let name: String = r.try_get("", "name").unwrap();
        assert!(r.try_get::<bool>("", "forced").unwrap(), "{name}");
        assert_eq!(r.try_get::<i64>("", "policies").unwrap(), 1, "{name}");
    }
    // One HNSW index per supported dimension, each an expression index restricted to
    // its dimension (the adapter's INDEXED_DIMENSIONS lists the same ones).
    for dim in [384, 1536] {
        let rows = query(
            &db,
            &format!(
                "SELECT indexdef FROM pg_indexes
                  WHERE tablename = 'chunks' AND indexname = 'chunks_embedding_{dim}_hnsw'"
            ),
        )
        .await;
        let def: String = rows[0].try_get("", "indexdef").unwrap();
        assert!(def.contains("USING hnsw"), "{def}");
        assert!(def.contains(&format!("vector({dim})")), "{def}");
        assert!(
            def.contains(&format!("WHERE (embedding_dim = {dim})")),
            "{def}"
        );
    }
}
