//! HTML to chunkable text. The page is tokenized the way browsers do (html5ever's
//! tokenizer), code and page chrome are dropped, and the content is written in the
//! shape the chunker understands: `#` headings, paragraphs separated by blank lines,
//! list items and table rows on their own lines.
//!
//! We walk tokens, not a tree: building the DOM (html5ever's tree builder) takes time
//! quadratic in nesting depth, so a page of a few MiB of nested `<div>`s would stall a
//! worker for minutes. Tokens take linear time and constant stack. What the tree
//! builder would add, implied end tags (`<li>` without `</li>`), the writer does not
//! need: an element's start asks for the line or paragraph break either way.

use html5ever::LocalName;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};
use std::cell::RefCell;

/// The text of an HTML page, and whether it stopped at the size limit.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub text: String,
    pub truncated: bool,
}

/// Elements whose content is never prose: code, media, form controls and navigation.
/// `form` itself is kept: ASP.NET WebForms pages wrap the whole body in one.
const SKIPPED: &[&str] = &[
    "script", "style", "noscript", "template", "nav", "aside", "button", "input", "select",
    "textarea", "option", "optgroup", "datalist", "iframe", "object", "embed", "svg", "canvas",
    "video", "audio", "map", "dialog", "noembed", "noframes", "xmp",
];

/// ARIA roles of page chrome.
const SKIPPED_ROLES: &[&str] = &[
    "navigation",
    "banner",
    "contentinfo",
    "complementary",
    "search",
    "menu",
    "menubar",
];

/// Elements that start and end a paragraph.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "blockquote",
    "body",
    "center",
    "details",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hgroup",
    "hr",
    "legend",
    "main",
    "p",
    "section",
    "summary",
    "table",
    "caption",
];

/// Elements that never have content or an end tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// Renders `html` to text of at most `limit` bytes.
pub(crate) fn to_text(html: &str, limit: usize) -> Rendered {
    let sink = Sink(RefCell::new(Walker::new(limit)));
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // Our sink never asks to pause for a script, so one feed consumes everything.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.0.into_inner().finish()
}

struct Sink(RefCell<Walker>);

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        self.0.borrow_mut().token(token)
    }
}

/// The tokenizer state a start tag switches to: without this, the text of a `<script>`
/// would be tokenized as markup.
fn raw_state(name: &str) -> TokenSinkResult<()> {
    match name {
        "script" => TokenSinkResult::RawData(RawKind::ScriptData),
        "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => {
            TokenSinkResult::RawData(RawKind::Rawtext)
        }
        "title" | "textarea" => TokenSinkResult::RawData(RawKind::Rcdata),
        "plaintext" => TokenSinkResult::Plaintext,
        _ => TokenSinkResult::Continue,
    }
}

fn attr<'a>(tag: &'a Tag, name: &str) -> Option<&'a str> {
    tag.attrs
        .iter()
        .find(|a| &*a.name.local == name)
        .map(|a| &*a.value)
}

struct Walker {
    out: Writer,
    state: State,
    /// The element being dropped, and how many of its kind are open inside it.
    skipping: Option<(LocalName, usize)>,
    /// The `<title>` text, while and after reading it.
    title: Option<String>,
    in_title: bool,
}

impl Walker {
    fn new(limit: usize) -> Self {
        Self {
            out: Writer::new(limit),
            state: State::default(),
            skipping: None,
            title: None,
            in_title: false,
        }
    }

    fn token(&mut self, token: Token) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => self.tag(&tag),
            Token::CharacterTokens(text) if self.skipping.is_none() => {
                if self.in_title {
                    self.title.get_or_insert_with(String::new).push_str(&text);
                } else if !self.out.full {
                    self.out.text(&text, self.state.pre > 0);
                }
                TokenSinkResult::Continue
            }
            _ => TokenSinkResult::Continue,
        }
    }

    fn tag(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        let start = tag.kind == TagKind::StartTag;
        let next = if start {
            raw_state(name)
        } else {
            TokenSinkResult::Continue
        };
        if let Some((dropped, open)) = &mut self.skipping {
            if tag.name == *dropped {
                if start {
                    *open += 1;
                } else {
                    *open -= 1;
                    if *open == 0 {
                        self.skipping = None;
                    }
                }
            }
            return next;
        }
        match (start, name) {
            (true, "title") => self.in_title = true,
            (false, "title") => self.in_title = false,
            (true, _) if self.state.is_chrome(tag) => {
                if !VOID.contains(&name) {
                    self.skipping = Some((tag.name.clone(), 1));
                }
            }
            (true, _) => self.state.open(tag, &mut self.out),
            (false, _) => self.state.close(name, &mut self.out),
        }
        next
    }

    fn finish(self) -> Rendered {
        let truncated = self.out.full;
        let limit = self.out.limit;
        let mut text = self.out.finish();
        // Pages without an <h1> still get a top-level section from their <title>.
        if !self.state.saw_h1
            && let Some(title) = self
                .title
                .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
            && !title.is_empty()
            && text.len() + title.len() + 4 <= limit
        {
            text = format!("# {title}\n\n{text}");
        }
        Rendered { text, truncated }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Depth inside `<pre>`: whitespace is kept as written.
    pre: usize,
    /// Inside a heading.
    heading: bool,
    saw_h1: bool,
    /// Depth inside `article`/`main`/`section`: a `header` or `footer` there belongs
    /// to the content (an article's title block), elsewhere it is page chrome.
    content: usize,
    /// Open lists: ordered or not, and the next item number.
    lists: Vec<(bool, u64)>,
    /// Open tables: cells seen so far in the current row.
    tables: Vec<usize>,
}

