//! The `[compression]` table: which codec, at which level, on how many cores.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Zstd,
    Gzip,
    None,
}

impl Algorithm {
    /// The word the config and manifests use.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zstd",
            Algorithm::Gzip => "gzip",
            Algorithm::None => "none",
        }
    }
}

/// A fixed level, or `"auto"` (zstd): adapted while streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Level {
    Fixed(i32),
    Auto(AutoWord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    Auto,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// zstd: "auto" (default) or 1–19 (negative: fast modes); gzip 1–9
    /// (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// Bounds of `level = "auto"`; default 1 and 9. A minimum of 1 keeps
    /// the output no larger than fixed level 1's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_level: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_level: Option<i32>,
    /// 0 means every core.
    #[serde(default)]
    pub threads: usize,
}

pub const AUTO_MIN_LEVEL: i32 = 1;
pub const AUTO_MAX_LEVEL: i32 = 9;

fn default_algorithm() -> Algorithm {
    Algorithm::Zstd
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithm: Algorithm::Zstd,
            level: None,
            min_level: None,
            max_level: None,
            threads: 0,
        }
    }
}

impl CompressionConfig {
    /// Whether the level adapts: zstd unless a fixed level is set.
    pub fn adaptive(&self) -> bool {
        self.algorithm == Algorithm::Zstd && !matches!(self.level, Some(Level::Fixed(_)))
    }

    /// Errors start with the key.
    pub fn validate(&self) -> Result<(), String> {
        let range = |algorithm| match algorithm {
            // Negative levels are zstd's --fast modes.
            Algorithm::Zstd => (-7, 19),
            Algorithm::Gzip => (1, 9),
            Algorithm::None => (0, 0),
        };
        let (lo, hi) = range(self.algorithm);
        // zstd reads 0 as "its default", which is not what a user who
        // wrote 0 meant: refused like any level out of range.
        let check = |key: &str, level: i32| {
            if level == 0 || !(lo..=hi).contains(&level) {
                Err(format!(
                    "{key}: {level} is out of range {lo}..={hi} for this algorithm"
                ))
            } else {
                Ok(())
            }
        };
        match (self.algorithm, self.level) {
            (Algorithm::None, Some(_)) => {
                return Err("level: not allowed with algorithm = \"none\"".into())
            }
            (Algorithm::Gzip, Some(Level::Auto(_))) => {
                return Err("level: \"auto\" is for zstd; give gzip a level 1..=9".into())
            }
            (_, Some(Level::Fixed(level))) => check("level", level)?,
            _ => {}
        }
        if self.min_level.is_some() || self.max_level.is_some() {
            if !self.adaptive() {
                return Err("min_level: only with zstd and level = \"auto\"".into());
            }
            let (min, max) = self.auto_bounds();
            check("min_level", min)?;
            check("max_level", max)?;
            if min > max {
                return Err(format!("min_level: {min} is above max_level {max}"));
            }
        }
        Ok(())
    }

    pub fn auto_bounds(&self) -> (i32, i32) {
        (
            self.min_level.unwrap_or(AUTO_MIN_LEVEL),
            self.max_level.unwrap_or(AUTO_MAX_LEVEL),
        )
    }
}
