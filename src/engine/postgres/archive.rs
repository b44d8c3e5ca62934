//! Reading pg_dump's output as it streams past, to prove it is complete and
//! to count the rows it holds per table.
//!
//! pg_dump can exit 0 and still have written less than a whole dump (a
//! wrapper that swallows its status, a filesystem that lies), so the bytes
//! themselves are judged: a plain dump must end with pg_dump's completion
//! trailer; a custom archive must parse to its end, every table-of-contents
//! entry that had data must have its data block, and the stream must stop
//! exactly after the last block. The row counts let `verify` check that
//! each restored table holds every row the dump holds.
//!
//! Custom archive layout (pg_backup_archiver.c, pg_backup_custom.c): a
//! header, the table of contents, then one data block per entry with data,
//! each block a type byte, the entry's id and length-prefixed chunks ending
//! in a zero length. Integers are a sign byte plus `intSize` little-endian
//! bytes; strings are an integer length (negative for NULL) and the bytes.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

/// Rows the dump holds for one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: u64,
}

/// What the bytes of a complete dump told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpFacts {
    /// Per table, when the format lets us count (uncompressed COPY data).
    pub tables: Vec<TableRows>,
    /// Large objects the dump creates (PostgreSQL), for verify to compare.
    pub large_objects: Option<u64>,
    /// A physical base backup's WAL range and cluster.
    pub physical: Option<crate::pitr::base_tar::PhysicalFacts>,
}

/// Which pg_dump output a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    Custom,
    Plain,
    /// `pg_dumpall --globals-only`.
    Globals,
}

/// Watches a dump stream; `finish` says whether it was complete.
pub struct DumpInspector {
    kind: DumpKind,
    plain: PlainScanner,
    custom: CustomScanner,
}

impl DumpInspector {
    pub fn new(kind: DumpKind) -> DumpInspector {
        DumpInspector {
            kind,
            plain: PlainScanner::default(),
            custom: CustomScanner::default(),
        }
    }

    pub fn finish(self) -> Result<DumpFacts, String> {
        match self.kind {
            DumpKind::Custom => self.custom.finish(),
            DumpKind::Plain => self.plain.finish("-- PostgreSQL database dump complete"),
            DumpKind::Globals => self
                .plain
                .finish("-- PostgreSQL database cluster dump complete")
                .map(|_| DumpFacts::default()),
        }
    }
}

impl Write for DumpInspector {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self.kind {
            DumpKind::Custom => self.custom.feed(data),
            DumpKind::Plain | DumpKind::Globals => self.plain.feed(data),
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------- plain

/// Line scanner for plain SQL: counts COPY rows and keeps the tail.
#[derive(Default)]
struct PlainScanner {
    /// Start of the current line (bounded; a COPY header fits).
    line: Vec<u8>,
    line_len: usize,
    copying: Option<(String, String, u64)>,
    tables: Vec<TableRows>,
    tail: Vec<u8>,
    large_objects: u64,
    /// The key of the `\restrict KEY` line that pg_dump 15.14/16.10/17.6/18
    /// and later write first: such a dump is whole only when the matching
    /// `\unrestrict KEY` line closes it.
    restrict_key: Option<String>,
}

const LINE_KEEP: usize = 64 << 10;
const TAIL_KEEP: usize = 4 << 10;

impl PlainScanner {
    fn feed(&mut self, data: &[u8]) {
        if data.len() >= TAIL_KEEP {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - TAIL_KEEP..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > 2 * TAIL_KEEP {
                let cut = self.tail.len() - TAIL_KEEP;
                self.tail.drain(..cut);
            }
        }
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.push(&rest[..nl]);
            self.end_line();
            rest = &rest[nl + 1..];
        }
        self.push(rest);
    }

