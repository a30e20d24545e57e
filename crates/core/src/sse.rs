//! Server-sent events (`text/event-stream`) framing: an incremental decoder
//! and an encoder, with no I/O and no tower types.
//!
//! The decoder follows the WHATWG event-stream grammar: lines end in `\n`,
//! `\r\n` or `\r` (a pair split across two chunks is still one line end), a
//! blank line ends an event, `data` lines are joined with `\n`, a leading
//! byte-order mark is skipped, a value loses one leading space, unknown
//! fields are ignored. Unlike a browser it also yields comment-only and
//! `retry`-only blocks, so that a proxy re-emits keep-alives as they come.
//!
//! What an event may hold while it is being read is bounded: an event (or a
//! line) longer than the limit is an error instead of an ever-growing buffer.
//!
//! ```
//! use switchboard_core::sse::{Event, SseDecoder};
//!
//! let mut decoder = SseDecoder::new(64 * 1024);
//! let mut events = decoder.decode(b"event: delta\ndata: {\"a\":").unwrap();
//! assert!(events.is_empty());
//! events.extend(decoder.decode(b"1}\r\n\r\ndata: [DONE]\n\n").unwrap());
//! assert_eq!(events[0].event.as_deref(), Some("delta"));
//! assert_eq!(events[0].data.as_deref(), Some("{\"a\":1}"));
//! assert_eq!(events[1].data.as_deref(), Some("[DONE]"));
//! assert_eq!(events[1].to_bytes(), b"data: [DONE]\n\n");
//! assert_eq!(Event::data("x\ny").to_bytes(), b"data: x\ndata: y\n\n");
//! ```

use std::fmt::Write as _;

/// One server-sent event, or a block of comments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The `event` field (the event type), when set.
    pub event: Option<String>,
    /// The `data` lines joined with `\n`; `None` when the block had no
    /// `data` line (`data:` alone gives `Some("")`).
    pub data: Option<String>,
    /// The `id` field, when set (an `id` holding NUL is ignored, as the
    /// grammar says).
    pub id: Option<String>,
    /// The `retry` field in milliseconds, when set to digits only.
    pub retry: Option<u64>,
    /// Comment lines (after the `:`, kept as they were).
    pub comments: Vec<String>,
}

impl Event {
    /// An event with only `data`.
    pub fn data(data: impl Into<String>) -> Self {
        Self {
            data: Some(data.into()),
            ..Self::default()
        }
    }