impl State {
    fn is_chrome(&self, tag: &Tag) -> bool {
        let name: &str = &tag.name;
        if SKIPPED.contains(&name) {
            return true;
        }
        if matches!(name, "header" | "footer") && self.content == 0 {
            return true;
        }
        if attr(tag, "hidden").is_some()
            || attr(tag, "aria-hidden").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return true;
        }
        if attr(tag, "role")
            .is_some_and(|role| SKIPPED_ROLES.iter().any(|r| role.eq_ignore_ascii_case(r)))
        {
            return true;
        }
        attr(tag, "style").is_some_and(|style| {
            style
                .replace(char::is_whitespace, "")
                .to_ascii_lowercase()
                .contains("display:none")
        })
    }

    fn open(&mut self, tag: &Tag, out: &mut Writer) {
        let name: &str = &tag.name;
        match name {
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                // A heading inside an unclosed heading ends it, as in browsers.
                self.end_heading(out);
                let level = usize::from(name.as_bytes()[1] - b'0');
                out.gap(Gap::Paragraph);
                out.prefix = format!("{} ", "#".repeat(level));
                out.single_line = true;
                self.heading = true;
                self.saw_h1 |= level == 1;
            }
            "pre" | "listing" => {
                out.gap(Gap::Paragraph);
                self.pre += 1;
            }
            "br" => out.gap(Gap::Line),
            "li" => {
                out.gap(Gap::Line);
                let indent = "  ".repeat(self.lists.len().saturating_sub(1));
                out.prefix = match self.lists.last_mut() {
                    Some((true, next)) => {
                        let bullet = format!("{indent}{next}. ");
                        *next = next.saturating_add(1);
                        bullet
                    }
                    _ => format!("{indent}- "),
                };
            }
            "ol" | "ul" | "menu" => {
                // A list nested in an item continues that item's block.
                out.gap(if self.lists.is_empty() {
                    Gap::Paragraph
                } else {
                    Gap::Line
                });
                let start = attr(tag, "start")
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(1);
                self.lists.push((name == "ol", start));
            }
            "dt" | "dd" => out.gap(Gap::Line),
            "table" => self.tables.push(0),
            "tr" => {
                out.gap(Gap::Line);
                if let Some(cells) = self.tables.last_mut() {
                    *cells = 0;
                }
            }
            "td" | "th" => {
                if let Some(cells) = self.tables.last_mut() {
                    if *cells > 0 {
                        out.gap(Gap::Space);
                        out.prefix = "| ".to_owned();
                    }
                    *cells += 1;
                }
            }
            "article" | "main" | "section" => self.content += 1,
            _ => {}
        }
        if BLOCKS.contains(&name) {
            out.gap(Gap::Paragraph);
        }
    }

    fn close(&mut self, name: &str, out: &mut Writer) {
        match name {
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => self.end_heading(out),
            "pre" | "listing" => {
                self.pre = self.pre.saturating_sub(1);
                out.gap(Gap::Paragraph);
            }
            "ol" | "ul" | "menu" => {
                self.lists.pop();
                out.gap(if self.lists.is_empty() {
                    Gap::Paragraph
                } else {
                    Gap::Line
                });
            }
            "table" => {
                self.tables.pop();
            }
            "tr" | "li" | "dt" | "dd" => out.gap(Gap::Line),
            "article" | "main" | "section" => self.content = self.content.saturating_sub(1),
            _ => {}
        }
        if BLOCKS.contains(&name) {
            out.gap(Gap::Paragraph);
        }
    }

    fn end_heading(&mut self, out: &mut Writer) {
        if std::mem::take(&mut self.heading) {
            out.single_line = false;
            // An empty heading must not leave its `#` for the next paragraph.
            out.prefix.clear();
            out.gap(Gap::Paragraph);
        }
    }
}

/// Whitespace owed before the next text; the largest request wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    None,
    Space,
    Line,
    Paragraph,
}

