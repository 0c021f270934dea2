//! Text extraction and chunking, fed incrementally: bytes go in as the upload arrives, cleaned
//! text flows into a chunker that emits overlapping chunks with their source positions, so
//! memory stays bounded by one chunk plus the decoder's carry (PDF, which needs the whole file,
//! is bounded by the upload limit).

/// Kinds of documents the knowledge base ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// `text/plain`.
    Text,
    /// `text/markdown`.
    Markdown,
    /// `text/html`.
    Html,
    /// `application/pdf`.
    Pdf,
}

impl DocKind {
    /// The kind for a content type (parameters such as `charset` ignored), else `None`.
    pub fn from_content_type(content_type: &str) -> Option<DocKind> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        Some(match essence.as_str() {
            "text/plain" => DocKind::Text,
            "text/markdown" | "text/x-markdown" => DocKind::Markdown,
            "text/html" | "application/xhtml+xml" => DocKind::Html,
            "application/pdf" => DocKind::Pdf,
            _ => return None,
        })
    }

    /// The canonical content type.
    pub fn content_type(self) -> &'static str {
        match self {
            DocKind::Text => "text/plain",
            DocKind::Markdown => "text/markdown",
            DocKind::Html => "text/html",
            DocKind::Pdf => "application/pdf",
        }
    }
}

/// A chunk of a document and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Position in the document (0-based).
    pub ordinal: usize,
    /// The cleaned text.
    pub text: String,
    /// Character offset of its start in the document's extracted text.
    pub start: usize,
    /// Character offset just past its end.
    pub end: usize,
    /// PDF page (1-based) where it starts.
    pub page: Option<u32>,
}

/// Cuts cleaned text into chunks of about `size` characters, overlapping by `overlap`, ending
/// at a sentence or line end where one is near.
#[derive(Debug)]
pub struct Chunker {
    size: usize,
    overlap: usize,
    buffer: Vec<char>,
    buffer_start: usize,
    page: Option<u32>,
    page_marks: Vec<(usize, u32)>,
    emitted: Vec<Chunk>,
    last_space: bool,
    run_newlines: usize,
}

impl Chunker {
    /// A chunker (`size` ≥ 100, `overlap` < size/2 are enforced).
    pub fn new(size: usize, overlap: usize) -> Chunker {
        let size = size.max(100);
        Chunker {
            size,
            overlap: overlap.min(size / 2),
            buffer: Vec::with_capacity(size * 2),
            buffer_start: 0,
            page: None,
            page_marks: Vec::new(),
            emitted: Vec::new(),
            last_space: true,
            run_newlines: 0,
        }
    }

    /// Marks that text from here on is on `page`.
    pub fn set_page(&mut self, page: u32) {
        self.page_marks
            .push((self.buffer_start + self.buffer.len(), page));
        if self.page.is_none() {
            self.page = Some(page);
        }
    }

    /// Adds cleaned text (whitespace runs collapse to one space; newlines kept as breaks).
    pub fn push(&mut self, text: &str) {
        for c in text.chars() {
            let c = if c == '\u{a0}' || c == '\t' || c == '\r' {
                ' '
            } else {
                c
            };
            if c.is_control() && c != '\n' {
                continue;
            }
            let space = c.is_whitespace();
            let newline = c == '\n';
            if space && self.last_space {
                // A run of whitespace keeps at most a paragraph break ("\n\n").
                if newline {
                    self.run_newlines += 1;
                    match self.buffer.last_mut() {
                        Some(last) if *last == ' ' => *last = '\n',
                        _ if self.run_newlines == 2 => self.buffer.push('\n'),
                        _ => {}
                    }
                }
                continue;
            }
            self.run_newlines = usize::from(newline);
            self.last_space = space;
            self.buffer.push(c);
            if self.buffer.len() >= self.size + self.overlap {
                self.cut(false);
            }
        }
    }

    fn page_at(&self, offset: usize) -> Option<u32> {
        self.page_marks
            .iter()
            .take_while(|(at, _)| *at <= offset)
            .last()
            .map(|(_, p)| *p)
            .or(self.page)
    }