    /// Sets the event type.
    #[must_use]
    pub fn with_event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// Whether the block holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.event.is_none()
            && self.data.is_none()
            && self.id.is_none()
            && self.retry.is_none()
            && self.comments.is_empty()
    }

    /// Appends the wire form of the event, ending with the blank line:
    /// comments, `event`, `id`, `retry`, then one `data` line per line of
    /// data. Line breaks inside a value cannot be framed: in `event`, `id`
    /// and comments they are replaced by spaces; in `data` they split lines.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for comment in &self.comments {
            out.push(b':');
            push_single_line(out, comment);
            out.push(b'\n');
        }
        if let Some(event) = &self.event {
            out.extend_from_slice(b"event: ");
            push_single_line(out, event);
            out.push(b'\n');
        }
        if let Some(id) = &self.id {
            out.extend_from_slice(b"id: ");
            push_single_line(out, id);
            out.push(b'\n');
        }
        if let Some(retry) = self.retry {
            let mut line = String::new();
            let _ = writeln!(line, "retry: {retry}");
            out.extend_from_slice(line.as_bytes());
        }
        if let Some(data) = &self.data {
            for line in split_lines(data) {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }

    /// The wire form of the event (see [`Event::encode_into`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

fn push_single_line(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
}

/// Splits on `\r\n`, `\r` and `\n`, keeping empty lines (`""` gives one
/// empty line).
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// A stream that cannot be decoded within its bounds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// An event (or a single line) grew past the limit before it ended.
    #[error("server-sent event is larger than the limit of {limit} bytes")]
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

/// An incremental `text/event-stream` decoder: feed it chunks as they
/// arrive, get the events they complete.
#[derive(Debug)]
pub struct SseDecoder {
    max_event_size: usize,
    line: Vec<u8>,
    /// The event being read; its `data` lines are joined as they come.
    event: Event,
    event_size: usize,
    skip_lf: bool,
    at_start: bool,
}

impl SseDecoder {
    /// A decoder whose events (and lines) may be at most `max_event_size`
    /// bytes long while being read.
    pub fn new(max_event_size: usize) -> Self {
        Self {
            max_event_size,
            line: Vec::new(),
            event: Event::default(),
            event_size: 0,
            skip_lf: false,
            at_start: true,
        }
    }

    /// Feeds a chunk; returns the events it completes, in order.
    pub fn decode(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.at_start {
            // A byte-order mark may only open the stream, and may itself be
            // split across chunks.
            const BOM: &[u8; 3] = b"\xEF\xBB\xBF";
            while let Some((&first, tail)) = rest.split_first() {
                if self.line.len() >= BOM.len() || first != BOM[self.line.len()] {
                    break;
                }
                self.line.push(first);
                rest = tail;
            }
            if self.line.len() == BOM.len() {
                self.line.clear();
                self.at_start = false;
            } else if rest.is_empty() {
                return Ok(events);
            } else {
                // Not a mark after all: what was kept is ordinary text.
                self.at_start = false;
            }
        }
        while !rest.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(at) => {
                    let ended = if self.line.is_empty() {
                        // The whole line is in this chunk: read it in place.
                        self.check_line(at)?;
                        self.process_line(&rest[..at])?
                    } else {
                        self.extend_line(&rest[..at])?;
                        // The buffer is kept for the next carried-over line.
                        let mut line = std::mem::take(&mut self.line);
                        let ended = self.process_line(&line);
                        line.clear();
                        self.line = line;
                        ended?
                    };
                    if rest[at] == b'\r' {
                        self.skip_lf = true;
                    }
                    rest = &rest[at + 1..];
                    if let Some(event) = ended {
                        events.push(event);
                    }
                }
                None => {
                    self.extend_line(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(events)
    }

    /// Ends the stream: an event left without its closing blank line is
    /// returned rather than lost.
    pub fn finish(&mut self) -> Result<Option<Event>, SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line)? {
                return Ok(Some(event));
            }
        }
        Ok(self.dispatch())
    }

    fn check_line(&self, len: usize) -> Result<(), SseError> {
        if self.event_size + len > self.max_event_size {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_size,
            });
        }
        Ok(())
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.check_line(self.line.len() + bytes.len())?;
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8]) -> Result<Option<Event>, SseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        self.event_size += line.len() + 1;
        if self.event_size > self.max_event_size {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_size,
            });
        }
        let line = String::from_utf8_lossy(line);
        if let Some(comment) = line.strip_prefix(':') {
            self.event.comments.push(comment.to_owned());
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event.event = Some(value.to_owned()),
            "data" => match &mut self.event.data {
                None => self.event.data = Some(value.to_owned()),
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
            },
            "id" if !value.contains('\0') => self.event.id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.event.retry = value.parse().ok();
            }
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<Event> {
        self.event_size = 0;
        let event = std::mem::take(&mut self.event);
        (!event.is_empty()).then_some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut decoder = SseDecoder::new(1024);
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(decoder.decode(chunk).unwrap());
        }
        events.extend(decoder.finish().unwrap());
        events
    }

    #[test]
    fn fields_and_multiline_data() {
        let events = decode_all(&[
            b"event: message\nid: 7\nretry: 1500\ndata: first\ndata:second\ndata\n\n",
        ]);
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.event.as_deref(), Some("message"));
        assert_eq!(event.id.as_deref(), Some("7"));
        assert_eq!(event.retry, Some(1500));
        assert_eq!(event.data.as_deref(), Some("first\nsecond\n"));
    }

    #[test]
    fn every_line_ending_and_split_crlf() {
        let expected = vec![Event::data("a"), Event::data("b"), Event::data("c")];
        assert_eq!(
            decode_all(&[b"data: a\n\ndata: b\r\n\r\ndata: c\r\r"]),
            expected
        );
        // A CR at the end of one chunk and its LF at the start of the next.
        assert_eq!(
            decode_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r", b"\r", b"data: c\n\n"]),
            expected
        );
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let stream = "\u{feff}: hi\n\nevent: x\r\ndata: {\"t\":\"héllo\"}\r\n\r\ndata: [DONE]\n\n";
        let whole = decode_all(&[stream.as_bytes()]);
        let bytes: Vec<&[u8]> = stream.as_bytes().chunks(1).collect();
        assert_eq!(decode_all(&bytes), whole);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].comments, vec![" hi".to_owned()]);
        assert_eq!(whole[1].data.as_deref(), Some("{\"t\":\"héllo\"}"));
    }

    #[test]
    fn ignores_unknown_fields_bad_retry_and_nul_ids() {
        let events = decode_all(&[b"foo: bar\nretry: 1s\nid: a\0b\ndata: x\n\n"]);
        assert_eq!(events, vec![Event::data("x")]);
    }

    #[test]
    fn unterminated_event_is_returned_at_finish() {
        let events = decode_all(&[b"data: tail"]);
        assert_eq!(events, vec![Event::data("tail")]);
        let mut decoder = SseDecoder::new(1024);
        assert!(decoder.decode(b"\n\n\n").unwrap().is_empty());
        assert_eq!(decoder.finish().unwrap(), None);
    }

    #[test]
    fn bounded_carry_over() {
        let mut decoder = SseDecoder::new(16);
        assert!(decoder.decode(b"data: 0123456789").is_ok());
        assert_eq!(
            decoder.decode(b"abcdef"),
            Err(SseError::EventTooLarge { limit: 16 })
        );
        // Many short lines of one event count together.
        let mut decoder = SseDecoder::new(16);
        assert!(decoder.decode(b"data: a\ndata: b\n").is_ok());
        assert!(decoder.decode(b"data: c\n").is_err());
        // Events that each fit are fine however many there are.
        let mut decoder = SseDecoder::new(16);
        for _ in 0..100 {
            assert_eq!(decoder.decode(b"data: abc\n\n").unwrap().len(), 1);
        }
    }

    #[test]
    fn encoder_round_trips() {
        let event = Event {
            event: Some("delta".into()),
            data: Some("line one\nline two\n".into()),
            id: Some("42".into()),
            retry: Some(10),
            comments: vec![" keep-alive".into()],
        };
        let bytes = event.to_bytes();
        assert_eq!(
            bytes,
            b": keep-alive\nevent: delta\nid: 42\nretry: 10\ndata: line one\ndata: line two\ndata: \n\n"
        );
        assert_eq!(decode_all(&[&bytes]), vec![event]);
        // Line breaks in single-line fields cannot escape their field.
        let sneaky = Event::data("x").with_event("a\ndata: injected");
        assert_eq!(
            decode_all(&[&sneaky.to_bytes()]),
            vec![Event::data("x").with_event("a data: injected")]
        );
        assert_eq!(Event::data("").to_bytes(), b"data: \n\n");
    }
}
