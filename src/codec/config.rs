//! The `[compression]` table: which codec, at which level, on how many cores.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Zstd,
    Gzip,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// zstd -7–19 (negative: fast modes), gzip 1–9; unset means the
    /// codec's usual default (zstd 3, gzip 6).
    #[serde(default)]
    pub level: Option<i32>,
    /// 0 means every core.
    #[serde(default)]
    pub threads: usize,
}

fn default_algorithm() -> Algorithm {
    Algorithm::Zstd
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            algorithm: Algorithm::Zstd,
            level: None,
            threads: 0,
        }
    }
}
