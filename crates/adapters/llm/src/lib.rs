//! Chat model adapters for the content domain's [`ChatModel`](trellis_content::ChatModel)
//! port: an OpenAI-compatible chat completions client ([`OpenAiClient`]: OpenAI,
//! Azure OpenAI, Ollama, vLLM, LM Studio, llama.cpp, Mistral, Gemini) and an
//! Anthropic Messages client ([`AnthropicClient`]), both with connect, idle and overall
//! timeouts, retries with backoff, and streaming parsers that take bytes as they come.
//! [`LlmFactory`] builds the right one from an [`LlmConfig`]; [`LlmRegistry`] routes
//! requests to one per provider.

mod anthropic;
mod config;
mod decode;
mod failure;
mod openai;
mod registry;
pub mod sse;
mod transport;

pub use anthropic::{AnthropicClient, AnthropicConfig};
pub use config::{ApiKey, AuthStyle, ConfigError, RetryPolicy, Timeouts};
pub use openai::{MaxTokensField, OpenAiClient, OpenAiConfig};
pub use registry::{LlmConfig, LlmFactory, LlmRegistry};
