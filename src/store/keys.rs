//! Signing keys and instance secrets (the development vault key).

use super::{Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    pub algorithm: String,
    pub vault_key_id: String,
    /// PKCS#8, sealed by the vault cipher with the kid as associated data.
    pub private_key: Vec<u8>,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl Store {
    /// Returns the stored value of `name`, storing `value` first if there was none, so that
    /// replicas starting together agree on one value.
    pub async fn instance_secret_or_insert(&self, name: &str, value: &[u8], now: i64) -> Result<Vec<u8>, StoreError> {
        sqlx::query(
            "INSERT INTO instance_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value.to_vec())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Keys newest first.
    pub async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRow>, StoreError> {
        Ok(sqlx::query_as("SELECT kid, algorithm, vault_key_id, private_key, public_key, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn insert_signing_key(&self, key: &SigningKeyRow) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO signing_keys (kid, algorithm, vault_key_id, private_key, public_key, created_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&key.kid)
            .bind(&key.algorithm)
            .bind(&key.vault_key_id)
            .bind(key.private_key.clone())
            .bind(key.public_key.clone())
            .bind(key.created_at)
            .bind(key.retired_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
