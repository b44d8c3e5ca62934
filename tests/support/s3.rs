//! The S3 server for tests: SeaweedFS on loopback, started by scripts/test,
//! which exports its endpoint and credentials. Each test makes its own bucket.

use backstop::config::{S3StorageConfig, Secret};
use backstop::storage::s3::S3Storage;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::time::Duration;

pub struct S3Server {
    pub endpoint: String,
    pub key: String,
    pub secret: String,
}

pub fn server() -> S3Server {
    let endpoint = std::env::var("BACKSTOP_TEST_S3_ENDPOINT").expect(
        "BACKSTOP_TEST_S3_ENDPOINT is not set: run the tests with ./scripts/test, which starts SeaweedFS",
    );
    S3Server {
        endpoint,
        key: std::env::var("BACKSTOP_TEST_S3_KEY").expect("BACKSTOP_TEST_S3_KEY"),
        secret: std::env::var("BACKSTOP_TEST_S3_SECRET").expect("BACKSTOP_TEST_S3_SECRET"),
    }
}

impl S3Server {
    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint.parse().unwrap(),
            UrlStyle::Path,
            name.to_string(),
            "us-east-1",
        )
        .unwrap()
    }

    fn creds(&self) -> Credentials {
        Credentials::new(&self.key, &self.secret)
    }

    /// A new, uniquely named bucket.
    pub fn create_bucket(&self, prefix: &str) -> String {
        let name = super::unique(prefix).replace('_', "-").to_lowercase();
        let url = self
            .bucket(&name)
            .create_bucket(&self.creds())
            .sign(Duration::from_secs(600));
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "PUT",
                url.as_str(),
            ])
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            code,
            "200",
            "create bucket {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    /// Delete a bucket and whatever is left in it.
    pub fn delete_bucket(&self, name: &str) {
        let url = self
            .bucket(name)
            .delete_bucket(&self.creds())
            .sign(Duration::from_secs(600));
        let _ = std::process::Command::new("curl")
            .args(["-sS", "-X", "DELETE", url.as_str()])
            .output();
    }

    pub fn config(&self, bucket: &str) -> S3StorageConfig {
        S3StorageConfig {
            bucket: bucket.to_string(),
            prefix: String::new(),
            region: "us-east-1".into(),
            endpoint: Some(self.endpoint.clone()),
            path_style: Some(true),
            access_key_id: Some(self.key.clone()),
            secret_access_key: Some(Secret::new(self.secret.clone())),
            storage_class: None,
            idle_timeout: backstop::config::HumanDuration(Duration::from_secs(30)),
        }
    }

    pub fn storage(&self, bucket: &str) -> S3Storage {
        S3Storage::new(&self.config(bucket)).unwrap()
    }

    /// The environment `storage_toml` reads the credentials from.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BS_S3_KEY".into(), self.key.clone()),
            ("BS_S3_SECRET".into(), self.secret.clone()),
        ]
    }

    /// Every key in the bucket, listed directly (not through backstop).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let url = self
            .bucket(bucket)
            .list_objects_v2(Some(&self.creds()))
            .sign(Duration::from_secs(600));
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail", url.as_str()])
            .output()
            .unwrap();
        assert!(out.status.success(), "LIST {bucket}");
        let listed =
            rusty_s3::actions::ListObjectsV2::parse_response(&String::from_utf8_lossy(&out.stdout))
                .unwrap();
        assert!(
            listed.next_continuation_token.is_none(),
            "one page is enough here"
        );
        listed.contents.into_iter().map(|o| o.key).collect()
    }

    /// An object's bytes, fetched directly (not through backstop).
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let url = self
            .bucket(bucket)
            .get_object(Some(&self.creds()), key)
            .sign(Duration::from_secs(600));
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail", url.as_str()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "GET {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A `[storage]` table for a config file (credentials from the env).
    pub fn storage_toml(&self, bucket: &str, endpoint: &str) -> String {
        format!(
            "[storage]\ntype = \"s3\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\npath_style = true\n\
             access_key_id = \"${{BS_S3_KEY}}\"\nsecret_access_key = \"${{BS_S3_SECRET}}\"\n"
        )
    }
}
