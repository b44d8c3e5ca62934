//! What every engine's destination URL parsing shares.

/// `%XX` decoding of a URL part (user, password, database); None when it
/// is malformed or not UTF-8. Unlike form decoding, `+` stays `+`.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn plus_is_not_a_space_and_bad_escapes_fail() {
        assert_eq!(super::percent_decode("p%40s+s").as_deref(), Some("p@s+s"));
        assert_eq!(super::percent_decode("bad%4"), None);
        assert_eq!(super::percent_decode("%ff"), None);
    }
}
