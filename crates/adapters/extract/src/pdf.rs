//! PDF text layer to text with page starts, through `pdf-extract` (which parses with
//! `lopdf`). Lines are reassembled from glyph positions (the rules of
//! `pdf_extract::PlainTextOutput`). Paragraphs are then found per page: a line that
//! sits clearly further below the previous one than the page's usual line spacing, or
//! changes font size (a heading), starts a new paragraph, written after a blank line,
//! which is what the chunker splits on. Each page starts a new paragraph.
//!
//! `pdf-extract` panics on many malformed files and recurses without limit on
//! self-referencing drawings, so three defences surround it: a structural check that
//! refuses cycles before extraction starts, `catch_unwind` around each pass, and a
//! page-by-page retry that keeps the pages that can be read when one cannot.

use crate::Limits;
use pdf_extract::content::Content;
use pdf_extract::{
    Dictionary, Document, MediaBox, Object, ObjectId, OutputDev, OutputError, Transform,
};
use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use trellis_rag::ExtractError;

/// Text of a PDF, with the byte offset where each page begins.
#[derive(Debug)]
pub(crate) struct PdfText {
    pub text: String,
    pub page_starts: Vec<u32>,
    pub truncated: bool,
}

/// Nested drawings (form XObjects) deeper than this are refused; real documents
/// nest a handful of levels.
const MAX_FORM_DEPTH: usize = 32;
/// Content streams executed per document, counting each repeated use of a drawing:
/// bounds the work of "billion laughs" files where drawings use each other many times.
const MAX_STREAM_RUNS: u64 = 200_000;
/// Page-tree parents followed from one page before we call the tree corrupt.
const MAX_PARENT_CHAIN: usize = 1024;

pub(crate) fn extract(bytes: &[u8], limits: &Limits) -> Result<PdfText, ExtractError> {
    let doc = load(bytes)?;
    check_structure(&doc).map_err(ExtractError::Corrupt)?;
    let pages = doc.get_pages().len();
    if pages == 0 {
        return Err(ExtractError::Corrupt("the PDF has no pages".into()));
    }

    let mut out = PageWriter::new(limits.max_text_bytes);
    let whole = catch_unwind(AssertUnwindSafe(|| pdf_extract::output_doc(&doc, &mut out)));
    match whole {
        Ok(Ok(())) => {}
        Ok(Err(_)) if out.full => {}
        // One bad page (a missing font, a broken stream) spoils the whole pass; go again
        // page by page and keep the pages that can be read.
        Ok(Err(_)) | Err(_) => out = by_page(&doc, pages, limits)?,
    }
    Ok(out.finish(pages))
}

fn load(bytes: &[u8]) -> Result<Document, ExtractError> {
    let loaded = catch_unwind(|| Document::load_mem(bytes));
    let doc = match loaded {
        Ok(Ok(doc)) => doc,
        Ok(Err(pdf_extract::Error::Decryption(_) | pdf_extract::Error::InvalidPassword)) => {
            return Err(locked());
        }
        Ok(Err(err)) => {
            return Err(ExtractError::Corrupt(format!(
                "the PDF could not be parsed ({err})"
            )));
        }
        Err(_) => return Err(ExtractError::Corrupt("the PDF could not be parsed".into())),
    };
    // lopdf decrypts files that open with an empty password (owner-password-only
    // "protection") and removes /Encrypt; one still carrying it needs a password.
    if doc.trailer.get(b"Encrypt").is_ok() {
        return Err(locked());
    }
    Ok(doc)
}

fn locked() -> ExtractError {
    ExtractError::Unsupported(
        "password-protected PDFs cannot be read; remove the password and upload again".into(),
    )
}

