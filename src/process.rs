//! Child processes (pg_dump, pg_restore, psql): spawning without secrets in
//! argv, keeping the tail of stderr for reports, and killing the whole
//! process group so a wrapper script cannot leave its pg_dump running.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::secret::Secret;

/// How many stderr lines a report keeps.
pub const STDERR_TAIL_LINES: usize = 30;
const STDERR_LINE_MAX: usize = 1000;

/// A command to run; the environment may carry secrets, the arguments never.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, Secret)>,
}

impl ChildCommand {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ChildCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.to_string(), Secret::new(v)));
        self
    }

    /// The program's file name, for messages ("pg_dump").
    pub fn name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }

    /// Start it with the given stdin/stdout; stderr is always captured.
    pub fn spawn(&self, stdin: Stdio, stdout: Stdio, log_label: &str) -> std::io::Result<Running> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            // Own process group: signals to backstop's terminal do not reach
            // it behind our back, and we can kill wrappers and their children.
            .process_group(0);
        for (k, v) in &self.env {
            cmd.env(k, v.expose());
        }
        let mut child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", self.program.display()),
            )
        })?;
        let stderr = child.stderr.take().expect("stderr was piped");
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail_writer = Arc::clone(&tail);
        let label = log_label.to_string();
        let program = self.name();
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let mut text = String::from_utf8_lossy(&line).into_owned();
                if text.len() > STDERR_LINE_MAX {
                    let mut cut = STDERR_LINE_MAX;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                    text.push('…');
                }
                match Severity::of(&text) {
                    Severity::Error => {
                        tracing::error!(target: "backstop::child", child = %program, target_name = %label, "{text}")
                    }
                    Severity::Warning => {
                        tracing::warn!(target: "backstop::child", child = %program, target_name = %label, "{text}")
                    }
                    Severity::Info => {
                        tracing::info!(target: "backstop::child", child = %program, target_name = %label, "{text}")
                    }
                }
                let mut t = tail_writer.lock().expect("stderr tail lock");
                if t.len() == STDERR_TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(text);
            }
        });
        Ok(Running {
            pid: child.id() as i32,
            child,
            name: self.name(),
            tail,
            stderr_thread: Some(stderr_thread),
        })
    }
}

/// How a child's stderr line is logged: its errors as errors (psql's and
/// pg_restore's `ERROR:`/`FATAL:`, pg_dump's `error:`, the MariaDB
/// client's `ERROR 1064 (42000)`), its warnings as warnings.
#[derive(Debug, PartialEq, Eq)]
enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    fn of(line: &str) -> Severity {
        const ERRORS: [&str; 5] = ["ERROR:", "FATAL:", "PANIC:", "error:", "ERROR "];
        const WARNINGS: [&str; 2] = ["WARNING:", "warning:"];
        if ERRORS.iter().any(|e| line.contains(e)) {
            Severity::Error
        } else if WARNINGS.iter().any(|w| line.contains(w)) {
            Severity::Warning
        } else {
            Severity::Info
        }
    }
}

pub struct Running {
    pid: i32,
    pub child: Child,
    name: String,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

/// Lets another thread kill a running child's process group.
#[derive(Debug, Clone, Copy)]
pub struct KillHandle(i32);

impl KillHandle {
    pub fn kill(&self) {
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created at spawn; a stale group id at worst gets ESRCH.
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

#[derive(Debug, Clone)]
pub struct Finished {
    pub name: String,
    pub status: ExitStatus,
    pub stderr_tail: Vec<String>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// "pg_dump exited 1" / "pg_dump was killed by signal 9".
    pub fn describe(&self) -> String {
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => format!("{} exited {code}", self.name),
            (None, Some(sig)) => format!("{} was killed by signal {sig}", self.name),
            _ => format!("{} ended abnormally", self.name),
        }
    }

    /// `describe()` plus the line that explains the failure, for one-line
    /// errors: the last ERROR/FATAL line with the context lines after it
    /// (LINE, DETAIL, CONTEXT), else the last non-empty line. The last line
    /// alone is often a HINT, a WARNING or "Command was: …".
    pub fn describe_with_last_line(&self) -> String {
        let lines: Vec<&str> = self
            .stderr_tail
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        let is_error = |l: &&str| {
            l.contains("ERROR:")
                || l.contains("FATAL:")
                || l.contains(" error: ")
                || l.starts_with("error:")
        };
        let explanation = match lines.iter().rposition(is_error) {
            Some(i) => {
                let context = lines[i + 1..]
                    .iter()
                    .take_while(|l| !is_error(l))
                    .filter(|l| {
                        ["LINE ", "DETAIL:", "CONTEXT:", "HINT:", "Command was:"]
                            .iter()
                            .any(|p| l.contains(p))
                    })
                    .take(3)
                    .copied();
                std::iter::once(lines[i])
                    .chain(context)
                    .collect::<Vec<_>>()
                    .join(" | ")
            }
            None => match lines.last() {
                Some(l) => l.to_string(),
                None => return self.describe(),
            },
        };
        format!("{}: {explanation}", self.describe())
    }
}

impl Running {
    pub fn kill_handle(&self) -> KillHandle {
        KillHandle(self.pid)
    }

