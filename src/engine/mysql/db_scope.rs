//! A MariaDB/MySQL dump loads into the restore's own database and no other.
//!
//! `mariadb-dump --databases shop` writes `CREATE DATABASE … shop …;` and
//! `USE shop;`, and every dump with routines or events may write
//! `ALTER DATABASE shop CHARACTER SET …` around them (mysqldump's
//! `switch_db_collation`). Run as they are, they would write the live
//! `shop` while the restore's database stays empty. So, at statement starts
//! outside routine bodies (`DELIMITER ;`), the creation and dropping of
//! databases and the first `USE` are left out, and `ALTER DATABASE` loses
//! its name (it then applies to the current database, the restore's).
//! A `USE` of a second database (a dump of several) stops the restore
//! before the client sees it. Every other line streams through untouched
//! and unbuffered (rows make lines of any length).

use std::io::{self, Write};

/// The longest statement start kept to judge it; database statements are
/// short (a `CREATE DATABASE` with a comment of 1,024 characters fits).
const HEAD_MAX: usize = 8 * 1024;

/// Statement starts that are about a database, as the dump tools write them.
const WATCHED: [&str; 7] = [
    "CREATE DATABASE ",
    "/*!40000 DROP DATABASE ",
    "DROP DATABASE ",
    "USE ",
    "ALTER DATABASE ",
    "/*!50003 ALTER DATABASE ",
    "DELIMITER ",
];

enum State {
    /// At the start of a line, `line` holding what could still be watched.
    Start,
    /// In a watched line, buffered up to its end.
    Watched,
    /// In any other line: through as it comes.
    Pass,
}

pub struct DatabaseScoped<W: Write> {
    inner: W,
    state: State,
    line: Vec<u8>,
    /// Outside routine bodies (`DELIMITER ;`).
    top_level: bool,
    /// The database the dump switched to with its first `USE`.
    used: Option<String>,
}

impl<W: Write> DatabaseScoped<W> {
    pub fn new(inner: W) -> Self {
        DatabaseScoped {
            inner,
            state: State::Start,
            line: Vec::new(),
            top_level: true,
            used: None,
        }
    }

    /// A whole watched line (with its newline, if it had one).
    fn judge_line(&mut self) -> io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        let statement = text.trim_end();
        if let Some(d) = statement.strip_prefix("DELIMITER ") {
            self.top_level = d.trim() == ";";
            return self.inner.write_all(&line);
        }
        if !self.top_level {
            return self.inner.write_all(&line);
        }
        if statement.starts_with("CREATE DATABASE ")
            || statement.starts_with("/*!40000 DROP DATABASE ")
            || statement.starts_with("DROP DATABASE ")
        {
            tracing::info!(
                "the dump's `{}` is left out: it loads into the restore's database",
                short(statement)
            );
            return Ok(());
        }
        if let Some(rest) = statement.strip_prefix("USE ") {
            let name = rest.trim_end_matches(';').trim().to_string();
            return match &self.used {
                None => {
                    self.used = Some(name);
                    Ok(())
                }
                Some(first) if *first == name => Ok(()),
                Some(_) => Err(io::Error::other(crate::error::UsageError(format!(
                    "the dump file's statement `{}` was refused: the file holds more than one database; \
                     restore each from a dump of its own (nothing of it was run)",
                    short(statement)
                )))),
            };
        }
        for prefix in ["ALTER DATABASE ", "/*!50003 ALTER DATABASE "] {
            if let Some(rest) = text.strip_prefix(prefix) {
                if let Some(len) = quoted_len(rest) {
                    let unnamed = format!("{prefix}{}", &rest[len..].trim_start());
                    return self.inner.write_all(unnamed.as_bytes());
                }
            }
        }
        self.inner.write_all(&line)
    }
}

