//! `backstop init`: a commented starter config for one database (its
//! engine's own keys, from the engine) and one storage, written from two
//! flags, that `config check` accepts as it is. The full reference stays
//! `examples/backstop.toml`.

use crate::error::{usage, ExitKind};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The database to back up: postgres://USER@HOST:PORT/DB,
    /// mysql://USER@HOST:PORT/DB or sqlite:///PATH (a password in the URL
    /// is not written to the file: it becomes ${DB_PASSWORD}).
    #[arg(long, alias = "postgres", value_name = "URL")]
    pub database: String,
    /// Where backups go: local:PATH, s3://BUCKET[/PREFIX], box:FOLDER or
    /// rclone:REMOTE:PATH.
    #[arg(long)]
    pub storage: String,
    /// The file to write.
    #[arg(long, short = 'o', default_value = "backstop.toml")]
    pub output: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitKind> {
    let engine = crate::engine::destination(&args.database)
        .map_err(|e| usage(format!("--database: {e:#}")))?
        .engine();
    let starter = engine
        .starter(&args.database)
        .map_err(|e| usage(format!("--database: {e:#}")))?;
    let name: String = starter
        .name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(63)
        .collect();
    let name = if name.is_empty() {
        "db".to_string()
    } else {
        name
    };
    let storage = storage_table(&args.storage)?;
    let text = format!(
        r#"# backstop starter config, written by `backstop init`.
# Every key is documented in examples/backstop.toml. Check it with
# `backstop check` (connects, writes a probe object, sends test mail).

{storage}
[compression]
algorithm = "zstd"                    # zstd (default) | gzip | none

# Which backups `backstop prune` (and every successful backup) keeps.
[retention]
keep_last = 3
keep_daily = 7
keep_weekly = 4
keep_monthly = 12

# A backup that fails for a reason that can pass (the server restarting, a
# storage hiccup) is tried again; a wrong password, a missing database or
# permission fails at once.
[retry]
attempts = {attempts}                          # tries in all, the first included
delay = "{delay}"                          # wait between tries

[[targets]]
name = "{name}"
type = "{kind}"
{keys}
# Failure mail (uncomment and fill in):
# [[notify]]
# type = "smtp"
# host = "mail-service"
# port = 2525
# tls = "none"
# from = "backstop <backup@example.org>"
# to = ["backup@example.org"]
"#,
        kind = engine.kind(),
        keys = starter.keys,
        attempts = crate::config::RetryConfig::default().attempts,
        delay = humantime::format_duration(crate::config::RetryConfig::default().delay.0),
    );
    // The written file must be one backstop accepts (with its variables set).
    crate::config::Config::parse(
        &without_variables(&text),
        std::path::Path::new("backstop init"),
    )
    .map_err(|e| anyhow::anyhow!("backstop init wrote a config it cannot read (a bug): {e:#}"))?;
    if args.output.exists() && !args.force {
        return Err(usage(format!(
            "{} exists; pass --force to replace it",
            args.output.display()
        )));
    }
    crate::fsutil::write_atomic(&args.output, text.as_bytes(), 0o600)?;
    crate::outln!(
        "wrote {} (target `{name}`); next: backstop check --config {}",
        args.output.display(),
        args.output.display()
    );
    Ok(ExitKind::Success)
}

/// `text` with every `${…}` reference replaced by a plain value.
fn without_variables(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        match rest[at..].find('}') {
            Some(end) => {
                out.push('x');
                rest = &rest[at + end + 1..];
            }
            None => {
                rest = &rest[at..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `[storage]` table for a `--storage` spec.
fn storage_table(spec: &str) -> anyhow::Result<String> {
    if let Some(path) = spec.strip_prefix("local:") {
        return Ok(format!(
            "[storage]\ntype = \"local\"\npath = \"{path}\"\ncreate = true                         # create the directory when missing\n"
        ));
    }
    if let Some(rest) = spec.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        return Ok(format!(
            "[storage]\ntype = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"{}\"\n# endpoint = \"https://minio.example.com\"   # omit for AWS\nregion = \"us-east-1\"\n\
             access_key_id = \"${{AWS_ACCESS_KEY_ID}}\"\nsecret_access_key = \"${{AWS_SECRET_ACCESS_KEY}}\"\n",
            prefix.trim_end_matches('/')
        ));
    }
    if let Some(folder) = spec.strip_prefix("box:") {
        return Ok(format!(
            "[storage]\ntype = \"box\"\nfolder = \"{folder}\"\nspool_dir = \"/tmp\"                  # Box needs the size up front: uploads are spooled here\n\n\
             [storage.auth]\nmethod = \"oauth\"                     # then: backstop auth box login\nclient_id = \"${{BOX_CLIENT_ID}}\"\nclient_secret = \"${{BOX_CLIENT_SECRET}}\"\n\
             token_store = {{ type = \"file\", path = \"box-token.json\" }}\n"
        ));
    }
    if let Some(remote) = spec.strip_prefix("rclone:") {
        return Ok(format!(
            "[storage]\ntype = \"rclone\"\nremote = \"{remote}\"\n# rclone_config = \"/path/rclone.conf\"\n"
        ));
    }
    Err(usage(format!(
        "--storage `{spec}`: expected local:PATH, s3://BUCKET[/PREFIX], box:FOLDER or rclone:REMOTE:PATH"
    )))
}
