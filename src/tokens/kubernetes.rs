//! A token in a Kubernetes Secret: no PVC, survives pod replacement, and
//! shared safely by concurrent runs through optimistic concurrency. A write
//! carries the `resourceVersion` that was read; a 409 Conflict means another
//! run wrote first, and its token is used instead of refreshing again.
//! Writability is checked with a SelfSubjectAccessReview before refreshing.
//!
//! In-cluster config (service account token, CA, namespace) or KUBECONFIG.

use super::{RefreshGuard, SaveOutcome, TokenSet, TokenStore, Versioned};
use anyhow::Context;
use async_trait::async_trait;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

pub struct SecretStore {
    name: String,
    key: String,
    namespace: Option<String>,
    client: OnceCell<(kube::Client, String)>,
}

impl SecretStore {
    pub fn new(name: &str, key: &str, namespace: Option<&str>) -> SecretStore {
        SecretStore {
            name: name.to_string(),
            key: key.to_string(),
            namespace: namespace.map(String::from),
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> anyhow::Result<&(kube::Client, String)> {
        self.client
            .get_or_try_init(|| async {
                crate::http::install_crypto_provider();
                let client = kube::Client::try_default().await.context(
                    "connecting to the Kubernetes API (in-cluster config or KUBECONFIG)",
                )?;
                let ns = self
                    .namespace
                    .clone()
                    .unwrap_or_else(|| client.default_namespace().to_string());
                Ok((client, ns))
            })
            .await
    }

    async fn api(&self) -> anyhow::Result<Api<Secret>> {
        let (client, ns) = self.client().await?;
        Ok(Api::namespaced(client.clone(), ns))
    }

    fn raw(&self, secret: &Secret) -> anyhow::Result<(String, String)> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&self.key))
            .with_context(|| format!("{} has no key `{}`", self.describe(), self.key))?;
        let text = String::from_utf8(bytes.0.clone())
            .with_context(|| format!("{} is not UTF-8", self.describe()))?;
        Ok((
            text,
            secret.metadata.resource_version.clone().unwrap_or_default(),
        ))
    }

    /// The value as text, with the resourceVersion it was read at (for
    /// other secrets than tokens: an rclone config).
    pub async fn read_text(&self) -> anyhow::Result<(String, String)> {
        let secret = self
            .api()
            .await?
            .get(&self.name)
            .await
            .with_context(|| format!("reading {}", self.describe()))?;
        self.raw(&secret)
    }

    /// Write text if the Secret is still at `expected`; the new version, or
    /// None when someone wrote first.
    pub async fn write_text(&self, text: &str, expected: &str) -> anyhow::Result<Option<String>> {
        let api = self.api().await?;
        let mut secret = api
            .get(&self.name)
            .await
            .with_context(|| format!("reading {}", self.describe()))?;
        secret.metadata.resource_version = Some(expected.to_string());
        secret
            .data
            .get_or_insert_with(Default::default)
            .insert(self.key.clone(), ByteString(text.as_bytes().to_vec()));
        match api
            .replace(&self.name, &PostParams::default(), &secret)
            .await
        {
            Ok(written) => Ok(Some(written.metadata.resource_version.unwrap_or_default())),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(e) => Err(anyhow::anyhow!(e).context(format!("updating {}", self.describe()))),
        }
    }
}

struct NoLock;
impl RefreshGuard for NoLock {}

#[async_trait]
impl TokenStore for SecretStore {
    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("Kubernetes Secret {ns}/{} (key {})", self.name, self.key),
            None => format!("Kubernetes Secret {} (key {})", self.name, self.key),
        }
    }

    async fn load(&self) -> anyhow::Result<Versioned> {
        let (text, version) = self.read_text().await?;
        Ok(Versioned {
            token: TokenSet::from_json(&text).with_context(|| self.describe())?,
            version,
        })
    }

    async fn check_writable(&self) -> anyhow::Result<()> {
        let (client, ns) = self.client().await?;
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(ns.clone()),
                    verb: Some("update".into()),
                    resource: Some("secrets".into()),
                    name: Some(self.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .context("asking the API server whether the token Secret may be updated")?;
        let allowed = answer.status.map(|s| s.allowed).unwrap_or(false);
        anyhow::ensure!(
            allowed,
            "this service account may not update {}, so a refreshed token could not be saved; not refreshing \
             (grant get/update/patch on that Secret, see deploy/kubernetes)",
            self.describe()
        );
        Ok(())
    }

    async fn lock(&self) -> anyhow::Result<Box<dyn RefreshGuard>> {
        Ok(Box::new(NoLock))
    }

    async fn put(&self, token: &TokenSet) -> anyhow::Result<()> {
        let api = self.api().await?;
        let value = ByteString(token.to_json().into_bytes());
        match api
            .get_opt(&self.name)
            .await
            .with_context(|| format!("reading {}", self.describe()))?
        {
            Some(mut secret) => {
                secret
                    .data
                    .get_or_insert_with(Default::default)
                    .insert(self.key.clone(), value);
                api.replace(&self.name, &PostParams::default(), &secret)
                    .await
                    .with_context(|| format!("updating {}", self.describe()))?;
            }
            None => {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    data: Some([(self.key.clone(), value)].into_iter().collect()),
                    type_: Some("Opaque".into()),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &secret)
                    .await
                    .with_context(|| format!("creating {}", self.describe()))?;
            }
        }
        Ok(())
    }

    async fn save(&self, token: &TokenSet, expected: &str) -> anyhow::Result<SaveOutcome> {
        match self.write_text(&token.to_json(), expected).await? {
            Some(_) => Ok(SaveOutcome::Saved),
            None => Ok(SaveOutcome::Conflict(self.load().await?)),
        }
    }
}
