//! What a file really is, decided from its bytes. The client's Content-Type header is
//! never consulted, and the filename only breaks the tie between text flavours (is
//! this text Markdown or plain?): a `.pdf` that is really a PNG is refused, and a
//! `.txt` that is really a PDF is read as a PDF.

use std::borrow::Cow;

/// The formats we extract text from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pdf,
    Html,
    Markdown,
    Plain,
}

impl Kind {
    pub(crate) fn mime(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Html => "text/html",
            Self::Markdown => "text/markdown",
            Self::Plain => "text/plain",
        }
    }
}

/// The verdict on a file.
#[derive(Debug)]
pub(crate) enum Sniffed<'a> {
    Pdf,
    /// Text of one of the text kinds, decoded to UTF-8 (BOM removed).
    Text(Kind, Cow<'a, str>),
    /// Not something we extract from; says what it looks like.
    Refused(&'static str),
}

/// Acrobat accepts the `%PDF-` header anywhere in the first KiB (some generators put
/// junk before it), so we do too.
const PDF_HEADER_WINDOW: usize = 1024;

/// Signatures of common binary formats people upload by mistake, so that the error
/// names what the file is. Binaries not listed here are still refused by the text
/// checks (NUL bytes, control characters).
const BINARY_MAGIC: &[(&[u8], &str)] = &[
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"RIFF", "a RIFF media file (WebP, WAV, AVI)"),
    (b"II*\0", "a TIFF image"),
    (b"MM\0*", "a TIFF image"),
    (b"8BPS", "a Photoshop image"),
    (
        b"PK\x03\x04",
        "a ZIP archive or Office document (.docx, .xlsx, .pptx, .odt, .epub)",
    ),
    (b"PK\x05\x06", "a ZIP archive"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "a legacy Office document (.doc, .xls, .ppt)",
    ),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\0", "an xz archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x7fELF", "an executable"),
    (b"\xcf\xfa\xed\xfe", "an executable"),
    (b"\xce\xfa\xed\xfe", "an executable"),
    (b"\0asm", "a WebAssembly module"),
    (b"SQLite format 3\0", "an SQLite database"),
    (b"OggS", "an Ogg media file"),
    (b"fLaC", "a FLAC audio file"),
    (b"ID3", "an MP3 audio file"),
    (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
    (b"%!PS", "a PostScript document"),
    (b"{\\rtf", "an RTF document"),
];

/// Classifies `bytes`; `filename` only chooses between text kinds.
pub(crate) fn sniff<'a>(bytes: &'a [u8], filename: &str) -> Sniffed<'a> {
    let head = &bytes[..bytes.len().min(PDF_HEADER_WINDOW)];
    if find(head, b"%PDF-").is_some() {
        return Sniffed::Pdf;
    }
    if let Some((_, what)) = BINARY_MAGIC
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
    {
        return Sniffed::Refused(what);
    }
    if bytes.get(4..8) == Some(b"ftyp") {
        return Sniffed::Refused("an MP4/QuickTime media file");
    }
    let Some(text) = decode(bytes) else {
        return Sniffed::Refused("binary data");
    };
    if looks_like_svg(&text) {
        return Sniffed::Refused("an SVG image");
    }
    let kind = match extension(filename).as_deref() {
        Some("md" | "markdown" | "mdown" | "mkd" | "mkdn") => Kind::Markdown,
        Some("html" | "htm" | "xhtml") => Kind::Html,
        _ if looks_like_html(&text) => Kind::Html,
        Some("txt" | "text") => Kind::Plain,
        _ if looks_like_markdown(&text) => Kind::Markdown,
        _ => Kind::Plain,
    };
    Sniffed::Text(kind, text)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn extension(filename: &str) -> Option<String> {
    let name = filename.rsplit(['/', '\\']).next().unwrap_or(filename);
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// Decodes text in the encodings people actually upload: UTF-8 (with or without BOM),
/// UTF-16 with a BOM (Windows "Unicode" text), and, for bytes that are not valid UTF-8,
/// Windows-1252 (a superset of Latin-1, the usual legacy Western encoding). Anything
/// with NUL bytes or more than a sprinkle of control characters is binary: `None`.
fn decode(bytes: &[u8]) -> Option<Cow<'_, str>> {
    let text: Cow<'_, str> = if let Some(rest) = bytes.strip_prefix(b"\xef\xbb\xbf") {
        decode_8bit(rest)?
    } else if let Some(rest) = bytes.strip_prefix(b"\xff\xfe") {
        Cow::Owned(decode_utf16(rest, u16::from_le_bytes)?)
    } else if let Some(rest) = bytes.strip_prefix(b"\xfe\xff") {
        Cow::Owned(decode_utf16(rest, u16::from_be_bytes)?)
    } else {
        decode_8bit(bytes)?
    };
    is_mostly_printable(&text).then_some(text)
}

fn decode_8bit(bytes: &[u8]) -> Option<Cow<'_, str>> {
    if bytes.contains(&0) {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(Cow::Borrowed(text)),
        Err(_) => Some(
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0,
        ),
    }
}

fn decode_utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
}

/// Text has tabs, line breaks and form feeds, and hardly any other control character;
/// binary data has them everywhere (about one byte in nine for random bytes). One in a
/// hundred leaves room for the odd stray escape or DOS end-of-file marker.
fn is_mostly_printable(text: &str) -> bool {
    let mut chars = 0usize;
    let mut controls = 0usize;
    for c in text.chars() {
        chars += 1;
        if c == '\0' {
            return false;
        }
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c') {
            controls += 1;
        }
    }
    controls * 100 <= chars
}

