//! Verify restores a backup into a scratch database, often on the
//! production server itself. An event restored there would run on the
//! server's schedule until the copy is dropped, and an event body may name
//! other databases. So the scratch copy's events are created disabled:
//! mysqldump writes each event as one line, `/*!50106 CREATE*/ …
//! /*!50106 EVENT … ON COMPLETION [NOT] PRESERVE ENABLE …`, and that ENABLE
//! becomes DISABLE on its way to the client. Every other line streams
//! through untouched and unbuffered (rows can make lines of any length).

use std::io::{self, Write};

/// How mysqldump starts an event's line.
const EVENT_LINE: &[u8] = b"/*!50106 CREATE*/";
/// An event's header comes first on its line: this much is enough.
const HEADER_MAX: usize = 64 * 1024;

enum State {
    /// At the start of a line: is it an event's?
    Start,
    /// In an event's line, buffered up to its end or HEADER_MAX.
    Event,
    /// In any other line: through as it comes.
    Pass,
}

pub struct EventsDisabled<W: Write> {
    inner: W,
    state: State,
    line: Vec<u8>,
}

impl<W: Write> EventsDisabled<W> {
    pub fn new(inner: W) -> Self {
        EventsDisabled {
            inner,
            state: State::Start,
            line: Vec::new(),
        }
    }

    fn emit_line(&mut self) -> io::Result<()> {
        if matches!(self.state, State::Event) {
            disable(&mut self.line);
        }
        self.inner.write_all(&self.line)?;
        self.line.clear();
        Ok(())
    }
}

/// The first `PRESERVE ENABLE` of an event header, disabled.
fn disable(line: &mut Vec<u8>) {
    const FROM: &[u8] = b"PRESERVE ENABLE";
    if let Some(at) = line.windows(FROM.len()).position(|w| w == FROM) {
        line.splice(at + 9..at + FROM.len(), b"DISABLE".iter().copied());
    }
}

impl<W: Write> Write for EventsDisabled<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n').map(|i| i + 1);
            match self.state {
                State::Pass => {
                    let n = end.unwrap_or(rest.len());
                    self.inner.write_all(&rest[..n])?;
                    rest = &rest[n..];
                    if end.is_some() {
                        self.state = State::Start;
                    }
                }
                State::Start => {
                    let want = EVENT_LINE.len() - self.line.len();
                    let n = end.unwrap_or(rest.len()).min(want);
                    self.line.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if self.line.last() == Some(&b'\n') {
                        self.emit_line()?;
                    } else if !EVENT_LINE.starts_with(&self.line) {
                        self.emit_line()?;
                        self.state = State::Pass;
                    } else if self.line.len() == EVENT_LINE.len() {
                        self.state = State::Event;
                    }
                }
                State::Event => {
                    let room = HEADER_MAX.saturating_sub(self.line.len());
                    let n = end.unwrap_or(rest.len()).min(room.max(1));
                    self.line.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    let ended = self.line.last() == Some(&b'\n');
                    if ended || self.line.len() >= HEADER_MAX {
                        self.emit_line()?;
                        self.state = if ended { State::Start } else { State::Pass };
                    }
                }
            }
        }
        Ok(buf.len())
    }

    /// The end of the stream: a line still held goes out as it is known.
    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.emit_line()?;
            self.state = State::Pass;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "CREATE TABLE t (a int);\n\
INSERT INTO t VALUES (1),(2);\n\
/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`%`*/ /*!50106 EVENT `purge` ON SCHEDULE EVERY 1 HOUR STARTS '2026-01-01 00:00:00' ON COMPLETION NOT PRESERVE ENABLE DO DELETE FROM prod.sessions */ ;;\n\
/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`%`*/ /*!50106 EVENT `off` ON SCHEDULE EVERY 1 DAY STARTS '2026-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE DO select 1 */ ;;\n\
INSERT INTO t VALUES ('PRESERVE ENABLE stays in data');\n\
-- Dump completed\n";

    fn filtered(chunk: usize) -> String {
        let mut f = EventsDisabled::new(Vec::new());
        for c in DUMP.as_bytes().chunks(chunk) {
            f.write_all(c).unwrap();
        }
        f.flush().unwrap();
        String::from_utf8(f.inner).unwrap()
    }

    #[test]
    fn events_come_disabled_and_everything_else_byte_for_byte() {
        let expected = DUMP.replacen(
            "NOT PRESERVE ENABLE DO DELETE",
            "NOT PRESERVE DISABLE DO DELETE",
            1,
        );
        for chunk in [1, 2, 7, 16, 17, 18, 64, 4096] {
            assert_eq!(filtered(chunk), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_long_line_streams_and_a_last_line_without_newline_is_kept() {
        let long = format!("INSERT INTO t VALUES ('{}');", "x".repeat(300_000));
        let mut f = EventsDisabled::new(Vec::new());
        f.write_all(long.as_bytes()).unwrap();
        assert_eq!(f.inner.len(), long.len(), "not held back");
        f.write_all(b"\n/*!50106 CREA").unwrap();
        f.flush().unwrap();
        assert!(String::from_utf8(f.inner)
            .unwrap()
            .ends_with("\n/*!50106 CREA"));
    }
}