    fn cut(&mut self, last: bool) {
        let len = if last {
            self.buffer.len()
        } else {
            // The last paragraph or sentence end in the last 40 % of the window (a line break
            // alone is a wrapped line, not an end), else a word end.
            let window = &self.buffer[..self.size.min(self.buffer.len())];
            let from = self.size * 6 / 10;
            let sentence = (from..window.len()).rev().find(|&i| {
                (matches!(window[i], '.' | '?' | '!')
                    && window.get(i + 1).is_none_or(|c| c.is_whitespace()))
                    || (window[i] == '\n' && window[i - 1] == '\n')
            });
            let word = (from..window.len())
                .rev()
                .find(|&i| window[i].is_whitespace());
            sentence.map(|i| i + 1).or(word).unwrap_or(window.len())
        };
        let text: String = self.buffer[..len]
            .iter()
            .collect::<String>()
            .trim()
            .to_string();
        if !text.is_empty() {
            self.emitted.push(Chunk {
                ordinal: self.emitted.len(),
                text,
                start: self.buffer_start,
                end: self.buffer_start + len,
                page: self.page_at(self.buffer_start),
            });
        }
        if last {
            self.buffer_start += self.buffer.len();
            self.buffer.clear();
            return;
        }
        // Keep the overlap, started at a word boundary.
        let mut keep_from = len.saturating_sub(self.overlap);
        while keep_from < len && !self.buffer[keep_from].is_whitespace() {
            keep_from += 1;
        }
        self.buffer.drain(..keep_from);
        self.buffer_start += keep_from;
    }

    /// Chunks completed so far (taken out).
    pub fn take(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.emitted)
    }

    /// Ends the text: emits the rest; returns every chunk not yet taken.
    pub fn finish(mut self) -> Vec<Chunk> {
        if !self.buffer.is_empty() {
            self.cut(true);
        }
        self.emitted
    }

    /// Characters seen so far.
    pub fn position(&self) -> usize {
        self.buffer_start + self.buffer.len()
    }
}

/// Incremental UTF-8 decoding: bytes in, whole characters out (invalid bytes become U+FFFD).
#[derive(Debug, Default)]
pub struct Utf8Stream {
    carry: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes what it can of `bytes`, keeping an incomplete trailing sequence for next time.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&self.carry) {
            Ok(_) => self.carry.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.carry.len(),
        };
        let text = String::from_utf8_lossy(&self.carry[..valid_up_to]).into_owned();
        self.carry.drain(..valid_up_to);
        text
    }

    /// Whatever is left (a truncated sequence becomes U+FFFD).
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.carry).into_owned()
    }
}

/// Markdown to plain text, line by line: headings, emphasis, links, images and list markers
/// reduced to their words; code kept.
#[derive(Debug, Default)]
pub struct MarkdownText {
    line: String,
    in_code: bool,
}

impl MarkdownText {
    /// Feeds decoded text; returns cleaned text for the complete lines.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            if c == '\n' {
                let line = std::mem::take(&mut self.line);
                out.push_str(&self.clean_line(&line));
                out.push('\n');
            } else {
                self.line.push(c);
            }
        }
        out
    }

    /// The last line.
    pub fn finish(mut self) -> String {
        let line = std::mem::take(&mut self.line);
        self.clean_line(&line)
    }

    fn clean_line(&mut self, line: &str) -> String {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            self.in_code = !self.in_code;
            return String::new();
        }
        if self.in_code {
            return line.to_string();
        }
        let mut s = trimmed.trim_start_matches('#').trim_start();
        for marker in ["- ", "* ", "+ ", "> "] {
            if let Some(rest) = s.strip_prefix(marker) {
                s = rest;
            }
        }
        if s.chars()
            .all(|c| matches!(c, '-' | '=' | '*' | '_' | '|' | ':' | ' '))
        {
            return String::new();
        }
        let mut out = String::with_capacity(s.len());
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '!' if chars.get(i + 1) == Some(&'[') => i += 1,
                '[' => i += 1,
                ']' if chars.get(i + 1) == Some(&'(') => {
                    // Skip the link target.
                    let close = chars[i..].iter().position(|&c| c == ')');
                    i += close.map_or(1, |p| p + 1);
                }
                '*' | '_' | '`' | '|' => {
                    out.push(if chars[i] == '|' { ' ' } else { '\0' });
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out.retain(|c| c != '\0');
        out
    }
}

/// HTML to text as a streaming state machine: tags dropped (block tags become line breaks),
/// `script`/`style`/`head` content skipped, common entities decoded.
#[derive(Debug, Default)]
pub struct HtmlText {
    in_tag: bool,
    tag: String,
    skip_until: Option<&'static str>,
    entity: Option<String>,
}

const BLOCK_TAGS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "table",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "pre",
    "title",
    "dt",
    "dd",
];

fn decode_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "mdash" => '—',
        "ndash" => '–',
        "hellip" => '…',
        "rsquo" | "lsquo" => '\'',
        "ldquo" | "rdquo" => '"',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => n.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

