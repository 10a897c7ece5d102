//! `LocalEmbedder`: a sentence-transformers BERT model (all-MiniLM-L6-v2 by default) run
//! on the CPU with candle and tokenizers, loaded from a local folder only: nothing is
//! downloaded at run time (`cargo xtask fetch-model` installs the model).
//!
//! It reproduces sentence-transformers' pipeline: word pieces truncated to the model's
//! `max_seq_length`, BERT, mean pooling over the attention mask, L2 normalisation. Two
//! things make it fast without changing the vectors: inputs are sorted by length before
//! batching (little padding) and each batch is padded only to its longest member.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use tokio::sync::Semaphore;
use trellis_rag::index::Embedding;
use trellis_rag::{Embedder, EmbeddingModel};

/// The model id of all-MiniLM-L6-v2 run by this embedder.
pub const DEFAULT_LOCAL_MODEL_ID: &str = "local/all-minilm-l6-v2";

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2, used when the folder
/// has no `sentence_bert_config.json`. (Its `tokenizer.json` says 128, which is not what
/// sentence-transformers uses.)
const DEFAULT_MAX_SEQ_LENGTH: usize = 256;

/// How a [`LocalEmbedder`] is set up; [`LocalOptions::default`] fits all-MiniLM-L6-v2.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The id collections bind to.
    pub model_id: String,
    /// Texts per forward pass. 32 is sentence-transformers' default; larger batches gain
    /// little on 2 cores and cost memory (activations grow with batch × length²).
    pub batch_size: usize,
    /// Word pieces per text, special tokens included; `None` reads the folder's
    /// `sentence_bert_config.json` (256 for all-MiniLM-L6-v2).
    pub max_seq_length: Option<usize>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            model_id: DEFAULT_LOCAL_MODEL_ID.to_owned(),
            batch_size: 32,
            max_seq_length: None,
        }
    }
}

/// A BERT sentence embedder on the CPU.
#[derive(Clone)]
pub struct LocalEmbedder {
    model: EmbeddingModel,
    inner: Arc<Inner>,
    /// One forward pass at a time: candle already spreads a pass over every core, so
    /// concurrent passes only thrash caches and multiply activation memory.
    gate: Arc<Semaphore>,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model", &self.model)
            .field("dir", &self.inner.dir)
            .field("batch_size", &self.inner.batch_size)
            .field("max_seq_length", &self.inner.max_seq_length)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    bert: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pad_id: u32,
    batch_size: usize,
    max_seq_length: usize,
    dimension: usize,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

impl LocalEmbedder {
    /// Loads all-MiniLM-L6-v2 (or a compatible model) from `dir`, which must hold
    /// `config.json`, `tokenizer.json` and `model.safetensors`.
    ///
    /// # Errors
    /// When a file is missing or malformed; the message says how to install the model.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, LocalOptions::default())
    }

    /// [`LocalEmbedder::load`] with explicit options.
    ///
    /// # Errors
    /// When a file is missing or malformed, or the options are unusable.
    pub fn load_with(dir: &Path, options: LocalOptions) -> Result<Self> {
        ensure!(options.batch_size > 0, "the batch size must be at least 1");
        for name in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(name).is_file() {
                bail!(
                    "no embedding model in {}: {name} is missing (run `cargo xtask fetch-model`, \
                     or point TRELLIS_EMBED_MODEL_DIR at a sentence-transformers model folder)",
                    dir.display()
                );
            }
        }
        check_mean_pooling(dir)?;

        let config: BertConfig = read_json(&dir.join("config.json"))?;
        let max_seq_length = match options.max_seq_length {
            Some(n) => n,
            None => read_max_seq_length(dir)?,
        }
        .min(config.max_position_embeddings);
        ensure!(
            max_seq_length >= 2,
            "max_seq_length must leave room for [CLS] and [SEP]"
        );

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("could not load {}/tokenizer.json", dir.display()))?;
        // The file pads every input to a fixed 128 and truncates at 128; we pad each
        // batch ourselves to its longest member and truncate where sentence-transformers does.
        let pad_id = tokenizer
            .get_padding()
            .map_or(config.pad_token_id, |p| p.pad_id as usize);
        let pad_id = u32::try_from(pad_id).context("the pad token id does not fit in u32")?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("could not configure truncation")?;

        let device = Device::Cpu;
        let weights_path = dir.join("model.safetensors");
        let weights = candle_core::safetensors::load(&weights_path, &device)
            .with_context(|| format!("could not read {}", weights_path.display()))?;
        let weights: HashMap<String, Tensor> = weights
            .into_iter()
            .map(|(name, tensor)| Ok((name, tensor.to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<_>>()?;
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
        let bert = BertModel::load(vb, &config).with_context(|| {
            format!(
                "{} is not a BERT model candle can load",
                weights_path.display()
            )
        })?;

        let dimension = u32::try_from(config.hidden_size).context("hidden size too large")?;
        let model = EmbeddingModel::new(&options.model_id, dimension)?;
        Ok(Self {
            model,
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                bert,
                tokenizer,
                device,
                pad_id,
                batch_size: options.batch_size,
                max_seq_length,
                dimension: config.hidden_size,
            }),
            gate: Arc::new(Semaphore::new(1)),
        })
    }

    /// The word-piece budget per text (longer texts are truncated, as in
    /// sentence-transformers).
    #[must_use]
    pub fn max_seq_length(&self) -> usize {
        self.inner.max_seq_length
    }

    /// How many word pieces `text` has, special tokens included, after truncation.
    /// Chunkers can use it to stay within [`Self::max_seq_length`].
    ///
    /// # Errors
    /// When the tokenizer fails.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let encoding = self
            .inner
            .tokenizer
            .encode(text, true)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("tokenisation failed")?;
        Ok(encoding.get_ids().len())
    }

    /// Embeds `texts` on the calling thread; this is CPU-bound for milliseconds per text,
    /// so async callers should use [`Embedder::embed`], which moves it off the executor.
    ///
    /// # Errors
    /// When tokenisation or the forward pass fails.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        self.inner.embed(texts)
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> EmbeddingModel {
        self.model.clone()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let permit = Arc::clone(&self.gate)
            .acquire_owned()
            .await
            .context("the local embedder is shut down")?;
        let inner = Arc::clone(&self.inner);
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.embed(&texts)
        })
        .await
        .context("the embedding task panicked or was cancelled")?
    }
}

