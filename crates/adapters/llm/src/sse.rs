//! A Server-Sent Events decoder (the WHATWG `text/event-stream` format) that is fed
//! bytes exactly as they come off the socket: a frame may be split anywhere, inside a
//! UTF-8 character or between the `\r` and `\n` of a line ending, so bytes are only
//! decoded once a whole line is in. Comments (`: keep-alive`) are skipped. Pure: no I/O.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the server named the event.
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// A stream that is not valid SSE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event-stream line is not valid UTF-8")]
    InvalidUtf8,
    #[error("an event-stream line is longer than {0} bytes")]
    LineTooLong(usize),
}

/// Incremental decoder; feed it with [`SseDecoder::push`], then [`SseDecoder::finish`].
#[derive(Debug)]
pub struct SseDecoder {
    /// Bytes of the line being received (no line ending yet).
    buf: Vec<u8>,
    /// How far `buf` has been searched for a line ending, so that a long line arriving
    /// a few bytes at a time is not rescanned from its start on every push.
    scanned: usize,
    /// The previous push ended with `\r`: a `\n` starting this one belongs to it.
    after_cr: bool,
    /// Whether the leading byte-order mark, if any, was dealt with.
    started: bool,
    event: Option<String>,
    data: String,
    /// `data:` lines of the event being built; an event without any is not dispatched.
    data_lines: usize,
    max_line: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// Lines may be up to 4 MiB: far above any real chunk, low enough that a server
    /// that never sends a line ending cannot exhaust memory.
    pub const DEFAULT_MAX_LINE: usize = 4 * 1024 * 1024;

    #[must_use]
    pub fn new() -> Self {
        Self::with_max_line(Self::DEFAULT_MAX_LINE)
    }

    #[must_use]
    pub fn with_max_line(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            scanned: 0,
            after_cr: false,
            started: false,
            event: None,
            data: String::new(),
            data_lines: 0,
            max_line,
        }
    }

    /// Decodes `bytes`, appending every event they complete to `out`.
    ///
    /// # Errors
    /// When a line is not UTF-8 or too long; the decoder is then unusable.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        self.buf.extend_from_slice(bytes);
        if !self.started {
            // The spec strips one leading BOM; it may itself arrive split.
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(());
            }
            if self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
            self.started = true;
        }
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buf.len() {
            match self.buf[i] {
                b'\n' => {
                    self.line(start, i, out)?;
                    start = i + 1;
                }
                b'\r' => {
                    self.line(start, i, out)?;
                    if i + 1 < self.buf.len() {
                        if self.buf[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        // The `\n` of this `\r\n` may be the first byte of the next push.
                        self.after_cr = true;
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max_line {
            return Err(SseError::LineTooLong(self.max_line));
        }
        Ok(())
    }

    /// The stream ended: a last line without its ending, and a last event without its
    /// blank line, are still dispatched. The spec would drop them, but servers that
    /// end with `data: [DONE]` and no blank line are real, and a half-written JSON
    /// line is caught by whoever parses the data.
    ///
    /// # Errors
    /// When the last line is not UTF-8.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.buf.is_empty() {
            let end = self.buf.len();
            self.line(0, end, out)?;
            self.buf.clear();
            self.scanned = 0;
        }
        self.dispatch(out);
        Ok(())
    }

    /// Handles the line `buf[start..end]` (without its ending).
    fn line(&mut self, start: usize, end: usize, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let raw = &self.buf[start..end];
        if raw.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if raw[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(raw).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data_lines > 0 {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.data_lines += 1;
            }
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` matter for browser reconnection, which we never do.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.data_lines > 0 {
            out.push(SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
            });
        }
        self.event = None;
        self.data.clear();
        self.data_lines = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for p in pieces {
            d.push(p, &mut out).unwrap();
        }
        d.finish(&mut out).unwrap();
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    const SAMPLE: &str = "\u{feff}: keep-alive\r\n\r\nevent: message_start\r\ndata: {\"a\":\"héllo 👋\"}\r\n\r\ndata:x\ndata: y\n\nid: 7\nretry: 10\ndata\n\n: comment\n\nevent: lonely\n\ndata: [DONE]\r\r";

    fn expected() -> Vec<SseEvent> {
        vec![
            ev(Some("message_start"), "{\"a\":\"héllo 👋\"}"),
            ev(None, "x\ny"),
            ev(None, ""),
            ev(None, "[DONE]"),
        ]
    }

    #[test]
    fn events_are_separated_by_blank_lines_with_any_line_ending() {
        assert_eq!(decode_in_pieces(&[SAMPLE.as_bytes()]), expected());
    }

    #[test]
    fn any_split_into_two_pieces_decodes_the_same() {
        let bytes = SAMPLE.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(decode_in_pieces(&[a, b]), expected(), "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time_decodes_the_same() {
        let pieces: Vec<&[u8]> = SAMPLE.as_bytes().chunks(1).collect();
        assert_eq!(decode_in_pieces(&pieces), expected());
    }

    #[test]
    fn a_crlf_split_between_pushes_is_one_line_ending_not_two() {
        // Were the `\n` taken for a second (blank) line, `a` would be dispatched alone.
        let out = decode_in_pieces(&[b"data: a\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(out, vec![ev(None, "a\nb")]);
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_still_dispatched() {
        assert_eq!(
            decode_in_pieces(&[b"data: [DONE]"]),
            vec![ev(None, "[DONE]")]
        );
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        assert_eq!(
            d.push(b"data: \xff\xfe\n", &mut out),
            Err(SseError::InvalidUtf8)
        );
    }

    #[test]
    fn a_line_that_never_ends_is_refused_once_too_long() {
        let mut d = SseDecoder::with_max_line(16);
        let mut out = Vec::new();
        assert!(d.push(b"data: 0123456789", &mut out).is_ok());
        assert_eq!(d.push(b"abcdef", &mut out), Err(SseError::LineTooLong(16)));
    }
}
