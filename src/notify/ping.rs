//! healthchecks.io-style dead-man's switch: `<url>/start` when a run
//! begins, `<url>` on success, `<url>/fail` on failure (with the summary as
//! body), `<url>/log` for a test. If the job never runs, the monitor notices
//! the missing ping: the one failure no mail can report.

use super::{message, Event, Notifier};
use crate::config::notify::PingNotify;
use async_trait::async_trait;
use std::time::Duration;

pub struct PingNotifier {
    config: PingNotify,
    index: usize,
    http: reqwest::Client,
}

impl PingNotifier {
    pub fn new(c: &PingNotify, index: usize) -> anyhow::Result<Self> {
        Ok(PingNotifier {
            config: c.clone(),
            index,
            http: crate::http::client()?,
        })
    }

    fn url(&self, suffix: &str) -> String {
        let base = self.config.url.expose().trim_end_matches('/');
        if suffix.is_empty() {
            base.to_string()
        } else {
            format!("{base}/{suffix}")
        }
    }
}

#[async_trait]
impl Notifier for PingNotifier {
    fn name(&self) -> String {
        format!("ping #{}", self.index)
    }

    /// A dead man's switch watches backup runs only: a `verify` or a
    /// watchdog `status` that pinged would keep it green while no backup
    /// runs (regression).
    fn wants(&self, event: &Event<'_>) -> bool {
        match event {
            Event::Started | Event::Test => true,
            Event::Finished(r) => r.event == "summary",
        }
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.0
    }

    async fn send(&self, event: &Event<'_>) -> anyhow::Result<()> {
        let req = match event {
            Event::Started => self.http.get(self.url("start")),
            Event::Finished(r) => {
                let suffix = if event.failed() { "fail" } else { "" };
                self.http
                    .post(self.url(suffix))
                    .body(message::short_text(r))
            }
            Event::Test => self.http.post(self.url("log")).body(format!(
                "backstop test message from {}",
                crate::report::hostname()
            )),
        };
        super::send_checked(req).await
    }
}
