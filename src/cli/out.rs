//! Everything commands print on stdout goes through here. A reader that
//! goes away (`backstop config check | head`) closes the pipe: further
//! output is dropped quietly instead of panicking with "Broken pipe", and
//! the command's exit code stays the one its work earned.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Write `text` to stdout; a closed pipe is remembered and ignored.
pub fn write(text: std::fmt::Arguments<'_>, newline: bool) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(text)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CLOSED.store(true, Ordering::Relaxed);
        } else {
            tracing::warn!("cannot write to stdout: {e}");
        }
    }
}

/// `println!` for command output.
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::out::write(format_args!($($t)*), true) };
}

/// `print!` for command output.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::out::write(format_args!($($t)*), false) };
}
