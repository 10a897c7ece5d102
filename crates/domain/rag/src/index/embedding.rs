//! `Embedding`, the validated vector the rest of the RAG domain passes around: finite,
//! non-zero, and L2-normalised on construction, so cosine similarity is a plain dot
//! product everywhere downstream.

use thiserror::Error;

/// A unit-length embedding vector. Construct it with [`Embedding::new`] (or
/// [`Embedding::with_dimension`] when the expected length is known).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding(Vec<f32>);

/// Why a vector is not a usable embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InvalidEmbedding {
    #[error("an embedding needs at least one dimension")]
    Empty,
    #[error("component {index} is not a finite number")]
    NotFinite { index: usize },
    #[error("the zero vector has no direction")]
    Zero,
    #[error("expected {expected} dimensions, got {actual}")]
    WrongDimension { expected: usize, actual: usize },
}

impl Embedding {
    /// Validates `values` and scales them to unit length.
    ///
    /// # Errors
    /// [`InvalidEmbedding`] when `values` is empty, has a NaN or infinite component, or
    /// is all zeros.
    pub fn new(mut values: Vec<f32>) -> Result<Self, InvalidEmbedding> {
        if values.is_empty() {
            return Err(InvalidEmbedding::Empty);
        }
        if let Some(index) = values.iter().position(|x| !x.is_finite()) {
            return Err(InvalidEmbedding::NotFinite { index });
        }
        // Accumulate in f64: squares of f32 components can overflow or lose the small ones.
        let norm = values
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return Err(InvalidEmbedding::Zero);
        }
        for x in &mut values {
            // The quotient of a finite f32 by a norm at least as large is within f32 range.
            *x = (f64::from(*x) / norm) as f32;
        }
        Ok(Self(values))
    }

    /// [`Embedding::new`], also requiring exactly `dimension` components.
    ///
    /// # Errors
    /// [`InvalidEmbedding::WrongDimension`], or whatever [`Embedding::new`] rejects.
    pub fn with_dimension(values: Vec<f32>, dimension: usize) -> Result<Self, InvalidEmbedding> {
        if values.len() != dimension {
            return Err(InvalidEmbedding::WrongDimension {
                expected: dimension,
                actual: values.len(),
            });
        }
        Self::new(values)
    }

    /// The number of components.
    #[must_use]
    pub fn dimension(&self) -> usize {
        self.0.len()
    }

    /// The unit-length components.
    #[must_use]
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Gives the components back, e.g. to store them.
    #[must_use]
    pub fn into_vec(self) -> Vec<f32> {
        self.0
    }

    /// Cosine similarity with `other` (their dot product, both being unit length).
    #[must_use]
    pub fn cosine(&self, other: &Self) -> f32 {
        crate::index::simd::dot(&self.0, &other.0)
    }
}

impl AsRef<[f32]> for Embedding {
    fn as_ref(&self) -> &[f32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedding_is_scaled_to_unit_length() {
        let e = Embedding::new(vec![3.0, 4.0]).unwrap();
        assert_eq!(e.as_slice(), &[0.6, 0.8]);
        assert!((e.cosine(&e) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn empty_non_finite_and_zero_vectors_are_rejected() {
        assert_eq!(Embedding::new(vec![]), Err(InvalidEmbedding::Empty));
        assert_eq!(
            Embedding::new(vec![1.0, f32::NAN]),
            Err(InvalidEmbedding::NotFinite { index: 1 })
        );
        assert_eq!(
            Embedding::new(vec![f32::INFINITY]),
            Err(InvalidEmbedding::NotFinite { index: 0 })
        );
        assert_eq!(Embedding::new(vec![0.0, 0.0]), Err(InvalidEmbedding::Zero));
    }

    #[test]
    fn a_vector_of_the_wrong_length_is_rejected_when_a_dimension_is_expected() {
        assert_eq!(
            Embedding::with_dimension(vec![1.0, 2.0], 3),
            Err(InvalidEmbedding::WrongDimension {
                expected: 3,
                actual: 2
            })
        );
        assert!(Embedding::with_dimension(vec![1.0, 2.0, 2.0], 3).is_ok());
    }

    #[test]
    fn huge_and_tiny_components_still_normalise() {
        let big = Embedding::new(vec![f32::MAX, f32::MAX]).unwrap();
        assert!((big.as_slice()[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        let tiny = Embedding::new(vec![1e-40, 0.0]).unwrap();
        assert_eq!(tiny.as_slice(), &[1.0, 0.0]);
    }
}
