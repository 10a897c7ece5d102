//! Plain text and Markdown: kept as written, because the chunker reads Markdown
//! headings and blank-line paragraphs directly. Only what would confuse offsets or
//! search is changed: line endings become `\n`, stray control characters go, and
//! Markdown front matter (metadata, not prose) is dropped.

/// `text` with `\r\n` and lone `\r` turned into `\n`, and control characters other than
/// tab, newline and form feed removed.
pub(crate) fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\t' | '\n' | '\x0c' => out.push(c),
            // A BOM in the middle of a file (concatenated files) is invisible noise.
            '\u{feff}' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Markdown without its leading YAML (`---`) or TOML (`+++`) front matter, if any.
/// Expects normalised line endings.
pub(crate) fn strip_front_matter(text: &str) -> &str {
    for fence in ["---", "+++"] {
        let Some(rest) = text.strip_prefix(fence).and_then(|r| r.strip_prefix('\n')) else {
            continue;
        };
        let mut offset = 0;
        for line in rest.split_inclusive('\n') {
            let bare = line.trim_end();
            if bare == fence || (fence == "---" && bare == "...") {
                return rest[offset + line.len()..].trim_start_matches('\n');
            }
            offset += line.len();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_old_mac_line_endings_become_unix_ones() {
        assert_eq!(normalise("a\r\nb\rc\n"), "a\nb\nc\n");
    }

    #[test]
    fn control_characters_are_dropped_but_tabs_and_form_feeds_stay() {
        assert_eq!(normalise("a\u{1}b\tc\x0cd\u{7f}e\u{feff}f"), "ab\tc\x0cdef");
    }

    #[test]
    fn yaml_and_toml_front_matter_is_removed() {
        assert_eq!(
            strip_front_matter("---\ntitle: x\n---\n\n# Hello\n"),
            "# Hello\n"
        );
        assert_eq!(strip_front_matter("+++\ntitle = 'x'\n+++\nbody"), "body");
    }

    #[test]
    fn a_leading_rule_without_a_closing_fence_is_kept() {
        let text = "---\nnot front matter, just a rule\n";
        assert_eq!(strip_front_matter(text), text);
    }
}