    pub fn kill(&self) {
        self.kill_handle().kill();
    }

    /// Wait for exit and for stderr to drain.
    pub fn wait(mut self) -> std::io::Result<Finished> {
        let status = self.child.wait()?;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let tail = self
            .tail
            .lock()
            .expect("stderr tail lock")
            .iter()
            .cloned()
            .collect();
        Ok(Finished {
            name: self.name.clone(),
            status,
            stderr_tail: tail,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A Running dropped without wait() means something went wrong on our
        // side: never leave the child behind.
        if self.stderr_thread.is_some() {
            self.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run a command to completion, capturing stdout (small outputs only:
/// version strings, query results).
pub fn run_capture(
    cmd: &ChildCommand,
    stdin_data: Option<&str>,
) -> std::io::Result<(Finished, String)> {
    use std::io::{Read, Write};
    let running = cmd.spawn(
        if stdin_data.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        },
        Stdio::piped(),
        "",
    )?;
    let mut running = running;
    if let Some(data) = stdin_data {
        let mut stdin = running.child.stdin.take().expect("stdin was piped");
        stdin.write_all(data.as_bytes())?;
    }
    let mut out = String::new();
    running
        .child
        .stdout
        .take()
        .expect("stdout was piped")
        .read_to_string(&mut out)?;
    let finished = running.wait()?;
    Ok((finished, out))
}

#[cfg(test)]
mod tests {

    /// Regression: a failing restore's `ERROR:` lines were logged at INFO.
    #[test]
    fn child_errors_are_logged_as_errors() {
        assert_eq!(
            Severity::of("psql:<stdin>:12: ERROR:  relation \"t\" does not exist"),
            Severity::Error
        );
        assert_eq!(
            Severity::of("pg_dump: error: query failed"),
            Severity::Error
        );
        assert_eq!(
            Severity::of("ERROR 1064 (42000) at line 3: You have an error"),
            Severity::Error
        );
        assert_eq!(
            Severity::of("pg_restore: warning: errors ignored on restore: 1"),
            Severity::Warning
        );
        assert_eq!(Severity::of("SET"), Severity::Info);
    }

    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn finished(lines: &[&str]) -> Finished {
        Finished {
            name: "pg_restore".into(),
            status: ExitStatus::from_raw(1 << 8),
            stderr_tail: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    /// Regression (error summaries showed a HINT, "Command was: …" or a
    /// WARNING, the last stderr line, instead of the ERROR).
    #[test]
    fn the_error_line_and_its_context_explain_a_failure() {
        let f = finished(&[
            "pg_restore: while PROCESSING TOC:",
            "pg_restore: from TOC entry 215; 1259 16390 TABLE t owner",
            "pg_restore: error: could not execute query: ERROR:  role \"owner\" does not exist",
            "Command was: ALTER TABLE public.t OWNER TO owner;",
            "WARNING:  errors ignored on restore: 1",
        ]);
        assert_eq!(
            f.describe_with_last_line(),
            "pg_restore exited 1: pg_restore: error: could not execute query: ERROR:  role \"owner\" does not exist | Command was: ALTER TABLE public.t OWNER TO owner;"
        );
        let f = finished(&[
            "psql:<stdin>:12: ERROR:  division by zero",
            "CONTEXT:  SQL function \"f\"",
        ]);
        assert_eq!(
            f.describe_with_last_line(),
            "pg_restore exited 1: psql:<stdin>:12: ERROR:  division by zero | CONTEXT:  SQL function \"f\""
        );
        let f = finished(&["something odd", ""]);
        assert_eq!(
            f.describe_with_last_line(),
            "pg_restore exited 1: something odd"
        );
    }
}
