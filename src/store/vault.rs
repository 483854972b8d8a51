//! Rows of the encrypted token vault; sealing and opening happen in `crate::vault`.

use sqlx::Any;

use super::{Store, StoreError};

#[derive(Clone, sqlx::FromRow)]
pub struct VaultRow {
    pub user_id: String,
    pub alias: String,
    pub vault_key_id: String,
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
    pub id_token: Option<Vec<u8>>,
    pub token_type: String,
    pub scope: String,
    pub expires_at: i64,
    pub refresh_expires_at: Option<i64>,
    pub refreshed_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for VaultRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultRow")
            .field("user_id", &self.user_id)
            .field("alias", &self.alias)
            .field("vault_key_id", &self.vault_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub async fn find_vault_row(&self, user_id: &str, alias: &str) -> Result<Option<VaultRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, alias, vault_key_id, access_token, refresh_token, id_token, token_type, scope,
                    expires_at, refresh_expires_at, refreshed_at, updated_at
             FROM vault_tokens WHERE user_id = $1 AND alias = $2",
        )
        .bind(user_id)
        .bind(alias)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(super) async fn upsert_vault_row(
        tx: &mut sqlx::Transaction<'_, Any>,
        row: &VaultRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO vault_tokens (user_id, alias, vault_key_id, access_token, refresh_token, id_token, token_type,
                                       scope, expires_at, refresh_expires_at, refreshed_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (user_id, alias) DO UPDATE SET vault_key_id = $3, access_token = $4, refresh_token = $5,
                 id_token = $6, token_type = $7, scope = $8, expires_at = $9, refresh_expires_at = $10,
                 refreshed_at = $11, updated_at = $12",
        )
        .bind(&row.user_id)
        .bind(&row.alias)
        .bind(&row.vault_key_id)
        .bind(row.access_token.clone())
        .bind(row.refresh_token.clone())
        .bind(row.id_token.clone())
        .bind(&row.token_type)
        .bind(&row.scope)
        .bind(row.expires_at)
        .bind(row.refresh_expires_at)
        .bind(row.refreshed_at)
        .bind(row.updated_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
