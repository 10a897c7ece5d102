//! `LocalEmbedder` with the real all-MiniLM-L6-v2 against reference vectors computed by
//! Python sentence-transformers (`fixtures/make_reference.py` made
//! `fixtures/minilm_reference.json`).
//!
//! The model is found at `$TRELLIS_EMBED_MODEL_DIR` or `<repo>/.trellis/models/all-minilm-l6-v2`;
//! when it is missing these tests fail, saying to run `cargo xtask fetch-model` (which
//! `cargo xtask test` does first): a skipped comparison would hide a broken embedder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use trellis_embed::{DEFAULT_LOCAL_MODEL_ID, LocalEmbedder, LocalOptions};
use trellis_rag::Embedder;
use trellis_rag::index::Embedding;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

fn model_dir() -> PathBuf {
    match std::env::var("TRELLIS_EMBED_MODEL_DIR") {
        Ok(dir) if !dir.trim().is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../.trellis/models/all-minilm-l6-v2"),
    }
}

/// The model, loaded once per test binary.
fn model() -> &'static LocalEmbedder {
    static MODEL: OnceLock<LocalEmbedder> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = model_dir();
        assert!(
            dir.join("model.safetensors").is_file(),
            "the local embedding model is missing from {}: run `cargo xtask fetch-model` \
             (or set TRELLIS_EMBED_MODEL_DIR to a model folder)",
            dir.display()
        );
        LocalEmbedder::load(&dir).unwrap()
    })
}

fn reference() -> Reference {
    let text = include_str!("fixtures/minilm_reference.json");
    serde_json::from_str(text).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[tokio::test]
async fn embeddings_match_sentence_transformers_to_a_cosine_of_0_999() {
    let reference = reference();
    let texts: Vec<String> = reference.cases.iter().map(|c| c.text.clone()).collect();
    let out = model().embed(&texts).await.unwrap();

    assert_eq!(out.len(), reference.cases.len());
    let mut worst = f32::INFINITY;
    for (case, got) in reference.cases.iter().zip(&out) {
        let similarity = cosine(got.as_slice(), &case.embedding);
        worst = worst.min(similarity);
        assert!(
            similarity >= 0.999,
            "cosine {similarity} for {:?}",
            case.text.chars().take(40).collect::<String>()
        );
    }
    println!("lowest cosine to sentence-transformers: {worst}");
}

#[test]
fn texts_are_cut_into_the_same_word_pieces_and_truncated_at_256() {
    for case in reference().cases {
        assert_eq!(
            model().count_tokens(&case.text).unwrap(),
            case.tokens,
            "{:?}",
            case.text
        );
    }
    assert_eq!(model().max_seq_length(), 256);
    assert!(reference().cases.iter().any(|c| c.tokens == 256));
}

#[tokio::test]
async fn small_batches_sorted_by_length_give_the_same_vectors_in_input_order() {
    let dir = model_dir();
    let options = LocalOptions {
        batch_size: 3,
        ..LocalOptions::default()
    };
    let _ = model(); // fails with the fetch-model hint when the model is missing
    let small = LocalEmbedder::load_with(&dir, options).unwrap();
    let texts: Vec<String> = reference().cases.into_iter().map(|c| c.text).collect();
    let batched = small.embed(&texts).await.unwrap();
    for (text, got) in texts.iter().zip(&batched) {
        let alone = model().embed(std::slice::from_ref(text)).await.unwrap();
        // Padding must not leak into the pooled vector.
        assert!(got.cosine(&alone[0]) > 0.99999, "{text:?}");
    }
}

#[tokio::test]
async fn a_paraphrase_scores_higher_than_an_unrelated_sentence() {
    let texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome.",
    ]
    .map(str::to_owned);
    let v: Vec<Embedding> = model().embed(&texts).await.unwrap();
    assert!(v[0].cosine(&v[1]) > 0.7, "{}", v[0].cosine(&v[1]));
    assert!(v[0].cosine(&v[2]) < 0.2, "{}", v[0].cosine(&v[2]));
}

#[test]
fn the_model_is_all_minilm_l6_v2_with_384_dimensions() {
    let model = model().model();
    assert_eq!(model.id, DEFAULT_LOCAL_MODEL_ID);
    assert_eq!(model.id, "local/all-minilm-l6-v2");
    assert_eq!(model.dimension, 384);
}

#[tokio::test(flavor = "current_thread")]
async fn embedding_does_not_block_the_async_executor() {
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
    };
    let texts = vec![reference().cases[7].text.clone(); 16];
    // On a single-threaded runtime the ticker only runs if `embed` yields while the
    // forward pass runs elsewhere.
    let before = ticks.load(Ordering::Relaxed);
    model().embed(&texts).await.unwrap();
    let during = ticks.load(Ordering::Relaxed) - before;
    ticker.abort();
    assert!(during > 1, "the ticker ran {during} times");
}
