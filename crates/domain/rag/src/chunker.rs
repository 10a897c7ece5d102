//! Structure-aware chunking. Text is cut at headings, then paragraphs, then sentences
//! (and, for a sentence longer than the budget, at word boundaries), and the pieces are
//! packed into chunks under a token budget with a little overlap. Every chunk's content
//! is exactly a slice of the extracted text, so its byte span, page and heading path
//! can be cited.

use crate::{ChunkingSettings, Span};

/// A chunk before it has ids and an embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDraft {
    pub content: String,
    pub span: Span,
    pub token_count: u32,
}

/// An estimate of model tokens: word pieces count about 4/3 per word for English
/// WordPiece/BPE vocabularies, and punctuation counts on its own.
#[must_use]
pub fn estimate_tokens(text: &str) -> u32 {
    let mut words = 0u32;
    let mut punct = 0u32;
    for w in text.split_whitespace() {
        words += 1;
        punct += u32::try_from(w.chars().filter(|c| c.is_ascii_punctuation()).count())
            .unwrap_or(u32::MAX);
    }
    words.saturating_mul(4).div_ceil(3).saturating_add(punct)
}

#[derive(Debug, Clone)]
struct Piece {
    start: usize,
    end: usize,
    section: Option<String>,
    tokens: u32,
}

/// Markdown ATX heading level and title, if the line is one (indented by four or
/// more spaces it is code, as in Markdown).
fn heading(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.chars().take_while(|c| *c == '#').count();
    if (1..=6).contains(&level) {
        let rest = &trimmed[level..];
        if rest.starts_with(' ') || rest.is_empty() {
            let title = rest.trim().trim_end_matches('#').trim();
            return (!title.is_empty()).then_some((level, title));
        }
    }
    None
}

/// The character of a Markdown code fence (three or more backticks or tildes) that
/// this line opens or closes, if it is one.
fn fence_marker(line: &str) -> Option<char> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    ['`', '~']
        .into_iter()
        .find(|c| trimmed.chars().take_while(|x| x == c).count() >= 3)
}

/// Paragraph blocks `(start, end, section)`: runs of non-blank lines, with headings
/// closing the previous block and updating the heading path.
fn blocks(text: &str) -> Vec<(usize, usize, Option<String>)> {
    let mut out = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut offset = 0;
    let section = |path: &[(usize, String)]| {
        (!path.is_empty()).then(|| {
            path.iter()
                .map(|(_, t)| t.as_str())
                .collect::<Vec<_>>()
                .join(" > ")
        })
    };
    // The fence character (` or ~) of the code block we are in, if any: inside one, a
    // `# comment` is code, not a heading, and blank lines do not split the block.
    let mut fence: Option<char> = None;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content_end = start + line.trim_end().len();
        let marker = fence_marker(line);
        if let Some(open) = fence {
            if marker == Some(open) {
                fence = None;
            }
            let lead = line.len() - line.trim_start().len();
            current = Some(match current {
                Some((s, _)) => (s, content_end.max(s)),
                None => (start + lead, content_end),
            });
            continue;
        }
        if marker.is_some() {
            fence = marker;
        }
        if let Some((level, title)) = heading(line).filter(|_| marker.is_none()) {
            if let Some((s, e)) = current.take() {
                out.push((s, e, section(&path)));
            }
            path.retain(|(l, _)| *l < level);
            path.push((level, title.to_owned()));
            // The heading itself belongs to the text of its section.
            current = Some((start + (line.len() - line.trim_start().len()), content_end));
            continue;
        }
        if line.trim().is_empty() {
            if let Some((s, e)) = current.take() {
                out.push((s, e, section(&path)));
            }
            continue;
        }
        let lead = line.len() - line.trim_start().len();
        current = Some(match current {
            Some((s, _)) => (s, content_end),
            None => (start + lead, content_end),
        });
    }
    if let Some((s, e)) = current {
        out.push((s, e, section(&path)));
    }
    out
}

