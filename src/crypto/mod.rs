//! Client-side encryption with age (<https://age-encryption.org/v1>).
//!
//! Backups are encrypted after compression, before hashing and storage:
//! dump → compress → encrypt → SHA-256 → storage. Only public keys are
//! needed to back up, so the cluster never holds what decrypts its
//! backups; restores happen where the identity is.
//!
//! The stored object is a standard age file, so `age -d -i key.txt OBJECT
//! | zstd -dc | pg_restore` works without backstop (no lock-in).

mod config;

pub use config::EncryptionConfig;

use crate::codec::FinishWrite;
use crate::error::usage;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Every age file starts with this line.
pub const MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The file-name suffix of an encrypted object.
pub const EXTENSION: &str = "age";
/// Names an identity file when neither `--identity` nor `identity_file` do.
pub const IDENTITY_ENV: &str = "BACKSTOP_AGE_IDENTITY";

pub fn is_encrypted(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

enum RecipientKey {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

fn parse_recipient(s: &str) -> Result<RecipientKey, String> {
    let s = s.trim();
    if s.starts_with("age1") {
        return s
            .parse::<age::x25519::Recipient>()
            .map(RecipientKey::X25519)
            .map_err(|e| format!("`{}` is not an age public key: {e}", shorten(s)));
    }
    if s.starts_with("AGE-SECRET-KEY-") {
        // Never echo it: this is a private key in the wrong place.
        return Err(
            "this is an age private key (AGE-SECRET-KEY-…); put its public key \
                    (`age-keygen -y key.txt`) here and keep the private key off this machine"
                .into(),
        );
    }
    if s.starts_with("ssh-") {
        return s
            .parse::<age::ssh::Recipient>()
            .map(RecipientKey::Ssh)
            .map_err(|e| format!("`{}` is not a usable SSH public key: {e:?}", shorten(s)));
    }
    Err(format!(
        "`{}` is neither an age public key (age1…) nor an SSH public key (ssh-ed25519 …, ssh-rsa …)",
        shorten(s)
    ))
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(24) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The public keys a backup is encrypted for.
pub struct Recipients {
    keys: Vec<RecipientKey>,
    public: Vec<String>,
}

impl Recipients {
    /// From the recipients `[encryption]` resolved at load.
    pub fn from_config(c: &EncryptionConfig) -> anyhow::Result<Recipients> {
        let keys = c
            .resolved
            .iter()
            .map(|r| parse_recipient(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| usage(format!("encryption: {e}")))?;
        if keys.is_empty() {
            return Err(usage(
                "encryption: no recipient (nothing would be able to decrypt)",
            ));
        }
        Ok(Recipients {
            keys,
            public: c.resolved.clone(),
        })
    }

    /// As recorded in the manifest.
    pub fn public_keys(&self) -> &[String] {
        &self.public
    }

    /// A fresh file key for one object, wrapped for every recipient.
    pub fn encryptor(&self) -> io::Result<age::Encryptor> {
        let dyns = self.keys.iter().map(|k| match k {
            RecipientKey::X25519(r) => r as &dyn age::Recipient,
            RecipientKey::Ssh(r) => r as &dyn age::Recipient,
        });
        age::Encryptor::with_recipients(dyns).map_err(io::Error::other)
    }
}

/// Encrypts what is written to it into `W` (age's STREAM, 64 KiB chunks).
pub struct EncryptWriter<W: FinishWrite + 'static>(age::stream::StreamWriter<W>);

impl<W: FinishWrite + 'static> EncryptWriter<W> {
    pub fn new(encryptor: age::Encryptor, out: W) -> io::Result<Self> {
        encryptor.wrap_output(out).map(EncryptWriter)
    }
}

impl<W: FinishWrite + 'static> Write for EncryptWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: FinishWrite + 'static> FinishWrite for EncryptWriter<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        // The last chunk is written (and marked last) only here: without it
        // the object would not decrypt, which is the point: truncation shows.
        Box::new(self.0.finish()?).finish()
    }
}

enum IdentityKey {
    X25519(age::x25519::Identity),
    Ssh(age::ssh::Identity),
}

/// The private keys restore and verify decrypt with.
pub struct Identities {
    keys: Vec<IdentityKey>,
    path: PathBuf,
}

impl Identities {
    /// Read an identity file: age identities (`AGE-SECRET-KEY-1…` lines,
    /// as `age-keygen` writes) or one unencrypted OpenSSH private key.
    pub fn load(path: &Path) -> anyhow::Result<Identities> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read identity file {}: {e}", path.display())))?;
        let mut keys = Vec::new();
        if text.trim_start().starts_with("-----BEGIN") {
            let id = age::ssh::Identity::from_buffer(text.as_bytes(), None).map_err(|e| {
                usage(format!(
                    "identity file {}: not a usable SSH private key: {e}",
                    path.display()
                ))
            })?;
            match id {
                age::ssh::Identity::Unencrypted(_) => keys.push(IdentityKey::Ssh(id)),
                age::ssh::Identity::Encrypted(_) => {
                    return Err(usage(format!(
                        "identity file {}: the SSH key is passphrase-protected; backstop runs \
                         unattended, so decrypt a copy (`ssh-keygen -p`) or use an age identity",
                        path.display()
                    )))
                }
                age::ssh::Identity::Unsupported(_) => {
                    return Err(usage(format!(
                        "identity file {}: this SSH key type cannot decrypt age files \
                         (use ssh-ed25519 or ssh-rsa)",
                        path.display()
                    )))
                }
            }
        } else {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let key = line.parse::<age::x25519::Identity>().map_err(|_| {
                    usage(format!(
                        "identity file {} line {}: not an age identity (AGE-SECRET-KEY-1…)",
                        path.display(),
                        n + 1
                    ))
                })?;
                keys.push(IdentityKey::X25519(key));
            }
        }
        if keys.is_empty() {
            return Err(usage(format!(
                "identity file {} holds no identity",
                path.display()
            )));
        }
        Ok(Identities {
            keys,
            path: path.to_path_buf(),
        })
    }

    fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| match k {
            IdentityKey::X25519(i) => i as &dyn age::Identity,
            IdentityKey::Ssh(i) => i as &dyn age::Identity,
        })
    }

    /// A reader of the plaintext of the age file `input` (`key` names it in
    /// errors; `made_for` lists the backup's recipients, from its manifest).
    pub fn decrypt<'a, R: Read + 'a>(
        &self,
        input: R,
        key: &str,
        made_for: &[String],
    ) -> anyhow::Result<Box<dyn Read + 'a>> {
        let decryptor = age::Decryptor::new(input)
            .map_err(|e| anyhow::anyhow!("{key}: not a readable age file: {e}"))?;
        match decryptor.decrypt(self.as_dyn()) {
            Ok(reader) => Ok(Box::new(reader)),
            Err(age::DecryptError::NoMatchingKeys) => Err(usage(format!(
                "{key}: no identity in {} can decrypt it; {}",
                self.path.display(),
                made_for_text(made_for)
            ))),
            Err(e) => Err(anyhow::anyhow!("{key}: cannot decrypt: {e}")),
        }
    }

    /// Decrypt a small whole object in memory.
    pub fn decrypt_all(
        &self,
        data: &[u8],
        key: &str,
        made_for: &[String],
    ) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.decrypt(data, key, made_for)?
            .read_to_end(&mut out)
            .map_err(|e| anyhow::anyhow!("{key}: cannot decrypt: {e}"))?;
        Ok(out)
    }
}

