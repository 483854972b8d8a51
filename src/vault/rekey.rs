//! `vault rekey`: re-seals every stored upstream token and signing key under the active vault
//! key, a batch at a time, while the service runs.
//!
//! Resumable without bookkeeping: rows already under the active key are never selected, so a
//! second run, or a run after a crash, continues where the last one stopped. Safe beside a
//! running service: each row is replaced only if it is still exactly what was read, so a
//! refresh that rewrote it meanwhile wins, and the row is taken again by the next pass.

use crate::crypto::{Cipher, CipherError, signing_key_aad, vault_column_aad};
use crate::store::{SigningKeyRow, Store, StoreError, VaultRow};

/// Passes over the tables: a row rewritten during one pass is tried again in the next.
const MAX_PASSES: usize = 3;
/// How many unreadable rows the report names; the rest are only counted.
const NAMED_PROBLEMS: usize = 20;

/// What happened to one table's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyCounts {
    pub rekeyed: u64,
    /// Rows the service rewrote between read and write, left alone at that moment.
    pub changed: u64,
    /// Rows already under the active key when the run started.
    pub(crate) already_current: u64,
    /// Rows no configured key opens.
    pub(crate) unreadable: u64,
    /// Rows still under another key when the run ended.
    pub remaining: u64,
}

#[derive(Debug, Clone)]
pub struct RekeyReport {
    /// The active key everything was sealed under.
    pub(crate) key_id: String,
    pub tokens: RekeyCounts,
    pub(crate) signing_keys: RekeyCounts,
    /// The first unreadable rows, each with the reason.
    pub(crate) problems: Vec<String>,
    counting_unreadable: bool,
}

impl RekeyReport {
    /// Whether every row is now under the active key.
    pub(crate) fn complete(&self) -> bool {
        self.tokens.remaining == 0 && self.signing_keys.remaining == 0
    }

    /// Notes an unreadable row once, in the first pass; later passes meet it again.
    fn unreadable(&mut self, signing_key: bool, row: String, err: &CipherError) {
        if !self.counting_unreadable {
            return;
        }
        let counts = if signing_key { &mut self.signing_keys } else { &mut self.tokens };
        counts.unreadable += 1;
        if self.problems.len() < NAMED_PROBLEMS {
            self.problems.push(format!("{row}: {err}"));
        }
    }
}

/// Re-seals every row not under `cipher`'s active key, `batch_size` vault rows at a time.
pub async fn rekey(store: &Store, cipher: &Cipher, batch_size: i64) -> Result<RekeyReport, StoreError> {
    let key_id = cipher.active_key_id().to_owned();
    let batch_size = batch_size.max(1);
    let mut report = RekeyReport {
        key_id: key_id.clone(),
        tokens: RekeyCounts {
            already_current: non_negative(store.count_vault_rows_by_key(&key_id).await?.under_key),
            ..RekeyCounts::default()
        },
        signing_keys: RekeyCounts {
            already_current: non_negative(store.count_signing_keys_by_key(&key_id).await?.under_key),
            ..RekeyCounts::default()
        },
        problems: Vec::new(),
        counting_unreadable: true,
    };
    for pass in 0..MAX_PASSES {
        let changed_before = report.tokens.changed + report.signing_keys.changed;
        report.counting_unreadable = pass == 0;
        rekey_signing_keys(store, cipher, &mut report).await?;
        rekey_vault_rows(store, cipher, batch_size, &mut report).await?;
        if report.tokens.changed + report.signing_keys.changed == changed_before {
            break;
        }
    }
    report.tokens.remaining = non_negative(store.count_vault_rows_by_key(&key_id).await?.under_other_keys);
    report.signing_keys.remaining = non_negative(store.count_signing_keys_by_key(&key_id).await?.under_other_keys);
    Ok(report)
}

fn non_negative(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// One pass over the vault in primary-key order. Rows that cannot be opened or that changed
/// are passed over; the cursor guarantees the pass ends.
async fn rekey_vault_rows(
    store: &Store,
    cipher: &Cipher,
    batch_size: i64,
    report: &mut RekeyReport,
) -> Result<(), StoreError> {
    let active = cipher.active_key_id();
    let mut cursor = (String::new(), String::new());
    loop {
        let rows = store.vault_rows_not_under_key(active, (&cursor.0, &cursor.1), batch_size).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        cursor = (last.user_id.clone(), last.alias.clone());
        for row in &rows {
            match reseal_vault_row(cipher, row) {
                Ok(resealed) if store.replace_vault_ciphertexts(row, &resealed).await? => report.tokens.rekeyed += 1,
                Ok(_) => report.tokens.changed += 1,
                Err(err) => {
                    report.unreadable(false, format!("upstream tokens of user {} at {}", row.user_id, row.alias), &err);
                }
            }
        }
        tracing::debug!(rekeyed = report.tokens.rekeyed, changed = report.tokens.changed, "vault rekey batch done");
        if (rows.len() as i64) < batch_size {
            return Ok(());
        }
    }
}

/// The row with every ciphertext opened and sealed again under the active key; the tokens'
/// metadata and times stay as they were, since the tokens themselves did not change.
fn reseal_vault_row(cipher: &Cipher, row: &VaultRow) -> Result<VaultRow, CipherError> {
    let reseal = |column: &str, bytes: &[u8]| {
        cipher.reseal(&row.vault_key_id, bytes, &vault_column_aad(&row.user_id, &row.alias, column))
    };
    Ok(VaultRow {
        vault_key_id: cipher.active_key_id().to_owned(),
        access_token: reseal("access_token", &row.access_token)?,
        refresh_token: row.refresh_token.as_deref().map(|bytes| reseal("refresh_token", bytes)).transpose()?,
        id_token: row.id_token.as_deref().map(|bytes| reseal("id_token", bytes)).transpose()?,
        ..row.clone()
    })
}

/// Signing keys are few: one query, no batches.
async fn rekey_signing_keys(store: &Store, cipher: &Cipher, report: &mut RekeyReport) -> Result<(), StoreError> {
    for key in store.signing_keys_not_under_key(cipher.active_key_id()).await? {
        match reseal_signing_key(cipher, &key) {
            Ok(sealed) if store.replace_signing_key_ciphertext(&key, cipher.active_key_id(), &sealed).await? => {
                report.signing_keys.rekeyed += 1;
            }
            Ok(_) => report.signing_keys.changed += 1,
            Err(err) => report.unreadable(true, format!("signing key {}", key.kid), &err),
        }
    }
    Ok(())
}

fn reseal_signing_key(cipher: &Cipher, key: &SigningKeyRow) -> Result<Vec<u8>, CipherError> {
    cipher.reseal(&key.vault_key_id, &key.private_key, &signing_key_aad(&key.kid))
}
