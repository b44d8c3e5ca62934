//! `${VAR}` expansion over every string of the parsed TOML tree.
//!
//! Expansion runs on parsed values, not on the raw text, so a value from the
//! environment can never change the TOML structure (a password with a quote
//! in it stays a password). `$${` writes a literal `${`.

use toml::Value;

/// Expand every string in `value`; errors name the key path.
pub fn expand_tree(value: &mut Value, path: &mut Vec<String>, errors: &mut Vec<String>) {
    match value {
        Value::String(s) => match expand_str(s, &|name| std::env::var(name).ok()) {
            Ok(expanded) => *s = expanded,
            Err(e) => errors.push(format!("{}: {e}", path_string(path))),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                expand_tree(item, path, errors);
                path.pop();
                path.push(last);
            }
        }
        Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                path.push(k.clone());
                expand_tree(v, path, errors);
                path.pop();
            }
        }
        _ => {}
    }
}

fn path_string(path: &[String]) -> String {
    path.join(".")
}

/// Expand `${NAME}` references in one string using `lookup`.
pub fn expand_str(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated ${ in value".to_string())?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name `${{{name}}}`"));
            }
            match lookup(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PW" => Some("s3cr\"et".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references_and_keeps_other_dollars() {
        assert_eq!(expand_str("a${PW}b", &env).unwrap(), "as3cr\"etb");
        assert_eq!(expand_str("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand_str("cost $5", &env).unwrap(), "cost $5");
        assert_eq!(expand_str("$${PW}", &env).unwrap(), "${PW}");
    }

    #[test]
    fn unset_or_malformed_references_are_errors() {
        assert_eq!(
            expand_str("${NOPE}", &env).unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert!(expand_str("${PW", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand_str("${A-B}", &env).unwrap_err().contains("invalid"));
    }

    #[test]
    fn errors_name_the_key_path() {
        let mut v: Value =
            toml::from_str("[[targets]]\npassword = \"${BACKSTOP_TEST_UNSET_X}\"").unwrap();
        let mut errors = Vec::new();
        expand_tree(&mut v, &mut Vec::new(), &mut errors);
        assert_eq!(
            errors,
            vec!["targets[0].password: environment variable BACKSTOP_TEST_UNSET_X is not set"]
        );
    }
}
