//! Which moments a target can be restored to, from the listings alone:
//! from the end of its oldest base backup to the last WAL segment stored
//! without a gap after it.

use super::archive::WalArchive;
use super::wal_names::{Segment, WalFile};
use crate::catalog::Backup;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The stored segments of `timeline` from `start` on, without a gap: the
/// last one and when it was stored; the first missing one after it, when
/// later segments exist (a gap).
pub struct Run {
    pub last: Option<(Segment, DateTime<Utc>)>,
    pub gap_before: Option<Segment>,
}

pub async fn contiguous_run(archive: &WalArchive<'_>, start: Segment) -> anyhow::Result<Run> {
    let listed = archive.storage.list(&archive.prefix).await?;
    let mut segments: Vec<(Segment, DateTime<Utc>)> = listed
        .iter()
        .filter_map(|o| {
            let w = super::wal_names::StoredWal::of_key(&archive.prefix, &o.key)?;
            match w.file {
                WalFile::Segment(s) if s.timeline == start.timeline && s.number >= start.number => {
                    Some((s, o.modified))
                }
                _ => None,
            }
        })
        .collect();
    segments.sort();
    segments.dedup_by_key(|(s, _)| *s);
    let mut run = Run {
        last: None,
        gap_before: None,
    };
    for (s, at) in segments {
        let expected = run.last.map(|(l, _)| l.next()).unwrap_or(start);
        if s != expected {
            run.gap_before = Some(s);
            break;
        }
        run.last = Some((s, at));
    }
    Ok(run)
}

#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The oldest base backup's end: the earliest moment restorable.
    pub from: DateTime<Utc>,
    /// When the last WAL segment without a gap before it was stored.
    pub to: DateTime<Utc>,
    pub wal_segments: u64,
    /// A gap after the restorable run: later WAL cannot be reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_before: Option<String>,
}

/// The window of a target whose listing holds base backups; None without.
pub async fn window(
    archive: &WalArchive<'_>,
    backups: &[Backup],
) -> anyhow::Result<Option<Window>> {
    let Some((base, p)) = backups.iter().find_map(|b| {
        let p = b.manifest.objects.first()?.physical.as_ref()?;
        (b.manifest.format == "basebackup").then_some((b, p))
    }) else {
        return Ok(None);
    };
    let start = Segment::of_lsn(p.timeline, &p.start_lsn)?;
    let end = Segment::of_lsn(p.timeline, &p.end_lsn)?;
    let run = contiguous_run(archive, start).await?;
    let Some((last, at)) = run.last.filter(|(l, _)| l.number >= end.number) else {
        return Ok(None);
    };
    Ok(Some(Window {
        from: base.manifest.finished_at,
        to: at,
        wal_segments: last.number - start.number + 1,
        gap_before: run.gap_before.map(|s| s.name()),
    }))
}
