//! The queries of `vault rekey`: rows sealed under other keys, a batch at a time, and
//! compare-and-swap updates that leave a row alone if anything rewrote it since it was read.

use super::keys::signing_key_columns;
use super::vault::vault_columns;
use super::{SigningKeyRow, Store, StoreError, VaultRow};

/// How many rows of `$table` are sealed under the key `$1`, and under others.
macro_rules! count_sealed {
    ($table:literal) => {
        concat!(
            "SELECT COALESCE(SUM(CASE WHEN vault_key_id = $1 THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN vault_key_id = $1 THEN 0 ELSE 1 END), 0)
             FROM ",
            $table
        )
    };
}

/// How many rows of a table are sealed under one key and under others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealedCounts {
    pub under_key: i64,
    pub under_other_keys: i64,
}

impl Store {
    pub async fn count_vault_rows_by_key(&self, key_id: &str) -> Result<SealedCounts, StoreError> {
        self.count_sealed(count_sealed!("vault_tokens"), key_id).await
    }

    pub async fn count_signing_keys_by_key(&self, key_id: &str) -> Result<SealedCounts, StoreError> {
        self.count_sealed(count_sealed!("signing_keys"), key_id).await
    }

    async fn count_sealed(&self, sql: &'static str, key_id: &str) -> Result<SealedCounts, StoreError> {
        let (under_key, under_other_keys): (i64, i64) = sqlx::query_as(sql).bind(key_id).fetch_one(&self.pool).await?;
        Ok(SealedCounts { under_key, under_other_keys })
    }

    /// Up to `limit` vault rows not sealed under `key_id`, in primary-key order after the
    /// row `(after_user_id, after_alias)`; `("", "")` starts from the beginning.
    pub async fn vault_rows_not_under_key(
        &self,
        key_id: &str,
        (after_user_id, after_alias): (&str, &str),
        limit: i64,
    ) -> Result<Vec<VaultRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            vault_columns!(),
            " FROM vault_tokens
             WHERE vault_key_id <> $1 AND (user_id > $2 OR (user_id = $2 AND alias > $3))
             ORDER BY user_id, alias
             LIMIT $4"
        ))
        .bind(key_id)
        .bind(after_user_id)
        .bind(after_alias)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores `resealed`'s ciphertexts and key id if the row is still exactly `seen`; returns
    /// false (and changes nothing) when a refresh, a sign-in or another rekey rewrote it.
    /// The access token's ciphertext has a fresh nonce on every write, so comparing it
    /// catches a rewrite within the same second that `updated_at` alone would miss.
    pub async fn replace_vault_ciphertexts(&self, seen: &VaultRow, resealed: &VaultRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE vault_tokens SET vault_key_id = $3, access_token = $4, refresh_token = $5, id_token = $6
             WHERE user_id = $1 AND alias = $2 AND vault_key_id = $7 AND updated_at = $8 AND access_token = $9",
        )
        .bind(&seen.user_id)
        .bind(&seen.alias)
        .bind(&resealed.vault_key_id)
        .bind(resealed.access_token.as_slice())
        .bind(resealed.refresh_token.as_deref())
        .bind(resealed.id_token.as_deref())
        .bind(&seen.vault_key_id)
        .bind(seen.updated_at)
        .bind(seen.access_token.as_slice())
        .execute(&self.pool)
        .await?;
        self.forget_identity(seen.key());
        Ok(done.rows_affected() > 0)
    }

    /// Every signing key, retired ones included, not sealed under `key_id`.
    pub(crate) async fn signing_keys_not_under_key(&self, key_id: &str) -> Result<Vec<SigningKeyRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            signing_key_columns!(),
            " FROM signing_keys WHERE vault_key_id <> $1 ORDER BY kid"
        ))
        .bind(key_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a signing key's re-sealed private key if the row is still exactly `seen`.
    pub(crate) async fn replace_signing_key_ciphertext(
        &self,
        seen: &SigningKeyRow,
        vault_key_id: &str,
        private_key: &[u8],
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET vault_key_id = $2, private_key = $3
             WHERE kid = $1 AND vault_key_id = $4 AND private_key = $5",
        )
        .bind(&seen.kid)
        .bind(vault_key_id)
        .bind(private_key)
        .bind(&seen.vault_key_id)
        .bind(seen.private_key.as_slice())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
