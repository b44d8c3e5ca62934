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

/// Expand `${NAME}` references in one string using `lookup`;
/// `${NAME:-default}` takes `default` when NAME is unset or empty (as in the
/// shell), so one config serves the cluster and a laptop.
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
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid variable name `${{{reference}}}`"));
            }
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(format!("environment variable {name} is not set")),
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

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(expand_str("${NOPE:-postgres}", &env).unwrap(), "postgres");
        assert_eq!(expand_str("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(expand_str("h=${PW:-x}", &env).unwrap(), "h=s3cr\"et");
        assert_eq!(expand_str("${NOPE:-}", &env).unwrap(), "");
        assert!(expand_str("${NOPE}", &env).is_err());
    }

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
