//! The `[encryption]` table: who backups are encrypted for, and where the
//! key that decrypts them is found on the machine that restores.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// age (`age1…`) or SSH (`ssh-ed25519 …`, `ssh-rsa …`) public keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// A recipients file (one public key a line, `#` comments), as
    /// `age -R` reads it; added to `recipients`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients_file: Option<PathBuf>,
    /// The private key restore and verify decrypt with (`age-keygen`
    /// output or an unencrypted SSH key); `--identity` and
    /// `BACKSTOP_AGE_IDENTITY` also name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// Every recipient, inline and from the file, checked at load.
    #[serde(skip)]
    pub resolved: Vec<String>,
}

impl EncryptionConfig {
    /// Read and check every recipient: fail closed, so that a missing file
    /// or a mistyped key stops the run before anything is dumped.
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        let mut all = Vec::new();
        for (i, r) in self.recipients.iter().enumerate() {
            super::parse_recipient(r).map_err(|e| format!("recipients[{i}]: {e}"))?;
            all.push(r.trim().to_string());
        }
        if let Some(file) = &self.recipients_file {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("recipients_file: cannot read {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                super::parse_recipient(line).map_err(|e| {
                    format!("recipients_file: {} line {}: {e}", path.display(), n + 1)
                })?;
                all.push(line.to_string());
            }
        }
        if let Some(id) = &self.identity_file {
            self.identity_file = Some(base.join(id));
        }
        if all.is_empty() {
            return Err(
                "recipients: none given; set recipients = [\"age1…\"] or a recipients_file holding at least \
                 one public key (backstop never stores a backup in clear text once [encryption] is set)"
                    .into(),
            );
        }
        self.resolved = all;
        Ok(())
    }
}
