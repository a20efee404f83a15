//! JSON written by hand on the per-request paths: the audit line and the
//! metadata object of a write.
//!
//! serde_json is the general tool (request bodies, the self-check, the
//! OpenAPI document). On the two outputs every request makes, its
//! per-field machinery and byte-at-a-time string escaping cost more than
//! the rest of the handler (measured with callgrind: about 6,900
//! instructions for one metadata object, and 3,000 for escaping the
//! strings of one audit line a byte at a time). The strings there are
//! keys, identities, routes, times and media types, which almost never
//! need escaping, so a string is first checked eight bytes at a time and
//! then copied whole.

/// True for the bytes a JSON string cannot hold as they are (RFC 8259 §7).
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// True if any byte of `bytes` needs escaping. Eight bytes at a time, with
/// the word tricks of "Bit Twiddling Hacks" (`hasless`, `haszero`), which
/// are exact about whether such a byte exists.
fn any_needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    /// Some byte of `word` is below `limit` (at most 0x80).
    fn has_less(word: u64, limit: u8) -> bool {
        word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGH_BITS != 0
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // A byte equal to `b` is a zero byte of `word ^ (ONES * b)`.
        if has_less(word, 0x20)
            || has_less(word ^ (ONES * u64::from(b'"')), 1)
            || has_less(word ^ (ONES * u64::from(b'\\')), 1)
        {
            return true;
        }
    }
    chunks.remainder().iter().any(|&byte| needs_escape(byte))
}

/// Appends `text` as a JSON string, quotes included.
pub fn push_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    push_escaped(out, text);
    out.push(b'"');
}

/// Appends `text`, which holds nothing that needs escaping (a constant, a
/// key, whose bytes are `[A-Za-z0-9._/-]`, or a timestamp's bytes), as a
/// JSON string, quotes included, without scanning it. Checked in debug
/// builds.
pub fn push_plain_str(out: &mut Vec<u8>, text: impl AsRef<[u8]>) {
    let text = text.as_ref();
    debug_assert!(
        !any_needs_escape(text),
        "{:?}",
        String::from_utf8_lossy(text)
    );
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// Appends `text` escaped for the inside of a JSON string: `"`, `\` and
/// the control characters escaped, everything else (UTF-8 included) as is.
pub fn push_escaped(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if !any_needs_escape(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        out.extend_from_slice(escape);
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `value` in decimal.
pub fn push_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(text: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, text);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn plain_strings_are_copied_whole() {
        assert_eq!(quoted(""), r#""""#);
        assert_eq!(quoted("team-a/db.password"), r#""team-a/db.password""#);
        assert_eq!(quoted("é😀\u{7f}"), "\"é😀\u{7f}\"");
    }

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{1f}h\u{7f}é😀/";
        let text = quoted(nasty);
        assert_eq!(
            text,
            r#""a\"b\\c\nd\re\tf\u0001g\u001fh"#.to_owned() + "\u{7f}é😀/\""
        );
        let parsed: String = serde_json::from_str(&text).expect("a JSON string");
        assert_eq!(parsed, nasty);
        // Every control character, alone and between plain bytes.
        for byte in 0u8..0x20 {
            let text = format!("x{}y", char::from(byte));
            let parsed: String = serde_json::from_str(&quoted(&text)).expect("a JSON string");
            assert_eq!(parsed, text);
        }
    }

    #[test]
    fn the_word_check_agrees_with_the_byte_check() {
        // Every byte value at every position of a 19-byte string (two
        // words and a remainder), among bytes that need no escaping.
        for position in 0..19 {
            for byte in 0..=u8::MAX {
                let mut bytes = [b'a'; 19];
                bytes[position] = byte;
                assert_eq!(
                    any_needs_escape(&bytes),
                    needs_escape(byte),
                    "byte {byte:#04x} at {position}"
                );
            }
        }
        assert!(!any_needs_escape(b""));
        assert!(!any_needs_escape("\u{7f}\u{80}\u{ff}é😀 !#[]~".as_bytes()));
    }

    #[test]
    fn numbers_are_decimal() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b' ');
        push_u64(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
    }
}
