//! `restore --replace` for MariaDB/MySQL: the backup is restored in full
//! beside the live database first, then the two swap contents. There is no
//! RENAME DATABASE, and RENAME TABLE moves neither views nor tables with
//! triggers across schemas, so the swap goes by kind of object:
//!
//! 1. the views, triggers, routines and events of both databases are read
//!    as SQL by the dump tool (schema-free, so they load into any name);
//! 2. they are dropped (the live database's: from here on a failure puts
//!    them back);
//! 3. one RENAME TABLE moves the live tables aside and the restored ones
//!    in: a single statement, so the tables are all old or all new;
//! 4. the restored database's code is loaded into the live name.
//!
//! A failure in 3 or 4 moves the tables back and reloads the old code, so
//! the name ends up either wholly restored or as it was. Sessions are not
//! ended (MariaDB cannot fence a database): stop the application first.
//! Before anything changes, every live table is locked once and released:
//! a session holding one (an open transaction) would make the drops and
//! the rename wait, possibly after some code was dropped, so the swap does
//! not start until it is gone, and gives up, having changed nothing, after
//! [`PROBE_WAIT`] seconds.

use super::tools::{self, ident, literal, MyConn, MyTools};
use anyhow::{bail, Context};

/// How long the swap waits for sessions to release the live tables before
/// it starts (and changes nothing).
pub const PROBE_WAIT: u32 = 10;
/// Any later step's wait for a table lock: never the server's default of a
/// year.
const STEP_WAIT: u32 = 120;

/// The databases of one swap, all on `server`.
pub struct Swap<'a> {
    pub tools: &'a MyTools,
    pub server: &'a MyConn,
    /// The database being replaced.
    pub live: &'a str,
    /// The complete restore, beside it.
    pub restored: &'a str,
    /// Where the live tables go; kept (with their code, events disabled)
    /// when `keep`, else dropped.
    pub aside: &'a str,
    pub keep: bool,
}

