//! `export keycloak`: the broker's users in Keycloak's realm export format, so that a move can
//! be undone (Keycloak's partial import, or `kc.sh import`, reads it back).
//!
//! One user per line inside `{"realm": …, "users": [ … ]}`, written a page at a time into a
//! file beside the target that replaces it only when complete.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use super::representation::{ExportedUser, FederatedIdentityRepresentation};
use crate::store::{Store, StoreError};

/// Users read per query.
const PAGE: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum ExportFileError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database")]
    Store(#[from] StoreError),
    #[error("cannot encode a user")]
    Encode(#[from] serde_json::Error),
}

/// Writes every user to `path`; returns how many.
pub async fn export_users(store: &Store, realm: &str, path: &Path) -> Result<u64, ExportFileError> {
    let partial = path.with_extension("partial");
    let write_error = |source| ExportFileError::Write { path: path.to_owned(), source };
    let file = std::fs::File::create(&partial).map_err(write_error)?;
    let result = write_users(store, realm, BufWriter::new(file)).await;
    match result {
        Ok(count) => {
            std::fs::rename(&partial, path).map_err(write_error)?;
            Ok(count)
        }
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(match err {
                WriteFailure::Io(source) => write_error(source),
                WriteFailure::Other(err) => err,
            })
        }
    }
}

enum WriteFailure {
    Io(std::io::Error),
    Other(ExportFileError),
}

impl From<std::io::Error> for WriteFailure {
    fn from(err: std::io::Error) -> Self {
        WriteFailure::Io(err)
    }
}

impl From<StoreError> for WriteFailure {
    fn from(err: StoreError) -> Self {
        WriteFailure::Other(err.into())
    }
}

impl From<serde_json::Error> for WriteFailure {
    fn from(err: serde_json::Error) -> Self {
        WriteFailure::Other(err.into())
    }
}

async fn write_users(store: &Store, realm: &str, mut out: BufWriter<std::fs::File>) -> Result<u64, WriteFailure> {
    write!(out, "{{\"realm\":{},\"users\":[", serde_json::to_string(realm)?)?;
    let mut after = String::new();
    let mut count = 0_u64;
    loop {
        let users = store.users_after(&after, PAGE).await?;
        let (Some(first), Some(last)) = (users.first(), users.last()) else { break };
        let mut attributes: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for row in store.attributes_between(&first.id, &last.id).await? {
            attributes.entry(row.user_id).or_default().entry(row.name).or_default().push(row.value);
        }
        let mut links: BTreeMap<String, Vec<FederatedIdentityRepresentation>> = BTreeMap::new();
        for row in store.links_between(&first.id, &last.id).await? {
            links.entry(row.user_id).or_default().push(FederatedIdentityRepresentation {
                identity_provider: Some(row.alias),
                user_id: Some(row.subject),
                user_name: row.username,
            });
        }
        after = last.id.clone();
        for user in users {
            let exported = ExportedUser {
                attributes: attributes.remove(&user.id).unwrap_or_default(),
                federated_identities: links.remove(&user.id).unwrap_or_default(),
                id: user.id,
                username: user.username,
                email: user.email,
                first_name: user.first_name,
                last_name: user.last_name,
                email_verified: user.email_verified,
                enabled: user.enabled,
                created_timestamp: user.created_at.saturating_mul(1000),
            };
            out.write_all(if count == 0 { b"\n" } else { b",\n" })?;
            serde_json::to_writer(&mut out, &exported)?;
            count += 1;
        }
    }
    out.write_all(b"\n]}\n")?;
    out.into_inner().map_err(|err| err.into_error())?.sync_all()?;
    Ok(count)
}