impl HtmlText {
    /// Feeds decoded HTML; returns its text so far.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            if let (Some(end), false) = (self.skip_until, self.in_tag) {
                // Raw text (script, style): only its closing tag ends it; `<` inside is text.
                self.tag.push(c.to_ascii_lowercase());
                if self.tag.len() > 16 {
                    self.tag.drain(..self.tag.len() - 16);
                }
                if self.tag.ends_with(&format!("</{end}")) {
                    self.skip_until = None;
                    self.in_tag = true;
                    self.tag = format!("/{end}");
                }
                continue;
            }
            if self.in_tag {
                if c == '>' {
                    self.in_tag = false;
                    let tag = std::mem::take(&mut self.tag).to_ascii_lowercase();
                    let name: String = tag
                        .trim_start_matches('/')
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect();
                    if !tag.starts_with('/') && !tag.ends_with('/') {
                        self.skip_until = match name.as_str() {
                            "script" => Some("script"),
                            "style" => Some("style"),
                            "noscript" => Some("noscript"),
                            "template" => Some("template"),
                            _ => None,
                        };
                    }
                    if BLOCK_TAGS.contains(&name.as_str()) {
                        out.push('\n');
                    } else {
                        out.push(' ');
                    }
                } else if self.tag.len() < 1024 {
                    self.tag.push(c);
                }
                continue;
            }
            if c == '<' {
                self.in_tag = true;
                continue;
            }
            if let Some(entity) = &mut self.entity {
                if c == ';' {
                    let name = std::mem::take(entity);
                    self.entity = None;
                    match decode_entity(&name) {
                        Some(d) => out.push(d),
                        None => out.push_str(&format!("&{name};")),
                    }
                } else if c.is_ascii_alphanumeric() || c == '#' {
                    if entity.len() < 10 {
                        entity.push(c);
                    }
                } else {
                    let name = std::mem::take(entity);
                    self.entity = None;
                    out.push('&');
                    out.push_str(&name);
                    out.push(c);
                }
                continue;
            }
            if c == '&' {
                self.entity = Some(String::new());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Text of each page of a PDF (1-based page numbers), each page's decompressed content bounded
/// by `max_page_bytes`. Encrypted or unreadable files are errors.
pub fn pdf_pages(bytes: &[u8], max_page_bytes: usize) -> Result<Vec<(u32, String)>, String> {
    let document =
        lopdf::Document::load_mem(bytes).map_err(|e| format!("not a readable PDF: {e}"))?;
    if document.is_encrypted() {
        return Err("the PDF is encrypted".into());
    }
    let mut pages = Vec::new();
    for number in document.get_pages().keys() {
        let text = document
            .extract_text_with_limit(&[*number], max_page_bytes)
            .map_err(|e| format!("page {number}: {e}"))?;
        pages.push((*number, text));
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_all(text: &str, size: usize, overlap: usize) -> Vec<Chunk> {
        let mut c = Chunker::new(size, overlap);
        c.push(text);
        let mut out = c.take();
        out.extend(c.finish());
        out
    }

    #[test]
    fn chunks_overlap_end_at_sentences_and_record_positions() {
        let text = (0..60)
            .map(|i| format!("Sentence number {i} is here."))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_all(&text, 200, 50);
        assert!(chunks.len() > 5);
        for pair in chunks.windows(2) {
            assert!(pair[1].start < pair[0].end, "overlap: {pair:?}");
        }
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.text.ends_with('.'), "{:?}", c.text);
            assert!(c.text.len() <= 200);
        }
        let flat: String = text.chars().collect();
        let first = &chunks[1];
        let original: String = flat
            .chars()
            .skip(first.start)
            .take(first.end - first.start)
            .collect();
        assert_eq!(original.trim(), first.text);
    }

    #[test]
    fn utf8_split_across_pushes_survives() {
        let mut s = Utf8Stream::default();
        let bytes = "héllo wörld".as_bytes();
        let mut out = s.push(&bytes[..2]);
        out += &s.push(&bytes[2..]);
        out += &s.finish();
        assert_eq!(out, "héllo wörld");
    }

    #[test]
    fn markdown_and_html_become_plain_words() {
        let mut md = MarkdownText::default();
        let mut out = md.push("# Title\n\nSome **bold** and [a link](http://x.y) here.\n- item one\n```\ncode line\n```\n");
        out += &md.finish();
        assert!(out.contains("Title"));
        assert!(out.contains("Some bold and a link here."));
        assert!(!out.contains("http://x.y"));
        assert!(out.contains("item one") && out.contains("code line"));
        let mut html = HtmlText::default();
        let text = html.push("<html><head><title>x</title><style>p{}</style></head><body><p>Fish &amp; chips</p><script>var a=1<2;</script><p>caf&#233; &lt;3</p></body></html>");
        assert!(text.contains("Fish & chips"), "{text}");
        assert!(text.contains("café <3"), "{text}");
        assert!(!text.contains("var a"), "{text}");
    }

    #[test]
    fn content_types_map_to_kinds() {
        assert_eq!(
            DocKind::from_content_type("text/html; charset=utf-8"),
            Some(DocKind::Html)
        );
        assert_eq!(
            DocKind::from_content_type("application/pdf"),
            Some(DocKind::Pdf)
        );
        assert_eq!(DocKind::from_content_type("image/png"), None);
    }
}