fn by_page(doc: &Document, pages: usize, limits: &Limits) -> Result<PageWriter, ExtractError> {
    let mut out = PageWriter::new(limits.max_text_bytes);
    let mut failed = 0;
    // `output_doc_page` walks the page tree on each call, so this pass is quadratic in
    // pages; it only runs for damaged files, and the page cap bounds it.
    let last = u32::try_from(pages.min(limits.max_salvaged_pages)).unwrap_or(u32::MAX);
    for page in 1..=last {
        let mark = out.mark();
        let run = catch_unwind(AssertUnwindSafe(|| {
            pdf_extract::output_doc_page(doc, &mut out, page)
        }));
        match run {
            Ok(Ok(())) => {}
            Ok(Err(_)) if out.full => break,
            Ok(Err(_)) | Err(_) => {
                failed += 1;
                out.rollback(mark, page);
            }
        }
    }
    if failed == last {
        return Err(ExtractError::Corrupt(
            "none of the PDF's pages could be read".into(),
        ));
    }
    if failed > 0 {
        tracing::warn!(failed, pages, "skipped unreadable PDF pages");
    }
    out.truncated |= pages > limits.max_salvaged_pages;
    Ok(out)
}

/// A line of text on the page being read.
#[derive(Debug)]
struct Line {
    text: String,
    /// Vertical distance from the previous line's baseline (infinite for the first).
    drop: f64,
    /// Font size of its first glyph, in page units.
    size: f64,
}

/// How much further than the usual line spacing a line must sit to start a paragraph.
const PARAGRAPH_GAP: f64 = 1.3;
/// Relative font-size change between lines that marks a heading.
const SIZE_CHANGE: f64 = 0.15;

/// Collects glyphs into lines, and each page's lines into paragraphs.
struct PageWriter {
    text: String,
    page_starts: Vec<u32>,
    /// Lines of the page being read; written to `text` when the page ends.
    lines: Vec<Line>,
    pending_bytes: usize,
    last_end: f64,
    last_y: f64,
    first_char: bool,
    limit: usize,
    full: bool,
    truncated: bool,
}

impl PageWriter {
    fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            page_starts: Vec::new(),
            lines: Vec::new(),
            pending_bytes: 0,
            last_end: f64::MAX,
            last_y: 0.0,
            first_char: false,
            limit,
            full: false,
            truncated: false,
        }
    }

    fn mark(&self) -> (usize, usize) {
        (self.text.len(), self.page_starts.len())
    }

    /// Forgets a page that failed half-way; it stays in `page_starts`, empty.
    fn rollback(&mut self, (len, pages): (usize, usize), page: u32) {
        self.lines.clear();
        self.pending_bytes = 0;
        self.text.truncate(len);
        self.page_starts.truncate(pages);
        self.start_page(page);
    }

    /// Records where `page` (1-based) starts, after a paragraph break.
    fn start_page(&mut self, page: u32) {
        self.flush_page();
        self.paragraph_break();
        let at = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        // A page whose start was never recorded (it failed before drawing) starts
        // where the next one does.
        let index = usize::try_from(page)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        while self.page_starts.len() <= index {
            self.page_starts.push(at);
        }
        self.last_end = f64::MAX;
        self.last_y = 0.0;
        self.first_char = false;
    }

    /// Writes the page's lines, deciding where its paragraphs break.
    fn flush_page(&mut self) {
        let lines = std::mem::take(&mut self.lines);
        self.pending_bytes = 0;
        // Line spacing relative to the smaller font of the two lines, so a heading
        // above a paragraph does not look like a gap.
        let ratio = |prev: &Line, line: &Line| line.drop / prev.size.min(line.size);
        let mut ratios: Vec<f64> = lines
            .windows(2)
            .map(|w| ratio(&w[0], &w[1]))
            .filter(|r| r.is_finite() && *r > 0.0)
            .collect();
        ratios.sort_by(f64::total_cmp);
        // The lower quartile: most gaps on a page are between lines of one paragraph.
        let spacing = ratios
            .get(ratios.len() / 4)
            .copied()
            .unwrap_or(f64::INFINITY);
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                let prev = &lines[i - 1];
                let gap = ratio(prev, line) > spacing * PARAGRAPH_GAP;
                let resized =
                    (line.size - prev.size).abs() > prev.size.min(line.size) * SIZE_CHANGE;
                if gap || resized {
                    self.paragraph_break();
                } else {
                    self.line_break();
                }
            }
            self.text.push_str(line.text.trim_end());
        }
        if self.text.len() > self.limit {
            let mut cut = self.limit;
            while !self.text.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.truncate(cut);
            self.full = true;
        }
    }

    fn trim_trailing_blanks(&mut self) {
        let kept = self.text.trim_end_matches([' ', '\t']).len();
        self.text.truncate(kept);
    }

    fn line_break(&mut self) {
        self.trim_trailing_blanks();
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
    }

    fn paragraph_break(&mut self) {
        self.line_break();
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }

    fn finish(mut self, pages: usize) -> PdfText {
        self.flush_page();
        let kept = self.text.trim_end().len();
        self.text.truncate(kept);
        let end = u32::try_from(self.text.len()).unwrap_or(u32::MAX);
        let mut page_starts: Vec<u32> = self.page_starts.into_iter().map(|s| s.min(end)).collect();
        // Pages after a truncation or a failed tail still get a start.
        page_starts.resize(pages.max(page_starts.len()), end);
        PdfText {
            text: self.text,
            page_starts,
            truncated: self.truncated || self.full,
        }
    }
}

