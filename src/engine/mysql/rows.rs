//! Counting the rows a mariadb-dump/mysqldump stream holds per table, as
//! it streams past, so that verify can compare each restored table with
//! the dump (as PostgreSQL's COPY counts do).
//!
//! The tools write a table's rows as `INSERT INTO `t` VALUES (…),(…);`
//! (extended inserts, optionally with a column list; MariaDB 10.11+ puts
//! each row on a line of its own), strings in single quotes with backslash
//! escapes (a newline in data is `\n`) and binary as `0x…`. A row is a `(`
//! at depth 0 after `VALUES`, outside quotes, up to the `;` that ends the
//! statement. Lines of any length stream through unbuffered.

use crate::engine::postgres::archive::TableRows;
use std::collections::BTreeMap;

const INSERT: &[u8] = b"INSERT INTO `";
/// The start of a line kept to read an INSERT's table name.
const HEAD_MAX: usize = 512;

#[derive(Default)]
pub struct RowCounter {
    /// At the start of a line: its first bytes, while they may be an INSERT.
    head: Vec<u8>,
    at_line_start: bool,
    /// In an INSERT's values: the table and the lexer's state.
    values: Option<Values>,
    /// In another line: skip to its end.
    skipping: bool,
    rows: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Values {
    table: String,
    /// Past ` VALUES `: tuples are counted from here.
    started: bool,
    depth: u32,
    quote: Option<u8>,
    escaped: bool,
    /// The bytes before `VALUES` (a column list) still being looked through.
    seen: Vec<u8>,
}

impl RowCounter {
    pub fn new() -> RowCounter {
        RowCounter {
            at_line_start: true,
            ..RowCounter::default()
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skipping {
                match data.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        data = &data[i + 1..];
                        self.skipping = false;
                        self.at_line_start = true;
                    }
                    None => return,
                }
                continue;
            }
            if let Some(v) = self.values.as_mut() {
                let (used, ended) = v.feed(data, &mut self.rows);
                data = &data[used..];
                if ended {
                    // The rest of the statement's last line is not rows.
                    self.values = None;
                    self.skipping = true;
                }
                continue;
            }
            // At a line start: is this an INSERT?
            let want = (HEAD_MAX - self.head.len()).min(data.len());
            let end = data[..want].iter().position(|&b| b == b'\n');
            let take = end.map_or(want, |i| i);
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            let head = std::mem::take(&mut self.head);
            if let Some(rest) = head.strip_prefix(INSERT) {
                if let Some(close) = rest.iter().position(|&b| b == b'`') {
                    let mut v = Values {
                        table: String::from_utf8_lossy(&rest[..close]).into_owned(),
                        ..Values::default()
                    };
                    let (_, ended) = v.feed(&rest[close + 1..], &mut self.rows);
                    match ended {
                        true => self.skipping = end.is_none(),
                        false => {
                            // The line's newline is still in `data`: part
                            // of the statement (rows on lines of their own).
                            self.values = Some(v);
                        }
                    }
                    if ended && end.is_some() {
                        data = &data[1..];
                    }
                    continue;
                }
            }
            let undecided = end.is_none() && head.len() < HEAD_MAX && {
                let n = head.len().min(INSERT.len());
                head[..n] == INSERT[..n]
            };
            if undecided {
                self.head = head;
                return;
            }
            if end.is_some() {
                data = &data[1..];
            } else {
                self.skipping = true;
            }
        }
    }

    pub fn tables(self) -> Vec<TableRows> {
        self.rows
            .into_iter()
            .map(|(table, rows)| TableRows {
                schema: String::new(),
                table,
                rows,
            })
            .collect()
    }
}

impl Values {
    /// Lex `data` up to the `;` that ends the statement (at depth 0,
    /// outside quotes); returns the bytes used and whether it ended.
    fn feed(&mut self, data: &[u8], rows: &mut BTreeMap<String, u64>) -> (usize, bool) {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            i += 1;
            if let Some(q) = self.quote {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == q {
                    self.quote = None;
                }
                continue;
            }
            if !self.started {
                self.seen.push(b);
                if self.seen.ends_with(b" VALUES ") || self.seen.ends_with(b" VALUES\n") {
                    self.started = true;
                    rows.entry(self.table.clone()).or_insert(0);
                    self.seen.clear();
                } else if self.seen.len() > 64 {
                    self.seen.drain(..self.seen.len() - 16);
                }
                if b == b';' {
                    return (i, true); // no VALUES after all
                }
                continue;
            }
            match b {
                b';' if self.depth == 0 => return (i, true),
                b'\'' | b'"' => self.quote = Some(b),
                b'(' => {
                    if self.depth == 0 {
                        *rows.entry(self.table.clone()).or_insert(0) += 1;
                    }
                    self.depth += 1;
                }
                b')' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        (i, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "-- MariaDB dump\n\
CREATE TABLE `t` (\n  `a` int\n);\n\
INSERT INTO `t` VALUES (1,'a (b), c'),(2,'it\\'s \\\\'),(3,0xDEAD28);\n\
INSERT INTO `t` VALUES (4,NULL);\n\
INSERT INTO `order` (`id`, `note`) VALUES (1,'x\\n(2)'),(2,'');\n\
INSERT INTO `empty_later` VALUES ();\n\
INSERT INTO `rows_on_lines` VALUES\n(1,'a;b'),\n(2,'(');\n\
/*!40000 ALTER TABLE `t` ENABLE KEYS */;\n\
-- INSERT INTO `fake` VALUES (1);\n\
-- Dump completed\n";

    #[test]
    fn rows_are_counted_per_table_past_look_alikes_in_strings() {
        for step in [1, 2, 3, 7, 64, 4096] {
            let mut c = RowCounter::new();
            for part in DUMP.as_bytes().chunks(step) {
                c.feed(part);
            }
            let got: Vec<(String, u64)> =
                c.tables().into_iter().map(|t| (t.table, t.rows)).collect();
            assert_eq!(
                got,
                vec![
                    ("empty_later".into(), 1),
                    ("order".into(), 2),
                    ("rows_on_lines".into(), 2),
                    ("t".into(), 4)
                ],
                "step {step}"
            );
        }
    }
}
