use super::*;
use age::secrecy::ExposeSecret;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl FinishWrite for Shared {
    fn finish(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("# test key\n{}\n", id.to_string().expose_secret()),
    )
    .unwrap();
    (path, id.to_public().to_string())
}

fn recipients(public: &[String]) -> Recipients {
    let mut c = EncryptionConfig {
        recipients: public.to_vec(),
        ..Default::default()
    };
    c.resolve(Path::new(".")).unwrap();
    Recipients::from_config(&c).unwrap()
}

fn encrypt(r: &Recipients, plain: &[u8]) -> Vec<u8> {
    let out = Shared::default();
    let mut w = Box::new(EncryptWriter::new(r.encryptor().unwrap(), out.clone()).unwrap());
    for part in plain.chunks(10_000) {
        w.write_all(part).unwrap();
    }
    w.finish().unwrap();
    let v = out.0.lock().unwrap().clone();
    v
}

#[test]
fn encrypted_streams_decrypt_with_any_recipient_and_not_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (key_a, pub_a) = keypair(dir.path(), "a.txt");
    let (key_b, pub_b) = keypair(dir.path(), "b.txt");
    let (key_c, _) = keypair(dir.path(), "c.txt");
    let plain: Vec<u8> = (0..500_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let made_for = vec![pub_a.clone(), pub_b.clone()];
    let stored = encrypt(&recipients(&made_for), &plain);
    assert!(is_encrypted(&stored));
    assert!(!stored.windows(16).any(|w| w == &plain[4000..4016]));
    for key in [&key_a, &key_b] {
        let ids = Identities::load(key).unwrap();
        assert_eq!(ids.decrypt_all(&stored, "obj", &made_for).unwrap(), plain);
    }
    let wrong = Identities::load(&key_c).unwrap();
    let err = wrong.decrypt_all(&stored, "obj", &made_for).unwrap_err();
    assert!(crate::error::has::<crate::error::UsageError>(&err));
    let msg = format!("{err:#}");
    assert!(msg.contains(&pub_a) && msg.contains(&pub_b), "{msg}");
}

#[test]
fn truncated_ciphertext_does_not_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keypair(dir.path(), "k.txt");
    let plain = vec![7u8; 300_000];
    let stored = encrypt(&recipients(&[public]), &plain);
    let ids = Identities::load(&key).unwrap();
    // Cut at a chunk boundary, too: age marks the last chunk, so a stream
    // that stops early never passes for a complete one.
    for cut in [
        stored.len() - 1,
        stored.len() - 65_536 - 16,
        stored.len() / 2,
    ] {
        assert!(
            ids.decrypt_all(&stored[..cut], "obj", &[]).is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn recipients_refuse_private_keys_garbage_and_emptiness() {
    let id = age::x25519::Identity::generate();
    let secret = id.to_string().expose_secret().to_string();
    let mut c = EncryptionConfig {
        recipients: vec![secret.clone()],
        ..Default::default()
    };
    let err = c.resolve(Path::new(".")).unwrap_err();
    assert!(
        err.contains("private key") && !err.contains(&secret),
        "{err}"
    );
    c.recipients = vec!["age1notakey".into()];
    assert!(c
        .resolve(Path::new("."))
        .unwrap_err()
        .contains("recipients[0]"));
    c.recipients = vec![];
    assert!(c
        .resolve(Path::new("."))
        .unwrap_err()
        .contains("recipients: none given"));
    c.recipients_file = Some("/nonexistent/recipients.txt".into());
    assert!(c
        .resolve(Path::new("."))
        .unwrap_err()
        .contains("cannot read /nonexistent/recipients.txt"));
}

#[test]
fn recipients_file_and_ssh_keys_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let public = age::x25519::Identity::generate().to_public().to_string();
    let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@example";
    std::fs::write(
        dir.path().join("r.txt"),
        format!("# team\n{public}\n\n{ssh}\n"),
    )
    .unwrap();
    let mut c = EncryptionConfig {
        recipients_file: Some("r.txt".into()),
        ..Default::default()
    };
    c.resolve(dir.path()).unwrap();
    assert_eq!(c.resolved, vec![public, ssh.to_string()]);
    let r = Recipients::from_config(&c).unwrap();
    assert!(is_encrypted(&encrypt(&r, b"hello")));
}

#[test]
fn identity_files_must_hold_identities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.txt");
    std::fs::write(&path, "# nothing here\n").unwrap();
    assert!(format!("{:#}", Identities::load(&path).err().unwrap()).contains("holds no identity"));
    std::fs::write(&path, "age1notsecret\n").unwrap();
    assert!(format!("{:#}", Identities::load(&path).err().unwrap()).contains("line 1"));
    let missing = Decryption::open(None, "k", &["age1xyz".into()])
        .err()
        .unwrap();
    let msg = format!("{missing:#}");
    assert!(
        msg.contains("age1xyz") && msg.contains("--identity"),
        "{msg}"
    );
}
