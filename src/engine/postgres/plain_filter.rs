//! `--no-owner`, `--no-acl` and `--no-tablespaces` for plain SQL dumps.
//!
//! pg_restore filters a custom archive by its table of contents; a plain
//! dump is a script, so the same is done on the SQL stream as it flows to
//! psql. pg_dump writes every statement from the start of a line, the
//! ownership and privilege statements on one line each
//! (`ALTER … OWNER TO …;`, `GRANT …;`, `REVOKE …;`,
//! `ALTER DEFAULT PRIVILEGES …;`) and tablespaces as
//! `SET default_tablespace = …;`. A small lexer tracks where statements
//! start — outside string literals, dollar-quoted bodies and `COPY … FROM
//! stdin` data — so a function body or a data row that merely looks like
//! such a statement is passed through untouched. The same statement starts
//! are where `db_scope` keeps the dump inside the restore's database.

use crate::engine::postgres::database::Fidelity;
use crate::engine::postgres::db_scope::{DbScope, Verdict};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Longest line kept whole for matching; longer lines (a huge literal, an
/// INSERT of a big row) pass through once they exceed it.
const LINE_LIMIT: usize = 1 << 20;

pub struct PlainFilter<W: Write> {
    inner: W,
    f: Fidelity,
    scope: DbScope,
    /// The current line, while it may still need to be dropped.
    line: Vec<u8>,
    lex: Lex,
    /// Inside COPY data: the first bytes of the current data line (up to 3,
    /// enough to tell the `\.` end marker).
    copy: Option<Vec<u8>>,
    /// Set when the whole stream is known good: flush emits the last
    /// partial line.
    release: Arc<AtomicBool>,
}

#[derive(Default, Clone, PartialEq, Eq, Debug)]
enum Lex {
    /// Between statements: the next non-blank line starts one.
    #[default]
    Boundary,
    /// Inside a statement, outside quotes.
    Statement,
    Quote,
    Dollar(String),
}

impl<W: Write> PlainFilter<W> {
    /// `into` is the database the dump loads into.
    pub fn new(inner: W, f: Fidelity, into: &str, release: Arc<AtomicBool>) -> Self {
        PlainFilter {
            inner,
            f,
            scope: DbScope::new(into),
            line: Vec::new(),
            lex: Lex::Boundary,
            copy: None,
            release,
        }
    }

    fn drops(&self, line: &str) -> bool {
        let l = line.trim_end();
        if !l.ends_with(';') {
            return false;
        }
        (self.f.no_owner && l.starts_with("ALTER ") && l.contains(" OWNER TO "))
            || (self.f.no_acl
                && (l.starts_with("GRANT ")
                    || l.starts_with("REVOKE ")
                    || l.starts_with("ALTER DEFAULT PRIVILEGES ")))
            || (self.f.no_tablespaces
                && l.starts_with("SET default_tablespace = ")
                && l != "SET default_tablespace = '';")
    }

    /// A whole DDL line (without its newline): pass, drop or rewrite it.
    fn ddl_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut text = String::from_utf8_lossy(line);
        let at_start = self.lex == Lex::Boundary;
        if at_start {
            match self.scope.judge(&text) {
                Verdict::Pass => {}
                Verdict::Drop => return Ok(()),
                Verdict::Rewrite(to) => text = to.into(),
                Verdict::Refuse(why) => {
                    return Err(std::io::Error::other(crate::error::UsageError(why)))
                }
            }
        }
        if at_start && self.drops(&text) {
            return Ok(()); // a one-line statement: nothing else to track
        }
        if at_start && text.starts_with('\\') {
            // A psql meta-command ends with its line.
            self.inner.write_all(text.as_bytes())?;
            return self.inner.write_all(b"\n");
        }
        if at_start && text.starts_with("COPY ") && text.trim_end().ends_with("FROM stdin;") {
            self.copy = Some(Vec::new());
        } else {
            self.lex = lex_line(std::mem::take(&mut self.lex), &text);
        }
        self.inner.write_all(text.as_bytes())?;
        self.inner.write_all(b"\n")
    }

    /// Pass COPY data through until its `\.` line; returns bytes used.
    fn copy_bytes(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut used = 0;
        while let Some(start) = self.copy.as_mut() {
            let rest = &data[used..];
            if rest.is_empty() {
                break;
            }
            let (part, ended) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            if start.len() < 3 {
                let take = part.len().min(3 - start.len());
                start.extend_from_slice(&part[..take]);
            }
            let is_end = ended && start.as_slice() == b"\\.";
            let n = part.len() + usize::from(ended);
            self.inner.write_all(&rest[..n])?;
            used += n;
            if ended {
                self.copy = if is_end { None } else { Some(Vec::new()) };
            }
        }
        Ok(used)
    }
}

impl<W: Write> Write for PlainFilter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.copy.is_some() {
                let n = self.copy_bytes(rest)?;
                rest = &rest[n..];
                continue;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.line);
                    line.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    self.ddl_line(&line)?;
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    if self.line.len() > LINE_LIMIT {
                        // No one-line owner, ACL or tablespace statement is
                        // this long: pass it on rather than hold it (memory
                        // stays bounded whatever the dump holds).
                        let line = std::mem::take(&mut self.line);
                        self.lex = lex_line(
                            std::mem::take(&mut self.lex),
                            &String::from_utf8_lossy(&line),
                        );
                        self.inner.write_all(&line)?;
                    }
                }
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.release.load(Ordering::SeqCst) && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.inner.write_all(&line)?;
        }
        self.inner.flush()
    }
}