/// Sentence ranges inside `[start, end)`: a sentence ends after `.`, `!`, `?` (or a
/// newline) followed by whitespace.
fn sentences(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let slice = &text[start..end];
    let mut out = Vec::new();
    let mut s = 0;
    let mut chars = slice.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let ends = matches!(c, '.' | '!' | '?' | '\n')
            && chars.peek().is_none_or(|(_, n)| n.is_whitespace());
        if ends {
            let e = i + c.len_utf8();
            if slice[s..e].trim().is_empty() {
                s = e;
                continue;
            }
            out.push((start + s, start + e));
            s = e;
            while let Some((j, n)) = chars.peek() {
                if n.is_whitespace() {
                    s = j + n.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
        }
    }
    if !slice[s..].trim().is_empty() {
        out.push((start + s, end));
    }
    out
}

/// Word windows of at most `max` tokens inside `[start, end)`.
fn word_windows(text: &str, start: usize, end: usize, max: u32) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut win: Option<(usize, usize)> = None;
    let mut offset = start;
    for word in text[start..end].split_inclusive(char::is_whitespace) {
        let ws = offset;
        offset += word.len();
        let we = ws + word.trim_end().len();
        if we == ws {
            continue;
        }
        win = match win {
            Some((s, e)) if estimate_tokens(&text[s..we]) > max => {
                out.push((s, e));
                Some((ws, we))
            }
            Some((s, _)) => Some((s, we)),
            None => Some((ws, we)),
        };
    }
    if let Some(w) = win {
        out.push(w);
    }
    out
}

fn pieces(text: &str, max: u32) -> Vec<Piece> {
    let mut out = Vec::new();
    for (start, end, section) in blocks(text) {
        let tokens = estimate_tokens(&text[start..end]);
        let ranges = if tokens <= max {
            vec![(start, end)]
        } else {
            sentences(text, start, end)
                .into_iter()
                .flat_map(|(s, e)| {
                    if estimate_tokens(&text[s..e]) <= max {
                        vec![(s, e)]
                    } else {
                        word_windows(text, s, e, max)
                    }
                })
                .collect()
        };
        for (s, e) in ranges {
            out.push(Piece {
                start: s,
                end: e,
                section: section.clone(),
                tokens: estimate_tokens(&text[s..e]),
            });
        }
    }
    out
}

/// The 1-based page containing byte `offset`, given the offsets where pages start.
#[must_use]
pub fn page_of(page_starts: &[u32], offset: u32) -> Option<u32> {
    if page_starts.is_empty() {
        return None;
    }
    let idx = page_starts.partition_point(|p| *p <= offset);
    u32::try_from(idx.max(1)).ok()
}

