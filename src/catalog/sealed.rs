//! With `[encryption]`, a manifest keeps in clear only what listing,
//! retention and `copy` need: ids, target, times, format, codec, the
//! recipients, and each stored object's key, sizes and SHA-256. Everything
//! that describes the database — its name, server and dump tool, its
//! properties (settings, comment, owner, ACL), the names of its tables and
//! databases and their row counts — is encrypted into `sealed`, for the
//! same recipients as the objects, and opened by restore and verify with
//! the identity that opens the objects.

use super::{Manifest, ObjectRecord};
use crate::crypto::{Decryption, Recipients};
use crate::engine::postgres::archive::TableRows;
use anyhow::Context;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Serialize, Deserialize)]
struct Private {
    database: String,
    server_version: String,
    dump_tool: String,
    dump_tool_version: String,
    database_properties: Option<serde_json::Value>,
    /// Per object, in order: its role (which may name a database) and rows.
    objects: Vec<PrivateObject>,
}

#[derive(Serialize, Deserialize)]
struct PrivateObject {
    role: String,
    tables: Vec<TableRows>,
    #[serde(default)]
    large_objects: Option<u64>,
}

impl Manifest {
    /// The manifest as stored when the objects are encrypted for `r`.
    pub fn sealed_for(&self, r: &Recipients) -> anyhow::Result<Manifest> {
        let private = Private {
            database: self.database.clone(),
            server_version: self.server_version.clone(),
            dump_tool: self.dump_tool.clone(),
            dump_tool_version: self.dump_tool_version.clone(),
            database_properties: self.database_properties.clone(),
            objects: self
                .objects
                .iter()
                .map(|o| PrivateObject {
                    role: o.role.clone(),
                    tables: o.tables.clone(),
                    large_objects: o.large_objects,
                })
                .collect(),
        };
        let json = serde_json::to_vec(&private).expect("manifest part serializes");
        let mut out = Vec::new();
        let mut w = r
            .encryptor()?
            .wrap_output(&mut out)
            .context("encrypting the manifest")?;
        w.write_all(&json)?;
        w.finish()?;
        let objects = self
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| ObjectRecord {
                role: public_role(&o.role, i),
                tables: Vec::new(),
                large_objects: None,
                ..o.clone()
            })
            .collect();
        Ok(Manifest {
            database: String::new(),
            server_version: String::new(),
            dump_tool: String::new(),
            dump_tool_version: String::new(),
            database_properties: None,
            objects,
            sealed: Some(base64::engine::general_purpose::STANDARD.encode(out)),
            ..self.clone()
        })
    }

    /// Open the sealed part with the identity at `identity` (a manifest
    /// without one is left as it is). `key` names the manifest in errors.
    pub fn unseal(&mut self, identity: Option<&Path>, key: &str) -> anyhow::Result<()> {
        let Some(sealed) = self.sealed.take() else {
            return Ok(());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed.trim())
            .with_context(|| format!("{key}: the sealed part is not base64"))?;
        let plain = Decryption::open(identity, key, &self.encryption_recipients)?
            .decrypt_all(&bytes, key)?;
        let p: Private = serde_json::from_slice(&plain)
            .with_context(|| format!("{key}: reading the sealed part"))?;
        if p.objects.len() != self.objects.len() {
            anyhow::bail!(
                "{key}: the sealed part describes {} objects, the manifest lists {}",
                p.objects.len(),
                self.objects.len()
            );
        }
        for (o, po) in self.objects.iter_mut().zip(p.objects) {
            o.role = po.role;
            o.tables = po.tables;
            o.large_objects = po.large_objects;
        }
        self.database = p.database;
        self.server_version = p.server_version;
        self.dump_tool = p.dump_tool;
        self.dump_tool_version = p.dump_tool_version;
        self.database_properties = p.database_properties;
        Ok(())
    }
}

/// `database` and `globals` say nothing of the database; `database:NAME`
/// (one of several) names it, so in clear it is numbered instead.
fn public_role(role: &str, index: usize) -> String {
    match role.split_once(':') {
        Some((kind, _)) => format!("{kind}:{}", index + 1),
        None => role.to_string(),
    }
}
