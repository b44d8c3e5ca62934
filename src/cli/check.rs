//! `backstop check`: everything a backup needs, tried for real before the
//! first night — each target connected to (server version, the pg_dump
//! that would be used), the storage written, read back and cleaned, the
//! token store read and its writability checked, and with `--notify` a test
//! through every notifier. The first step after deploying.

use super::ConfigArg;
use crate::config::StorageConfig;
use crate::error::ExitKind;
use crate::storage::{get_bytes, put_bytes};
use anyhow::Context;
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
    /// None when the check passed; else the exit code its failure maps to.
    failed: Option<ExitKind>,
    what: String,
    detail: String,
}

impl Line {
    fn of(what: impl Into<String>, result: anyhow::Result<String>) -> Line {
        Line::hinted(what, result, None)
    }

    /// A target's line: its failure gets its engine's hint.
    fn hinted(
        what: impl Into<String>,
        result: anyhow::Result<String>,
        engine: Option<&dyn crate::engine::Engine>,
    ) -> Line {
        match result {
            Ok(detail) => Line {
                failed: None,
                what: what.into(),
                detail,
            },
            Err(e) => {
                let text = format!("{e:#}");
                let hint = engine
                    .and_then(|engine| engine.connect_hint(&text))
                    .map(|h| format!("\n      hint: {h}"))
                    .unwrap_or_default();
                Line {
                    failed: Some(crate::error::exit_kind_of(&e)),
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
        let reachable = result.is_ok();
        lines.push(Line::hinted(
            format!("target {}", t.name()),
            result,
            Some(t.engine()),
        ));
        if reachable {
            if let Some(result) = source.privileges().await {
                lines.push(Line::of(format!("target {} privileges", t.name()), result));
            }
        }
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
    let failed = lines.iter().filter(|l| l.failed.is_some()).count();
    for l in &lines {
        let mark = if l.failed.is_none() { "✓" } else { "✗" };
        crate::outln!("{mark} {}: {}", l.what, l.detail);
    }
    if failed == 0 {
        crate::outln!("all {} checks passed", lines.len());
        return Ok(ExitKind::Success);
    }
    crate::outln!("{failed} of {} checks failed", lines.len());
    // Credentials that need a person decide the exit code, as in every
    // command: the watchdog must not retry what only a person can fix.
    let needs_person = lines.iter().any(|l| l.failed == Some(ExitKind::AuthNeeded));
    Ok(match needs_person {
        true => ExitKind::AuthNeeded,
        false => ExitKind::Failed,
    })
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
        .with_context(|| format!("writing {key}"))?;
    let back = get_bytes(storage, &key, 1 << 16).await;
    let deleted = storage.delete(&key).await;
    let back = back.with_context(|| format!("reading {key} back"))?;
    anyhow::ensure!(
        back == body.as_bytes(),
        "{key} read back differs from what was written"
    );
    deleted.with_context(|| format!("deleting {key}"))?;
    Ok("wrote, read back and deleted a probe object".into())
}
