//! The retention options, once for the config (`[retention]`) and the
//! command line (`prune --keep-daily 7 …`), as rustic's `KeepOptions`.

use super::Policy;
use crate::config::{HumanDuration, TimeZoneName};
use serde::{Deserialize, Serialize};

/// Which backups prune keeps: the `[retention]` tables of the config and
/// the `prune --keep-…` flags, defined once here (serde and clap).
#[derive(Debug, Clone, Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the newest N backups.
    #[serde(default)]
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest backup of each of the last N hours that have one.
    #[serde(default)]
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// ... of each of the last N days.
    #[serde(default)]
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// ... of each of the last N weeks.
    #[serde(default)]
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// ... of each of the last N months.
    #[serde(default)]
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// ... of each of the last N years.
    #[serde(default)]
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep everything newer than this ("36h", "7d").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<HumanDuration>,
    /// Keep everything (retention configured but deleting nothing).
    #[serde(default)]
    #[arg(long)]
    pub keep_all: bool,
    /// Objects without a manifest older than this are removed by prune.
    #[serde(default = "default_orphan_grace")]
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub orphan_grace: HumanDuration,
    /// Time zone of the hourly/daily/... periods; UTC by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "IANA")]
    pub timezone: Option<TimeZoneName>,
}

fn default_orphan_grace() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(24 * 3600))
}

impl RetentionConfig {
    pub fn policy(&self) -> crate::retention::Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within.map(|d| d.0),
            keep_all: self.keep_all,
            timezone: self.timezone.map_or(chrono_tz::UTC, |t| t.0),
        }
    }
}
