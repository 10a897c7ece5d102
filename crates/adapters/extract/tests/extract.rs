//! Extraction of real files from `tests/fixtures` (regenerate the binary ones with
//! `make_fixtures.py` there), and a deterministic fuzz loop: no input may panic.

use trellis_extract::{Extractor, Limits};
use trellis_rag::{ExtractError, Extracted, TextExtractor};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn extract(name: &str) -> Result<Extracted, ExtractError> {
    Extractor::default().extract(&fixture(name), name)
}

/// The text of page `n` (1-based).
fn page(extracted: &Extracted, n: usize) -> &str {
    let start = extracted.page_starts[n - 1] as usize;
    let end = extracted
        .page_starts
        .get(n)
        .map_or(extracted.text.len(), |s| *s as usize);
    &extracted.text[start..end]
}

#[test]
fn a_two_page_pdf_yields_its_text_with_one_start_per_page() {
    let pdf = extract("two-pages.pdf").unwrap();
    assert_eq!(pdf.mime_type, "application/pdf");
    assert_eq!(pdf.page_starts.len(), 2);
    assert_eq!(pdf.page_starts[0], 0);
    let zeppelin = pdf.text.find("zeppelin").unwrap();
    assert!(zeppelin >= pdf.page_starts[1] as usize, "{pdf:?}");
    assert!(page(&pdf, 1).contains("Trellis Handbook"));
    assert!(page(&pdf, 1).contains("aardvark"));
    assert!(!page(&pdf, 1).contains("zeppelin"));
    assert!(page(&pdf, 2).contains("Page two is about billing."));
}

#[test]
fn pdf_paragraphs_are_separated_by_blank_lines_and_words_by_spaces() {
    let pdf = extract("two-pages.pdf").unwrap();
    let first = page(&pdf, 1);
    assert!(first.contains("Every tenant keeps its own"), "{first:?}");
    let paragraphs: Vec<&str> = first
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    assert!(
        paragraphs.len() >= 3,
        "heading and two paragraphs expected: {paragraphs:?}"
    );
    assert!(
        paragraphs.last().unwrap().contains("aardvark"),
        "{paragraphs:?}"
    );
    // Pages are paragraphs of their own too.
    assert!(pdf.text[..pdf.page_starts[1] as usize].ends_with("\n\n"));
}

#[test]
fn a_pdf_named_txt_is_read_as_a_pdf() {
    let pdf = extract("really-a-pdf.txt").unwrap();
    assert_eq!(pdf.mime_type, "application/pdf");
    assert!(pdf.text.contains("zeppelin"));
    assert_eq!(
        Extractor::default()
            .sniff(&fixture("really-a-pdf.txt"), "really-a-pdf.txt")
            .as_deref(),
        Some("application/pdf")
    );
}

#[test]
fn a_png_named_pdf_is_unsupported_and_says_it_is_an_image() {
    let bytes = fixture("image-named.pdf");
    assert_eq!(Extractor::default().sniff(&bytes, "scan.pdf"), None);
    let err = Extractor::default()
        .extract(&bytes, "scan.pdf")
        .unwrap_err();
    assert!(
        matches!(&err, ExtractError::Unsupported(what) if what.contains("PNG")),
        "{err}"
    );
}

#[test]
fn a_random_binary_blob_is_unsupported() {
    let bytes = fixture("blob.bin");
    assert_eq!(Extractor::default().sniff(&bytes, "notes.txt"), None);
    assert!(matches!(
        extract("blob.bin"),
        Err(ExtractError::Unsupported(_))
    ));
}

#[test]
fn a_truncated_pdf_is_corrupt() {
    let err = extract("truncated.pdf").unwrap_err();
    assert!(matches!(err, ExtractError::Corrupt(_)), "{err}");
}

#[test]
fn a_pdf_without_a_text_layer_is_empty() {
    assert_eq!(extract("scanned.pdf").unwrap_err(), ExtractError::Empty);
}

#[test]
fn a_password_protected_pdf_is_unsupported_with_a_clear_message() {
    let err = extract("encrypted.pdf").unwrap_err();
    assert!(
        matches!(&err, ExtractError::Unsupported(msg) if msg.contains("password")),
        "{err}"
    );
}

#[test]
fn a_pdf_drawing_that_contains_itself_is_corrupt_not_a_crash() {
    let err = extract("self-drawing.pdf").unwrap_err();
    assert!(
        matches!(&err, ExtractError::Corrupt(msg) if msg.contains("itself")),
        "{err}"
    );
}

#[test]
fn a_pdf_whose_drawings_multiply_exponentially_is_refused() {
    let err = extract("drawing-bomb.pdf").unwrap_err();
    assert!(
        matches!(&err, ExtractError::Corrupt(msg) if msg.contains("too many")),
        "{err}"
    );
}