impl Swap<'_> {
    /// Ok when the live name holds the restored database. The working
    /// databases are removed in every outcome but a failed put-back, whose
    /// error names them.
    pub fn run(&self) -> anyhow::Result<()> {
        let mut created_aside = false;
        let (new_code, old_code) = match self.prepare(&mut created_aside) {
            Ok(code) => code,
            Err(e) => {
                // `aside` may be a kept name that existed already: only
                // what this swap created is dropped.
                if created_aside {
                    self.drop_quietly(self.aside);
                }
                self.drop_quietly(self.restored);
                return Err(e.context("nothing was replaced"));
            }
        };
        // From here the live database changes: a failure puts it back.
        let moved = std::cell::Cell::new(false);
        let swapped = (|| {
            self.drop_code(self.live)?;
            self.move_tables(&[(self.live, self.aside), (self.restored, self.live)])?;
            moved.set(true);
            self.load(self.live, &new_code)
        })();
        if let Err(e) = swapped {
            return Err(self.put_back(&old_code, moved.get(), e));
        }
        self.finish(&old_code);
        Ok(())
    }

    /// Everything before the live database changes: both databases'
    /// definitions, no session on the live tables, `aside` created, the
    /// restored database's views and triggers dropped (they would stop its
    /// tables from moving).
    fn prepare(&self, created_aside: &mut bool) -> anyhow::Result<(String, String)> {
        let version = tools::query(self.tools, self.server, "SELECT VERSION();")?;
        let dump = tools::dump_for(&version)?;
        let new_code = self.code(&dump, self.restored)?;
        let old_code = self.code(&dump, self.live)?;
        self.probe_locks()?;
        let defaults = tools::database_defaults(self.tools, self.server, self.live)?;
        self.sql(&tools::create_sql(self.aside, &defaults))?;
        *created_aside = true;
        self.drop_code(self.restored)?;
        Ok((new_code, old_code))
    }

    /// After the swap: the replace is done whatever happens here, so a
    /// failure is a warning that names what is left, never an error.
    fn finish(&self, old_code: &str) {
        if self.keep {
            let kept = self
                .load(self.aside, old_code)
                .and_then(|()| self.disable_events(self.aside));
            if let Err(e) = kept {
                tracing::warn!(database = %self.live, kept = %self.aside, "the database was replaced, but the kept copy lacks some of its views, triggers, routines or events, or runs its events: {e:#}");
            }
        } else {
            self.drop_quietly(self.aside);
        }
        self.drop_quietly(self.restored);
    }

    fn drop_quietly(&self, db: &str) {
        if let Err(e) = self.sql(&format!("DROP DATABASE IF EXISTS {};", ident(db))) {
            tracing::warn!(database = %db, "could not drop backstop's working database; drop it by hand: {e:#}");
        }
    }

    /// After a failed swap: the restored tables back to their database
    /// (when they had moved), the live ones and their code back under the
    /// live name, the working databases dropped.
    fn put_back(&self, old_code: &str, moved: bool, failed: anyhow::Error) -> anyhow::Error {
        let undone = (|| {
            self.drop_code(self.live)?;
            if moved {
                self.move_tables(&[(self.live, self.restored), (self.aside, self.live)])?;
            }
            self.load(self.live, old_code)
        })();
        match undone {
            Ok(()) => {
                self.drop_quietly(self.aside);
                self.drop_quietly(self.restored);
                failed.context(format!(
                    "replacing database `{}`: it was put back as it was",
                    self.live
                ))
            }
            Err(e) => failed.context(format!(
                "replacing database `{}` failed, and so did putting it back ({e:#}): its \
                 original tables may be in `{}` and the restored ones in `{}`",
                self.live, self.aside, self.restored
            )),
        }
    }

    fn sql(&self, sql: &str) -> anyhow::Result<()> {
        let sql = format!("SET SESSION lock_wait_timeout = {STEP_WAIT};\n{sql}");
        tools::query(self.tools, self.server, &sql).map(drop)
    }

    /// Lock every live table once and release it: no session may hold one.
    fn probe_locks(&self) -> anyhow::Result<()> {
        let tables = self.tables(self.live)?;
        if tables.is_empty() {
            return Ok(());
        }
        let list = tables
            .iter()
            .map(|t| format!("{}.{} WRITE", ident(self.live), ident(t)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SET SESSION lock_wait_timeout = {PROBE_WAIT};\nLOCK TABLES {list};\nUNLOCK TABLES;"
        );
        tools::query(self.tools, self.server, &sql)
            .map(drop)
            .with_context(|| {
                format!(
                "sessions are using the tables of `{}` (no lock within {PROBE_WAIT} s): stop the \
                 application, then restore again",
                self.live
            )
            })
    }

    fn list(&self, sql: &str) -> anyhow::Result<Vec<String>> {
        let out = tools::query(self.tools, self.server, sql)?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// Tables, sequences and system-versioned tables: all but views.
    fn tables(&self, db: &str) -> anyhow::Result<Vec<String>> {
        self.list(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME;",
            literal(db)
        ))
    }

    fn views(&self, db: &str) -> anyhow::Result<Vec<String>> {
        self.list(&format!(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {} ORDER BY TABLE_NAME;",
            literal(db)
        ))
    }

    /// One atomic RENAME TABLE moving every table of each `from` to its `to`.
    fn move_tables(&self, moves: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut pairs = Vec::new();
        for (from, to) in moves {
            for t in self.tables(from)? {
                pairs.push(format!(
                    "{}.{} TO {}.{}",
                    ident(from),
                    ident(&t),
                    ident(to),
                    ident(&t)
                ));
            }
        }
        if pairs.is_empty() {
            return Ok(());
        }
        self.sql(&format!("RENAME TABLE {};", pairs.join(", ")))
            .context("moving the tables")
    }

    /// The views, triggers, routines and events of `db` as SQL, from the
    /// dump tool (views by name: it writes them without the schema).
    fn code(&self, tool: &super::flavour::Choice, db: &str) -> anyhow::Result<String> {
        let options = self.server.option_file()?;
        let dump = |extra: &[&str], names: &[String]| -> anyhow::Result<String> {
            let mut cmd = tools::command(&tool.tool.path, &options);
            for a in &tool.extra_args {
                cmd = cmd.arg(a);
            }
            let mut cmd = cmd
                .arg("--no-data")
                // Definitions only: no table locks (an open transaction
                // would make the default LOCK TABLES wait for it).
                .arg("--skip-lock-tables")
                .arg("--skip-comments")
                .arg("--default-character-set=utf8mb4");
            for a in extra {
                cmd = cmd.arg(a);
            }
            cmd = cmd.arg(db);
            for n in names {
                cmd = cmd.arg(n);
            }
            let (finished, out) = crate::process::run_capture(&cmd, None)
                .with_context(|| format!("reading the definitions in `{db}`"))?;
            if !finished.success() {
                bail!(
                    "reading the definitions in `{db}`: {}",
                    finished.describe_with_last_line()
                );
            }
            Ok(out)
        };
        let views = self.views(db)?;
        let mut script = String::new();
        if !views.is_empty() {
            script.push_str(&dump(&["--skip-triggers"], &views)?);
        }
        script.push_str(&dump(
            &["--no-create-info", "--triggers", "--routines", "--events"],
            &[],
        )?);
        Ok(script)
    }

    /// Drop the views, triggers, routines and events of `db`.
    fn drop_code(&self, db: &str) -> anyhow::Result<()> {
        let d = literal(db);
        let mut sql = String::new();
        for t in self.list(&format!(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {d};"
        ))? {
            sql.push_str(&format!("DROP TRIGGER {}.{};\n", ident(db), ident(&t)));
        }
        for v in self.views(db)? {
            sql.push_str(&format!("DROP VIEW {}.{};\n", ident(db), ident(&v)));
        }
        for r in self.list(&format!(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {d};"
        ))? {
            let (kind, name) = r.split_once('\t').unwrap_or(("PROCEDURE", &r));
            sql.push_str(&format!("DROP {kind} {}.{};\n", ident(db), ident(name)));
        }
        for e in self.events(db)? {
            sql.push_str(&format!("DROP EVENT {}.{};\n", ident(db), ident(&e)));
        }
        if sql.is_empty() {
            return Ok(());
        }
        self.sql(&sql)
            .with_context(|| format!("dropping the views, triggers, routines and events of `{db}`"))
    }

    fn events(&self, db: &str) -> anyhow::Result<Vec<String>> {
        self.list(&format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {};",
            literal(db)
        ))
    }

    /// The kept database must not run the old events against its copy.
    fn disable_events(&self, db: &str) -> anyhow::Result<()> {
        for e in self.events(db)? {
            self.sql(&format!("ALTER EVENT {}.{} DISABLE;", ident(db), ident(&e)))?;
        }
        Ok(())
    }

    fn load(&self, db: &str, script: &str) -> anyhow::Result<()> {
        let script = format!("SET SESSION lock_wait_timeout = {STEP_WAIT};\n{script}");
        tools::query(self.tools, &self.server.with_database(db), &script)
            .map(drop)
            .with_context(|| format!("creating the views, triggers, routines and events in `{db}`"))
    }
}