    fn push(&mut self, part: &[u8]) {
        let room = LINE_KEEP.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
        self.line_len += part.len();
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let whole = self.line_len == line.len();
        self.line_len = 0;
        match &mut self.copying {
            Some((schema, table, rows)) => {
                if whole && line == b"\\." {
                    self.tables.push(TableRows {
                        schema: std::mem::take(schema),
                        table: std::mem::take(table),
                        rows: *rows,
                    });
                    self.copying = None;
                } else {
                    *rows += 1;
                }
            }
            None => {
                if whole && line.starts_with(b"SELECT pg_catalog.lo_create('") {
                    self.large_objects += 1;
                } else if whole && self.restrict_key.is_none() && line.starts_with(b"\\restrict ") {
                    self.restrict_key = Some(String::from_utf8_lossy(&line[10..]).into_owned());
                } else if whole && line.starts_with(b"COPY ") && line.ends_with(b" FROM stdin;") {
                    let text = String::from_utf8_lossy(&line[5..]);
                    if let Some((schema, table)) = parse_qualified(&text) {
                        self.copying = Some((schema, table, 0));
                    }
                }
            }
        }
    }

    fn finish(mut self, trailer: &str) -> Result<DumpFacts, String> {
        if !self.line.is_empty() {
            self.end_line();
        }
        if let Some((schema, table, _)) = &self.copying {
            return Err(format!(
                "the dump ends inside the data of table {schema}.{table}: it is truncated"
            ));
        }
        let tail = String::from_utf8_lossy(&self.tail);
        if !tail.contains(trailer) {
            return Err(format!(
                "the dump does not end with pg_dump's completion line `{trailer}`: it is truncated"
            ));
        }
        if let Some(key) = &self.restrict_key {
            if !tail.contains(&format!("\n\\unrestrict {key}\n")) {
                return Err(
                    "the dump began with `\\restrict` and does not end with its matching `\\unrestrict` line: it is truncated"
                        .into(),
                );
            }
        }
        Ok(DumpFacts {
            tables: self.tables,
            large_objects: Some(self.large_objects),
            physical: None,
        })
    }
}

/// `schema.table` as pg_dump prints it (identifiers quoted when needed),
/// up to the column list or `FROM`.
fn parse_qualified(text: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut ident = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        ident.push('"');
                    }
                    '"' => break,
                    c => ident.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c == ' ' {
                    break;
                }
                ident.push(c);
                chars.next();
            }
        }
        parts.push(ident);
        if chars.peek() == Some(&'.') {
            chars.next();
        } else {
            break;
        }
    }
    match parts.as_slice() {
        [schema, table] => Some((schema.clone(), table.clone())),
        _ => None,
    }
}

/// The server version a dump was taken from, as its head says: a plain
/// dump's `-- Dumped from database version X` line, a custom archive's
/// header.
pub fn dumped_from(head: &[u8]) -> Option<String> {
    if head.starts_with(b"PGDMP") {
        let mut s = CustomScanner::default();
        let mut cur = Cursor {
            data: head,
            pos: 0,
            h: Header::default(),
        };
        s.step(&mut cur).ok()?;
        return s.server_version;
    }
    let text = String::from_utf8_lossy(head);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("-- Dumped from database version "))?;
    Some(line.trim().to_string())
}

// ---------------------------------------------------------------- custom

/// An incremental parser for the custom archive format. It keeps a small
/// buffer of unparsed bytes; chunk payloads are counted, never stored.
#[derive(Default)]
struct CustomScanner {
    buf: Vec<u8>,
    state: CustomState,
    error: Option<String>,
    header: Header,
    /// Entries that had a data dumper: id → (schema, table, desc).
    with_data: BTreeMap<i64, DataEntry>,
    seen_blocks: BTreeSet<i64>,
    toc_count: i64,
    toc_left: i64,
    /// The header's server version.
    server_version: Option<String>,
    large_objects: u64,
    rows: BTreeMap<i64, u64>,
    counter: RowCounter,
}

