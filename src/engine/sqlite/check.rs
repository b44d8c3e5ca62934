//! Whether a stream of bytes is a whole SQLite database file: the header,
//! and a size that matches the page count the header records. A copy that
//! stopped early fails here, before it is stored or restored.

use std::io::{self, Write};

const MAGIC: &[u8; 16] = b"SQLite format 3\0";
const HEADER: usize = 100;

#[derive(Default)]
pub struct SqliteInspector {
    header: Vec<u8>,
    size: u64,
}

impl Write for SqliteInspector {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.header.len() < HEADER {
            let take = (HEADER - self.header.len()).min(buf.len());
            self.header.extend_from_slice(&buf[..take]);
        }
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SqliteInspector {
    /// The verdict: Ok, or why the bytes are not a whole database.
    pub fn verdict(&self) -> Result<(), String> {
        let h = &self.header;
        if h.len() < HEADER || &h[..16] != MAGIC {
            return Err("not an SQLite database (no \"SQLite format 3\" header)".into());
        }
        let page_size = match u16::from_be_bytes([h[16], h[17]]) {
            1 => 65536,
            n => u64::from(n),
        };
        if page_size < 512 || !page_size.is_power_of_two() {
            return Err(format!("the header names an invalid page size {page_size}"));
        }
        if self.size % page_size != 0 {
            return Err(format!(
                "{} bytes is not a whole number of {page_size}-byte pages: the copy is truncated",
                self.size
            ));
        }
        let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        // The in-header page count is valid when "version-valid-for"
        // matches the change counter (SQLite >= 3.7.0 keeps it so).
        let pages = u64::from(be32(28));
        if be32(92) == be32(24) && pages > 0 && self.size != pages * page_size {
            return Err(format!(
                "{} bytes, but the header says {pages} pages of {page_size} bytes: the copy is truncated",
                self.size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE t (v TEXT); INSERT INTO t SELECT hex(randomblob(100)) FROM generate_series(1, 2000);",
        )
        .unwrap_or_else(|_| {
            c.execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO t SELECT hex(randomblob(100)) FROM n;",
            )
            .unwrap()
        });
        drop(c);
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_whole_database_passes_and_a_truncated_one_does_not() {
        let db = database();
        let judge = |bytes: &[u8]| {
            let mut i = SqliteInspector::default();
            for part in bytes.chunks(3000) {
                i.write_all(part).unwrap();
            }
            i.verdict()
        };
        assert_eq!(judge(&db), Ok(()));
        let page = 4096;
        assert!(judge(&db[..db.len() - page])
            .unwrap_err()
            .contains("truncated"));
        assert!(judge(&db[..db.len() - 10])
            .unwrap_err()
            .contains("truncated"));
        assert!(judge(b"-- not sqlite")
            .unwrap_err()
            .contains("not an SQLite"));
    }
}