/// The length of a backquoted identifier at the start of `s`.
fn quoted_len(s: &str) -> Option<usize> {
    let q = s.strip_prefix('`')?;
    let mut i = 0;
    let b = q.as_bytes();
    while i < b.len() {
        if b[i] == b'`' {
            if b.get(i + 1) == Some(&b'`') {
                i += 2;
                continue;
            }
            return Some(i + 2);
        }
        i += 1;
    }
    None
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

fn could_be_watched(start: &[u8]) -> bool {
    WATCHED
        .iter()
        .any(|w| w.as_bytes().starts_with(start) || start.starts_with(w.as_bytes()))
}

impl<W: Write> Write for DatabaseScoped<W> {
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
                State::Start | State::Watched => {
                    let n = end.unwrap_or(rest.len());
                    self.line.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if end.is_some() {
                        if could_be_watched(&self.line) {
                            self.judge_line()?;
                        } else {
                            self.inner.write_all(&std::mem::take(&mut self.line))?;
                        }
                        self.state = State::Start;
                    } else if !could_be_watched(&self.line) {
                        self.inner.write_all(&std::mem::take(&mut self.line))?;
                        self.state = State::Pass;
                    } else if self.line.len() > HEAD_MAX {
                        return Err(io::Error::other(format!(
                            "a database statement in the dump is longer than {HEAD_MAX} bytes: {}…",
                            short(&String::from_utf8_lossy(&self.line))
                        )));
                    } else {
                        self.state = State::Watched;
                    }
                }
            }
        }
        Ok(buf.len())
    }

    /// The end of the stream: a line still held is judged as it is.
    fn flush(&mut self) -> io::Result<()> {
        if !self.line.is_empty() {
            self.judge_line()?;
            self.state = State::Pass;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "/*M!999999\\- enable the sandbox mode */ \n\
-- Host: 127.0.0.1    Database: shop\n\
/*!40000 DROP DATABASE IF EXISTS `shop`*/;\n\
CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET latin1 */ COMMENT 'hi';\n\
USE `shop`;\n\
CREATE TABLE `t` (`a` int);\n\
INSERT INTO `t` VALUES (1),(2);\n\
INSERT INTO `u` VALUES ('USE `other`;');\n\
/*!50003 ALTER DATABASE `shop` CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci */ ;\n\
DELIMITER ;;\n\
CREATE PROCEDURE p() BEGIN\n\
USE `x`;\n\
END ;;\n\
DELIMITER ;\n\
ALTER DATABASE `shop` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
-- Dump completed\n";

    fn filtered(dump: &str, chunk: usize) -> io::Result<String> {
        let mut f = DatabaseScoped::new(Vec::new());
        for c in dump.as_bytes().chunks(chunk) {
            f.write_all(c)?;
        }
        f.flush()?;
        Ok(String::from_utf8(f.inner).unwrap())
    }

    #[test]
    fn a_dump_of_shop_loads_into_the_current_database() {
        let expected = "/*M!999999\\- enable the sandbox mode */ \n\
-- Host: 127.0.0.1    Database: shop\n\
CREATE TABLE `t` (`a` int);\n\
INSERT INTO `t` VALUES (1),(2);\n\
INSERT INTO `u` VALUES ('USE `other`;');\n\
/*!50003 ALTER DATABASE CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci */ ;\n\
DELIMITER ;;\n\
CREATE PROCEDURE p() BEGIN\n\
USE `x`;\n\
END ;;\n\
DELIMITER ;\n\
ALTER DATABASE CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
-- Dump completed\n";
        for chunk in [1, 2, 5, 17, 64, 4096] {
            assert_eq!(
                filtered(DUMP, chunk).unwrap(),
                expected,
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn a_second_database_is_refused() {
        let two = format!("{DUMP}USE `other`;\nDROP TABLE t;\n");
        let err = filtered(&two, 7).unwrap_err();
        assert!(err.to_string().contains("USE `other`"), "{err}");
        assert!(err
            .get_ref()
            .is_some_and(|e| e.is::<crate::error::UsageError>()));
    }
}
