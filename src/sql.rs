//! Quoting for the SQL that backstop writes itself (a leaf module).

/// Quote an SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote an SQL string literal (standard_conforming_strings on).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The identifier at the start of `s` as PostgreSQL prints it (quoted when
/// needed, `""` inside quotes), and what follows it.
pub fn split_ident(s: &str) -> (String, &str) {
    let s = s.trim_start();
    if let Some(body) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, c)| *c) == Some('"') {
                    chars.next();
                    name.push('"');
                } else {
                    return (name, &body[i + 1..]);
                }
            } else {
                name.push(c);
            }
        }
        (name, "")
    } else {
        let end = s
            .find(|c: char| c.is_whitespace() || c == ';' || c == ',')
            .unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_quoting_doubles_quotes() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("o'k"), "'o''k'");
        assert_eq!(split_ident("\"a\"\"b\" SET"), ("a\"b".to_string(), " SET"));
        assert_eq!(split_ident("shop;"), ("shop".to_string(), ";"));
    }
}
