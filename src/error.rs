//! Exit codes and the error kinds that choose them.
//!
//! Kubernetes (`podFailurePolicy`) and cron wrappers act on the exit code, so
//! the mapping is part of the interface: 0 all targets succeeded, 1 at least
//! one target failed, 2 usage or config error (nothing was attempted), 3
//! authentication needs a person.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Success = 0,
    Failed = 1,
    Usage = 2,
    AuthNeeded = 3,
    /// `wal fetch` failed for any reason but a WAL file known to be absent:
    /// PostgreSQL stops recovery on a restore_command exit above 125,
    /// instead of taking the failure for the end of the WAL and promoting
    /// a cluster that is missing writes.
    StopRecovery = 126,
}

impl ExitKind {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// An error that was caused by what the user asked for (config, flags, a
/// target database that is not empty) rather than by a failing component.
/// Carried inside `anyhow::Error` so context can still be added around it.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Credentials that only a person can renew (a revoked or expired Box
/// refresh token, rejected client credentials): exit code 3 from every
/// command, so the watchdog and verify Jobs do not retry what needs a person.
#[derive(Debug)]
pub struct AuthNeeded(pub String);

impl fmt::Display for AuthNeeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthNeeded {}

/// No installed client tool fits the server or the dump (reported as
/// stage `tools`, not as a connection failure).
#[derive(Debug)]
pub struct NoFittingTools(pub String);

impl fmt::Display for NoFittingTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoFittingTools {}

/// A stored copy whose bytes do not match its manifest (size or SHA-256):
/// the same backup may still be intact in another storage.
#[derive(Debug)]
pub struct DamagedCopy(pub String);

impl fmt::Display for DamagedCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DamagedCopy {}

/// Whether an error's chain holds an error of type `E`, also inside an
/// `io::Error` (a writer in a stream refuses what it is fed that way, and
/// `io::Error::source` skips the error it carries).
pub fn has<E: std::error::Error + 'static>(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<E>().is_some()
            || e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.downcast_ref::<E>().is_some())
    })
}

/// Build an `anyhow::Error` that maps to exit code 2.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The exit code an error maps to, for every command: credentials that
/// need a person anywhere in the chain give 3, usage errors 2, everything
/// else 1.
pub fn exit_kind_of(err: &anyhow::Error) -> ExitKind {
    if has::<AuthNeeded>(err) {
        ExitKind::AuthNeeded
    } else if has::<UsageError>(err) {
        ExitKind::Usage
    } else {
        ExitKind::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_anywhere_in_the_chain() {
        let auth = anyhow::Error::new(AuthNeeded("invalid_grant".into())).context("listing");
        assert_eq!(exit_kind_of(&auth), ExitKind::AuthNeeded);
        assert_eq!(
            exit_kind_of(&usage("bad flag").context("x")),
            ExitKind::Usage
        );
        assert_eq!(exit_kind_of(&anyhow::anyhow!("boom")), ExitKind::Failed);
        let refused = std::io::Error::other(UsageError("refused statement".into()));
        let err = anyhow::Error::new(refused).context("decompressing k");
        assert_eq!(exit_kind_of(&err), ExitKind::Usage);
    }
}