/// What decrypts one backup's objects: the identities, and the recipients
/// the backup names (for the error when none of them match).
pub struct Decryption {
    identities: Identities,
    made_for: Vec<String>,
}

impl Decryption {
    /// For an encrypted object: the identities at `path`, or an error (exit
    /// 2) saying who the backup was encrypted for and how to name the key.
    pub fn open(path: Option<&Path>, key: &str, made_for: &[String]) -> anyhow::Result<Decryption> {
        let identities = match path {
            Some(p) => Identities::load(p)?,
            None => {
                return Err(usage(format!(
                    "{key} is encrypted and no identity was given; {}. Name the private key                      with --identity FILE, identity_file in [encryption], or {IDENTITY_ENV}",
                    made_for_text(made_for)
                )))
            }
        };
        Ok(Decryption {
            identities,
            made_for: made_for.to_vec(),
        })
    }

    pub fn reader<'a, R: Read + 'a>(
        &self,
        input: R,
        key: &str,
    ) -> anyhow::Result<Box<dyn Read + 'a>> {
        self.identities.decrypt(input, key, &self.made_for)
    }

    pub fn decrypt_all(&self, data: &[u8], key: &str) -> anyhow::Result<Vec<u8>> {
        self.identities.decrypt_all(data, key, &self.made_for)
    }

    /// Whether these identities open the object whose first bytes are
    /// `head` (the header is all that is read): checked before a restore
    /// touches any database.
    pub fn check(&self, head: &[u8], key: &str) -> anyhow::Result<()> {
        self.reader(head, key).map(drop)
    }

    /// The plaintext of the first bytes of an object, as far as `head`
    /// holds whole chunks (to sniff what is inside).
    pub fn prefix(&self, head: &[u8], key: &str, limit: usize) -> anyhow::Result<Vec<u8>> {
        let mut reader = self.reader(head, key)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while out.len() < limit {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        Ok(out)
    }
}

fn made_for_text(made_for: &[String]) -> String {
    if made_for.is_empty() {
        "its recipients are not recorded (no manifest)".into()
    } else {
        format!("it was encrypted for {}", made_for.join(", "))
    }
}

/// The identity file to decrypt with: `--identity`, else `identity_file`,
/// else `$BACKSTOP_AGE_IDENTITY`.
pub fn identity_path(flag: Option<&Path>, config: Option<&EncryptionConfig>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| config.and_then(|c| c.identity_file.clone()))
        .or_else(|| {
            std::env::var_os(IDENTITY_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
}

#[cfg(test)]
mod tests;