/// Cuts `text` into chunks of at most `settings.max_tokens` (estimated) tokens, each
/// starting with up to `settings.overlap_tokens` of the previous chunk's last sentences.
/// A new heading section or a new page always starts a new chunk.
#[must_use]
pub fn chunk_text(text: &str, page_starts: &[u32], settings: ChunkingSettings) -> Vec<ChunkDraft> {
    let pieces = pieces(text, settings.max_tokens);
    let mut drafts = Vec::new();
    let mut i = 0;
    while i < pieces.len() {
        let first = i;
        let section = pieces[i].section.clone();
        let mut j = i;
        let page = |k: usize| {
            page_of(
                page_starts,
                u32::try_from(pieces[k].start).unwrap_or(u32::MAX),
            )
        };
        // A page break, like a heading, ends a chunk: a citation names one page.
        let same_part = |k: usize| pieces[k].section == section && page(k) == page(first);
        while j + 1 < pieces.len()
            && same_part(j + 1)
            && estimate_tokens(&text[pieces[first].start..pieces[j + 1].end]) <= settings.max_tokens
        {
            j += 1;
        }
        let (start, end) = (pieces[first].start, pieces[j].end);
        let content = &text[start..end];
        let start32 = u32::try_from(start).unwrap_or(u32::MAX);
        drafts.push(ChunkDraft {
            content: content.to_owned(),
            span: Span {
                start: start32,
                end: u32::try_from(end).unwrap_or(u32::MAX),
                page: page_of(page_starts, start32),
                section: section.clone(),
            },
            token_count: estimate_tokens(content),
        });
        // Next chunk: back up over trailing pieces that fit in the overlap budget, but
        // always move forward by at least one piece.
        let mut next = j + 1;
        if next < pieces.len() && same_part(next) {
            let mut budget = settings.overlap_tokens;
            while next > first + 1 && pieces[next - 1].tokens <= budget {
                budget -= pieces[next - 1].tokens;
                next -= 1;
            }
        }
        i = next;
    }
    drafts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: u32, overlap: u32) -> ChunkingSettings {
        ChunkingSettings::new(max, overlap).unwrap()
    }

    #[test]
    fn a_comment_in_a_code_block_is_not_a_heading() {
        let text = "# Setup\n\nInstall it:\n\n```sh\n# fetch the code\ngit clone x\n\nmake\n```\n\nDone.\n";
        let chunks = chunk_text(text, &[], settings(512, 64));
        assert!(
            chunks
                .iter()
                .all(|c| c.span.section.as_deref() == Some("Setup")),
            "{chunks:?}"
        );
        assert!(
            chunks
                .iter()
                .any(|c| c.content.contains("# fetch the code\ngit clone x\n\nmake"))
        );
    }

    #[test]
    fn a_page_break_starts_a_new_chunk_even_when_both_pages_would_fit() {
        let text = "Intro on page one.\n\nThe warranty lasts two years.\n";
        let page2 = u32::try_from(text.find("The warranty").unwrap()).unwrap();
        let chunks = chunk_text(text, &[0, page2], settings(512, 64));
        let pages: Vec<_> = chunks.iter().map(|c| c.span.page).collect();
        assert_eq!(pages, vec![Some(1), Some(2)]);
        assert!(chunks[1].content.starts_with("The warranty"));
    }

    #[test]
    fn every_chunk_is_exactly_the_slice_its_span_names() {
        let text = "# Title\n\nIntro paragraph one. It has two sentences.\n\n## Part\n\nBody text here.\nMore body.\n";
        for c in chunk_text(text, &[], settings(16, 4)) {
            assert_eq!(&text[c.span.start as usize..c.span.end as usize], c.content);
        }
    }

    #[test]
    fn headings_become_the_section_path_of_their_chunks() {
        let text = "# Guide\n\nWelcome.\n\n## Install\n\nRun the installer.\n\n### Linux\n\nUse apt.\n\n## Usage\n\nCall it.\n";
        let chunks = chunk_text(text, &[], settings(200, 20));
        let sections: Vec<_> = chunks
            .iter()
            .map(|c| c.span.section.clone().unwrap())
            .collect();
        assert_eq!(
            sections,
            vec![
                "Guide",
                "Guide > Install",
                "Guide > Install > Linux",
                "Guide > Usage"
            ]
        );
        assert!(chunks[3].content.contains("Call it."));
    }

    #[test]
    fn no_chunk_exceeds_the_token_budget_and_all_text_is_covered() {
        let para = "The quick brown fox jumps over the lazy dog. ".repeat(40);
        let text = format!("# A\n\n{para}\n\n{para}\n");
        let max = 64;
        let chunks = chunk_text(&text, &[], settings(max, 16));
        assert!(chunks.len() > 4);
        for c in &chunks {
            assert!(c.token_count <= max, "{} tokens", c.token_count);
        }
        // Every word of the text appears in some chunk's span.
        let mut covered = vec![false; text.len()];
        for c in &chunks {
            for flag in &mut covered[c.span.start as usize..c.span.end as usize] {
                *flag = true;
            }
        }
        for (i, ch) in text.char_indices() {
            assert!(
                ch.is_whitespace() || ch == '#' || covered[i],
                "byte {i} ({ch:?}) not in any chunk"
            );
        }
    }

    #[test]
    fn consecutive_chunks_of_a_section_overlap() {
        let text = (0..30)
            .map(|i| format!("Sentence number {i} is here."))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_text(&text, &[], settings(40, 12));
        assert!(chunks.len() > 2);
        for pair in chunks.windows(2) {
            assert!(
                pair[1].span.start < pair[0].span.end,
                "no overlap between {:?} and {:?}",
                pair[0].span,
                pair[1].span
            );
            assert!(
                pair[1].span.start > pair[0].span.start,
                "chunks must advance"
            );
        }
    }

    #[test]
    fn a_single_enormous_word_run_is_cut_at_word_boundaries() {
        let text = "word ".repeat(1000);
        let chunks = chunk_text(&text, &[], settings(32, 0));
        assert!(
            chunks
                .iter()
                .all(|c| c.token_count <= 32 && !c.content.starts_with(' '))
        );
    }

    #[test]
    fn chunks_know_the_page_they_start_on() {
        let text = "Page one text.\n\nStill page one.\n\nPage two starts here.\n";
        let page2 = u32::try_from(text.find("Page two").unwrap()).unwrap();
        let chunks = chunk_text(text, &[0, page2], settings(16, 0));
        assert_eq!(chunks.first().unwrap().span.page, Some(1));
        assert_eq!(chunks.last().unwrap().span.page, Some(2));
    }

    #[test]
    fn empty_or_blank_text_makes_no_chunks() {
        assert!(chunk_text("", &[], ChunkingSettings::default()).is_empty());
        assert!(chunk_text(" \n\n\t\n", &[], ChunkingSettings::default()).is_empty());
    }

    #[test]
    fn multibyte_text_is_never_split_inside_a_character() {
        let text = "Ünïcödé sëntence. ".repeat(50) + "日本語の文章です。".repeat(30).as_str();
        for c in chunk_text(&text, &[], settings(24, 6)) {
            assert_eq!(&text[c.span.start as usize..c.span.end as usize], c.content);
        }
    }
}
