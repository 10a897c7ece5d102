//! Text extraction for RAG ingestion: the `TextExtractor` port for plain text,
//! Markdown, HTML and PDF (text layer). The type of a file is sniffed from its bytes,
//! never taken from the client; anything else is refused as unsupported.
//!
//! Uploaded files are hostile input. Extraction runs on its own thread with a large
//! stack, panics become `Corrupt` errors instead of crashing the worker, and the
//! extracted text is capped (see [`Limits`]).

mod html;
mod pdf;
mod sniff;
mod text;

use sniff::{Kind, Sniffed};
use std::panic::{AssertUnwindSafe, catch_unwind};
use trellis_rag::{ExtractError, Extracted, TextExtractor};

/// Bounds on the work one file may cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Text beyond this many bytes is cut off (with a warning in the log). The default,
    /// 32 MiB, is above the 25 MiB upload limit, so only PDFs whose compressed streams
    /// expand enormously ever reach it.
    pub max_text_bytes: usize,
    /// A damaged PDF is retried page by page, at a cost quadratic in pages; beyond
    /// this many pages the rest is dropped.
    pub max_salvaged_pages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text_bytes: 32 << 20,
            max_salvaged_pages: 2_000,
        }
    }
}

/// Stack for the extraction thread: html5ever and `pdf-extract` recurse on nested
/// input, and a stack overflow aborts the process rather than unwinding.
const STACK_BYTES: usize = 64 << 20;

/// Sniffs and extracts uploaded files.
#[derive(Debug, Clone, Default)]
pub struct Extractor {
    limits: Limits,
}

impl Extractor {
    #[must_use]
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    fn extract_here(&self, bytes: &[u8], filename: &str) -> Result<Extracted, ExtractError> {
        let (kind, text, page_starts, truncated) = match sniff::sniff(bytes, filename) {
            Sniffed::Refused(what) => return Err(ExtractError::Unsupported(what.to_owned())),
            Sniffed::Pdf => {
                let pdf = pdf::extract(bytes, &self.limits)?;
                (Kind::Pdf, pdf.text, pdf.page_starts, pdf.truncated)
            }
            Sniffed::Text(Kind::Html, source) => {
                let html = html::to_text(&text::normalise(&source), self.limits.max_text_bytes);
                (Kind::Html, html.text, Vec::new(), html.truncated)
            }
            Sniffed::Text(kind, source) => {
                let normal = text::normalise(&source);
                let body = if kind == Kind::Markdown {
                    text::strip_front_matter(&normal)
                } else {
                    &normal
                };
                let (body, truncated) = truncate(body, self.limits.max_text_bytes);
                (kind, body.to_owned(), Vec::new(), truncated)
            }
        };
        if text.trim().is_empty() {
            if kind == Kind::Pdf {
                // The port's `Empty` carries no message; the log says why.
                tracing::info!(
                    filename,
                    "PDF has no text layer (scanned?); OCR is not supported"
                );
            }
            return Err(ExtractError::Empty);
        }
        if truncated {
            tracing::warn!(
                filename,
                limit = self.limits.max_text_bytes,
                "extracted text truncated at the limit"
            );
        }
        Ok(Extracted {
            mime_type: kind.mime().to_owned(),
            text,
            page_starts,
        })
    }
}

/// The longest prefix of `text` of at most `limit` bytes ending on a char boundary.
fn truncate(text: &str, limit: usize) -> (&str, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    (&text[..cut], true)
}

impl TextExtractor for Extractor {
    fn sniff(&self, bytes: &[u8], filename: &str) -> Option<String> {
        match sniff::sniff(bytes, filename) {
            Sniffed::Pdf => Some(Kind::Pdf.mime().to_owned()),
            Sniffed::Text(kind, _) => Some(kind.mime().to_owned()),
            Sniffed::Refused(_) => None,
        }
    }

    fn extract(&self, bytes: &[u8], filename: &str) -> Result<Extracted, ExtractError> {
        let run = || self.extract_here(bytes, filename);
        let spawned = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("trellis-extract".into())
                .stack_size(STACK_BYTES)
                .spawn_scoped(scope, run)
                .map(|handle| handle.join())
        });
        let outcome = match spawned {
            Ok(joined) => joined,
            // No thread to be had (resource limits): extract here rather than fail a
            // file that is fine.
            Err(_) => catch_unwind(AssertUnwindSafe(run)),
        };
        outcome
            .unwrap_or_else(|_| Err(ExtractError::Corrupt("the file could not be parsed".into())))
    }
}