/// Lex one line from state `state`; returns the state after it.
fn lex_line(mut state: Lex, line: &str) -> Lex {
    let b = line.as_bytes();
    let mut i = 0;
    if state == Lex::Boundary && !line.trim().is_empty() && !line.trim_start().starts_with("--") {
        state = Lex::Statement;
    }
    while i < b.len() {
        match &state {
            Lex::Boundary => {
                if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
                    break;
                }
                if !b[i].is_ascii_whitespace() {
                    state = Lex::Statement;
                    continue;
                }
            }
            Lex::Statement => match b[i] {
                b'-' if b.get(i + 1) == Some(&b'-') => break,
                b'\'' => state = Lex::Quote,
                b'$' => {
                    let tag_end = b[i + 1..]
                        .iter()
                        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                        .map(|p| i + 1 + p);
                    if let Some(e) = tag_end.filter(|&e| b[e] == b'$') {
                        let tag = line[i..=e].to_string();
                        // `$1` (a parameter) is not a quote: tags start with a letter or `_`.
                        if e == i + 1 || !b[i + 1].is_ascii_digit() {
                            state = Lex::Dollar(tag);
                            i = e;
                        }
                    }
                }
                b';' => state = Lex::Boundary,
                _ => {}
            },
            Lex::Quote => {
                if b[i] == b'\'' {
                    if b.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        state = Lex::Statement;
                    }
                }
            }
            Lex::Dollar(tag) => {
                if line[i..].starts_with(tag.as_str()) {
                    i += tag.len() - 1;
                    state = Lex::Statement;
                }
            }
        }
        i += 1;
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(sql: &str, f: Fidelity, step: usize) -> String {
        let release = Arc::new(AtomicBool::new(false));
        let mut out = PlainFilter::new(Vec::new(), f, "db", Arc::clone(&release));
        for part in sql.as_bytes().chunks(step) {
            out.write_all(part).unwrap();
        }
        release.store(true, Ordering::SeqCst);
        out.flush().unwrap();
        String::from_utf8(out.inner).unwrap()
    }

    const DUMP: &str = "SET default_tablespace = fast;\n\
CREATE TABLE public.t (v text);\n\
ALTER TABLE public.t OWNER TO alice;\n\
CREATE FUNCTION public.f() RETURNS void\n    LANGUAGE plpgsql\n    AS $_$\nBEGIN\nGRANT SELECT ON t TO bob;\nALTER TABLE t OWNER TO eve;\nEND\n$_$;\n\
ALTER FUNCTION public.f() OWNER TO alice;\n\
COMMENT ON TABLE public.t IS 'multi\nGRANT ALL ON t TO x;\nline';\n\
COPY public.t (v) FROM stdin;\nGRANT SELECT ON t TO bob;\nALTER TABLE t OWNER TO eve;\n\\\\.\n\\.\n\
REVOKE ALL ON TABLE public.t FROM PUBLIC;\n\
GRANT SELECT ON TABLE public.t TO bob;\n\
ALTER DEFAULT PRIVILEGES FOR ROLE alice GRANT SELECT ON TABLES TO bob;\n\
SELECT pg_catalog.lo_create('16390');\nALTER LARGE OBJECT 16390 OWNER TO alice;\n";

    #[test]
    fn a_huge_line_streams_through_without_being_held() {
        let f = Fidelity {
            no_owner: true,
            ..Fidelity::default()
        };
        let huge = format!(
            "INSERT INTO t VALUES ('{}');\nALTER TABLE t OWNER TO a;\n",
            "x".repeat(3 * LINE_LIMIT)
        );
        let release = Arc::new(AtomicBool::new(false));
        let mut out = PlainFilter::new(Vec::new(), f, "db", Arc::clone(&release));
        for part in huge.as_bytes().chunks(64 << 10) {
            out.write_all(part).unwrap();
            assert!(
                out.line.len() <= LINE_LIMIT + (64 << 10),
                "held {} bytes",
                out.line.len()
            );
        }
        release.store(true, Ordering::SeqCst);
        out.flush().unwrap();
        let text = String::from_utf8(out.inner).unwrap();
        assert!(
            text.starts_with("INSERT INTO t VALUES ('xxx") && text.ends_with("');\n"),
            "{}",
            &text[text.len() - 40..]
        );
        assert!(
            !text.contains("OWNER TO"),
            "the statement after it is still filtered"
        );
    }

    #[test]
    fn owner_acl_and_tablespace_statements_go_and_look_alikes_stay() {
        let all = Fidelity {
            no_owner: true,
            no_acl: true,
            no_tablespaces: true,
            server_locale: false,
        };
        for step in [1, 2, 5, 64, 100_000] {
            let out = filter(DUMP, all, step);
            let expected = "CREATE TABLE public.t (v text);\n\
CREATE FUNCTION public.f() RETURNS void\n    LANGUAGE plpgsql\n    AS $_$\nBEGIN\nGRANT SELECT ON t TO bob;\nALTER TABLE t OWNER TO eve;\nEND\n$_$;\n\
COMMENT ON TABLE public.t IS 'multi\nGRANT ALL ON t TO x;\nline';\n\
COPY public.t (v) FROM stdin;\nGRANT SELECT ON t TO bob;\nALTER TABLE t OWNER TO eve;\n\\\\.\n\\.\n\
SELECT pg_catalog.lo_create('16390');\n";
            assert_eq!(out, expected, "step {step}");
        }
        // Nothing asked, nothing changed.
        assert_eq!(filter(DUMP, Fidelity::default(), 7), DUMP);
    }
}
