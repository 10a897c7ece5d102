//! Embedders for retrieval, implementing `trellis_rag::Embedder`: all-MiniLM-L6-v2 run
//! locally with candle ([`LocalEmbedder`]), any OpenAI-compatible `/v1/embeddings` API
//! ([`OpenAiEmbedder`]), a dependency-free hashing fallback ([`HashEmbedder`]), and the
//! registry that offers them by model id ([`StaticRegistry`]).

pub mod hash;
pub mod local;
pub mod openai;
pub mod registry;

pub use hash::HashEmbedder;
pub use local::{DEFAULT_LOCAL_MODEL_ID, LocalEmbedder, LocalOptions};
pub use openai::{ApiKeyStyle, OpenAiConfig, OpenAiEmbedder, RemoteEmbedError};
pub use registry::{EmbedConfig, StaticRegistry};
