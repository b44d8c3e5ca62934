//! `backstop wal verify`, and the same proof before a restore unpacks
//! anything: every stored WAL file read back and hashed against its name,
//! every segment of the cluster the base backup belongs to, the segments
//! of each timeline without gaps, and each later timeline's history file
//! present.

use super::archive::WalArchive;
use super::wal_names::{Segment, WalFile};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Default)]
pub struct WalReport {
    pub segments: u64,
    pub timelines: Vec<u32>,
    /// Each problem, for people: a damaged object, a gap, a missing
    /// history file, a segment of another cluster.
    pub problems: Vec<String>,
}

/// The system identifier a segment's first page (a long header) carries.
pub fn system_identifier(raw: &[u8]) -> Option<u64> {
    raw.get(24..32)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Read and check the stored WAL: all of it, or only the segments of
/// `only` (timeline, first, last) for a restore.
pub async fn check(
    archive: &WalArchive<'_>,
    identity: Option<&Path>,
    only: Option<(Segment, Segment)>,
    system: Option<u64>,
) -> anyhow::Result<WalReport> {
    let stored = archive.stored().await?;
    let mut report = WalReport::default();
    let mut by_timeline: BTreeMap<u32, Vec<Segment>> = BTreeMap::new();
    let mut histories = Vec::new();
    let mut system = system;
    for w in &stored {
        match w.file {
            WalFile::History(t) => histories.push(t),
            WalFile::Segment(s) => {
                if let Some((first, last)) = only {
                    if s.timeline != first.timeline
                        || s.number < first.number
                        || s.number > last.number
                    {
                        continue;
                    }
                }
                by_timeline.entry(s.timeline).or_default().push(s);
            }
        }
        if only.is_some() && matches!(w.file, WalFile::History(_)) {
            continue;
        }
        match archive.get(w.file, identity).await {
            Ok(Some(raw)) => {
                if let WalFile::Segment(s) = w.file {
                    report.segments += 1;
                    match (system, system_identifier(&raw)) {
                        (_, None) => report.problems.push(format!("{} is too short to be a WAL segment", s.name())),
                        (None, Some(id)) => system = Some(id),
                        (Some(expected), Some(id)) if id != expected => report.problems.push(format!(
                            "{} belongs to another cluster (system identifier {id}, not {expected})",
                            s.name()
                        )),
                        _ => {}
                    }
                }
            }
            Ok(None) => report
                .problems
                .push(format!("{} vanished while being read", w.file.name())),
            Err(e) => report.problems.push(format!("{e:#}")),
        }
    }
    for (timeline, segments) in &mut by_timeline {
        segments.sort();
        segments.dedup();
        for pair in segments.windows(2) {
            if pair[1].number != pair[0].number + 1 {
                report.problems.push(format!(
                    "gap on timeline {timeline}: nothing stored between {} and {}",
                    pair[0].name(),
                    pair[1].name()
                ));
            }
        }
        if let Some((first, last)) = only {
            let have_first = segments.first() == Some(&first);
            let have_last = segments.last().is_some_and(|l| l.number >= last.number);
            if !have_first || !have_last {
                report.problems.push(format!(
                    "the WAL from {} to {} is not all stored",
                    first.name(),
                    last.name()
                ));
            }
        }
        if *timeline > 1 && only.is_none() && !histories.contains(timeline) {
            report.problems.push(format!(
                "timeline {timeline} has segments but no {:08X}.history (recovery cannot follow it)",
                timeline
            ));
        }
    }
    report.timelines = by_timeline.keys().copied().collect();
    Ok(report)
}
