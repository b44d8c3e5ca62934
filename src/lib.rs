//! backstop: scheduled database backups that are proven restorable.
//!
//! The flow of one run is described in `shared/DESIGN.md`; the modules follow
//! it: a [`source`] produces a dump stream, the [`pipeline`] compresses
//! ([`codec`]), hashes and uploads it to a [`storage`], the [`catalog`] knows
//! the key layout and manifests, and [`restore`] goes the other way.

pub mod catalog;
pub mod cli;
pub mod codec;
#[macro_use]
pub mod config;
pub mod copy;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod fsutil;
pub mod history;
pub mod http;
pub mod keys;
pub mod lock;
pub mod logging;
pub mod notify;
pub mod pipeline;
pub mod pitr;
pub mod process;
pub mod progress;
pub mod prune;
pub mod report;
pub mod restore;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod secret;
pub mod signals;
pub mod sql;
pub mod storage;
pub mod tokens;

pub const TOOL_VERSION: &str = concat!("backstop ", env!("CARGO_PKG_VERSION"));
