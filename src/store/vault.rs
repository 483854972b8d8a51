//! Rows of the encrypted token vault; sealing and opening happen in `crate::vault`.

use std::sync::Arc;

use sqlx::Any;
use sqlx::any::AnyRow;
use sqlx::{FromRow as _, Row as _};

use super::{Backend, Store, StoreError, StoredFlag};

/// Which linked identity a call is about: a user at a provider, named so that the two strings
/// cannot be swapped. Hashes as the `(user_id, alias)` tuple does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey<'a> {
    pub user_id: &'a str,
    pub alias: &'a str,
}

/// The columns of `VaultRow`, in order; a macro so that every query is one literal built at
/// compile time.
macro_rules! vault_columns {
    () => {
        "user_id, alias, vault_key_id, access_token, refresh_token, id_token, token_type, scope, expires_at,
         refresh_expires_at, refreshed_at, updated_at"
    };
}
pub(super) use vault_columns;

/// The statement of `claim_stale_leases`, with or without Postgres's row locking clause.
macro_rules! claim_stale_leases {
    ($skip_locked:literal) => {
        concat!(
            "UPDATE vault_tokens SET lease_owner = $1, lease_until = $2
             WHERE (lease_until IS NULL OR lease_until < $3) AND (user_id, alias) IN (
                 SELECT v.user_id, v.alias FROM vault_tokens v
                 JOIN federated_identities f ON f.user_id = v.user_id AND f.alias = v.alias
                 WHERE v.alias = $4 AND v.refreshed_at < $5 AND v.refresh_token IS NOT NULL
                   AND f.needs_reauth = 0 AND (v.lease_until IS NULL OR v.lease_until < $3)
                 ORDER BY v.refreshed_at LIMIT $6 ",
            $skip_locked,
            ") RETURNING ",
            vault_columns!()
        )
    };
}
const CLAIM_STALE_LEASES_POSTGRES: &str = claim_stale_leases!("FOR UPDATE OF v SKIP LOCKED");
const CLAIM_STALE_LEASES_SQLITE: &str = claim_stale_leases!("");

/// An identity as a token read sees it: whether it must sign in again, and its sealed tokens
/// (`None` when the provider keeps none for it).
#[derive(Debug, Clone)]
pub struct LinkedTokens {
    /// A disabled user's tokens are not served.
    pub(crate) user_enabled: bool,
    pub(crate) needs_reauth: bool,
    pub(crate) reauth_reason: Option<String>,
    /// What the mark asks for (`ReauthMark::kind`); `None` for marks older than kinds.
    pub(crate) reauth_kind: Option<String>,
    pub(crate) tokens: Option<VaultRow>,
}

/// Who holds the right to refresh a row, and until when (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub owner: &'a str,
    pub until: i64,
}

#[derive(Clone, sqlx::FromRow)]
pub struct VaultRow {
    pub user_id: String,
    pub(crate) alias: String,
    pub vault_key_id: String,
    pub(crate) access_token: Vec<u8>,
    pub(crate) refresh_token: Option<Vec<u8>>,
    pub(crate) id_token: Option<Vec<u8>>,
    pub(crate) token_type: String,
    pub(crate) scope: String,
    pub expires_at: i64,
    pub(crate) refresh_expires_at: Option<i64>,
    pub refreshed_at: i64,
    pub updated_at: i64,
}