/// Counts COPY text rows: lines up to the `\.` end marker pg_dump writes
/// into the block (blank lines after it are not rows; an empty line before
/// it is, a row of one empty string).
#[derive(Default)]
struct RowCounter {
    rows: u64,
    /// The current line so far, when it could still be the marker.
    start: Vec<u8>,
    line_len: usize,
    done: bool,
}

impl RowCounter {
    fn feed(&mut self, mut data: &[u8]) {
        while !self.done && !data.is_empty() {
            let (part, ended) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            if self.line_len < 2 {
                let take = part.len().min(2 - self.line_len);
                self.start.extend_from_slice(&part[..take]);
            }
            self.line_len += part.len();
            data = &data[(part.len() + usize::from(ended)).min(data.len())..];
            if ended {
                if self.line_len == 2 && self.start == b"\\." {
                    self.done = true;
                } else {
                    self.rows += 1;
                }
                self.start.clear();
                self.line_len = 0;
            }
        }
    }

    fn take(&mut self) -> u64 {
        std::mem::take(self).rows
    }
}

#[derive(Default, Clone, Copy)]
struct Header {
    vmin: u8,
    int_size: usize,
    off_size: usize,
    compressed: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum CustomState {
    #[default]
    Header,
    TocCount,
    TocEntry,
    BlockStart,
    /// After the last data block, pg_dump 18 writing to a regular file
    /// appends the table of contents once more (with the data offsets
    /// filled in): `left` entries of it still to come.
    TrailingToc {
        left: i64,
    },
    /// The trailing table of contents has been read: nothing may follow.
    End,
    /// In a data block of entry `id`: expecting a chunk length.
    ChunkLen {
        id: i64,
        blobs: bool,
    },
    /// Inside a chunk's payload of `left` bytes.
    Chunk {
        id: i64,
        blobs: bool,
        left: u64,
    },
    /// In a large-objects block: expecting the next object's oid.
    BlobOid {
        id: i64,
    },
}

/// Not enough bytes buffered yet.
struct Short;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    h: Header,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, Short> {
        let b = *self.data.get(self.pos).ok_or(Short)?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], Short> {
        if self.data.len() - self.pos < n {
            return Err(Short);
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn int(&mut self) -> Result<i64, Short> {
        let sign = self.byte()?;
        let raw = self.bytes(self.h.int_size)?;
        let mut v: i64 = 0;
        for (i, b) in raw.iter().enumerate().take(8) {
            v |= (*b as i64) << (8 * i);
        }
        Ok(if sign != 0 { -v } else { v })
    }

    fn string(&mut self) -> Result<Option<String>, Short> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let raw = self.bytes(len as usize)?;
        Ok(Some(String::from_utf8_lossy(raw).into_owned()))
    }
}

const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

/// One table-of-contents entry: its id, and (schema, tag, desc) when it had
/// a data dumper, that is when a data block must follow for it.
type DataEntry = (String, String, String);
fn read_toc_entry(cur: &mut Cursor, h: Header) -> Result<(i64, Option<DataEntry>), Short> {
    let id = cur.int()?;
    let had_dumper = cur.int()? != 0;
    cur.string()?; // table oid
    cur.string()?; // oid
    let tag = cur.string()?.unwrap_or_default();
    let desc = cur.string()?.unwrap_or_default();
    cur.int()?; // section
    cur.string()?; // definition
    cur.string()?; // drop statement
    cur.string()?; // copy statement
    let namespace = cur.string()?.unwrap_or_default();
    cur.string()?; // tablespace
    if h.vmin >= 14 {
        cur.string()?; // table access method
    }
    if h.vmin >= 16 {
        cur.int()?; // relkind
    }
    cur.string()?; // owner
    cur.string()?; // "with oids"
    while cur.string()?.is_some() {} // dependencies
    cur.byte()?; // data offset flag
    cur.bytes(h.off_size)?; // data offset
    Ok((id, had_dumper.then_some((namespace, tag, desc))))
}

impl CustomScanner {
    fn feed(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        let mut data = data;
        // Chunk payloads pass straight through without buffering.
        loop {
            if let CustomState::Chunk { id, blobs, left } = self.state {
                if !self.buf.is_empty() {
                    break; // payload bytes are at the front of buf; handled below
                }
                let n = (left as usize).min(data.len());
                self.payload(id, blobs, left, &data[..n]);
                data = &data[n..];
                if data.is_empty() {
                    return;
                }
                continue;
            }
            break;
        }
        self.buf.extend_from_slice(data);
        self.parse();
    }

