//! `backstop check`: everything a backup needs, tried for real before the
//! first night — each target connected to (server version, the pg_dump
//! that would be used), the storage written, read back and cleaned, the
//! token store read and its writability checked, and with `--notify` a test
//! through every notifier. The first step after deploying.

use super::ConfigArg;
use crate::config::StorageConfig;
use crate::error::ExitKind;
use crate::storage::{get_bytes, put_bytes};
use bytes::Bytes;
use clap::Args;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also send a test message through every notifier.
    #[arg(long)]
    pub notify: bool,
}

/// One line of the check table.
struct Line {
    ok: bool,
    what: String,
    detail: String,
}

impl Line {
    fn of(what: impl Into<String>, result: anyhow::Result<String>) -> Line {
        match result {
            Ok(detail) => Line {
                ok: true,
                what: what.into(),
                detail,
            },
            Err(e) => {
                let text = format!("{e:#}");
                let hint = crate::engine::postgres::tools::connect_hint(&text)
                    .map(|h| format!("\n      hint: {h}"))
                    .unwrap_or_default();
                Line {
                    ok: false,
                    what: what.into(),
                    detail: format!("{text}{hint}"),
                }
            }
        }
    }
}

pub async fn run(args: CheckArgs) -> anyhow::Result<ExitKind> {
    let config = args.config.load()?;
    let mut lines = Vec::new();
    for t in &config.targets {
        let source = crate::engine::from_config(t);
        let kind = source.info().kind;
        let result = source.plan().await.map(|plan| {
            let server = match kind {
                "postgres" => format!("PostgreSQL {}", plan.server_version),
                _ => plan.server_version,
            };
            format!(
                "{server}; {} {} would dump it",
                plan.tool, plan.tool_version
            )
        });
        lines.push(Line::of(format!("target {}", t.name()), result));
    }
    let several = config.storages.len() > 1;
    for s in super::open_storages(&config, None)? {
        lines.push(Line::of(
            match several {
                true => format!("storage {} ({})", s.name, s.storage.describe()),
                false => format!("storage {}", s.storage.describe()),
            },
            probe_storage(s.storage.as_ref(), &s.layout).await,
        ));
    }
    for entry in config.storages.values() {
        if let StorageConfig::Box(b) = &entry.storage {
            if let crate::config::boxcom::BoxAuth::Oauth(o) = &b.auth {
                let store = crate::storage::boxcom::auth::store_from_config(&o.token_store);
                let result = async {
                    store.load().await?;
                    store.check_writable().await?;
                    Ok("readable and writable (a rotated token can be saved)".to_string())
                }
                .await;
                lines.push(Line::of(
                    format!("token store {}", store.describe()),
                    result,
                ));
            }
        }
    }
    if args.notify {
        let notifiers = crate::notify::from_config(&config.notify)?;
        for (name, result) in
            crate::notify::notify_all(&notifiers, crate::notify::Event::Test).await
        {
            lines.push(Line::of(
                format!("notify {name}"),
                result.map(|()| "test message sent".to_string()),
            ));
        }
    }
    let failed = lines.iter().filter(|l| !l.ok).count();
    for l in &lines {
        crate::outln!("{} {}: {}", if l.ok { "✓" } else { "✗" }, l.what, l.detail);
    }
    if failed == 0 {
        crate::outln!("all {} checks passed", lines.len());
        Ok(ExitKind::Success)
    } else {
        crate::outln!("{failed} of {} checks failed", lines.len());
        Ok(ExitKind::Failed)
    }
}

/// Write a probe object, read it back, delete it.
async fn probe_storage(
    storage: &dyn crate::storage::Storage,
    layout: &crate::catalog::Layout,
) -> anyhow::Result<String> {
    storage.preflight().await?;
    let key = format!(
        "{}probe-{:016x}.txt",
        layout.target_prefix("backstop-check"),
        fastrand::u64(..)
    );
    let body = format!("backstop check {}\n", chrono::Utc::now().to_rfc3339());
    put_bytes(storage, &key, Bytes::from(body.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("writing {key}: {e}"))?;
    let back = get_bytes(storage, &key, 1 << 16).await;
    let deleted = storage.delete(&key).await;
    let back = back.map_err(|e| anyhow::anyhow!("reading {key} back: {e}"))?;
    anyhow::ensure!(
        back == body.as_bytes(),
        "{key} read back differs from what was written"
    );
    deleted.map_err(|e| anyhow::anyhow!("deleting {key}: {e}"))?;
    Ok("wrote, read back and deleted a probe object".into())
}
