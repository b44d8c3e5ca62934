//! A live progress bar for a backup on a terminal: bytes dumped and stored,
//! rate, elapsed time, and a percentage with an ETA when the previous
//! backup's raw size is known (from its manifest). Off a terminal the
//! pipeline logs a progress line every 10 seconds instead.

use crate::report::human_bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar on stderr; `expected` is the raw size the dump will likely
    /// reach (the previous backup's), when there was one.
    pub fn new(target: &str, expected: Option<u64>) -> Progress {
        let bar = match expected.filter(|&n| n > 0) {
            Some(total) => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {percent:>3}% {bytes}/~{total_bytes} dumped, {msg}, {bytes_per_sec}, {elapsed} (eta {eta})",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bar
            }
            None => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} {spinner} {bytes} dumped, {msg}, {bytes_per_sec}, {elapsed}",
                    )
                    .expect("a valid template"),
                );
                bar
            }
        };
        bar.set_prefix(target.to_string());
        bar.set_message("0 B stored");
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress { bar }
    }

    /// Raw bytes dumped so far and bytes stored (after compression).
    pub fn update(&self, dumped: u64, stored: u64) {
        self.bar.set_position(dumped);
        self.bar
            .set_message(format!("{} stored", human_bytes(stored)));
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
