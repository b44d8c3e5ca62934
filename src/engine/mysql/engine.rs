//! What the engine registry sees of MariaDB/MySQL: its target config, its
//! `mysql://` (or `mariadb://`) destinations for restore and verify.

use super::tools::MyConn;
use super::MysqlTarget;
use crate::catalog::Layout;
use crate::engine::{Destination, Engine, Source, Starter, TargetSpec};
use crate::report::VerifySummary;
use crate::restore::{RestoreJob, RestoreOutcome, VerifyRequest};
use crate::storage::Storage;
use async_trait::async_trait;

pub struct Mysql;

impl Engine for Mysql {
    fn restore_options(&self) -> &'static [&'static str] {
        &["--database"]
    }

    fn connect_hint(&self, message: &str) -> Option<&'static str> {
        let hints: [(&str, &str); 5] = [
            ("Access denied for user", "the server refused the credentials: check `user` and `password`/`password_file`, and that the account's host part ('user'@'host') admits this client"),
            ("Unknown database", "check `database`: the server has no database of that name"),
            ("does not exist on", "check `database`: the server has no database of that name"),
            ("Can't connect", "nothing answers there: is the server running, on that host and port (bind-address; in Kubernetes the Service and its targetPort)?"),
            ("Unknown server host", "the host name does not resolve: check `host` (in Kubernetes the Service name, and the namespace as `name.namespace`)"),
        ];
        hints
            .iter()
            .find(|(needle, _)| message.contains(needle))
            .map(|(_, hint)| *hint)
    }

    fn kind(&self) -> &'static str {
        "mysql"
    }
    fn label(&self) -> &'static str {
        "MariaDB/MySQL"
    }
    fn url_form(&self) -> &'static str {
        "mysql://USER@HOST:PORT/DB"
    }
    fn starter(&self, url: &str) -> anyhow::Result<Starter> {
        let c = super::restore::parse_url(url).ok_or_else(|| {
            crate::error::usage("the URL must start with mysql:// or mariadb://")
        })??;
        let mut starter = Starter::server(url, &c.host, c.port, &c.user, &c.database);
        starter
            .keys
            .push_str("# databases = [\"a\", \"b\"]             # instead of database: several; or all = true\n");
        starter.keys.push_str(&format!(
            "# A backup user needs (without TRIGGER and the routine grant the dump tool leaves\n\
             # triggers and routines out and still succeeds; backstop refuses such a dump):\n\
             #   CREATE USER 'backup'@'%' IDENTIFIED BY '…';\n\
             #   GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `{db}`.* TO 'backup'@'%';\n\
             #   GRANT SELECT ON mysql.proc TO 'backup'@'%';      -- MariaDB; MySQL 8: GRANT SHOW_ROUTINE ON *.*\n",
            db = c.database
        ));
        Ok(starter)
    }
    fn destination(&self, url: &str) -> Option<anyhow::Result<Box<dyn Destination>>> {
        super::restore::parse_url(url).map(|conn| conn.map(|c| Box::new(MyDestination(c)) as _))
    }
}

/// A database on a MariaDB/MySQL server (for verify: the server).
pub struct MyDestination(pub MyConn);

#[async_trait]
impl Destination for MyDestination {
    fn engine(&self) -> &'static dyn Engine {
        &Mysql
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
        super::restore::verify(storage, layout, v, &self.0).await
    }
}

impl MyDestination {
    fn request(&self, job: RestoreJob) -> anyhow::Result<super::restore::MysqlRestore> {
        job.options
            .refuse_unsupported(Mysql.label(), Mysql.restore_options())?;
        Ok(super::restore::MysqlRestore {
            target: job.target,
            backup: job.backup,
            database: job.options.database,
            into: self.0.clone(),
            events_disabled: false,
            mode: job.mode,
            identity: job.identity,
            cancel: job.cancel,
        })
    }
}

impl TargetSpec for MysqlTarget {
    crate::engine::common_keys!();
    fn engine(&self) -> &'static dyn Engine {
        &Mysql
    }
    fn source(&self) -> Box<dyn Source> {
        Box::new(super::MysqlSource::from_config(self))
    }
    fn resolve(&mut self, base: &std::path::Path) -> Result<(), String> {
        MysqlTarget::resolve(self, base)
    }
}
