//! Stream ids as NATS subject tokens.
//!
//! A subject token may not contain `.`, `*`, `>` or whitespace, and NATS
//! tooling is happiest with ASCII, so a stream id is escaped: ASCII letters,
//! digits, `-` and `_` stay as they are, every other byte (including the
//! escape character `=` itself) becomes `=XX` with two upper-case hex digits.
//! The escaping is injective, so two stream ids never share a subject.

/// The subject token of a stream id (never empty for a valid, non-empty id).
pub fn escape_token(stream_id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(stream_id.len());
    for &b in stream_id.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

/// Whether `token` is usable as one subject token (a stream name or a prefix part).
pub fn is_plain_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_plain_names_and_hides_every_special_character() {
        assert_eq!(escape_token("opportunity-42"), "opportunity-42");
        assert_eq!(escape_token("a.b*c>d e"), "a=2Eb=2Ac=3Ed=20e");
        assert_eq!(escape_token("x=2E"), "x=3D2E");
        assert_eq!(escape_token("é"), "=C3=A9");
        assert_ne!(escape_token("a.b"), escape_token("a=2Eb"));
        let token = escape_token("opportunité-42—ü🦀 .*>\t");
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)));
        assert!(!is_plain_token("a.b"));
        assert!(!is_plain_token(""));
    }
}