/// Appends a glyph's text, expanding ligatures (many fonts map "ffi" to one code
/// point, and a search for "office" must match) and dropping control characters.
fn push_glyph(line: &mut String, glyph: &str) {
    for c in glyph.chars() {
        match c {
            '\u{fb00}' => line.push_str("ff"),
            '\u{fb01}' => line.push_str("fi"),
            '\u{fb02}' => line.push_str("fl"),
            '\u{fb03}' => line.push_str("ffi"),
            '\u{fb04}' => line.push_str("ffl"),
            '\u{fb05}' | '\u{fb06}' => line.push_str("st"),
            c if c.is_control() => {}
            c => line.push(c),
        }
    }
}

impl OutputDev for PageWriter {
    fn begin_page(
        &mut self,
        page_num: u32,
        _: &MediaBox,
        _: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), OutputError> {
        self.start_page(page_num);
        Ok(())
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        self.flush_page();
        Ok(())
    }

    fn output_character(
        &mut self,
        trm: &Transform,
        width: f64,
        _spacing: f64,
        font_size: f64,
        glyph: &str,
    ) -> Result<(), OutputError> {
        if self.full || self.text.len() + self.pending_bytes >= self.limit {
            self.full = true;
            return Err(OutputError::FormatError(std::fmt::Error));
        }
        // The glyph's origin and its size on the page. `PlainTextOutput` flips y first;
        // only distances are compared here, which the flip does not change.
        let (x, y) = (trm.m31, trm.m32);
        let size_x = font_size * (trm.m11 + trm.m21);
        let size_y = font_size * (trm.m12 + trm.m22);
        let size = (size_x * size_y).abs().sqrt();
        let drop = (y - self.last_y).abs();
        let new_line =
            self.first_char && (drop > size * 1.5 || (x < self.last_end && drop > size * 0.5));
        match self.lines.last_mut() {
            Some(line) if !new_line => {
                if self.first_char && x > self.last_end + size * 0.1 && !line.text.ends_with(' ') {
                    line.text.push(' ');
                    self.pending_bytes += 1;
                }
            }
            Some(_) => self.lines.push(Line {
                text: String::new(),
                drop,
                size,
            }),
            None => self.lines.push(Line {
                text: String::new(),
                drop: f64::INFINITY,
                size,
            }),
        }
        if let Some(line) = self.lines.last_mut() {
            let before = line.text.len();
            push_glyph(&mut line.text, glyph);
            self.pending_bytes += line.text.len() - before;
        }
        self.first_char = false;
        self.last_y = y;
        self.last_end = x + width * size;
        Ok(())
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        self.first_char = true;
        Ok(())
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// Refuses documents that would send `pdf-extract` into unbounded recursion (which
/// overflows the stack and aborts the process, beyond what `catch_unwind` can catch)
/// or exponential work. Resources are resolved exactly as `pdf-extract` does.
fn check_structure(doc: &Document) -> Result<(), String> {
    let mut walk = Walk {
        doc,
        on_path: HashSet::new(),
        done: HashMap::new(),
        runs: 0,
    };
    for page_id in doc.page_iter() {
        let Ok(page) = doc.get_dictionary(page_id) else {
            continue;
        };
        check_parents(doc, page)?;
        let resources = inherited_resources(doc, page);
        let Ok(content) = doc.get_page_content(page_id) else {
            continue;
        };
        walk.stream(&content, resources, 0)?;
    }
    Ok(())
}

/// `pdf-extract` looks up inherited page attributes by recursing up `/Parent`.
fn check_parents(doc: &Document, page: &Dictionary) -> Result<(), String> {
    let mut seen = HashSet::new();
    let mut node = page;
    while let Ok(parent) = node.get(b"Parent").and_then(Object::as_reference) {
        if !seen.insert(parent) || seen.len() > MAX_PARENT_CHAIN {
            return Err("the PDF's page tree loops back on itself".into());
        }
        let Ok(dict) = doc.get_dictionary(parent) else {
            break;
        };
        node = dict;
    }
    Ok(())
}

fn inherited_resources<'a>(doc: &'a Document, page: &'a Dictionary) -> Option<&'a Dictionary> {
    let mut node = page;
    for _ in 0..=MAX_PARENT_CHAIN {
        if let Some(resources) = dict_entry(doc, node, b"Resources") {
            return Some(resources);
        }
        node = node
            .get(b"Parent")
            .and_then(Object::as_reference)
            .and_then(|id| doc.get_dictionary(id))
            .ok()?;
    }
    None
}

fn dict_entry<'a>(doc: &'a Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a Dictionary> {
    let object = dict.get(key).ok()?;
    doc.dereference(object).ok()?.1.as_dict().ok()
}

/// A depth-first walk over the drawings a content stream uses.
struct Walk<'a> {
    doc: &'a Document,
    /// Drawings being expanded right now: meeting one again is a cycle.
    on_path: HashSet<ObjectId>,
    /// Stream runs per (drawing, resources) already walked, so shared drawings cost
    /// one walk here even when `pdf-extract` will run them many times.
    done: HashMap<(ObjectId, usize), u64>,
    runs: u64,
}

impl<'a> Walk<'a> {
    /// Counts the stream runs that executing `content` causes, including itself.
    fn stream(
        &mut self,
        content: &[u8],
        resources: Option<&'a Dictionary>,
        depth: usize,
    ) -> Result<u64, String> {
        let mut runs = 1u64;
        self.add(1)?;
        let operations = Content::decode(content)
            .map(|c| c.operations)
            .unwrap_or_default();
        for op in operations.iter().filter(|op| op.operator == "Do") {
            let Some(name) = op.operands.first().and_then(|o| o.as_name().ok()) else {
                continue;
            };
            let Some(xobjects) = resources.and_then(|r| dict_entry(self.doc, r, b"XObject")) else {
                continue;
            };
            let Ok(entry) = xobjects.get(name) else {
                continue;
            };
            let Ok((id, object)) = self.doc.dereference(entry) else {
                continue;
            };
            let Ok(form) = object.as_stream() else {
                continue;
            };
            let inner = dict_entry(self.doc, &form.dict, b"Resources").or(resources);
            if depth + 1 > MAX_FORM_DEPTH {
                return Err("the PDF's drawings are nested too deeply".into());
            }
            let key = id.map(|id| (id, inner.map_or(0, |r| std::ptr::from_ref(r) as usize)));
            if let Some(known) = key.and_then(|k| self.done.get(&k)).copied() {
                runs = runs.saturating_add(known);
                self.add(known)?;
                continue;
            }
            if let Some(id) = id
                && !self.on_path.insert(id)
            {
                return Err("a drawing in the PDF contains itself".into());
            }
            // The same bytes `pdf-extract` will run: decoded if the filters allow.
            let bytes = if form.filters().is_ok() {
                form.decompressed_content()
                    .unwrap_or_else(|_| form.content.clone())
            } else {
                form.content.clone()
            };
            let inner_runs = self.stream(&bytes, inner, depth + 1)?;
            if let Some(id) = id {
                self.on_path.remove(&id);
            }
            if let Some(key) = key {
                self.done.insert(key, inner_runs);
            }
            runs = runs.saturating_add(inner_runs);
        }
        Ok(runs)
    }

    fn add(&mut self, runs: u64) -> Result<(), String> {
        self.runs = self.runs.saturating_add(runs);
        if self.runs > MAX_STREAM_RUNS {
            return Err("the PDF's drawings repeat each other too many times".into());
        }
        Ok(())
    }
}
