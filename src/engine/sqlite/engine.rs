//! What the engine registry sees of SQLite: its target config, its
//! `sqlite:///path` destinations for restore and verify.

use super::SqliteTarget;
use crate::catalog::Layout;
use crate::engine::{Destination, Engine, Source, Starter, TargetSpec};
use crate::report::VerifySummary;
use crate::restore::{RestoreJob, RestoreOutcome, VerifyRequest};
use crate::storage::Storage;
use async_trait::async_trait;
use std::path::PathBuf;

pub struct Sqlite;

impl Engine for Sqlite {
    fn connect_hint(&self, message: &str) -> Option<&'static str> {
        (message.contains("unable to open database file") || message.contains("No such file"))
            .then_some("check `path`: the file must exist and be readable by this user")
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
    fn label(&self) -> &'static str {
        "SQLite"
    }
    fn url_form(&self) -> &'static str {
        "sqlite:///PATH"
    }
    fn starter(&self, url: &str) -> anyhow::Result<Starter> {
        let path = super::restore::parse_url(url)
            .ok_or_else(|| crate::error::usage("the URL must be sqlite:///PATH"))?;
        Ok(Starter {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            keys: format!(
                "path = {}\n",
                toml::Value::from(path.to_string_lossy().as_ref())
            ),
        })
    }
    fn destination(&self, url: &str) -> Option<anyhow::Result<Box<dyn Destination>>> {
        let path = super::restore::parse_url(url)?;
        Some(Ok(Box::new(SqliteDestination(path))))
    }
    /// `snapshot PATH`: the consistent copy, to stdout.
    fn helper(&self, args: &[std::ffi::OsString]) -> Option<anyhow::Result<()>> {
        match args {
            [what, path] if what == "snapshot" => {
                Some(super::snapshot::to_stdout(std::path::Path::new(path)))
            }
            _ => None,
        }
    }
    /// Verify needs no server: the copy goes to the temp directory.
    fn default_scratch(&self) -> Option<Box<dyn Destination>> {
        Some(Box::new(SqliteDestination(std::env::temp_dir())))
    }
}

/// A database file (for verify: the directory the scratch copy goes in).
pub struct SqliteDestination(pub PathBuf);

#[async_trait]
impl Destination for SqliteDestination {
    fn engine(&self) -> &'static dyn Engine {
        &Sqlite
    }

    async fn restore(
        &self,
        storage: &dyn Storage,
        layout: &Layout,
        job: RestoreJob,
    ) -> anyhow::Result<RestoreOutcome> {
        job.options
            .refuse_unsupported(Sqlite.label(), Sqlite.restore_options())?;
        let req = super::restore::SqliteRestore {
            target: job.target,
            backup: job.backup,
            path: self.0.clone(),
            mode: job.mode,
            identity: job.identity,
            cancel: job.cancel,
        };
        super::restore::restore(storage, layout, req).await
    }

    async fn verify(
        &self,
        storage: &dyn Storage,
        layout: &Layout,
        v: VerifyRequest<'_>,
    ) -> anyhow::Result<(RestoreOutcome, VerifySummary)> {
        super::restore::verify(storage, layout, v, &self.0).await
    }
}

impl TargetSpec for SqliteTarget {
    crate::engine::common_keys!();
    fn engine(&self) -> &'static dyn Engine {
        &Sqlite
    }
    fn source(&self) -> Box<dyn Source> {
        Box::new(super::SqliteSource::from_config(self))
    }
    fn resolve(&mut self, base: &std::path::Path) -> Result<(), String> {
        self.validate()?;
        self.path = base.join(&self.path);
        Ok(())
    }
}
