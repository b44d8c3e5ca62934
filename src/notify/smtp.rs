//! Mail through an SMTP relay (lettre), plain text with an HTML alternative.

use super::{message, on_matches, Event, Notifier};
use crate::config::notify::{NotifyOn, SmtpNotify, SmtpTls};
use anyhow::Context;
use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

pub struct SmtpNotifier {
    config: SmtpNotify,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    on: Vec<NotifyOn>,
}

impl SmtpNotifier {
    pub fn new(c: &SmtpNotify) -> anyhow::Result<SmtpNotifier> {
        crate::http::install_crypto_provider();
        let mut tls_params = TlsParameters::builder(c.host.clone());
        if let Some(ca) = &c.tls_ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            tls_params = tls_params.add_root_certificate(
                Certificate::from_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", ca.display()))?,
            );
        }
        let tls_params = tls_params
            .build_rustls()
            .context("setting up TLS for SMTP")?;
        let tls = match c.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls_params),
            SmtpTls::Tls => Tls::Wrapper(tls_params),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
            .port(c.port())
            .tls(tls)
            .timeout(Some(c.timeout.0));
        if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        Ok(SmtpNotifier {
            transport: builder.build(),
            from: c.from.parse().context("smtp from")?,
            to: c
                .to
                .iter()
                .map(|t| t.parse())
                .collect::<Result<_, _>>()
                .context("smtp to")?,
            on: c.on.clone(),
            config: c.clone(),
        })
    }

    fn build(
        &self,
        subject: String,
        text: String,
        html: Option<String>,
    ) -> anyhow::Result<Message> {
        let mut b = Message::builder().from(self.from.clone()).subject(subject);
        for to in &self.to {
            b = b.to(to.clone());
        }
        let msg = match html {
            Some(html) => b.multipart(MultiPart::alternative_plain_html(text, html))?,
            None => b.body(text)?,
        };
        Ok(msg)
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    fn name(&self) -> String {
        format!("smtp {}:{}", self.config.host, self.config.port())
    }

    fn wants(&self, event: &Event<'_>) -> bool {
        on_matches(&self.on, event)
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.0
    }

    async fn send(&self, event: &Event<'_>) -> anyhow::Result<()> {
        let msg = match event {
            Event::Finished(r) => self.build(message::subject(r), message::text_body(r), Some(message::html_body(r)))?,
            Event::Test => self.build(
                format!("[backstop] test message from {}", crate::report::hostname()),
                format!(
                    "This is a test message from backstop on {}.\nIf you can read it, failure mail will reach you.\n",
                    crate::report::hostname()
                ),
                None,
            )?,
            Event::Started => return Ok(()),
        };
        self.transport
            .send(msg)
            .await
            .map_err(|e| {
                let text = e.to_string();
                // The in-cluster relay of the old setup speaks plain SMTP on
                // 2525: the default (STARTTLS required) cannot talk to it.
                let hint = if text.contains("STARTTLS is not supported") {
                    "; hint: this relay offers no STARTTLS: set `tls = \"none\"` for a relay inside the cluster (or `tls = \"tls\"` for implicit TLS, port 465)"
                } else {
                    ""
                };
                anyhow::anyhow!("sending mail through {}: {text}{hint}", self.name())
            })?;
        Ok(())
    }
}