impl Inner {
    fn embed(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("tokenisation failed")?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();

        // Longest first, as sentence-transformers does: similar lengths share a batch, so
        // padding (wasted work) stays small, and a memory problem shows on the first batch.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));

        let mut out: Vec<Option<Embedding>> = vec![None; texts.len()];
        for batch in order.chunks(self.batch_size) {
            let rows = self
                .forward(batch.iter().map(|&i| ids[i]))
                .with_context(|| format!("embedding a batch of {} texts failed", batch.len()))?;
            for (&i, row) in batch.iter().zip(rows) {
                out[i] = Some(row);
            }
        }
        out.into_iter()
            .map(|e| e.context("a text was left without an embedding"))
            .collect()
    }

    /// One forward pass over a batch of word-piece sequences, padded to the longest.
    fn forward<'a>(
        &self,
        batch: impl ExactSizeIterator<Item = &'a [u32]> + Clone,
    ) -> Result<Vec<Embedding>> {
        let rows = batch.len();
        let width = batch.clone().map(<[u32]>::len).max().unwrap_or(0).max(1);
        let mut input_ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for seq in batch {
            input_ids.extend_from_slice(seq);
            input_ids.extend(std::iter::repeat_n(self.pad_id, width - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, width - seq.len()));
        }
        let input_ids = Tensor::from_vec(input_ids, (rows, width), &self.device)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device)?;
        // Single-segment inputs: every token type is 0.
        let token_type_ids = input_ids.zeros_like()?;
        let hidden = self
            .bert
            .forward(&input_ids, &token_type_ids, Some(&mask))?;

        // Mean pooling over real tokens only (padding must not dilute the average).
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
        let pooled = summed.broadcast_div(&counts)?;
        let pooled: Vec<Vec<f32>> = pooled.to_vec2()?;
        // `Embedding` L2-normalises, which is sentence-transformers' final `Normalize`.
        pooled
            .into_iter()
            .map(|v| Ok(Embedding::with_dimension(v, self.dimension)?))
            .collect()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes =
        std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is malformed", path.display()))
}

fn read_max_seq_length(dir: &Path) -> Result<usize> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(DEFAULT_MAX_SEQ_LENGTH);
    }
    let config: SentenceBertConfig = read_json(&path)?;
    Ok(config.max_seq_length.unwrap_or(DEFAULT_MAX_SEQ_LENGTH))
}

/// Refuses models whose sentence-transformers pooling is not the mean (CLS or max
/// pooling would load fine and give quietly wrong vectors).
fn check_mean_pooling(dir: &Path) -> Result<()> {
    let path = dir.join("1_Pooling").join("config.json");
    if !path.is_file() {
        return Ok(());
    }
    let pooling: PoolingConfig = read_json(&path)?;
    ensure!(
        pooling.pooling_mode_mean_tokens,
        "{} asks for a pooling other than the mean, which this embedder does not implement",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_folder_says_how_to_fetch_it() {
        let err = LocalEmbedder::load(Path::new("/nonexistent/model")).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("cargo xtask fetch-model"), "{message}");
        assert!(message.contains("/nonexistent/model"), "{message}");
    }

    #[test]
    fn a_zero_batch_size_is_rejected() {
        let options = LocalOptions {
            batch_size: 0,
            ..LocalOptions::default()
        };
        assert!(LocalEmbedder::load_with(Path::new("/nonexistent"), options).is_err());
    }

    #[test]
    fn a_model_with_cls_pooling_is_refused() {
        let dir =
            std::env::temp_dir().join(format!("trellis-embed-pooling-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
        )
        .unwrap();
        let result = check_mean_pooling(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(result.is_err());
    }
}