    /// Some bytes of a chunk's payload (`left` were still due): counted as
    /// COPY rows when they are table data, and the state moves on.
    fn payload(&mut self, id: i64, blobs: bool, left: u64, bytes: &[u8]) {
        if !blobs && !self.header.compressed {
            self.counter.feed(bytes);
        }
        let rest = left - bytes.len() as u64;
        self.state = if rest == 0 {
            CustomState::ChunkLen { id, blobs }
        } else {
            CustomState::Chunk {
                id,
                blobs,
                left: rest,
            }
        };
    }

    fn parse(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pos = 0;
        loop {
            let mut cur = Cursor {
                data: &buf,
                pos,
                h: self.header,
            };
            match self.step(&mut cur) {
                Ok(true) => pos = cur.pos,
                Ok(false) | Err(Short) => break,
            }
            if self.error.is_some() {
                break;
            }
        }
        self.buf = buf;
        self.buf.drain(..pos);
    }

    /// One parsing step. Ok(true) when it consumed something.
    fn step(&mut self, cur: &mut Cursor) -> Result<bool, Short> {
        match self.state {
            CustomState::Header => {
                if cur.bytes(5)? != b"PGDMP" {
                    self.error = Some("not a pg_dump custom archive (no PGDMP header)".into());
                    return Ok(false);
                }
                let (vmaj, vmin, _rev) = (cur.byte()?, cur.byte()?, cur.byte()?);
                let int_size = cur.byte()? as usize;
                let off_size = cur.byte()? as usize;
                let _format = cur.byte()?;
                if vmaj != 1 || vmin < 12 || !(1..=8).contains(&int_size) {
                    self.error = Some(format!(
                        "unsupported custom archive version {vmaj}.{vmin} (int size {int_size})"
                    ));
                    return Ok(false);
                }
                cur.h = Header {
                    vmin,
                    int_size,
                    off_size,
                    compressed: false,
                };
                let compressed = if vmin >= 15 {
                    cur.byte()? != 0
                } else {
                    cur.int()? != 0
                };
                for _ in 0..7 {
                    cur.int()?; // creation time
                }
                cur.string()?; // database name
                self.server_version = cur.string()?;
                cur.string()?; // pg_dump version
                self.header = Header {
                    compressed,
                    ..cur.h
                };
                self.state = CustomState::TocCount;
            }
            CustomState::TocCount => {
                self.toc_left = cur.int()?;
                self.toc_count = self.toc_left;
                self.state = if self.toc_left > 0 {
                    CustomState::TocEntry
                } else {
                    CustomState::BlockStart
                };
            }
            CustomState::TocEntry => {
                let (id, entry) = read_toc_entry(cur, self.header)?;
                if let Some(entry) = entry {
                    self.with_data.insert(id, entry);
                }
                self.toc_left -= 1;
                if self.toc_left == 0 {
                    self.state = CustomState::BlockStart;
                }
            }
            CustomState::TrailingToc { left } => {
                let (id, entry) = read_toc_entry(cur, self.header)?;
                if entry.is_some() && !self.with_data.contains_key(&id) {
                    self.error = Some(format!(
                        "the closing table of contents names data for entry {id}, which the first did not"
                    ));
                    return Ok(false);
                }
                self.state = match left - 1 {
                    0 => CustomState::End,
                    left => CustomState::TrailingToc { left },
                };
            }
            CustomState::End => {
                cur.byte()?; // nothing at all is the good end
                self.error = Some("bytes follow the closing table of contents".into());
                return Ok(false);
            }
            CustomState::BlockStart => {
                let kind = cur.byte()?;
                if kind != BLK_DATA && kind != BLK_BLOBS && self.all_blocks_seen() {
                    // Not a block but an integer's sign byte: the closing
                    // copy of the table of contents, entry for entry.
                    cur.pos -= 1;
                    let count = cur.int()?;
                    if count != self.toc_count {
                        self.error = Some(format!(
                            "the closing table of contents has {count} entries, the first {}",
                            self.toc_count
                        ));
                        return Ok(false);
                    }
                    self.state = match count {
                        0 => CustomState::End,
                        left => CustomState::TrailingToc { left },
                    };
                    return Ok(true);
                }
                let id = cur.int()?;
                if !self.with_data.contains_key(&id) || !self.seen_blocks.insert(id) {
                    self.error = Some(format!("unexpected data block for entry {id}"));
                    return Ok(false);
                }
                self.state = match kind {
                    BLK_DATA => CustomState::ChunkLen { id, blobs: false },
                    BLK_BLOBS => CustomState::BlobOid { id },
                    other => {
                        self.error = Some(format!("unknown data block type {other}"));
                        return Ok(false);
                    }
                };
            }
            CustomState::BlobOid { id } => {
                let oid = cur.int()?;
                self.large_objects += u64::from(oid != 0);
                self.state = if oid == 0 {
                    CustomState::BlockStart
                } else {
                    CustomState::ChunkLen { id, blobs: true }
                };
            }
            CustomState::ChunkLen { id, blobs } => {
                let len = cur.int()?;
                self.state = match (len, blobs) {
                    (0, false) => {
                        let rows = self.counter.take();
                        self.rows.insert(id, rows);
                        CustomState::BlockStart
                    }
                    (0, true) => CustomState::BlobOid { id },
                    (n, _) if n < 0 => {
                        self.error = Some(format!("negative chunk length in entry {id}"));
                        return Ok(false);
                    }
                    (n, _) => CustomState::Chunk {
                        id,
                        blobs,
                        left: n as u64,
                    },
                };
            }
            CustomState::Chunk { id, blobs, left } => {
                // Payload already in the buffer (it arrived with a header).
                let avail = cur.data.len() - cur.pos;
                if avail == 0 {
                    return Err(Short);
                }
                let n = (left as usize).min(avail);
                let payload = cur.bytes(n)?;
                self.payload(id, blobs, left, payload);
            }
        }
        Ok(true)
    }

