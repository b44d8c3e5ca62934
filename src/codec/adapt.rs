//! `level = "auto"`: the zstd level follows whichever side is slower, the
//! way `zstd --adapt` does. Compressing harder is free while the compressor
//! waits (for the dump or for the storage) and costs dump time when the
//! dump waits for it; the level moves one step per observation window.
//!
//! Two signals, both measured rather than guessed:
//! - the dump's pipe: how full it is when we come to read it. Full means
//!   pg_dump is blocked on us (we are the bottleneck: step down); nearly
//!   empty, window after window, means we keep up with room to spare.
//! - the storage: time spent blocked handing chunks to the upload. A slow
//!   storage makes the whole pipeline wait anyway, so that time is spent
//!   on a better ratio (step up).

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long the signals are gathered before the level may move.
const WINDOW: Duration = Duration::from_millis(500);
/// Pipe fill at which the dump counts as waiting for us.
const FULL: f64 = 0.75;
/// Pipe fill under which we count as keeping up easily.
const EMPTY: f64 = 0.25;
/// Calm windows in a row before stepping up on the dump signal alone:
/// stepping up is the move that can cost dump time, so it waits for proof.
const CALM_WINDOWS: u32 = 3;
/// The pipe is enlarged to this, so that its fill says something.
const PIPE_BYTES: i32 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Down,
    Stay,
    Up,
}

/// One window's measurements, as fractions.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Of the window's time, blocked handing chunks to the storage.
    pub storage_blocked: f64,
    /// Of the reads, those that found the pipe nearly full.
    pub full_reads: f64,
    /// Of the reads, those that found it nearly empty.
    pub empty_reads: f64,
}

/// What one window says about the level (before the calm-window rule).
pub fn verdict(w: Window) -> Move {
    if w.storage_blocked > 0.25 {
        Move::Up
    } else if w.full_reads > 0.3 {
        Move::Down
    } else if w.empty_reads > 0.9 {
        Move::Up
    } else {
        Move::Stay
    }
}

pub struct Adapter {
    level: i32,
    min: i32,
    max: i32,
    started: Instant,
    reads: u32,
    full: u32,
    empty: u32,
    blocked_at_start: Duration,
    calm: u32,
    used: BTreeSet<i32>,
}

impl Adapter {
    pub fn new(level: i32, (min, max): (i32, i32)) -> Adapter {
        Adapter {
            level,
            min,
            max,
            started: Instant::now(),
            reads: 0,
            full: 0,
            empty: 0,
            blocked_at_start: Duration::ZERO,
            calm: 0,
            used: BTreeSet::from([level]),
        }
    }

    /// Before a read: how full the dump's pipe is (0..=1).
    pub fn observe_pipe(&mut self, fill: f64) {
        self.reads += 1;
        if fill >= FULL {
            self.full += 1;
        } else if fill < EMPTY {
            self.empty += 1;
        }
    }

    /// After a read: the new level, when the window just closed moves it.
    /// `storage_blocked` is the total time blocked on the storage so far.
    pub fn next_level(&mut self, storage_blocked: Duration) -> Option<i32> {
        let elapsed = self.started.elapsed();
        if elapsed < WINDOW || self.reads == 0 {
            return None;
        }
        let reads = f64::from(self.reads);
        let window = Window {
            storage_blocked: (storage_blocked - self.blocked_at_start).as_secs_f64()
                / elapsed.as_secs_f64(),
            full_reads: f64::from(self.full) / reads,
            empty_reads: f64::from(self.empty) / reads,
        };
        self.started = Instant::now();
        self.blocked_at_start = storage_blocked;
        (self.reads, self.full, self.empty) = (0, 0, 0);
        let wanted = match verdict(window) {
            Move::Up if window.storage_blocked > 0.25 => self.level + 1,
            Move::Up => {
                self.calm += 1;
                if self.calm < CALM_WINDOWS {
                    return None;
                }
                self.level + 1
            }
            Move::Down => self.level - 1,
            Move::Stay => self.level,
        };
        self.calm = 0;
        let wanted = wanted.clamp(self.min, self.max);
        if wanted == self.level {
            return None;
        }
        tracing::debug!(
            from = self.level,
            to = wanted,
            ?window,
            "compression level adapted"
        );
        self.level = wanted;
        self.used.insert(wanted);
        Some(wanted)
    }

    /// Every level used, lowest first (for the manifest).
    pub fn levels_used(&self) -> Vec<i32> {
        self.used.iter().copied().collect()
    }
}

/// The dump's pipe, for its fill: enlarged so the fill is meaningful.
pub struct Pipe {
    fd: i32,
    capacity: usize,
}

impl Pipe {
    pub fn of(reader: &impl AsRawFd) -> Pipe {
        let fd = reader.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; failure leaves the default.
        let capacity = unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES);
            libc::fcntl(fd, libc::F_GETPIPE_SZ)
        };
        Pipe {
            fd,
            capacity: usize::try_from(capacity).unwrap_or(64 << 10).max(1),
        }
    }

    /// Bytes waiting in the pipe, as a fraction of its capacity.
    pub fn fill(&self) -> f64 {
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        let ok = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut waiting) } == 0;
        if !ok {
            return 0.5; // unknown: neither full nor empty
        }
        waiting.max(0) as f64 / self.capacity as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(storage_blocked: f64, full_reads: f64, empty_reads: f64) -> Window {
        Window {
            storage_blocked,
            full_reads,
            empty_reads,
        }
    }

    #[test]
    fn the_level_follows_the_slower_side() {
        // A slow storage: harder, whatever the pipe says.
        assert_eq!(verdict(w(0.6, 1.0, 0.0)), Move::Up);
        // The dump waits for us: faster.
        assert_eq!(verdict(w(0.0, 0.8, 0.0)), Move::Down);
        // We drain the pipe every time: room to compress harder.
        assert_eq!(verdict(w(0.0, 0.0, 1.0)), Move::Up);
        // Neither: stay.
        assert_eq!(verdict(w(0.1, 0.2, 0.5)), Move::Stay);
    }

    #[test]
    fn stepping_up_on_the_dump_signal_waits_for_calm_windows_and_stays_in_bounds() {
        let mut a = Adapter::new(1, (1, 3));
        let mut levels = Vec::new();
        for _ in 0..12 {
            a.started -= WINDOW;
            a.observe_pipe(0.0);
            if let Some(l) = a.next_level(Duration::ZERO) {
                levels.push(l);
            }
        }
        assert_eq!(
            levels,
            [2, 3],
            "one step per {CALM_WINDOWS} calm windows, capped at max"
        );
        for _ in 0..5 {
            a.started -= WINDOW;
            a.observe_pipe(1.0);
            a.next_level(Duration::ZERO);
        }
        assert_eq!(a.level, 1, "down to min, not below");
        assert_eq!(a.levels_used(), [1, 2, 3]);
    }

    #[test]
    fn a_pipe_reports_its_fill() {
        use std::io::Write;
        let (reader, mut writer) = std::io::pipe().unwrap();
        let pipe = Pipe::of(&reader);
        assert_eq!(pipe.fill(), 0.0);
        writer.write_all(&vec![0u8; pipe.capacity / 2]).unwrap();
        assert!((pipe.fill() - 0.5).abs() < 0.01, "{}", pipe.fill());
    }
}
