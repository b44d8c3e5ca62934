//! A JSON POST of the run report (or a Slack/Discord-shaped message).

use super::{message, on_matches, Event, Notifier};
use crate::config::notify::{NotifyOn, WebhookFormat, WebhookNotify};
use async_trait::async_trait;
use std::time::Duration;

pub struct WebhookNotifier {
    config: WebhookNotify,
    on: Vec<NotifyOn>,
    index: usize,
    http: reqwest::Client,
}

impl WebhookNotifier {
    pub fn new(c: &WebhookNotify, index: usize) -> anyhow::Result<Self> {
        Ok(WebhookNotifier {
            config: c.clone(),
            on: c.on.clone(),
            index,
            http: crate::http::client()?,
        })
    }

    fn body(&self, event: &Event<'_>) -> serde_json::Value {
        let text = match event {
            Event::Finished(r) => message::short_text(r),
            _ => format!("backstop test message from {}", crate::report::hostname()),
        };
        match (self.config.format, event) {
            (WebhookFormat::Json, Event::Finished(r)) => {
                serde_json::to_value(r).expect("report serializes")
            }
            (WebhookFormat::Json, _) => serde_json::json!({
                "event": "test",
                "host": crate::report::hostname(),
                "tool_version": crate::TOOL_VERSION,
            }),
            (WebhookFormat::Slack, _) => serde_json::json!({ "text": text }),
            // Discord rejects content over 2000 characters.
            (WebhookFormat::Discord, _) => {
                serde_json::json!({ "content": text.chars().take(1990).collect::<String>() })
            }
        }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> String {
        format!("webhook #{}", self.index)
    }

    fn wants(&self, event: &Event<'_>) -> bool {
        on_matches(&self.on, event)
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.0
    }

    async fn send(&self, event: &Event<'_>) -> anyhow::Result<()> {
        let mut req = self
            .http
            .post(self.config.url.expose())
            .json(&self.body(event));
        for (k, v) in &self.config.headers {
            req = req.header(k, v.expose());
        }
        super::send_checked(req).await
    }
}
