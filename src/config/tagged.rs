//! Deserializing `type = "…"`-tagged tables with precise error paths.
//!
//! serde's internally tagged enums buffer the table and lose the key path of
//! an error inside it ("invalid type" with no key). Here the table is split
//! by hand: the tag picks the variant struct, which is deserialized with
//! serde_path_to_error, and the inner path travels in the message (after a
//! `@`) for [`join_path`] to put back together.

/// Join the outer path and an error message that may carry an inner path.
pub fn join_path(outer: &str, message: &str) -> String {
    let outer = if outer == "." { "" } else { outer };
    let message = without_toml_context(message);
    match message.strip_prefix('@').and_then(|m| m.split_once(": ")) {
        Some((inner, rest)) if outer.is_empty() => format!("{inner}: {rest}"),
        Some((inner, rest)) => format!("{outer}.{inner}: {rest}"),
        None if outer.is_empty() => message.to_string(),
        None => format!("{outer}: {message}"),
    }
}

/// toml's errors end with "in `key`" lines that repeat the path we already
/// print in front (regression: the context was printed twice).
fn without_toml_context(message: &str) -> &str {
    message.split("\nin `").next().unwrap_or(message).trim_end()
}

/// Deserialize one variant's struct from a table, tag removed.
pub fn variant<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    table: toml::Table,
) -> Result<T, E> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let inner = without_toml_context(&inner);
        if path == "." {
            E::custom(inner)
        } else {
            E::custom(format!("@{path}: {inner}"))
        }
    })
}

/// Split the tag off a table: (tag, rest).
pub fn split_tag<E: serde::de::Error>(
    mut table: toml::Table,
    key: &str,
    what: &str,
) -> Result<(String, toml::Table), E> {
    match table.remove(key) {
        Some(toml::Value::String(tag)) => Ok((tag, table)),
        Some(_) => Err(E::custom(format!("@{key}: {what} must be a string"))),
        None => Err(E::custom(format!("missing `{key}` ({what})"))),
    }
}

macro_rules! tagged_enum {
    ($enum:ident, $what:literal, { $($tag:literal => $variant:ident),+ $(,)? }) => {
        $crate::config::tagged::tagged_enum!($enum, "type", $what, { $($tag => $variant),+ });
    };
    ($enum:ident, $key:literal, $what:literal, { $($tag:literal => $variant:ident),+ $(,)? }) => {
        impl<'de> serde::Deserialize<'de> for $enum {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                let table = toml::Table::deserialize(d)?;
                let (tag, rest) = $crate::config::tagged::split_tag::<D::Error>(table, $key, $what)?;
                match tag.as_str() {
                    $($tag => Ok($enum::$variant($crate::config::tagged::variant(rest)?)),)+
                    other => Err(D::Error::custom(format!(
                        "@{}: unknown {} `{other}` (expected one of: {})",
                        $key,
                        $what,
                        [$($tag),+].join(", ")
                    ))),
                }
            }
        }
    };
}

pub(crate) use tagged_enum;

#[cfg(test)]
mod tests {
    use super::join_path;

    #[test]
    fn paths_are_joined_with_dots() {
        assert_eq!(
            join_path("targets[0]", "@port: bad"),
            "targets[0].port: bad"
        );
        assert_eq!(join_path(".", "@type: bad"), "type: bad");
        assert_eq!(
            join_path("storage", "missing field `path`"),
            "storage: missing field `path`"
        );
        assert_eq!(join_path(".", "oops"), "oops");
    }
}