/// The first `chars` characters after leading whitespace, lower-cased.
fn head(text: &str, chars: usize) -> String {
    text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .chars()
        .take(chars)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The HTML signatures of the WHATWG MIME sniffing standard, plus a few common
/// structural tags, at the start of the text; or XHTML after an XML prolog.
fn looks_like_html(text: &str) -> bool {
    const TAGS: &[&str] = &[
        "!doctype html",
        "html",
        "head",
        "body",
        "script",
        "iframe",
        "h1",
        "h2",
        "h3",
        "div",
        "font",
        "table",
        "a",
        "style",
        "title",
        "b",
        "br",
        "p",
        "meta",
        "link",
        "main",
        "article",
        "section",
        "header",
        "nav",
        "ul",
        "ol",
    ];
    let head = head(text, 1024);
    if head.starts_with("<!--") {
        return true;
    }
    if head.starts_with("<?xml") {
        return head.contains("<html") || head.contains("<!doctype html");
    }
    let Some(rest) = head.strip_prefix('<') else {
        return false;
    };
    TAGS.iter().any(|tag| {
        rest.strip_prefix(tag).is_some_and(|after| {
            after.starts_with(|c: char| c == '>' || c == '/' || c.is_whitespace())
        })
    })
}

fn looks_like_svg(text: &str) -> bool {
    let head = head(text, 1024);
    head.starts_with("<svg") || (head.starts_with("<?xml") && head.contains("<svg"))
}

/// Markdown structure the chunker can use: an ATX heading (`# Title`), a fenced code
/// block, or front matter.
fn looks_like_markdown(text: &str) -> bool {
    if text.starts_with("---\n") || text.starts_with("---\r\n") {
        return true;
    }
    text.lines().take(2000).any(|line| {
        let hashes = line.bytes().take_while(|b| *b == b'#').count();
        let heading = (1..=6).contains(&hashes)
            && line[hashes..].starts_with(' ')
            && !line[hashes..].trim().is_empty();
        heading || line.starts_with("```") || line.starts_with("~~~")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(bytes: &[u8], filename: &str) -> Option<Kind> {
        match sniff(bytes, filename) {
            Sniffed::Pdf => Some(Kind::Pdf),
            Sniffed::Text(kind, _) => Some(kind),
            Sniffed::Refused(_) => None,
        }
    }

    #[test]
    fn a_pdf_header_makes_a_pdf_whatever_the_name() {
        assert_eq!(kind(b"%PDF-1.7\n...", "notes.txt"), Some(Kind::Pdf));
        assert_eq!(kind(b"\n\n%PDF-1.4\n", "x"), Some(Kind::Pdf));
    }

    #[test]
    fn an_image_named_pdf_is_refused_and_named() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert!(matches!(sniff(png, "scan.pdf"), Sniffed::Refused(what) if what.contains("PNG")));
        assert!(
            matches!(sniff(b"PK\x03\x04\x14\0", "report.docx"), Sniffed::Refused(what) if what.contains("Office"))
        );
    }

    #[test]
    fn bytes_with_nul_or_many_control_characters_are_binary() {
        assert_eq!(kind(b"abc\0def", "a.txt"), None);
        assert_eq!(kind(&[1, 2, 3, 4, 5, 6, 7, 8, 65, 66], "a.txt"), None);
    }

    #[test]
    fn html_is_recognised_from_its_start() {
        for doc in [
            "<!DOCTYPE html><p>x",
            "  <html lang=en>",
            "<p>hello</p>",
            "<!-- c --><div>",
            "<?xml version=\"1.0\"?>\n<html xmlns=\"http://www.w3.org/1999/xhtml\">",
        ] {
            assert_eq!(kind(doc.as_bytes(), "upload"), Some(Kind::Html), "{doc}");
        }
        assert_eq!(
            kind(b"<pre-formatted> is not a tag we know", "upload"),
            Some(Kind::Plain)
        );
    }

    #[test]
    fn markdown_comes_from_the_extension_or_from_headings() {
        assert_eq!(kind(b"just words", "README.md"), Some(Kind::Markdown));
        assert_eq!(
            kind(b"<p align=center>logo</p>\n# Title", "README.md"),
            Some(Kind::Markdown)
        );
        assert_eq!(
            kind(b"intro\n\n## Install\n\nrun it", "upload"),
            Some(Kind::Markdown)
        );
        assert_eq!(
            kind(b"#hashtag is not a heading", "upload"),
            Some(Kind::Plain)
        );
        assert_eq!(
            kind(b"# looks like a heading", "notes.txt"),
            Some(Kind::Plain)
        );
    }

    #[test]
    fn legacy_and_utf16_text_is_decoded() {
        let Sniffed::Text(_, latin1) = sniff(b"caf\xe9 cr\xe8me", "menu.txt") else {
            panic!()
        };
        assert_eq!(latin1, "café crème");
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain("héllo".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let Sniffed::Text(_, text) = sniff(&utf16, "win.txt") else {
            panic!()
        };
        assert_eq!(text, "héllo");
    }

    #[test]
    fn svg_images_are_refused() {
        assert_eq!(
            kind(
                b"<?xml version=\"1.0\"?><svg xmlns=\"...\"></svg>",
                "logo.svg"
            ),
            None
        );
    }
}