#[test]
fn html_keeps_the_article_as_headings_and_paragraphs_and_drops_code_and_chrome() {
    let html = extract("article.html").unwrap();
    assert_eq!(html.mime_type, "text/html");
    assert!(html.page_starts.is_empty());
    let text = &html.text;
    for gone in [
        "SCRIPT-CONTENT",
        "secret-style",
        "NAVIGATION-LINK",
        "FOOTER-COPYRIGHT",
        "ASIDE-RELATED",
        "NOSCRIPT-CONTENT",
        "TEMPLATE-CONTENT",
        "INLINE-SCRIPT",
        "Pricing guide | Example Corp",
    ] {
        assert!(!text.contains(gone), "{gone} leaked into {text:?}");
    }
    assert!(
        text.starts_with("# Pricing guide\n\nBy the billing team\n\n"),
        "{text:?}"
    );
    assert!(
        text.contains(
            "\n\nOur plans are billed monthly. Annual billing saves twenty percent.\n\n## Plans\n\n"
        ),
        "{text:?}"
    );
    assert!(
        text.contains("- Starter: for small teams\n- Business: for growing companies"),
        "{text:?}"
    );
    assert!(
        text.contains("### Comparison\n\nPlan | Seats\nStarter | 5\nBusiness | 50"),
        "{text:?}"
    );
}

#[test]
fn markdown_is_kept_as_written_without_its_front_matter() {
    let md = extract("handbook.md").unwrap();
    assert_eq!(md.mime_type, "text/markdown");
    assert!(
        md.text.starts_with("# Trellis handbook\n\nWelcome."),
        "{:?}",
        md.text
    );
    assert!(
        md.text
            .contains("## Tenants\n\nEvery tenant has its own users,\nits own collections")
    );
    assert!(!md.text.contains("tags: [onboarding]"));
}

#[test]
fn plain_text_has_unix_line_endings_and_keeps_its_words() {
    let text = Extractor::default()
        .extract(
            b"line one\r\nline two\r\n\r\nnext paragraph\r\n",
            "notes.txt",
        )
        .unwrap();
    assert_eq!(text.mime_type, "text/plain");
    assert_eq!(text.text, "line one\nline two\n\nnext paragraph\n");
}

#[test]
fn whitespace_only_text_is_empty() {
    assert_eq!(
        Extractor::default()
            .extract(b"  \n\t\r\n ", "blank.txt")
            .unwrap_err(),
        ExtractError::Empty
    );
    assert_eq!(
        Extractor::default().extract(b"", "empty.md").unwrap_err(),
        ExtractError::Empty
    );
    assert_eq!(
        Extractor::default()
            .extract(b"<html><script>x()</script></html>", "a.html")
            .unwrap_err(),
        ExtractError::Empty
    );
}

#[test]
fn text_beyond_the_limit_is_cut_off() {
    let small = Extractor::new(Limits {
        max_text_bytes: 10,
        ..Limits::default()
    });
    assert_eq!(
        small
            .extract("0123456789abcdef".as_bytes(), "a.txt")
            .unwrap()
            .text,
        "0123456789"
    );
    let pdf = small.extract(&fixture("two-pages.pdf"), "a.pdf").unwrap();
    assert!(pdf.text.len() <= 16, "{:?}", pdf.text);
    assert_eq!(pdf.page_starts.len(), 2);
    assert!(
        pdf.page_starts
            .iter()
            .all(|s| *s as usize <= pdf.text.len())
    );
}

#[test]
fn huge_single_lines_and_deep_nesting_are_handled() {
    let line = "word ".repeat(400_000);
    let text = Extractor::default()
        .extract(line.as_bytes(), "long.txt")
        .unwrap();
    assert_eq!(text.text.len(), line.len());
    let html = format!(
        "<body>{}<p>deep text</p>{}</body>",
        "<div>".repeat(50_000),
        "</div>".repeat(50_000)
    );
    let out = Extractor::default()
        .extract(html.as_bytes(), "deep.html")
        .unwrap();
    assert_eq!(out.text, "deep text");
}

/// A small deterministic generator (SplitMix64), so the loop needs no crate and every
/// run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flips, deletes, duplicates and truncates bytes of `seed`.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(8) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] = rng.next() as u8,
            1 => {
                bytes.remove(at);
            }
            2 => {
                let end = (at + rng.below(64)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                let to = rng.below(bytes.len());
                bytes.splice(to..to, copy);
            }
            3 => bytes.truncate(at),
            _ => bytes[at] ^= 1 << rng.below(8),
        }
    }
    bytes
}

#[test]
fn hundreds_of_mutated_and_random_files_never_panic() {
    let extractor = Extractor::default();
    let seeds: Vec<(&str, Vec<u8>)> = [
        "two-pages.pdf",
        "article.html",
        "handbook.md",
        "scanned.pdf",
        "encrypted.pdf",
        "self-drawing.pdf",
    ]
    .into_iter()
    .map(|name| (name, fixture(name)))
    .collect();
    let mut rng = Rng(0x007e_1115);
    for round in 0..400 {
        let (name, bytes) = if round % 10 == 9 {
            let len = rng.below(2048);
            ("random.bin", (0..len).map(|_| rng.next() as u8).collect())
        } else {
            let (name, seed) = &seeds[round % seeds.len()];
            (*name, mutate(&mut rng, seed))
        };
        // Sniffing and extracting must return, whatever they return.
        let _ = extractor.sniff(&bytes, name);
        if let Ok(out) = extractor.extract(&bytes, name) {
            assert!(
                out.page_starts.windows(2).all(|w| w[0] <= w[1]),
                "round {round}"
            );
            assert!(
                out.page_starts
                    .iter()
                    .all(|s| out.text.is_char_boundary(*s as usize)),
                "round {round}"
            );
        }
    }
}
