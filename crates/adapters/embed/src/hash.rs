//! `HashEmbedder`: a deterministic, dependency-free embedder by signed feature hashing of
//! lower-cased word unigrams and bigrams. It is the offline fallback when no model is
//! installed and the fast embedder of tests: texts sharing words score higher than
//! unrelated ones, but it knows nothing of synonyms or meaning.

use async_trait::async_trait;
use trellis_rag::index::Embedding;
use trellis_rag::{Embedder, EmbeddingModel};

/// Bigrams count half as much as words: they sharpen phrase matches without letting
/// word order dominate.
const BIGRAM_WEIGHT: f32 = 0.5;

/// Hashed in place of the words of a text that has none (empty, only punctuation), so
/// that every text still gets a direction, the same one for all such texts.
const NO_WORDS: &str = "\u{0}no-words";

/// Signed feature hashing into `dimension` components.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    model: EmbeddingModel,
}

impl HashEmbedder {
    /// An embedder with id `hash/<dimension>`.
    ///
    /// # Errors
    /// When `dimension` is outside 1–4096.
    pub fn new(dimension: u32) -> anyhow::Result<Self> {
        let model = EmbeddingModel::new(&format!("hash/{dimension}"), dimension)?;
        Ok(Self { model })
    }

    /// The embedding of one text; the same text always gives the same vector, on every
    /// platform and Rust version (the hash is our own, not `std`'s).
    ///
    /// # Errors
    /// Never in practice: every text hashes at least one feature (see [`NO_WORDS`]).
    pub fn embed_one(&self, text: &str) -> anyhow::Result<Embedding> {
        let dimension = self.model.dimension as usize;
        let mut values = vec![0.0f32; dimension];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            add(&mut values, &[NO_WORDS], 1.0);
        }
        for word in &words {
            add(&mut values, &[word], 1.0);
        }
        for pair in words.windows(2) {
            add(&mut values, pair, BIGRAM_WEIGHT);
        }
        if values.iter().all(|&x| x == 0.0) {
            // Every feature cancelled out (possible for tiny dimensions): fall back to
            // the no-words direction rather than fail on a zero vector.
            add(&mut values, &[NO_WORDS], 1.0);
        }
        Ok(Embedding::with_dimension(values, dimension)?)
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn model(&self) -> EmbeddingModel {
        self.model.clone()
    }

    async fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Embedding>> {
        // Microseconds per text: not worth a blocking-pool hop.
        texts.iter().map(|t| self.embed_one(t)).collect()
    }
}

/// Adds one feature, `weight` times its sign, to its slot.
fn add(values: &mut [f32], feature: &[&str], weight: f32) {
    let h = feature_hash(feature);
    // Low bits pick the slot, the top bit the sign: signed hashing keeps the expected
    // dot product of unrelated texts at zero despite collisions.
    let slot = (h % values.len() as u64) as usize;
    let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
    values[slot] += sign * weight;
}

/// FNV-1a over the words with a separator byte, finished with the splitmix64 mixer
/// (FNV alone leaves the low bits, which pick the slot, poorly mixed for short keys).
fn feature_hash(words: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            h = (h ^ 0x1f).wrapping_mul(PRIME);
        }
        for &b in word.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embed(e: &HashEmbedder, text: &str) -> Embedding {
        e.embed_one(text).unwrap()
    }

    #[test]
    fn texts_sharing_words_score_higher_than_unrelated_ones() {
        let e = HashEmbedder::new(384).unwrap();
        let query = embed(&e, "How do I reset my password?");
        let related = embed(
            &e,
            "To reset your password, open settings and choose reset.",
        );
        let unrelated = embed(&e, "Quarterly revenue grew by twelve percent in Europe.");
        assert!(query.cosine(&related) > 0.3, "{}", query.cosine(&related));
        assert!(
            query.cosine(&unrelated).abs() < 0.15,
            "{}",
            query.cosine(&unrelated)
        );
        assert!(query.cosine(&related) > query.cosine(&unrelated) + 0.2);
    }

    #[test]
    fn case_and_punctuation_do_not_matter() {
        let e = HashEmbedder::new(64).unwrap();
        let a = embed(&e, "Hello, World!");
        let b = embed(&e, "hello world");
        assert!((a.cosine(&b) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_same_text_gives_the_same_vector_every_time() {
        let e = HashEmbedder::new(384).unwrap();
        let a = embed(&e, "Déjà vu: the café's crème brûlée");
        let b = embed(&e, "Déjà vu: the café's crème brûlée");
        assert_eq!(a, b);
        // Pinned so a change of hash (which would invalidate stored vectors) is noticed.
        assert_eq!(feature_hash(&["hello"]), 0x16fe_05a1_c75b_cd0f_u64);
    }

    #[test]
    fn word_order_changes_the_vector_through_bigrams_only() {
        let e = HashEmbedder::new(384).unwrap();
        let a = embed(&e, "dog bites man");
        let b = embed(&e, "man bites dog");
        let sim = a.cosine(&b);
        assert!(sim > 0.5 && sim < 0.999, "{sim}");
    }

    #[test]
    fn empty_and_wordless_texts_still_get_a_unit_vector() {
        let e = HashEmbedder::new(16).unwrap();
        let empty = embed(&e, "");
        let dots = embed(&e, "... !!!");
        assert_eq!(empty, dots);
        assert!((empty.cosine(&empty) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_model_id_names_the_dimension_and_bad_dimensions_are_rejected() {
        let e = HashEmbedder::new(256).unwrap();
        assert_eq!(e.model().id, "hash/256");
        assert_eq!(e.model().dimension, 256);
        assert!(HashEmbedder::new(0).is_err());
        assert!(HashEmbedder::new(5000).is_err());
    }

    #[tokio::test]
    async fn embed_returns_one_vector_per_text_in_order() {
        let e = HashEmbedder::new(128).unwrap();
        let texts = vec!["alpha beta".to_owned(), String::new(), "gamma".to_owned()];
        let out = e.embed(&texts).await.unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], embed(&e, "gamma"));
        assert!(out.iter().all(|v| v.dimension() == 128));
    }
}
