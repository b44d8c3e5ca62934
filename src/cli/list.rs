use super::{select_targets, ConfigArg};
use crate::catalog::list_target;
use crate::error::ExitKind;
use crate::report::human_bytes;
use clap::Args;
use serde::Serialize;

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only this target.
    #[arg(long, short = 't')]
    pub target: Option<String>,
    #[command(flatten)]
    pub storage: super::StorageArg,
    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row<'a> {
    target: &'a str,
    storage: &'a str,
    id: &'a str,
    started_at: String,
    finished_at: String,
    /// The database(s) dumped, as the source described them.
    database: &'a str,
    format: &'a str,
    compression: String,
    encrypted: bool,
    raw_bytes: u64,
    stored_bytes: u64,
    manifest_key: &'a str,
    objects: &'a [crate::catalog::ObjectRecord],
    /// Every verify of it in this storage, oldest first.
    verifications: &'a [crate::catalog::verified::Verification],
}

pub async fn run(args: ListArgs) -> anyhow::Result<ExitKind> {
    // A listing reads storages only: no notifier's or source database's
    // variable needs to be set (the runbook runs it on a laptop).
    let config = args.config.load_for(crate::config::Uses {
        target: args.target.as_deref(),
        storage: args.storage.storage.as_deref(),
        notify: false,
        source_credentials: false,
    })?;
    let names: Vec<String> = args.target.into_iter().collect();
    let targets = select_targets(&config, &names)?;
    let opened = super::open_storages(&config, args.storage.storage.as_deref())?;
    let several = config.storages.len() > 1;
    let mut listings = Vec::new();
    for (t, s) in targets.into_iter().flat_map(|t| {
        args.storage
            .of_target(&config, &opened, t)
            .into_iter()
            .map(move |s| (t, s))
    }) {
        let listing = list_target(s.storage.as_ref(), &s.layout, t.name()).await?;
        for d in &listing.damaged {
            tracing::warn!(target_name = t.name(), key = %d.manifest_key, "incomplete or damaged backup: {}", d.why);
        }
        if !listing.orphans.is_empty() {
            tracing::warn!(
                target_name = t.name(),
                count = listing.orphans.len(),
                "objects without a manifest (from interrupted runs) ignored"
            );
        }
        listings.push((t.name().to_string(), s.name.clone(), listing));
    }
    let rows: Vec<Row> = listings
        .iter()
        .flat_map(|(name, storage, l)| {
            l.backups.iter().map(move |b| Row {
                target: name,
                storage,
                id: &b.manifest.id.0,
                started_at: b.manifest.started_at.to_rfc3339(),
                finished_at: b.manifest.finished_at.to_rfc3339(),
                database: &b.manifest.database,
                format: &b.manifest.format,
                compression: format!("{:?}", b.manifest.compression.algorithm).to_lowercase(),
                encrypted: !b.manifest.encryption_recipients.is_empty(),
                raw_bytes: b.manifest.raw_bytes(),
                stored_bytes: b.manifest.stored_bytes(),
                manifest_key: &b.manifest_key,
                objects: &b.manifest.objects,
                verifications: &b.verifications,
            })
        })
        .collect();
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
    } else if rows.is_empty() {
        crate::outln!("no backups");
    }
    if !args.json && !rows.is_empty() {
        let storage_col = |s: &str| match several {
            true => format!("{s:<10} "),
            false => String::new(),
        };
        crate::outln!(
            "{:<12} {}{:<34} {:<20} {:<7} {:<6} {:>10} {:>10}  {:<10}  {}",
            "TARGET",
            storage_col("STORAGE"),
            "ID",
            "STARTED (UTC)",
            "FORMAT",
            "CODEC",
            "STORED",
            "RAW",
            "VERIFIED",
            "DATABASE"
        );
        for r in &rows {
            // The newest verify: its day, or that it failed.
            let verified = match r.verifications.last() {
                Some(v) if v.passed => v.at.format("%Y-%m-%d").to_string(),
                Some(_) => "FAILED".to_string(),
                None => "-".to_string(),
            };
            crate::outln!(
                "{:<12} {}{:<34} {:<20} {:<7} {:<6} {:>10} {:>10}  {:<10}  {}",
                r.target,
                storage_col(r.storage),
                r.id,
                &r.started_at[..19.min(r.started_at.len())].replace('T', " "),
                r.format,
                r.compression,
                human_bytes(r.stored_bytes),
                human_bytes(r.raw_bytes),
                verified,
                r.database
            );
        }
    }
    if !args.json {
        for (name, storage, l) in &listings {
            for d in &l.damaged {
                crate::outln!("{name:<12} DAMAGED {} in {storage}: {}", d.id, d.why);
            }
        }
    }
    Ok(ExitKind::Success)
}
