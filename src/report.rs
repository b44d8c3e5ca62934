//! What a run did, per target: the basis for the exit code, the summary
//! printed at the end and (later) notifications.

use crate::error::ExitKind;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failed,
}

/// Where a target's backup stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Connecting, asking the server's version.
    Connect,
    /// Choosing the client tools (none fits the server or the dump).
    Tools,
    /// The dump process failed.
    Dump,
    /// Compression (or a later codec stage) failed.
    Compress,
    /// Writing or committing to storage failed.
    Upload,
    /// Writing the manifest failed.
    Manifest,
    /// SIGTERM/SIGINT arrived.
    Interrupted,
    /// `status`: no complete backup newer than the allowed age.
    Stale,
    /// Storage credentials need a person (e.g. Box `invalid_grant`).
    Auth,
    /// `verify`: the backup did not restore.
    Verify,
    /// Another run on this host holds the target (backup or prune).
    Busy,
}

impl Stage {
    /// Failures that can pass on a retry within the run: not config, tool
    /// choice, authentication or a signal.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Stage::Connect | Stage::Dump | Stage::Compress | Stage::Upload | Stage::Manifest
        )
    }

    /// The stage an error belongs to: credentials that need a person are
    /// `auth` wherever they surface; otherwise `otherwise`.
    pub fn of_error(err: &anyhow::Error, otherwise: Stage) -> Stage {
        if crate::error::has::<crate::error::AuthNeeded>(err) {
            Stage::Auth
        } else {
            otherwise
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Tools => "tools",
            Stage::Dump => "dump",
            Stage::Compress => "compress",
            Stage::Upload => "upload",
            Stage::Manifest => "manifest",
            Stage::Interrupted => "interrupted",
            Stage::Stale => "stale",
            Stage::Auth => "auth",
            Stage::Verify => "verify",
            Stage::Busy => "busy",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stderr_tail: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Where the backup went: one entry per storage of the target.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<CopyReport>,
    /// What retention did after a successful backup, per storage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prune: Vec<PruneSummary>,
    /// What `verify` read back from the restored database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<VerifySummary>,
    /// Backup attempts made for this target in the run (shown when > 1).
    #[serde(skip_serializing_if = "is_one")]
    pub attempts: u32,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifySummary {
    /// Tables read through, and the rows in them.
    pub tables: u64,
    pub rows: u64,
    /// Tables whose row count was compared with the count in the dump.
    pub tables_compared: u64,
    /// Large objects in the restored database, compared with the dump
    /// (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<u64>,
    /// Materialized views created WITH NO DATA: reported, not read.
    pub unpopulated_matviews: Vec<String>,
}

impl VerifySummary {
    /// What was read and compared, in words; a check that did not apply
    /// (SQLite has no dump counts) is not mentioned.
    pub fn describe(&self) -> String {
        let mut text = format!("read {} tables, {} rows", self.tables, self.rows);
        if self.tables_compared > 0 {
            text.push_str(&format!(
                "; {} tables' row counts match the dump",
                self.tables_compared
            ));
        }
        if let Some(n) = self.large_objects {
            text.push_str(&format!("; {n} large objects match the dump"));
        }
        if !self.unpopulated_matviews.is_empty() {
            text.push_str(&format!(
                "; unpopulated materialized views not read: {}",
                self.unpopulated_matviews.join(", ")
            ));
        }
        text
    }
}

/// The backup in one storage.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub storage: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneSummary {
    pub storage: String,
    pub deleted: Vec<String>,
    pub orphans_deleted: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PruneSummary {
    /// "2 backups and 1 orphans deleted; FAILED: …"
    pub fn describe(&self) -> String {
        format!(
            "{} backups and {} orphans deleted{}",
            self.deleted.len(),
            self.orphans_deleted.len(),
            self.error
                .as_deref()
                .map(|e| format!("; FAILED: {e}"))
                .unwrap_or_default()
        )
    }
}

impl TargetReport {
    /// A successful report of work on `target` that ran from `started_at`
    /// for `duration_seconds`; callers fill in what they know.
    pub fn ok(target: &str, started_at: DateTime<Utc>, duration_seconds: f64) -> TargetReport {
        TargetReport {
            target: target.to_string(),
            status: Status::Success,
            stage: None,
            error: None,
            stderr_tail: Vec::new(),
            backup_id: None,
            manifest_key: None,
            raw_bytes: 0,
            stored_bytes: 0,
            started_at,
            finished_at: Utc::now(),
            duration_seconds,
            copies: Vec::new(),
            prune: Vec::new(),
            verified: None,
            attempts: 1,
        }
    }

    /// The same report, failed at `stage`.
    pub fn failed(self, stage: Stage, error: String, stderr_tail: Vec<String>) -> TargetReport {
        TargetReport {
            status: Status::Failed,
            stage: Some(stage),
            error: Some(error),
            stderr_tail,
            ..self
        }
    }

    /// Raw (uncompressed) throughput in bytes per second.
    pub fn throughput(&self) -> f64 {
        if self.duration_seconds > 0.0 {
            self.raw_bytes as f64 / self.duration_seconds
        } else {
            0.0
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub event: &'static str,
    pub tool_version: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub targets: Vec<TargetReport>,
}

impl RunReport {
    /// Authentication that needs a person wins (3: retrying cannot help),
    /// then any failed target or failed prune (1).
    pub fn exit_kind(&self) -> ExitKind {
        if self.targets.iter().any(|t| t.stage == Some(Stage::Auth)) {
            return ExitKind::AuthNeeded;
        }
        if self
            .targets
            .iter()
            .all(|t| t.status == Status::Success && t.prune.iter().all(|p| p.error.is_none()))
        {
            ExitKind::Success
        } else {
            ExitKind::Failed
        }
    }

    /// A plain-text table for people.
    pub fn render_human(&self) -> String {
        let mut out = String::from("summary:\n");
        for t in &self.targets {
            match t.status {
                Status::Success if t.verified.is_some() => {
                    let v = t.verified.as_ref().expect("checked");
                    out.push_str(&format!(
                        "  {:<20} ok      restored {} ({} stored) in {:.1}s; {}  {}\n",
                        t.target,
                        human_bytes(t.raw_bytes),
                        human_bytes(t.stored_bytes),
                        t.duration_seconds,
                        v.describe(),
                        t.backup_id.as_deref().unwrap_or("")
                    ));
                }
                Status::Success => {
                    out.push_str(&format!(
                        "  {:<20} ok      {:>10} stored ({} raw) in {:.1}s, {}/s  {}\n",
                        t.target,
                        human_bytes(t.stored_bytes),
                        human_bytes(t.raw_bytes),
                        t.duration_seconds,
                        human_bytes(t.throughput() as u64),
                        t.backup_id.as_deref().unwrap_or("")
                    ));
                }
                Status::Failed => out.push_str(&format!(
                    "  {:<20} FAILED  at {} after {:.1}s: {}\n",
                    t.target,
                    t.stage.map(|s| s.as_str()).unwrap_or("?"),
                    t.duration_seconds,
                    t.error.as_deref().unwrap_or("")
                )),
            }
            if t.copies.len() > 1 && t.backup_id.is_some() {
                for c in &t.copies {
                    out.push_str(&format!(
                        "  {:<20} copy    {:<12} {}\n",
                        "",
                        c.storage,
                        match (&c.status, &c.error) {
                            (Status::Success, _) => "ok".to_string(),
                            (_, e) => format!("FAILED: {}", e.as_deref().unwrap_or("?")),
                        }
                    ));
                }
            }
            for p in &t.prune {
                let label = if t.prune.len() > 1 {
                    format!("prune {}", p.storage)
                } else {
                    "prune".into()
                };
                out.push_str(&format!("  {:<20} {label:<7} {}\n", "", p.describe()));
            }
        }
        out
    }
}

pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        })
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::{human_bytes, VerifySummary};

    /// Regression: SQLite verify said "0 counts match the dump", which reads
    /// as a failure. Only the checks that applied are named.
    #[test]
    fn verify_lines_name_only_the_checks_that_applied() {
        let sqlite = VerifySummary {
            tables: 3,
            rows: 120,
            ..VerifySummary::default()
        };
        assert_eq!(sqlite.describe(), "read 3 tables, 120 rows");
        let pg = VerifySummary {
            tables: 2,
            rows: 10,
            tables_compared: 2,
            large_objects: Some(25),
            unpopulated_matviews: vec!["public.m".into()],
        };
        assert_eq!(
            pg.describe(),
            "read 2 tables, 10 rows; 2 tables' row counts match the dump; 25 large objects match the dump; unpopulated materialized views not read: public.m"
        );
    }

    #[test]
    fn bytes_are_shown_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
