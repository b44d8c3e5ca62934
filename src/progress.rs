//! A live progress bar on a terminal: for a backup, bytes dumped and
//! stored, rate, elapsed time, and a percentage with an ETA when the
//! previous backup's raw size is known (from its manifest); for a restore,
//! the stored bytes read of the object's size. Off a terminal the pipeline
//! logs a progress line every 10 seconds instead, and restores show none.

use crate::report::human_bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A backup's bar on stderr; `expected` is the raw size the dump will
    /// likely reach (the previous backup's), when there was one.
    pub fn new(target: &str, expected: Option<u64>) -> Progress {
        Progress::start(
            target,
            expected,
            "{bytes}/~{total_bytes} dumped, {msg}",
            "{bytes} dumped, {msg}",
            "0 B stored",
        )
    }

    /// A restore's bar on stderr when it is a terminal: the stored bytes
    /// read of `size` (the manifest's; unknown for a dump file).
    pub fn reading(label: &str, size: Option<u64>) -> Option<Progress> {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return None;
        }
        Some(Progress::start(
            label,
            size,
            "{bytes}/{total_bytes} read",
            "{bytes} read",
            "",
        ))
    }

    fn start(prefix: &str, total: Option<u64>, counted: &str, open: &str, msg: &str) -> Progress {
        let (bar, template) = match total.filter(|&n| n > 0) {
            Some(total) => (
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                format!("{{prefix}} [{{bar:30}}] {{percent:>3}}% {counted}, {{bytes_per_sec}}, {{elapsed}} (eta {{eta}})"),
            ),
            None => (
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                format!("{{prefix}} {{spinner}} {open}, {{bytes_per_sec}}, {{elapsed}}"),
            ),
        };
        // Prefix and message before the style: the first frame is whole
        // (regression: it showed `dumped, , 0 B/s`).
        let bar = bar
            .with_prefix(prefix.to_string())
            .with_message(msg.to_string());
        bar.set_style(
            ProgressStyle::with_template(&template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress { bar }
    }

    /// Raw bytes dumped so far and bytes stored (after compression).
    pub fn update(&self, dumped: u64, stored: u64) {
        self.bar.set_position(dumped);
        self.bar
            .set_message(format!("{} stored", human_bytes(stored)));
    }

    /// Stored bytes read so far (a restore).
    pub fn read(&self, bytes: u64) {
        self.bar.set_position(bytes);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}