impl VaultRow {
    pub fn key(&self) -> IdentityKey<'_> {
        IdentityKey { user_id: &self.user_id, alias: &self.alias }
    }
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
    #[cfg(feature = "testing")]
    pub async fn find_vault_row(&self, identity: IdentityKey<'_>) -> Result<Option<VaultRow>, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let sql = concat!("SELECT ", vault_columns!(), " FROM vault_tokens WHERE user_id = $1 AND alias = $2");
        Ok(sqlx::query_as(sql).bind(user_id).bind(alias).fetch_optional(&self.pool).await?)
    }

    /// The identity's reauthentication mark and its sealed tokens as kept in memory, when they
    /// are (see `cache`); `None` means "ask the database", never "not linked".
    pub(crate) fn cached_linked_tokens(&self, identity: IdentityKey<'_>) -> Option<Arc<LinkedTokens>> {
        self.cache.as_ref()?.identity(identity)
    }

    /// The identity's reauthentication mark and its tokens in one round trip: the hot path
    /// of every token read. `None` when the user is not linked to the provider.
    pub(crate) async fn find_linked_tokens(
        &self,
        identity: IdentityKey<'_>,
    ) -> Result<Option<LinkedTokens>, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let ticket = self.cache.as_ref().map(|cache| cache.ticket());
        let row: Option<AnyRow> = sqlx::query(
            "SELECT u.enabled, f.needs_reauth, f.reauth_reason, f.reauth_kind, v.user_id, v.alias, v.vault_key_id, v.access_token,
                    v.refresh_token, v.id_token, v.token_type, v.scope, v.expires_at, v.refresh_expires_at,
                    v.refreshed_at, v.updated_at
             FROM federated_identities f
             JOIN users u ON u.id = f.user_id
             LEFT JOIN vault_tokens v ON v.user_id = f.user_id AND v.alias = f.alias
             WHERE f.user_id = $1 AND f.alias = $2",
        )
        .bind(user_id)
        .bind(alias)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let has_tokens = row.try_get::<Option<String>, _>("user_id")?.is_some();
        let linked = LinkedTokens {
            user_enabled: row.try_get::<StoredFlag, _>("enabled")?.into(),
            needs_reauth: row.try_get::<StoredFlag, _>("needs_reauth")?.into(),
            reauth_reason: row.try_get("reauth_reason")?,
            reauth_kind: row.try_get("reauth_kind")?,
            tokens: if has_tokens { Some(VaultRow::from_row(&row)?) } else { None },
        };
        if let (Some(cache), Some(ticket)) = (&self.cache, ticket) {
            cache.keep_identity(ticket, &linked);
        }
        Ok(Some(linked))
    }

    /// Drops this process's copy of an identity's rows after writing them.
    pub(super) fn forget_identity(&self, identity: IdentityKey<'_>) {
        if let Some(cache) = &self.cache {
            cache.forget_identity(identity);
        }
    }

    /// Takes the refresh lease of one row if nobody holds a live one, and returns the row as
    /// it is now, so the caller sees a refresh another process just finished.
    pub async fn claim_refresh_lease(
        &self,
        identity: IdentityKey<'_>,
        lease: Lease<'_>,
        now: i64,
    ) -> Result<Option<VaultRow>, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let sql = concat!(
            "UPDATE vault_tokens SET lease_owner = $3, lease_until = $4
             WHERE user_id = $1 AND alias = $2 AND (lease_until IS NULL OR lease_until < $5)
             RETURNING ",
            vault_columns!()
        );
        Ok(sqlx::query_as(sql)
            .bind(user_id)
            .bind(alias)
            .bind(lease.owner)
            .bind(lease.until)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Takes the leases of up to `limit` rows of `alias` last refreshed before `cutoff`,
    /// oldest first, skipping rows another process holds and identities that must sign in
    /// again. Postgres skips locked rows so that replicas split the work; SQLite has one
    /// writer at a time, so a plain update is already exclusive.
    pub async fn claim_stale_leases(
        &self,
        alias: &str,
        cutoff: i64,
        lease: Lease<'_>,
        now: i64,
        limit: i64,
    ) -> Result<Vec<VaultRow>, StoreError> {
        let sql = match self.backend {
            Backend::Postgres => CLAIM_STALE_LEASES_POSTGRES,
            Backend::Sqlite => CLAIM_STALE_LEASES_SQLITE,
        };
        Ok(sqlx::query_as(sql)
            .bind(lease.owner)
            .bind(lease.until)
            .bind(now)
            .bind(alias)
            .bind(cutoff)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Stores refreshed tokens and gives the lease back, if `owner` still holds it; returns
    /// false when the lease had expired and been taken by another process.
    pub async fn finish_refresh(&self, row: &VaultRow, owner: &str) -> Result<bool, StoreError> {
        let done = bind_vault_row(
            sqlx::query(
                "UPDATE vault_tokens SET vault_key_id = $3, access_token = $4, refresh_token = $5, id_token = $6,
                 token_type = $7, scope = $8, expires_at = $9, refresh_expires_at = $10, refreshed_at = $11,
                 updated_at = $12, lease_owner = NULL, lease_until = NULL
             WHERE user_id = $1 AND alias = $2 AND lease_owner = $13",
            ),
            row,
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        self.forget_identity(row.key());
        Ok(done.rows_affected() > 0)
    }

    /// Extends a lease `owner` holds to `until`; false when it holds it no longer (released,
    /// finished, or lapsed and taken by another process).
    pub async fn renew_refresh_lease(
        &self,
        identity: IdentityKey<'_>,
        owner: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let done = sqlx::query(
            "UPDATE vault_tokens SET lease_until = $4 WHERE user_id = $1 AND alias = $2 AND lease_owner = $3",
        )
        .bind(user_id)
        .bind(alias)
        .bind(owner)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives back every lease `owner` still holds, at shutdown; returns how many there were.
    pub async fn release_refresh_leases_of(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE vault_tokens SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Who holds the refresh lease of a row, and until when; `None` when nobody does.
    #[cfg(feature = "testing")]
    pub async fn find_refresh_lease(&self, identity: IdentityKey<'_>) -> Result<Option<(String, i64)>, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let row: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT lease_owner, lease_until FROM vault_tokens WHERE user_id = $1 AND alias = $2")
                .bind(user_id)
                .bind(alias)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(owner, until)| owner.zip(until)))
    }

    /// Gives a lease back without changing the tokens.
    pub async fn release_refresh_lease(&self, identity: IdentityKey<'_>, owner: &str) -> Result<(), StoreError> {
        let IdentityKey { user_id, alias } = identity;
        sqlx::query(
            "UPDATE vault_tokens SET lease_owner = NULL, lease_until = NULL
             WHERE user_id = $1 AND alias = $2 AND lease_owner = $3",
        )
        .bind(user_id)
        .bind(alias)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn delete_vault_row(
        tx: &mut sqlx::Transaction<'_, Any>,
        user_id: &str,
        alias: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vault_tokens WHERE user_id = $1 AND alias = $2")
            .bind(user_id)
            .bind(alias)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(super) async fn upsert_vault_row(
        tx: &mut sqlx::Transaction<'_, Any>,
        row: &VaultRow,
    ) -> Result<(), StoreError> {
        bind_vault_row(sqlx::query(
            "INSERT INTO vault_tokens (user_id, alias, vault_key_id, access_token, refresh_token, id_token, token_type,
                                       scope, expires_at, refresh_expires_at, refreshed_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (user_id, alias) DO UPDATE SET vault_key_id = $3, access_token = $4, refresh_token = $5,
                 id_token = $6, token_type = $7, scope = $8, expires_at = $9, refresh_expires_at = $10,
                 refreshed_at = $11, updated_at = $12",
        ), row)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Binds a row's columns as `$1`…`$12`, in `vault_columns!` order; the ciphertexts are
/// borrowed, not copied.
pub(super) fn bind_vault_row<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    row: &'q VaultRow,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&row.user_id)
        .bind(&row.alias)
        .bind(&row.vault_key_id)
        .bind(row.access_token.as_slice())
        .bind(row.refresh_token.as_deref())
        .bind(row.id_token.as_deref())
        .bind(&row.token_type)
        .bind(&row.scope)
        .bind(row.expires_at)
        .bind(row.refresh_expires_at)
        .bind(row.refreshed_at)
        .bind(row.updated_at)
}
