//! An incremental parser for `text/event-stream` bodies (server-sent events), fed byte chunks as
//! they arrive: lines may be split anywhere across chunks, end in LF, CRLF or CR, and `:` comment
//! lines (keep-alives) are skipped. `id:` and `retry:` fields are ignored (no reconnection).

/// Longest line (or multi-line `data`) accepted, so a broken server cannot grow memory unbounded.
pub const MAX_SSE_LINE: usize = 1 << 20;

/// One dispatched event, borrowed from the parser until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field; empty when the server sent none (the spec's default `message`).
    pub event: &'a str,
    /// The `data:` lines, joined with `\n`.
    pub data: &'a str,
}

impl SseEvent<'_> {
    /// Whether this is the OpenAI end-of-stream sentinel `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.trim() == "[DONE]"
    }
}

/// The parse failed: a line too long or not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event stream: {0}")]
pub struct SseError(&'static str);

/// Incremental event-stream parser; reuses its buffers, so parsing allocates only while they
/// grow. Feed chunks with [`push`](Self::push), then drain events with
/// [`next_event`](Self::next_event) until it returns `None`; at the end of the body call
/// [`finish`](Self::finish) and drain once more.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    pos: usize,
    /// A CR ended the last line; a following LF belongs to it.
    after_cr: bool,
    finished: bool,
    event: String,
    data: String,
    has_data: bool,
    dispatched: bool,
}

impl SseParser {
    /// An empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// Marks the end of the body: a last unterminated line counts as terminated and a pending
    /// event is dispatched (lenient to servers that omit the final blank line).
    pub fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.buf.extend_from_slice(b"\n\n");
        }
    }

    /// The next complete event, if the data pushed so far holds one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent<'_>>, SseError> {
        if self.dispatched {
            self.dispatched = false;
            self.event.clear();
            self.data.clear();
            self.has_data = false;
        }
        loop {
            let rest = &self.buf[self.pos..];
            if self.after_cr && !rest.is_empty() {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    self.pos += 1;
                    continue;
                }
            }
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if rest.len() > MAX_SSE_LINE {
                    return Err(SseError("line too long"));
                }
                return Ok(None);
            };
            self.after_cr = rest[end] == b'\r';
            let start = self.pos;
            self.pos += end + 1;
            let line = std::str::from_utf8(&self.buf[start..start + end])
                .map_err(|_| SseError("line is not UTF-8"))?;
            if line.is_empty() {
                if self.has_data {
                    self.dispatched = true;
                    return Ok(Some(SseEvent {
                        event: &self.event,
                        data: &self.data,
                    }));
                }
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    if self.data.len() + value.len() > MAX_SSE_LINE {
                        return Err(SseError("event data too long"));
                    }
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                    self.has_data = true;
                }
                "event" => {
                    self.event.clear();
                    self.event.push_str(value);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(e) = parser.next_event().unwrap() {
                out.push((e.event.to_string(), e.data.to_string()));
            }
        }
        parser.finish();
        while let Some(e) = parser.next_event().unwrap() {
            out.push((e.event.to_string(), e.data.to_string()));
        }
        out
    }

    const STREAM: &[u8] =
        b": keep-alive\r\n\r\nevent: ping\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata:y\n\n\
        id: 7\nretry: 10\ndata: [DONE]\n\n";

    fn expected() -> Vec<(String, String)> {
        vec![
            ("ping".into(), "{\"a\":1}".into()),
            (String::new(), "x\ny".into()),
            (String::new(), "[DONE]".into()),
        ]
    }

    #[test]
    fn parses_a_whole_stream() {
        assert_eq!(events(&[STREAM]), expected());
    }

    #[test]
    fn any_split_point_gives_the_same_events() {
        for cut in 0..STREAM.len() {
            assert_eq!(
                events(&[&STREAM[..cut], &STREAM[cut..]]),
                expected(),
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(events(&bytes), expected());
    }

    #[test]
    fn lone_cr_ends_lines_and_finish_flushes_an_unterminated_event() {
        assert_eq!(
            events(&[b"data: a\r\rdata: b"]),
            vec![(String::new(), "a".into()), (String::new(), "b".into())]
        );
    }

    #[test]
    fn done_sentinel() {
        let e = SseEvent {
            event: "",
            data: "[DONE]",
        };
        assert!(e.is_done());
    }

    #[test]
    fn rejects_endless_lines() {
        let mut parser = SseParser::new();
        parser.push(&vec![b'a'; MAX_SSE_LINE + 1]);
        assert!(parser.next_event().is_err());
    }
}
