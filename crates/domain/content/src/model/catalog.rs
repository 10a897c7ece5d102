//! The LLM model catalogue (seed 004 `llm_models`): which models exist per provider,
//! how much context they take, whether they stream, and what they cost. Prices are
//! integers (millionths of a US dollar) so that cost sums are exact.

use crate::TokenUsage;
use serde::{Deserialize, Serialize};
use trellis_kernel::InvalidValue;
use trellis_tenancy::LlmProvider;

/// An amount of money in millionths of a US dollar.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MicroUsd(pub u64);

impl MicroUsd {
    #[must_use]
    pub fn as_micros(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// One model of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmModel {
    pub provider: LlmProvider,
    /// The provider's name for it (`gpt-4o`, `claude-sonnet-4`, `llama3.1:8b`).
    pub name: String,
    /// Tokens of prompt plus answer the model accepts.
    pub context_window: u32,
    pub supports_streaming: bool,
    pub input_price_per_1k: MicroUsd,
    pub output_price_per_1k: MicroUsd,
}

impl LlmModel {
    /// # Errors
    /// When the name is not 1–200 characters on one line or the context window is 0.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        crate::model::text::line("model", &self.name, 200)?;
        if self.context_window == 0 {
            return Err(InvalidValue::new("context_window", "must be positive"));
        }
        Ok(())
    }

    /// What `usage` costs on this model, rounded up to the next micro-dollar.
    #[must_use]
    pub fn cost(&self, usage: TokenUsage) -> MicroUsd {
        let part = |tokens: u32, per_1k: MicroUsd| {
            (u128::from(tokens) * u128::from(per_1k.0)).div_ceil(1000)
        };
        let total = part(usage.prompt_tokens, self.input_price_per_1k)
            + part(usage.completion_tokens, self.output_price_per_1k);
        MicroUsd(u64::try_from(total).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt() -> LlmModel {
        LlmModel {
            provider: LlmProvider::Openai,
            name: "gpt-4o".into(),
            context_window: 128_000,
            supports_streaming: true,
            input_price_per_1k: MicroUsd(2_500),
            output_price_per_1k: MicroUsd(10_000),
        }
    }

    #[test]
    fn cost_charges_input_and_output_tokens_at_their_own_price() {
        let usage = TokenUsage {
            prompt_tokens: 2_000,
            completion_tokens: 500,
        };
        assert_eq!(gpt().cost(usage), MicroUsd(5_000 + 5_000));
    }

    #[test]
    fn a_fraction_of_a_micro_dollar_is_rounded_up() {
        let usage = TokenUsage {
            prompt_tokens: 1,
            completion_tokens: 0,
        };
        assert_eq!(gpt().cost(usage), MicroUsd(3));
        assert_eq!(MicroUsd(1_234_567).to_string(), "$1.234567");
    }

    #[test]
    fn a_model_without_context_is_refused() {
        let mut m = gpt();
        m.context_window = 0;
        assert!(m.validate().is_err());
    }
}
