//! What a storage key may be (a leaf module: config validates prefixes with
//! it, every backend validates keys with it).

/// Keys are relative, `/`-separated, made of `[A-Za-z0-9._-]` segments that
/// are neither empty nor `.`/`..`: safe as file paths and object names alike.
pub fn validate(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty".into());
    }
    if key.len() > 1000 {
        return Err("longer than 1000 bytes".into());
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err("empty path segment (leading, trailing or double '/')".into());
        }
        if segment == "." || segment == ".." {
            return Err("'.' and '..' segments are not allowed".into());
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err("only A-Z, a-z, 0-9, '.', '_', '-' and '/' are allowed".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn keys_that_could_escape_or_confuse_are_rejected() {
        for bad in [
            "", "/abs", "a//b", "a/", "../x", "a/./b", "sp ace", "a\\b", "ü",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in [
            "a",
            "prod/2026-01-02/prod-20260102T030405.000Z-abcde.dump.zst",
            "A.b_c-d/e",
        ] {
            assert!(validate(good).is_ok(), "{good:?} should be accepted");
        }
    }
}
