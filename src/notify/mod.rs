//! Telling people: mail, webhooks, dead-man's-switch pings, metrics.
//!
//! A notifier failing is logged and retried a bounded number of times, each
//! try under the notifier's timeout; it never changes the run's exit code,
//! and the other notifiers still run. The dead-man's-switch ping covers what
//! no mail can: a run that never started.

pub mod message;
pub mod metrics;
pub mod ping;
pub mod smtp;
pub mod webhook;

use crate::config::notify::{NotifyConfig, NotifyOn};
use crate::report::RunReport;
use crate::retry::{Attempt, HttpClass, RetryPolicy};
use async_trait::async_trait;
use std::time::Duration;

/// What happened that notifiers may want to hear about.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A backup run begins (pings signal `/start`).
    Started,
    /// A run ended (or `status` found stale targets).
    Finished(&'a RunReport),
    /// `backstop notify test`.
    Test,
}

impl Event<'_> {
    /// `status --notify-recovery`: stale targets have fresh backups again.
    pub fn is_recovery(&self) -> bool {
        matches!(self, Event::Finished(r) if r.event == "recovered")
    }

    pub fn failed(&self) -> bool {
        matches!(self, Event::Finished(r) if r.exit_kind() != crate::error::ExitKind::Success)
    }
}

#[async_trait]
pub trait Notifier: Send + Sync {
    /// "smtp mail-service:2525": no secret (URLs are secrets, so webhooks
    /// and pings are named by type and position).
    fn name(&self) -> String;
    fn wants(&self, event: &Event<'_>) -> bool;
    fn timeout(&self) -> Duration;
    async fn send(&self, event: &Event<'_>) -> anyhow::Result<()>;
}

/// An HTTP answer that will not change on a retry (a 400, a 403, a 404 of
/// a wrong URL): the notifier gives up at once instead of trying 3 times.
#[derive(Debug)]
pub struct Rejected(pub reqwest::StatusCode);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} (not retried)", self.0)
    }
}

impl std::error::Error for Rejected {}

/// A 429 or 5xx, with the wait the server asked for.
#[derive(Debug)]
pub struct TryLater(pub reqwest::StatusCode, pub Option<Duration>);

impl std::fmt::Display for TryLater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.0)
    }
}

impl std::error::Error for TryLater {}

/// Send one notifier request; any answer but 2xx is a failure, classified
/// like every HTTP answer here. The URL is a secret, so errors never show it.
pub async fn send_checked(req: reqwest::RequestBuilder) -> anyhow::Result<()> {
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", crate::http::cause(e)))?;
    match crate::retry::classify(resp.status(), resp.headers()) {
        HttpClass::Success => Ok(()),
        HttpClass::Transient(after) => Err(TryLater(resp.status(), after).into()),
        _ => Err(Rejected(resp.status()).into()),
    }
}

/// Whether an `on = [...]` list wants this end-of-run event.
pub fn on_matches(on: &[NotifyOn], event: &Event<'_>) -> bool {
    match event {
        Event::Started => false,
        Event::Test => true,
        Event::Finished(_) => on.iter().any(|o| match o {
            NotifyOn::Always => true,
            // Whoever was told a target went stale is told it recovered.
            NotifyOn::Failure => event.failed() || event.is_recovery(),
            NotifyOn::Success => !event.failed(),
        }),
    }
}

pub fn from_config(configs: &[NotifyConfig]) -> anyhow::Result<Vec<Box<dyn Notifier>>> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| -> anyhow::Result<Box<dyn Notifier>> {
            Ok(match c {
                NotifyConfig::Smtp(s) => Box::new(smtp::SmtpNotifier::new(s)?),
                NotifyConfig::Webhook(w) => Box::new(webhook::WebhookNotifier::new(w, i)?),
                NotifyConfig::Ping(p) => Box::new(ping::PingNotifier::new(p, i)?),
            })
        })
        .collect()
}

/// Tries per notifier, the first included.
const ATTEMPTS: u32 = 3;

/// Send `event` to every notifier that wants it, concurrently; each result
/// is logged and returned.
pub async fn notify_all(
    notifiers: &[Box<dyn Notifier>],
    event: Event<'_>,
) -> Vec<(String, anyhow::Result<()>)> {
    let retry = RetryPolicy {
        attempts: ATTEMPTS,
        base: Duration::from_millis(500),
        max: Duration::from_secs(5),
    };
    let sends = notifiers.iter().filter(|n| n.wants(&event)).map(|n| async move {
        let name = n.name();
        let result = retry
            .run(&format!("notify {name}"), || async {
                match tokio::time::timeout(n.timeout(), n.send(&event)).await {
                    Ok(Ok(())) => Attempt::Done(()),
                    Ok(Err(e)) if e.downcast_ref::<Rejected>().is_some() => {
                        Attempt::Permanent(format!("{e:#}"))
                    }
                    Ok(Err(e)) => {
                        let after = e.downcast_ref::<TryLater>().and_then(|t| t.1);
                        Attempt::Transient(format!("{e:#}"), after)
                    }
                    Err(_) => Attempt::Transient(format!("no answer within {:?}", n.timeout()), None),
                }
            })
            .await
            .map_err(|e| anyhow::anyhow!(e));
        match &result {
            Ok(()) => tracing::info!(notifier = %name, "notification sent"),
            Err(e) => tracing::error!(notifier = %name, "notification failed after {ATTEMPTS} tries: {e:#}"),
        }
        (name, result)
    });
    futures::future::join_all(sends).await
}
