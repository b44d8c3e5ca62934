//! Applying a retention plan to one target's storage.
//!
//! The plan comes from the storage listing alone (no state file), so a fresh
//! pod computes the same plan as the last one did. A backup is deleted data
//! objects first, manifest last: if that is interrupted, what is left is an
//! orphan (or a manifest without data, which `list` ignores), never a
//! "complete" backup without its data.

use crate::catalog::{list_target, Layout};
use crate::retention::{plan, Candidate, Decision, Policy};
use crate::storage::Storage;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub target: String,
    /// The storage's name (`default` for `[storage]`).
    pub storage: String,
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    /// Keys of objects without a manifest, older than the grace period.
    pub orphans: Vec<String>,
    /// Keys of half-done uploads and temp files of killed runs, older than
    /// the grace period, that were (or in a dry run would be) removed.
    pub aborted_uploads: Vec<String>,
    /// Backups that are not complete: kept for a person to look at.
    pub damaged: Vec<String>,
    /// Backup ids deleted (or that would be, in a dry run).
    pub deleted: Vec<String>,
    /// WAL segments older than the oldest base backup kept, deleted (or
    /// that would be): no kept base backup can replay them.
    pub wal_deleted: Vec<String>,
    pub errors: Vec<String>,
}

impl PruneReport {
    pub fn render_human(&self) -> String {
        let mut out = format!(
            "{}target {}{}:\n",
            if self.dry_run { "(dry run) " } else { "" },
            self.target,
            match self.storage.as_str() {
                crate::config::DEFAULT_STORAGE => String::new(),
                other => format!(" in storage {other}"),
            }
        );
        for line in crate::retention::render(&self.decisions).lines() {
            out.push_str(&format!("  {line}\n"));
        }
        for o in &self.orphans {
            out.push_str(&format!(
                "  delete orphan {o}  (no manifest, older than the grace period)\n"
            ));
        }
        for k in &self.aborted_uploads {
            out.push_str(&format!(
                "  abort upload {k}  (left half-done by a killed run, older than the grace period)\n"
            ));
        }
        for d in &self.damaged {
            out.push_str(&format!("  keep   damaged {d}\n"));
        }
        if let (Some(first), Some(last)) = (self.wal_deleted.first(), self.wal_deleted.last()) {
            out.push_str(&format!(
                "  delete WAL {first} … {last}  ({} segments before the oldest base backup kept)\n",
                self.wal_deleted.len()
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("  ERROR {e}\n"));
        }
        out
    }
}

pub struct PruneRequest<'a> {
    /// The storage's name, for the report.
    pub storage_name: &'a str,
    pub storage: &'a dyn Storage,
    pub layout: &'a Layout,
    pub target: &'a str,
    pub policy: &'a Policy,
    pub orphan_grace: Duration,
    pub now: DateTime<Utc>,
    pub dry_run: bool,
}

/// The retention plan for one storage's listing of a target, by id. Base
/// backups (point-in-time recovery) and dumps are kept by the policy each
/// on their own: a nightly dump never pushes the week's base backup out of
/// a daily slot, or the other way round.
pub fn plan_listing(
    listing: &crate::catalog::Listing,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let is_base = |b: &crate::catalog::Backup| b.manifest.format == "basebackup";
    let mut decisions = Vec::new();
    for bases in [false, true] {
        let candidates: Vec<Candidate> = listing
            .backups
            .iter()
            .filter(|b| is_base(b) == bases)
            .map(|b| Candidate {
                id: b.manifest.id.0.clone(),
                time: b.manifest.started_at,
            })
            .collect();
        decisions.extend(plan(&candidates, policy, now));
    }
    decisions.sort_by(|a, b| a.id.cmp(&b.id));
    decisions
}

