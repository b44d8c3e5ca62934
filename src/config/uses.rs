//! What a command uses of a config, so that only that part is expanded.
//!
//! A restore in an incident runs from a laptop or a one-off pod, with only
//! the variables of what it reads: the target's storage and the identity.
//! Expanding the whole file made it demand `BOX_CLIENT_ID` of another
//! target's storage, the notifiers' `SMTP_PASSWORD` and the source
//! database's `DB_PASSWORD` (exit 2 before anything). So a command names
//! what it uses, and the rest of the tree is dropped before `${VAR}`
//! expansion (and before validation: a dropped part is not checked either).

use toml::Value;

/// The parts of a config one command reads.
#[derive(Debug, Clone, Copy)]
pub struct Uses<'a> {
    /// Only this target (and the storages it writes to); None: all.
    pub target: Option<&'a str>,
    /// A storage named on the command line (`--storage`), kept even when
    /// the target does not write to it (a copy made by `backstop copy`).
    pub storage: Option<&'a str>,
    /// `[[notify]]` and `[metrics]`.
    pub notify: bool,
    /// The target's own credentials for its source database (`password`,
    /// `password_file`): a restore reads the backup, not the source.
    pub source_credentials: bool,
}

impl Uses<'_> {
    /// Everything: backup, check, schedule.
    pub const ALL: Uses<'static> = Uses {
        target: None,
        storage: None,
        notify: true,
        source_credentials: true,
    };

    /// Drop from the parsed (unexpanded) tree what is not used.
    pub fn prune(&self, tree: &mut Value) {
        let Some(root) = tree.as_table_mut() else {
            return;
        };
        if !self.notify {
            root.remove("notify");
            root.remove("metrics");
        }
        // With no target of that name the tree stays whole: the command
        // then says which targets there are.
        let Some(Value::Array(targets)) = root.get("targets") else {
            return;
        };
        // A restore without --target restores the only target there is.
        let only = match (targets.as_slice(), self.source_credentials) {
            ([one], false) => one.get("name").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let Some(name) = self.target.map(str::to_string).or(only) else {
            return;
        };
        let name = name.as_str();
        let named = |t: &Value| t.get("name").and_then(Value::as_str) == Some(name);
        let Some(mut target) = targets.iter().find(|t| named(t)).cloned() else {
            return;
        };
        if !self.source_credentials {
            if let Some(t) = target.as_table_mut() {
                t.remove("password");
                t.remove("password_file");
            }
        }
        let writes_to: Option<Vec<String>> =
            target.get("storages").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            });
        root.insert("targets".into(), Value::Array(vec![target]));
        let Some(mut used) = writes_to else {
            return; // every storage
        };
        used.extend(self.storage.map(str::to_string));
        if !used.iter().any(|s| s == super::DEFAULT_STORAGE) {
            root.remove("storage");
        }
        if let Some(Value::Table(storages)) = root.get_mut("storages") {
            storages.retain(|k, _| used.iter().any(|u| u == k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[storage]
type = "local"
path = "/b"

[storages.box]
type = "box"
folder = "f"
[storages.box.auth]
method = "ccg"
client_id = "${BOX_CLIENT_ID}"
client_secret = "${BOX_CLIENT_SECRET}"
subject_type = "enterprise"
subject_id = "1"

[[notify]]
type = "smtp"
host = "mail"
port = 25
from = "a@b"
to = ["c@d"]
password = "${SMTP_PASSWORD}"

[[targets]]
name = "prod"
type = "postgres"
database = "prod"
password = "${DB_PASSWORD}"
storages = ["default"]

[[targets]]
name = "other"
type = "postgres"
database = "other"
storages = ["box"]
"#;

    #[test]
    fn a_restore_of_one_target_keeps_only_what_it_reads() {
        let mut tree: Value = toml::from_str(CONFIG).unwrap();
        Uses {
            target: Some("prod"),
            storage: None,
            notify: false,
            source_credentials: false,
        }
        .prune(&mut tree);
        let text = toml::to_string(&tree).unwrap();
        for gone in ["BOX_CLIENT_ID", "SMTP_PASSWORD", "DB_PASSWORD", "other"] {
            assert!(!text.contains(gone), "{gone} in:\n{text}");
        }
        assert!(
            text.contains("name = \"prod\"") && text.contains("path = \"/b\""),
            "{text}"
        );
        let mut whole: Value = toml::from_str(CONFIG).unwrap();
        Uses::ALL.prune(&mut whole);
        assert_eq!(whole, toml::from_str::<Value>(CONFIG).unwrap());
    }
}
