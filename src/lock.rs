//! One backup or prune per target of a config at a time, on this host.
//!
//! Under Kubernetes `concurrencyPolicy: Forbid` keeps runs apart; under
//! cron, systemd or by hand nothing did, and two runs of one config started
//! 0.4 s apart both dumped and both pruned. So a run holds an advisory lock
//! (flock) per target and storage set while it backs up or prunes: a second
//! run reports who holds it and fails that target, or waits with `--wait`.
//! The lock goes with the process, also when it is killed: no stale lock
//! files to clean. The file stays (removing it would race), holding the
//! holder's pid, host and start for the message.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the lock files live: `$BACKSTOP_LOCK_DIR`, else
/// `/tmp/backstop-locks-UID`. One fixed place, not `$TMPDIR` or
/// `$XDG_RUNTIME_DIR`: a cron run and a run by hand have different
/// environments and must still find each other's lock.
pub fn lock_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BACKSTOP_LOCK_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/backstop-locks-{uid}"))
}

/// Held while it lives.
#[derive(Debug)]
pub struct TargetLock {
    _file: File,
}

/// Take the lock of `target` of the config file `config` (its canonical
/// path: every run of that file, from any directory, shares it). With
/// `wait`, block until it is free; else fail at once naming the holder.
pub fn lock_target(target: &str, config: &Path, wait: bool) -> anyhow::Result<TargetLock> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the lock directory {}", dir.display()))?;
    let digest = hex::encode(Sha256::digest(config.as_os_str().as_encoded_bytes()));
    let path = dir.join(format!("{target}-{}.lock", &digest[..16]));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    let got = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !got {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let holder = if holder.is_empty() {
            "another run"
        } else {
            holder
        };
        if !wait {
            anyhow::bail!(
                "target `{target}` is busy: {holder} holds {} (a backup or prune of it is running); \
                 this run leaves it alone (pass --wait to wait for it)",
                path.display()
            );
        }
        tracing::info!(
            target_name = target,
            "waiting for {holder} to finish with this target"
        );
        // SAFETY: as above; blocking until the holder's process releases it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("waiting for the lock {}", path.display()));
        }
    }
    let me = format!(
        "pid {} on {} since {}",
        std::process::id(),
        crate::report::hostname(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(me.as_bytes())?;
    Ok(TargetLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_gets_it_once_free() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("BACKSTOP_LOCK_DIR", dir.path());
        let config = Path::new("/etc/backstop/backstop.toml");
        let first = lock_target("prod", config, false).unwrap();
        // flock locks belong to the open file: a second open is a second holder.
        let err = lock_target("prod", config, false).unwrap_err().to_string();
        assert!(
            err.contains("is busy") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        // Another target, or the same name in another config, is free.
        assert!(lock_target("dev", config, false).is_ok());
        assert!(lock_target("prod", Path::new("/home/me/backstop.toml"), false).is_ok());
        drop(first);
        assert!(lock_target("prod", config, false).is_ok());
    }
}
