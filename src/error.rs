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

/// Build an `anyhow::Error` that maps to exit code 2.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The exit code an error maps to: usage errors anywhere in the chain give 2,
/// everything else 1.
pub fn exit_kind_of(err: &anyhow::Error) -> ExitKind {
    if err
        .chain()
        .any(|e| e.downcast_ref::<UsageError>().is_some())
    {
        ExitKind::Usage
    } else {
        ExitKind::Failed
    }
}
