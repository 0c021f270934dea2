//! From generated token ids to text pieces: byte-level BPE tokens are decoded to raw bytes, and
//! only complete UTF-8 characters are released, so a character split across tokens (é, emoji,
//! CJK) is emitted once, whole.

/// The raw bytes of each token of a byte-level BPE vocabulary (GPT-2 alphabet); special
/// (control) tokens decode to no text.
#[derive(Debug, Clone)]
pub(crate) struct TokenBytes {
    bytes: Vec<Vec<u8>>,
}

impl TokenBytes {
    /// Builds the table from the vocabulary strings and whether each token is special.
    pub(crate) fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, bool)>) -> Self {
        let to_byte = unicode_to_byte();
        let mut bytes = Vec::new();
        for (text, is_special) in tokens {
            let raw = if is_special {
                Vec::new()
            } else {
                text.chars()
                    .flat_map(|c| {
                        let code = c as usize;
                        match to_byte.get(code) {
                            Some(&Some(b)) => vec![b],
                            // Not in the byte alphabet: keep the character's own UTF-8.
                            _ => c.to_string().into_bytes(),
                        }
                    })
                    .collect()
            };
            bytes.push(raw);
        }
        Self { bytes }
    }

    /// The bytes token `id` stands for (empty for special or unknown ids).
    pub(crate) fn bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }
}

/// The inverse of the GPT-2 byte-to-character map, indexed by character code: printable Latin-1
/// bytes stand for themselves, the other bytes were shifted to 256 + their rank.
fn unicode_to_byte() -> Vec<Option<u8>> {
    let mut table = vec![None; 512];
    let mut shifted = 0usize;
    for b in 0u8..=255 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            usize::from(b)
        } else {
            shifted += 1;
            255 + shifted
        };
        table[code] = Some(b);
    }
    table
}

/// Accumulates bytes and releases the longest prefix of complete UTF-8 characters.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is now complete (possibly empty). Invalid bytes become
    /// U+FFFD; an incomplete character at the end waits for the next push.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Releases whatever is left (an unfinished character becomes U+FFFD).
    pub(crate) fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_round_trips() {
        let table = unicode_to_byte();
        assert_eq!(table['Ġ' as usize], Some(b' '));
        assert_eq!(table['Ċ' as usize], Some(b'\n'));
        assert_eq!(table['a' as usize], Some(b'a'));
        assert_eq!(table.iter().filter(|b| b.is_some()).count(), 256);
    }

    #[test]
    fn tokens_decode_to_bytes() {
        let t = TokenBytes::new([("<|im_end|>", true), ("ĠParis", false), ("Ã©", false)]);
        assert!(t.bytes(0).is_empty());
        assert_eq!(t.bytes(1), b" Paris");
        assert_eq!(t.bytes(2), "é".as_bytes());
        assert!(t.bytes(99).is_empty());
    }

    #[test]
    fn split_characters_are_emitted_whole() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(s.push(b"a"), "a");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&[euro[2], b'b']), "€b");
        assert_eq!(s.push(&[0xFF, b'c']), "\u{FFFD}c");
        assert_eq!(s.push(&euro[..2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
