//! Whether a mariadb-dump/mysqldump stream is whole: the tools end every
//! complete dump with a `-- Dump completed` comment, so a dump that exits 0
//! but stops early (a killed connection, a full disk) is caught.

use std::io::{self, Write};

const TRAILER: &str = "-- Dump completed";
const KEEP: usize = 4096;

pub struct MysqlInspector {
    tail: Vec<u8>,
    seen: u64,
    rows: super::rows::RowCounter,
}

impl Default for MysqlInspector {
    fn default() -> Self {
        MysqlInspector {
            tail: Vec::new(),
            seen: 0,
            rows: super::rows::RowCounter::new(),
        }
    }
}

impl Write for MysqlInspector {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.seen += buf.len() as u64;
        self.rows.feed(buf);
        self.tail
            .extend_from_slice(&buf[buf.len().saturating_sub(KEEP)..]);
        if self.tail.len() > 2 * KEEP {
            self.tail.drain(..self.tail.len() - KEEP);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl MysqlInspector {
    /// The rows per table, once the dump is judged whole.
    pub fn finish(self) -> Result<Vec<crate::engine::postgres::archive::TableRows>, String> {
        self.verdict().map(|()| self.rows.tables())
    }

    pub fn verdict(&self) -> Result<(), String> {
        let tail = String::from_utf8_lossy(&self.tail);
        let last = tail.trim_end().rsplit('\n').next().unwrap_or("");
        if last.starts_with(TRAILER) {
            Ok(())
        } else {
            Err(format!(
                "the dump ({} bytes) does not end with `{TRAILER}`: it stopped early",
                self.seen
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dump_that_ends_with_the_trailer_is_whole() {
        let judge = |text: &str| {
            let mut i = MysqlInspector::default();
            for part in text.as_bytes().chunks(7) {
                i.write_all(part).unwrap();
            }
            i.verdict()
        };
        let whole = format!(
            "{}\n-- Dump completed on 2026-11-29  3:00:00\n",
            "INSERT ...;\n".repeat(1000)
        );
        assert_eq!(judge(&whole), Ok(()));
        assert!(judge(&whole[..whole.len() / 2]).is_err());
        // The trailer text inside data does not count: it must be the end.
        assert!(judge("-- Dump completed\nINSERT INTO t VALUES (1);\n").is_err());
    }
}