pub async fn prune_target(req: PruneRequest<'_>) -> anyhow::Result<PruneReport> {
    let listing = list_target(req.storage, req.layout, req.target).await?;
    let decisions = plan_listing(&listing, req.policy, req.now);
    let grace_cutoff =
        req.now - chrono::Duration::from_std(req.orphan_grace).unwrap_or(chrono::Duration::MAX);
    // Manifests whose objects are all gone (an interrupted delete) are
    // orphans too; damaged ones with data left are kept for a person to see.
    let mut orphans: Vec<String> = listing
        .orphans
        .iter()
        .filter(|o| o.modified < grace_cutoff)
        .map(|o| o.key.clone())
        .collect();
    for d in &listing.damaged {
        tracing::warn!(target_name = req.target, key = %d.manifest_key, "damaged backup left in place for a person to inspect: {}", d.why);
    }
    orphans.sort();
    let stale = req
        .storage
        .stale_uploads(&req.layout.target_prefix(req.target), grace_cutoff)
        .await
        .with_context(|| {
            format!(
                "listing uploads left by killed runs in {}",
                req.storage.describe()
            )
        })?;
    let mut report = PruneReport {
        target: req.target.to_string(),
        storage: req.storage_name.to_string(),
        dry_run: req.dry_run,
        decisions,
        orphans,
        aborted_uploads: stale.iter().map(|s| s.key.clone()).collect(),
        damaged: listing
            .damaged
            .iter()
            .map(|d| format!("{}  ({})", d.manifest_key, d.why))
            .collect(),
        deleted: Vec::new(),
        wal_deleted: Vec::new(),
        errors: Vec::new(),
    };
    for d in report.decisions.iter().filter(|d| !d.keep) {
        let backup = listing
            .backups
            .iter()
            .find(|b| b.manifest.id.0 == d.id)
            .expect("every decision comes from the listing");
        if req.dry_run {
            report.deleted.push(d.id.clone());
            continue;
        }
        let mut failed = false;
        for key in backup.keys_before_manifest().chain([&backup.manifest_key]) {
            match req.storage.delete(key).await {
                Ok(()) => {}
                Err(e) => {
                    report.errors.push(format!("deleting {key}: {e:#}"));
                    failed = true;
                    break; // keep the manifest if its data could not go
                }
            }
        }
        if !failed {
            tracing::info!(target_name = req.target, backup = %d.id, "deleted backup");
            report.deleted.push(d.id.clone());
        }
    }
    let decisions = report.decisions.clone();
    prune_wal(&req, &listing, &decisions, &mut report).await;
    if !req.dry_run {
        for upload in &stale {
            if let Err(e) = req.storage.remove_stale(upload).await {
                report
                    .errors
                    .push(format!("aborting upload {}: {e:#}", upload.key));
            }
        }
        for key in &report.orphans {
            match req.storage.delete(key).await {
                Ok(()) => {
                    tracing::info!(target_name = req.target, key = %key, "deleted orphan object")
                }
                Err(e) => report.errors.push(format!("deleting orphan {key}: {e:#}")),
            }
        }
    }
    Ok(report)
}

/// Delete the WAL no kept base backup needs: segments of earlier timelines,
/// and of the oldest kept base's timeline before its start. History files
/// stay (they are tiny and name every timeline's parent). Without a kept
/// base backup nothing is deleted.
async fn prune_wal(
    req: &PruneRequest<'_>,
    listing: &crate::catalog::Listing,
    decisions: &[Decision],
    report: &mut PruneReport,
) {
    use crate::pitr::wal_names::{Segment, WalFile};
    let kept_start = listing
        .backups
        .iter()
        .filter(|b| decisions.iter().any(|d| d.keep && d.id == b.manifest.id.0))
        .filter_map(|b| b.manifest.objects.first()?.physical.as_ref())
        .filter_map(|p| Segment::of_lsn(p.timeline, &p.start_lsn).ok())
        .min_by_key(|s| (s.timeline, s.number));
    let Some(oldest) = kept_start else { return };
    let archive = crate::pitr::archive::WalArchive::new(req.storage, req.layout, req.target);
    let stored = match archive.stored().await {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(format!("listing WAL: {e:#}"));
            return;
        }
    };
    for w in stored {
        let WalFile::Segment(s) = w.file else {
            continue;
        };
        if (s.timeline, s.number) >= (oldest.timeline, oldest.number) {
            continue;
        }
        if !req.dry_run {
            if let Err(e) = req.storage.delete(&w.key).await {
                report.errors.push(format!("deleting WAL {}: {e:#}", w.key));
                continue;
            }
        }
        report.wal_deleted.push(s.name());
    }
}
