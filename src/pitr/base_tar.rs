//! Reads a `pg_basebackup --format=tar --pgdata=-` stream as it passes to
//! storage: whether it is whole (the tar's end-of-archive blocks after
//! backup_manifest, which pg_basebackup writes last), and what a restore
//! needs to know without downloading it: the timeline and WAL range the
//! backup must replay (`WAL-Ranges` of backup_manifest) and the cluster's
//! system identifier (the first 8 bytes of global/pg_control), so WAL of
//! another cluster is never replayed onto it.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};

const BLOCK: usize = 512;
/// backup_manifest lists every file; its WAL-Ranges are at its end.
const MANIFEST_TAIL: usize = 256 * 1024;

/// What a base backup needs from the WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalFacts {
    pub system_identifier: String,
    pub timeline: u32,
    /// Replay starts here (the backup's checkpoint redo point)…
    pub start_lsn: String,
    /// …and the backup is consistent once replay reaches here.
    pub end_lsn: String,
}

#[derive(Default)]
pub struct BaseInspector {
    buf: Vec<u8>,
    /// The current member: name and bytes of data still to come.
    member: Option<(String, u64)>,
    zero_blocks: u32,
    label: Vec<u8>,
    manifest_tail: Vec<u8>,
    control_head: Vec<u8>,
    after_end: bool,
}

fn octal(field: &[u8]) -> Option<u64> {
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    u64::from_str_radix(text.trim(), 8).ok()
}

impl BaseInspector {
    fn block(&mut self, block: &[u8]) -> Result<(), String> {
        // A member's data fills whole blocks: its last block's tail is
        // padding, skipped with it.
        if let Some((name, left)) = self.member.as_mut() {
            let take = (*left).min(BLOCK as u64) as usize;
            let data = &block[..take];
            match name.as_str() {
                "backup_label" => self.label.extend_from_slice(data),
                "backup_manifest" => {
                    self.manifest_tail.extend_from_slice(data);
                    if self.manifest_tail.len() > 2 * MANIFEST_TAIL {
                        self.manifest_tail
                            .drain(..self.manifest_tail.len() - MANIFEST_TAIL);
                    }
                }
                "global/pg_control" if self.control_head.len() < 8 => self
                    .control_head
                    .extend_from_slice(&data[..data.len().min(8)]),
                _ => {}
            }
            *left -= take as u64;
            if *left == 0 {
                self.member = None;
            }
            return Ok(());
        }
        if block.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks >= 2 {
                self.after_end = true;
            }
            return Ok(());
        }
        if self.after_end || self.zero_blocks > 0 {
            return Err("the tar stream goes on after its end-of-archive blocks".into());
        }
        if &block[257..262] != b"ustar" {
            return Err("not a tar stream (no ustar header where one should be)".into());
        }
        let name: String = block[..100]
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as char)
            .collect();
        let prefix: String = block[345..500]
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as char)
            .collect();
        let name = match prefix.is_empty() {
            true => name,
            false => format!("{prefix}/{name}"),
        };
        let size =
            octal(&block[124..136]).ok_or_else(|| format!("tar member {name}: unreadable size"))?;
        let name = name.trim_start_matches("./").to_string();
        if size > 0 {
            self.member = Some((name, size));
        }
        Ok(())
    }

    pub fn finish(self) -> Result<crate::engine::postgres::archive::DumpFacts, String> {
        if self.member.is_some() || !self.buf.is_empty() {
            return Err("the base backup ends inside a tar member: it was cut short".into());
        }
        if !self.after_end {
            return Err("the base backup has no end-of-archive blocks: it was cut short".into());
        }
        let label = String::from_utf8_lossy(&self.label);
        if label.is_empty() {
            return Err("the base backup holds no backup_label".into());
        }
        let manifest = String::from_utf8_lossy(&self.manifest_tail);
        let ranges = manifest
            .rfind("\"WAL-Ranges\"")
            .ok_or("the base backup's backup_manifest has no WAL-Ranges (or none at all)")?;
        let field = |name: &str| -> Option<String> {
            let at = manifest[ranges..].find(&format!("\"{name}\""))? + ranges;
            let rest = &manifest[at + name.len() + 2..];
            let rest = rest.trim_start().strip_prefix(':')?.trim_start();
            let value: String = rest
                .trim_start_matches('"')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '/')
                .collect();
            (!value.is_empty()).then_some(value)
        };
        let timeline = field("Timeline")
            .and_then(|t| t.parse().ok())
            .ok_or("backup_manifest: WAL-Ranges without a Timeline")?;
        let start_lsn =
            field("Start-LSN").ok_or("backup_manifest: WAL-Ranges without a Start-LSN")?;
        let end_lsn = field("End-LSN").ok_or("backup_manifest: WAL-Ranges without an End-LSN")?;
        if self.control_head.len() < 8 {
            return Err("the base backup holds no global/pg_control".into());
        }
        let system_identifier =
            u64::from_le_bytes(self.control_head[..8].try_into().expect("8 bytes")).to_string();
        Ok(crate::engine::postgres::archive::DumpFacts {
            physical: Some(PhysicalFacts {
                system_identifier,
                timeline,
                start_lsn,
                end_lsn,
            }),
            ..Default::default()
        })
    }
}

impl Write for BaseInspector {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        let whole = self.buf.len() / BLOCK * BLOCK;
        let blocks: Vec<u8> = self.buf.drain(..whole).collect();
        for block in blocks.chunks(BLOCK) {
            self.block(block).map_err(io::Error::other)?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