/// Writes text with collapsed whitespace, inserting owed gaps and prefixes (`## `,
/// `- `) lazily, so empty elements leave no blank lines or dangling bullets.
#[derive(Debug)]
struct Writer {
    text: String,
    gap: Gap,
    prefix: String,
    /// Inside a heading: line breaks become spaces, so a heading is one line.
    single_line: bool,
    limit: usize,
    full: bool,
}

impl Writer {
    fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            gap: Gap::None,
            prefix: String::new(),
            single_line: false,
            limit,
            full: false,
        }
    }

    fn gap(&mut self, gap: Gap) {
        let gap = if self.single_line {
            gap.min(Gap::Space)
        } else {
            gap
        };
        self.gap = self.gap.max(gap);
    }

    fn text(&mut self, text: &str, pre: bool) {
        if pre && !self.single_line {
            if !text.is_empty() {
                self.flush();
                self.push(text);
            }
            return;
        }
        if text.starts_with(char::is_whitespace) {
            self.gap(Gap::Space);
        }
        for (i, word) in text.split_whitespace().enumerate() {
            if i > 0 {
                self.gap(Gap::Space);
            }
            self.flush();
            self.push(word);
        }
        if text.ends_with(char::is_whitespace) {
            self.gap(Gap::Space);
        }
    }

    /// Writes the owed gap and prefix before new text.
    fn flush(&mut self) {
        let gap = std::mem::replace(&mut self.gap, Gap::None);
        if !self.text.is_empty() {
            match gap {
                Gap::None => {}
                Gap::Space => {
                    if !self.text.ends_with(char::is_whitespace) {
                        self.text.push(' ');
                    }
                }
                Gap::Line | Gap::Paragraph => {
                    self.trim_trailing_blanks();
                    let want = if gap == Gap::Line { 1 } else { 2 };
                    let have = self.text.len() - self.text.trim_end_matches('\n').len();
                    for _ in have..want {
                        self.text.push('\n');
                    }
                }
            }
        }
        let prefix = std::mem::take(&mut self.prefix);
        self.push(&prefix);
    }

    fn trim_trailing_blanks(&mut self) {
        let kept = self.text.trim_end_matches([' ', '\t']).len();
        self.text.truncate(kept);
    }

    fn push(&mut self, s: &str) {
        if self.full {
            return;
        }
        let room = self.limit.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&s[..cut]);
            self.full = true;
        }
    }

    fn finish(mut self) -> String {
        let kept = self.text.trim_end().len();
        self.text.truncate(kept);
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(html: &str) -> String {
        to_text(html, usize::MAX).text
    }

    #[test]
    fn headings_become_markdown_headings_on_their_own_lines() {
        let text =
            render("<h1>Guide</h1><p>Intro text.</p><h2>Setup <br>steps</h2><p>Do this.</p>");
        assert_eq!(text, "# Guide\n\nIntro text.\n\n## Setup steps\n\nDo this.");
    }

    #[test]
    fn lists_and_tables_put_items_and_rows_on_their_own_lines() {
        let text = render(
            "<ul><li>one</li><li>two<ol><li>a</li><li>b</li></ol></li></ul><table><tr><th>k</th><th>v</th></tr><tr><td>x</td><td>1</td></tr></table>",
        );
        assert_eq!(text, "- one\n- two\n  1. a\n  2. b\n\nk | v\nx | 1");
    }

    #[test]
    fn inline_whitespace_collapses_but_preformatted_text_keeps_it() {
        let text = render("<p>a   <b>bold</b>\n   word</p><pre>fn main() {\n    x\n}</pre>");
        assert_eq!(text, "a bold word\n\nfn main() {\n    x\n}");
    }

    #[test]
    fn chrome_hidden_and_code_elements_are_dropped() {
        let text = render(
            "<header>Site menu</header><nav>Home About</nav><main><article><header><h1>Title</h1></header>\
             <p>Body<script>var secret=1</script></p><div hidden>ghost</div><div role=navigation>crumbs</div>\
             <form><label>Name</label><input value=zzz><button>Send</button></form></article></main>\
             <aside>ads</aside><footer>Copyright</footer><style>p{}</style>",
        );
        assert_eq!(text, "# Title\n\nBody\n\nName");
    }

    #[test]
    fn a_page_without_h1_takes_its_title_as_the_top_heading() {
        let text =
            render("<html><head><title> My   Page </title></head><body><p>x</p></body></html>");
        assert_eq!(text, "# My Page\n\nx");
    }

    #[test]
    fn output_stops_at_the_limit_on_a_char_boundary() {
        let rendered = to_text(&format!("<p>{}</p>", "é".repeat(100)), 11);
        assert!(rendered.truncated);
        assert_eq!(rendered.text, "é".repeat(5));
    }

    #[test]
    fn deeply_nested_markup_does_not_overflow_the_stack() {
        let html = format!(
            "{}deep{}",
            "<div><span>".repeat(20_000),
            "</span></div>".repeat(20_000)
        );
        assert_eq!(render(&html), "deep");
    }
}