    fn all_blocks_seen(&self) -> bool {
        self.with_data
            .keys()
            .all(|id| self.seen_blocks.contains(id))
    }

    fn finish(self) -> Result<DumpFacts, String> {
        if let Some(e) = self.error {
            return Err(format!("the custom archive is damaged: {e}"));
        }
        let truncated = |what: &str| Err(format!("the custom archive is truncated: {what}"));
        match self.state {
            CustomState::BlockStart | CustomState::End if self.buf.is_empty() => {}
            CustomState::Header | CustomState::TocCount | CustomState::TocEntry => {
                return truncated("it ends inside its table of contents")
            }
            CustomState::TrailingToc { .. } | CustomState::End => {
                return truncated("it ends inside its closing table of contents")
            }
            _ => return truncated("it ends inside a data block"),
        }
        let missing: Vec<String> = self
            .with_data
            .iter()
            .filter(|(id, _)| !self.seen_blocks.contains(id))
            .map(|(_, (ns, tag, desc))| format!("{desc} {ns}.{tag}"))
            .collect();
        if !missing.is_empty() {
            return truncated(&format!(
                "{} data block(s) missing, first {}",
                missing.len(),
                missing[0]
            ));
        }
        let tables = if self.header.compressed {
            Vec::new()
        } else {
            self.with_data
                .iter()
                .filter(|(_, (_, _, desc))| desc == "TABLE DATA")
                .map(|(id, (schema, table, _))| TableRows {
                    schema: schema.clone(),
                    table: table.clone(),
                    rows: self.rows.get(id).copied().unwrap_or(0),
                })
                .collect()
        };
        Ok(DumpFacts {
            tables,
            large_objects: Some(self.large_objects),
            physical: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str, kind: DumpKind, step: usize) -> Result<DumpFacts, String> {
        let mut i = DumpInspector::new(kind);
        for part in text.as_bytes().chunks(step) {
            i.write_all(part).unwrap();
        }
        i.finish()
    }

    const PLAIN: &str = "--\n-- PostgreSQL database dump\n--\n\nCOPY public.\"Odd \"\"name\" (a, b) FROM stdin;\n1\t\\\\.\n\\\\.x\n2\tCOPY x FROM stdin;\n\\.\n\nCOPY s.t (a) FROM stdin;\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n";

    #[test]
    fn plain_dump_rows_are_counted_past_look_alike_lines() {
        for step in [1, 3, 7, 4096] {
            let facts = plain(PLAIN, DumpKind::Plain, step).unwrap();
            assert_eq!(
                facts.tables,
                vec![
                    TableRows {
                        schema: "public".into(),
                        table: "Odd \"name".into(),
                        rows: 3
                    },
                    TableRows {
                        schema: "s".into(),
                        table: "t".into(),
                        rows: 0
                    }
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn plain_dump_without_its_trailer_is_truncated() {
        let cut = &PLAIN[..PLAIN
            .find("\n--\n-- PostgreSQL database dump complete")
            .unwrap()];
        let err = plain(cut, DumpKind::Plain, 5).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let in_copy = &PLAIN[..PLAIN.find("2\tCOPY").unwrap()];
        let err = plain(in_copy, DumpKind::Plain, 5).unwrap_err();
        assert!(
            err.contains("inside the data of table public.Odd \"name"),
            "{err}"
        );
        // A globals dump has its own trailer.
        assert!(plain(PLAIN, DumpKind::Globals, 9).is_err());
        assert!(plain(
            "CREATE ROLE a;\n--\n-- PostgreSQL database cluster dump complete\n--\n",
            DumpKind::Globals,
            2
        )
        .is_ok());
    }

    /// Regression: a pg_dump that exits 0 with its output cut inside the
    /// final `\unrestrict` line was published as a good backup.
    #[test]
    fn plain_dump_cut_inside_its_unrestrict_line_is_truncated() {
        let whole = PLAIN.replace("--\n\nCOPY public", "--\n\n\\restrict abc\n\nCOPY public");
        assert!(plain(&whole, DumpKind::Plain, 7).is_ok());
        for cut in ["\\unrestrict ab", "\\unrestrict abc"] {
            let end = whole.rfind(cut).unwrap() + cut.len();
            let err = plain(&whole[..end], DumpKind::Plain, 7).unwrap_err();
            assert!(err.contains("`\\unrestrict`"), "{cut}: {err}");
        }
        // Another key does not close it.
        let other = whole.replace("\\unrestrict abc", "\\unrestrict xyz");
        assert!(plain(&other, DumpKind::Plain, 7).is_err());
    }

    #[test]
    fn garbage_is_not_a_custom_archive() {
        let mut i = DumpInspector::new(DumpKind::Custom);
        i.write_all(b"hello world, definitely not an archive")
            .unwrap();
        assert!(i.finish().unwrap_err().contains("damaged"));
        let i = DumpInspector::new(DumpKind::Custom);
        assert!(i.finish().unwrap_err().contains("truncated"));
    }
}
