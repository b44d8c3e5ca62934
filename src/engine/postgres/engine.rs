//! What the engine registry sees of PostgreSQL: its target config, its
//! `postgres://` destinations for restore and verify.

use super::config::PostgresTarget;
use super::tools::PgConn;
use crate::catalog::Layout;
use crate::engine::{Destination, Engine, Source, Starter, TargetSpec};
use crate::report::VerifySummary;
use crate::restore::{RestoreJob, RestoreOutcome, VerifyRequest};
use crate::storage::Storage;
use async_trait::async_trait;

pub struct Postgres;

impl Engine for Postgres {
    fn connect_hint(&self, message: &str) -> Option<&'static str> {
        super::tools::connect_hint(message)
    }

    fn restore_options(&self) -> &'static [&'static str] {
        &[
            "--no-owner",
            "--no-acl",
            "--no-tablespaces",
            "--server-locale",
            "--jobs",
            "--maintenance-db",
        ]
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn label(&self) -> &'static str {
        "PostgreSQL"
    }
    fn url_form(&self) -> &'static str {
        "postgres://USER@HOST:PORT/DB"
    }
    fn starter(&self, url: &str) -> anyhow::Result<Starter> {
        let c = super::url::parse_pg_url(url)?;
        let mut starter = Starter::server(url, &c.host, c.port, &c.user, &c.database);
        starter.keys.push_str(
            "format = \"custom\"                     # custom (pg_restore) | plain (SQL)\n",
        );
        starter.keys.push_str(&format!(
            "# A backup role needs to read, not to own (`backstop check` names what it lacks):\n\
             #   CREATE ROLE backup LOGIN PASSWORD '…';\n\
             #   GRANT CONNECT ON DATABASE {db} TO backup;\n\
             #   GRANT pg_read_all_data TO backup;          -- PostgreSQL 14+: every table, sequence, large object\n\
             # globals = true (roles, tablespaces) reads role passwords only as a superuser;\n\
             # role_passwords = false dumps the roles without them, as backup.\n",
            db = c.database
        ));
        Ok(starter)
    }
    fn destination(&self, url: &str) -> Option<anyhow::Result<Box<dyn Destination>>> {
        let (scheme, _) = url.split_once("://")?;
        matches!(scheme, "postgres" | "postgresql")
            .then(|| super::url::parse_pg_url(url).map(|conn| Box::new(PgDestination(conn)) as _))
    }
}

/// A database on a PostgreSQL server (for verify: the server, through the
/// database the URL names).
pub struct PgDestination(pub PgConn);

#[async_trait]
impl Destination for PgDestination {
    fn engine(&self) -> &'static dyn Engine {
        &Postgres
    }

    async fn restore(
        &self,
        storage: &dyn Storage,
        layout: &Layout,
        job: RestoreJob,
    ) -> anyhow::Result<RestoreOutcome> {
        super::restore::restore(storage, layout, self.request(job)?).await
    }

    async fn restore_file(
        &self,
        storage: &dyn Storage,
        key: &str,
        job: RestoreJob,
    ) -> anyhow::Result<RestoreOutcome> {
        super::restore::restore_file(storage, key, self.request(job)?).await
    }

    async fn verify(
        &self,
        storage: &dyn Storage,
        layout: &Layout,
        v: VerifyRequest<'_>,
    ) -> anyhow::Result<(RestoreOutcome, VerifySummary)> {
        super::verify::verify(storage, layout, v, &self.0).await
    }
}

impl PgDestination {
    /// PostgreSQL's own request (`restore --file` and `--globals` use it
    /// directly).
    pub fn request(&self, job: RestoreJob) -> anyhow::Result<super::restore::RestoreRequest> {
        job.options
            .refuse_unsupported(Postgres.label(), Postgres.restore_options())?;
        let maintenance = job.options.maintenance_db.as_deref().unwrap_or("postgres");
        Ok(super::restore::RestoreRequest {
            target: job.target,
            backup: job.backup,
            into: self.0.clone(),
            maintenance: self.0.with_database(maintenance),
            mode: job.mode,
            fidelity: job.options.fidelity,
            parallel: job.options.parallel,
            identity: job.identity,
            cancel: job.cancel,
        })
    }
}

impl TargetSpec for PostgresTarget {
    crate::engine::common_keys!();
    fn engine(&self) -> &'static dyn Engine {
        &Postgres
    }
    fn source(&self) -> Box<dyn Source> {
        Box::new(super::PostgresSource::from_config(self))
    }
    fn resolve(&mut self, base: &std::path::Path) -> Result<(), String> {
        PostgresTarget::resolve(self, base)
    }
}
