//! PostgreSQL's WAL file names and where backstop stores each one.
//!
//! A segment is `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the segment
//! number split in two, 16 MiB segments by default); a timeline's history
//! is `TTTTTTTT.history`. Each is stored once, immutable, under
//! `<target>.wal/` (beside, not inside, the target's dump folder, so the
//! dump listing and its retention never see WAL), with the SHA-256 of its
//! raw bytes in the key: the name alone proves what a download must hash
//! to, and a second writer of different bytes is seen from the listing.

use anyhow::bail;

/// Segments per "xlogid" for 16 MiB segments (0x100000000 / 16 MiB).
const SEGMENTS_PER_ID: u64 = 0x100;
/// The segment size these names count in (PostgreSQL's default).
pub const SEGMENT_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    /// The segment's number (LSN / segment size).
    pub number: u64,
}

impl Segment {
    pub fn parse(name: &str) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(&name[0..8], 16).ok()?;
        let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
        let lo = u64::from_str_radix(&name[16..24], 16).ok()?;
        (lo < SEGMENTS_PER_ID && timeline > 0).then_some(Segment {
            timeline,
            number: hi * SEGMENTS_PER_ID + lo,
        })
    }

    pub fn name(&self) -> String {
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / SEGMENTS_PER_ID,
            self.number % SEGMENTS_PER_ID
        )
    }

    pub fn next(&self) -> Segment {
        Segment {
            number: self.number + 1,
            ..*self
        }
    }

    /// The segment holding `lsn` ("0/3000028") on `timeline`.
    pub fn of_lsn(timeline: u32, lsn: &str) -> anyhow::Result<Segment> {
        Ok(Segment {
            timeline,
            number: parse_lsn(lsn)? / (16 << 20),
        })
    }
}

/// An LSN as PostgreSQL prints it, `HI/LO` in hex.
pub fn parse_lsn(lsn: &str) -> anyhow::Result<u64> {
    let Some((hi, lo)) = lsn.split_once('/') else {
        bail!("`{lsn}` is not an LSN (like 0/3000028)");
    };
    let hi = u64::from_str_radix(hi, 16);
    let lo = u64::from_str_radix(lo, 16);
    match (hi, lo) {
        (Ok(hi), Ok(lo)) if lo <= u32::MAX as u64 => Ok(hi << 32 | lo),
        _ => bail!("`{lsn}` is not an LSN (like 0/3000028)"),
    }
}

/// What a WAL file name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFile {
    Segment(Segment),
    /// `TTTTTTTT.history`.
    History(u32),
}

impl WalFile {
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() == 8 {
                return u32::from_str_radix(tli, 16).ok().map(WalFile::History);
            }
            return None;
        }
        Segment::parse(name).map(WalFile::Segment)
    }

    pub fn name(&self) -> String {
        match self {
            WalFile::Segment(s) => s.name(),
            WalFile::History(t) => format!("{t:08X}.history"),
        }
    }

    /// The folder it is stored in, under the target's WAL prefix: history
    /// files apart, so one listing finds every timeline's.
    fn folder(&self) -> String {
        match self {
            WalFile::Segment(s) => format!("{:08X}", s.timeline),
            WalFile::History(_) => "history".into(),
        }
    }

    /// The key prefix every stored copy of this file starts with.
    pub fn key_prefix(&self, wal_prefix: &str) -> String {
        format!("{wal_prefix}{}/{}.", self.folder(), self.name())
    }

    /// The stored key: name, SHA-256 of the raw bytes, codec, encryption.
    pub fn key(&self, wal_prefix: &str, sha256: &str, encrypted: bool) -> String {
        format!(
            "{}{sha256}.zst{}",
            self.key_prefix(wal_prefix),
            if encrypted { ".age" } else { "" }
        )
    }
}

/// A stored WAL object, from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWal {
    pub file: WalFile,
    pub sha256: String,
    pub encrypted: bool,
    pub key: String,
}

impl StoredWal {
    pub fn of_key(wal_prefix: &str, key: &str) -> Option<StoredWal> {
        let rest = key.strip_prefix(wal_prefix)?;
        let (_folder, name) = rest.split_once('/')?;
        let (file, tail) = match name.find(".history.") {
            Some(at) => (&name[..at + 8], &name[at + 9..]),
            None => (name.get(..24)?, name.get(25..)?),
        };
        let file = WalFile::parse(file)?;
        let (sha256, encrypted) = match tail.strip_suffix(".zst.age") {
            Some(h) => (h, true),
            None => (tail.strip_suffix(".zst")?, false),
        };
        (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())).then(|| StoredWal {
            file,
            sha256: sha256.to_string(),
            encrypted,
            key: key.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_step_across_the_xlogid() {
        let s = Segment::parse("0000000100000000000000FF").unwrap();
        assert_eq!(s.number, 0xFF);
        assert_eq!(s.next().name(), "000000010000000100000000");
        assert_eq!(
            Segment::of_lsn(2, "1/2000028").unwrap().name(),
            "000000020000000100000002"
        );
        assert_eq!(
            Segment::parse("00000001000000000000010A"),
            None,
            "lo past 0xFF"
        );
        assert_eq!(Segment::parse("000000010000000000000001.partial"), None);
    }

    #[test]
    fn stored_keys_name_the_file_and_its_hash() {
        let sha = "ab".repeat(32);
        for file in [
            WalFile::parse("000000010000000000000003").unwrap(),
            WalFile::parse("00000002.history").unwrap(),
        ] {
            for encrypted in [false, true] {
                let key = file.key("p/db.wal/", &sha, encrypted);
                assert!(key.starts_with(&file.key_prefix("p/db.wal/")));
                let back = StoredWal::of_key("p/db.wal/", &key).unwrap();
                assert_eq!(
                    (back.file, back.sha256.as_str(), back.encrypted),
                    (file, sha.as_str(), encrypted)
                );
            }
        }
        assert_eq!(
            StoredWal::of_key(
                "p/db.wal/",
                "p/db.wal/00000001/000000010000000000000003.tmp"
            ),
            None
        );
    }

    #[test]
    fn lsns_parse_as_postgresql_prints_them() {
        assert_eq!(parse_lsn("0/3000028").unwrap(), 0x3000028);
        assert_eq!(parse_lsn("1/0").unwrap(), 1 << 32);
        assert!(parse_lsn("3000028").is_err());
    }
}
