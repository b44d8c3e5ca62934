//! Point-in-time recovery for PostgreSQL: the write-ahead log streamed to
//! the same storages as the backups (`wal stream`), served back to a
//! recovering server (`wal fetch`, its restore_command), and physical base
//! backups to replay it onto (`backup --physical`, `restore --pgdata`).
//!
//! Nothing is installed on the database host: a role with REPLICATION and
//! a `pg_hba.conf` line are all it takes (pg_receivewal and pg_basebackup
//! use the replication protocol). Every WAL file is stored once, immutable
//! and hash-named ([`wal_names`]), so a restore proves each byte it replays.

pub mod archive;
pub mod base_tar;
pub mod check;
pub mod fetch;
pub mod prove;
pub mod recover;
pub mod stream;
pub mod wal_names;
pub mod window;
