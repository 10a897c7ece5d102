//! `StaticRegistry`: the embedders this server runs, fixed at start-up, by model id, with
//! the default for new collections. [`EmbedConfig`] is what the app fills from its
//! environment; [`StaticRegistry::from_config`] turns it into embedders.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use trellis_rag::{Embedder, EmbedderRegistry, EmbeddingModel};

use crate::{HashEmbedder, LocalEmbedder, OpenAiConfig, OpenAiEmbedder};

/// Which embedders to set up.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    /// A sentence-transformers model folder for [`LocalEmbedder`]; `None` runs no local
    /// model. A folder that is set but unusable is an error, not a silent fallback.
    pub model_dir: Option<PathBuf>,
    /// The model id new collections get; `None` picks the local model if loaded, else
    /// the remote one if configured, else the hash embedder.
    pub default_model: Option<String>,
    /// Dimension of the always-available [`HashEmbedder`] (`hash/<dimension>`). 384 by
    /// default, the same as all-MiniLM-L6-v2, so both fit the same vector columns.
    pub hash_dimension: u32,
    /// An OpenAI-compatible API, if any.
    pub openai: Option<OpenAiConfig>,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            model_dir: None,
            default_model: None,
            hash_dimension: 384,
            openai: None,
        }
    }
}

/// A fixed set of embedders by model id.
#[derive(Clone)]
pub struct StaticRegistry {
    embedders: BTreeMap<String, Arc<dyn Embedder>>,
    default: EmbeddingModel,
}

impl std::fmt::Debug for StaticRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticRegistry")
            .field("models", &self.embedders.keys().collect::<Vec<_>>())
            .field("default", &self.default.id)
            .finish()
    }
}

impl StaticRegistry {
    /// A registry holding only `default`.
    #[must_use]
    pub fn new(default: Arc<dyn Embedder>) -> Self {
        let model = default.model();
        let mut embedders = BTreeMap::new();
        embedders.insert(model.id.clone(), default);
        Self {
            embedders,
            default: model,
        }
    }

    /// Adds an embedder.
    ///
    /// # Errors
    /// When another embedder already has its model id (two ids meaning one thing would
    /// make stored vectors ambiguous).
    pub fn insert(&mut self, embedder: Arc<dyn Embedder>) -> Result<()> {
        let id = embedder.model().id;
        if self.embedders.contains_key(&id) {
            bail!("two embedders have the model id {id:?}");
        }
        self.embedders.insert(id, embedder);
        Ok(())
    }

    /// Makes `model_id` the default for new collections.
    ///
    /// # Errors
    /// When no embedder has that id; the message lists those that exist.
    pub fn set_default(&mut self, model_id: &str) -> Result<()> {
        let embedder = self.embedders.get(model_id).with_context(|| {
            format!(
                "the default embedding model {model_id:?} is not configured; available: {}",
                self.embedders
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        self.default = embedder.model();
        Ok(())
    }

    /// Builds the embedders `config` asks for: the hash embedder always, the local model
    /// if `model_dir` is set, the remote API if `openai` is set.
    ///
    /// # Errors
    /// When a configured embedder cannot be set up (missing model files, bad URL) or
    /// the default names an embedder that is not configured.
    pub fn from_config(config: &EmbedConfig) -> Result<Self> {
        let hash: Arc<dyn Embedder> = Arc::new(HashEmbedder::new(config.hash_dimension)?);
        let mut registry = Self::new(hash);
        let mut preferred = None;
        if let Some(openai) = &config.openai {
            let embedder =
                OpenAiEmbedder::new(openai.clone()).context("invalid remote embedding settings")?;
            preferred = Some(embedder.model().id);
            registry.insert(Arc::new(embedder))?;
        }
        if let Some(dir) = &config.model_dir {
            let embedder = LocalEmbedder::load(dir).with_context(|| {
                format!(
                    "could not load the local embedding model from {}",
                    dir.display()
                )
            })?;
            // Local wins over remote as the implicit default: offline, free, no data leaves.
            preferred = Some(embedder.model().id);
            registry.insert(Arc::new(embedder))?;
        }
        if let Some(id) = config.default_model.as_deref().or(preferred.as_deref()) {
            registry.set_default(id)?;
        }
        Ok(registry)
    }
}

impl EmbedderRegistry for StaticRegistry {
    fn get(&self, model_id: &str) -> Option<Arc<dyn Embedder>> {
        self.embedders.get(model_id).cloned()
    }

    fn default_model(&self) -> EmbeddingModel {
        self.default.clone()
    }

    fn models(&self) -> Vec<EmbeddingModel> {
        self.embedders.values().map(|e| e.model()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_nothing_configured_the_hash_embedder_is_the_default() {
        let registry = StaticRegistry::from_config(&EmbedConfig::default()).unwrap();
        assert_eq!(registry.default_model().id, "hash/384");
        assert_eq!(registry.default_model().dimension, 384);
        assert!(registry.get("hash/384").is_some());
        assert_eq!(registry.models().len(), 1);
    }

    #[test]
    fn a_configured_remote_api_becomes_the_default_unless_another_is_named() {
        let config = EmbedConfig {
            openai: Some(OpenAiConfig::new(
                "http://127.0.0.1:9/v1",
                "nomic-embed-text",
                768,
            )),
            ..EmbedConfig::default()
        };
        let registry = StaticRegistry::from_config(&config).unwrap();
        assert_eq!(registry.default_model().id, "openai/nomic-embed-text");
        assert_eq!(
            registry
                .get("openai/nomic-embed-text")
                .unwrap()
                .model()
                .dimension,
            768
        );
        assert_eq!(registry.models().len(), 2);

        let named = EmbedConfig {
            default_model: Some("hash/384".to_owned()),
            ..config
        };
        let registry = StaticRegistry::from_config(&named).unwrap();
        assert_eq!(registry.default_model().id, "hash/384");
    }

    #[test]
    fn a_default_that_is_not_configured_is_an_error_listing_what_is() {
        let config = EmbedConfig {
            default_model: Some("local/all-minilm-l6-v2".to_owned()),
            ..EmbedConfig::default()
        };
        let message = format!("{:#}", StaticRegistry::from_config(&config).unwrap_err());
        assert!(message.contains("local/all-minilm-l6-v2"), "{message}");
        assert!(message.contains("hash/384"), "{message}");
    }

    #[test]
    fn a_model_folder_that_is_set_but_missing_fails_loudly() {
        let config = EmbedConfig {
            model_dir: Some(PathBuf::from("/nonexistent/all-minilm-l6-v2")),
            ..EmbedConfig::default()
        };
        let message = format!("{:#}", StaticRegistry::from_config(&config).unwrap_err());
        assert!(message.contains("cargo xtask fetch-model"), "{message}");
    }

    #[test]
    fn two_embedders_with_one_id_are_refused() {
        let mut registry = StaticRegistry::new(Arc::new(HashEmbedder::new(8).unwrap()));
        assert!(
            registry
                .insert(Arc::new(HashEmbedder::new(8).unwrap()))
                .is_err()
        );
        assert!(
            registry
                .insert(Arc::new(HashEmbedder::new(16).unwrap()))
                .is_ok()
        );
        registry.set_default("hash/16").unwrap();
        assert_eq!(registry.default_model().dimension, 16);
        assert!(registry.get("hash/32").is_none());
    }
}
