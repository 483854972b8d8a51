//! Signing keys and instance secrets (the development vault key).

use super::{Backend, Store, StoreError};

/// The columns of `SigningKeyRow`, in order; a macro so that every query is one literal built
/// at compile time. `active_from` was added by a later migration; a row from before it signs
/// from its creation.
macro_rules! signing_key_columns {
    () => {
        "kid, algorithm, vault_key_id, private_key, public_key, created_at,
         COALESCE(active_from, created_at) AS active_from, retired_at, verify_until"
    };
}
pub(super) use signing_key_columns;

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct SigningKeyRow {
    pub(crate) kid: String,
    pub(crate) algorithm: String,
    pub(crate) vault_key_id: String,
    /// PKCS#8 (the raw secret for HS512), sealed by the vault cipher with the kid as
    /// associated data.
    pub(crate) private_key: Vec<u8>,
    /// SubjectPublicKeyInfo DER; empty for HS512, whose key is secret.
    pub(crate) public_key: Vec<u8>,
    pub(crate) created_at: i64,
    /// When the key starts signing; a rotation may publish a key before it signs.
    pub(crate) active_from: i64,
    pub(crate) retired_at: Option<i64>,
    /// Until when a retired key is still published and verifies: its last tokens' expiry.
    pub(crate) verify_until: Option<i64>,
}

impl Store {
    /// The stored value of `name`, if there is one.
    pub(crate) async fn instance_secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Returns the stored value of `name`, storing `value` first if there was none, so that
    /// replicas starting together agree on one value.
    pub async fn instance_secret_or_insert(&self, name: &str, value: &[u8], now: i64) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "INSERT INTO instance_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The keys that may still sign or verify at `now` (retired keys past `verify_until`
    /// are left out), newest first.
    pub(crate) async fn list_signing_keys(&self, now: i64) -> Result<Vec<SigningKeyRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            signing_key_columns!(),
            " FROM signing_keys WHERE verify_until IS NULL OR verify_until > $1
             ORDER BY COALESCE(active_from, created_at) DESC, created_at DESC, kid DESC"
        );
        Ok(sqlx::query_as(sql).bind(now).fetch_all(&self.pool).await?)
    }

    pub(crate) async fn insert_signing_key(&self, key: &SigningKeyRow) -> Result<(), StoreError> {
        insert_query(key).execute(&self.pool).await?;
        Ok(())
    }

    /// Stores `keys` and retires at `retire_at` every other key not retired by then, which
    /// then verifies until `verify_until`; returns the kids retired. Rotations run one at a time
    /// (Postgres locks the table; SQLite has one writer), so two at once cannot leave two
    /// keys unretired.
    pub(crate) async fn rotate_signing_keys(
        &self,
        keys: &[SigningKeyRow],
        retire_at: i64,
        verify_until: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
        }
        let retired: Vec<String> = sqlx::query_scalar(
            "UPDATE signing_keys SET retired_at = $1, verify_until = $2
             WHERE retired_at IS NULL OR retired_at > $1
             RETURNING kid",
        )
        .bind(retire_at)
        .bind(verify_until)
        .fetch_all(&mut *tx)
        .await?;
        for key in keys {
            insert_query(key).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(retired)
    }
}

fn insert_query(key: &SigningKeyRow) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, algorithm, vault_key_id, private_key, public_key, created_at, active_from,
                                   retired_at, verify_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&key.kid)
    .bind(&key.algorithm)
    .bind(&key.vault_key_id)
    .bind(key.private_key.as_slice())
    .bind(key.public_key.as_slice())
    .bind(key.created_at)
    .bind(key.active_from)
    .bind(key.retired_at)
    .bind(key.verify_until)
}
