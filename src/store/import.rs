//! The queries of `import keycloak` and `export keycloak`: users with their attributes and
//! linked identities, read and written as Keycloak's user representation carries them.

use sqlx::{Any, Transaction};

use super::attributes::{Replace, write_attributes};
use super::vault::bind_vault_row;
use super::{Backend, IdentityKey, Store, StoreError, UserRow, VaultRow, is_unique_violation};

/// One value of an attribute; a name's values are kept in `position` order.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttributeRow {
    pub user_id: String,
    pub name: String,
    pub value: String,
}

/// A linked identity as Keycloak's `federatedIdentities` carries it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LinkRow {
    pub user_id: String,
    pub alias: String,
    pub subject: String,
    pub username: Option<String>,
}

/// Whether an identity already holds stored tokens, and the subject it is linked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub subject: String,
    pub has_tokens: bool,
}

/// What one import transaction writes for a user: its fields, and its attributes when they
/// change (all of a user's attributes are replaced at once, as Keycloak's representation
/// is the whole list).
#[derive(Debug)]
pub struct UserWrite<'a> {
    pub user: &'a UserRow,
    /// Whether the user is already stored (so has attributes to replace).
    pub existing: bool,
    /// `(name, value)` grouped by name, each name's values in order.
    pub attributes: Option<&'a [(String, String)]>,
}

/// One chunk of an import: every read and write of its users in one transaction, so a chunk
/// lands whole or not at all, and reads see the chunk's own earlier writes.
pub struct ImportBatch {
    tx: Transaction<'static, Any>,
    backend: Backend,
}

impl std::fmt::Debug for ImportBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportBatch").finish_non_exhaustive()
    }
}

impl Store {
    /// A chunk's transaction; `writes` is false for a dry run, which only reads and so need not
    /// hold SQLite's write lock.
    pub(crate) async fn begin_import(&self, writes: bool) -> Result<ImportBatch, StoreError> {
        let tx = if writes { self.begin_write().await? } else { self.pool.begin().await? };
        Ok(ImportBatch { tx, backend: self.backend })
    }

    /// Refreshes the planner's statistics of the tables an import fills, as after any bulk
    /// load: autovacuum may be off or not have come by yet, and the admin API's searches and
    /// the next import plan on them.
    pub(crate) async fn analyze_imported(&self) -> Result<(), StoreError> {
        for table in ["users", "user_attributes", "federated_identities"] {
            sqlx::query(&format!("ANALYZE {table}")).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Up to `limit` users after `after_id`, by id: the pages of an export.
    pub(crate) async fn users_after(&self, after_id: &str, limit: i64) -> Result<Vec<UserRow>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        Ok(sqlx::query_as(sql).bind(after_id).bind(limit).fetch_all(&self.pool).await?)
    }

    /// The attributes of the users whose ids lie in `first..=last`, by user, name and position.
    pub(crate) async fn attributes_between(&self, first: &str, last: &str) -> Result<Vec<AttributeRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, name, value FROM user_attributes WHERE user_id >= $1 AND user_id <= $2
             ORDER BY user_id, name, position",
        )
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The linked identities of the users whose ids lie in `first..=last`, by user and alias.
    pub(crate) async fn links_between(&self, first: &str, last: &str) -> Result<Vec<LinkRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, alias, subject, username FROM federated_identities
             WHERE user_id >= $1 AND user_id <= $2 ORDER BY user_id, alias",
        )
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The identity `(user_id, alias)`: its subject and whether tokens are stored for it.
    pub(crate) async fn link_state(&self, user_id: &str, alias: &str) -> Result<Option<LinkState>, StoreError> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT f.subject, CAST(CASE WHEN v.user_id IS NULL THEN 0 ELSE 1 END AS BIGINT)
             FROM federated_identities f
             LEFT JOIN vault_tokens v ON v.user_id = f.user_id AND v.alias = f.alias
             WHERE f.user_id = $1 AND f.alias = $2",
        )
        .bind(user_id)
        .bind(alias)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(subject, tokens)| LinkState { subject, has_tokens: tokens != 0 }))
    }

    /// Stores tokens brought from elsewhere for a linked identity that holds none; returns
    /// false and changes nothing when it already holds some (a sign-in's are newer) or when
    /// the identity is gone. The trigger of migration 0006 announces the new row to every
    /// replica's cache.
    pub(crate) async fn insert_tokens_if_absent(&self, row: &VaultRow) -> Result<bool, StoreError> {
        let query = sqlx::query(
            "INSERT INTO vault_tokens (user_id, alias, vault_key_id, access_token, refresh_token, id_token, token_type,
                                       scope, expires_at, refresh_expires_at, refreshed_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
             WHERE EXISTS (SELECT 1 FROM federated_identities WHERE user_id = $1 AND alias = $2)
             ON CONFLICT (user_id, alias) DO NOTHING",
        );
        let done = bind_vault_row(query, row).execute(&self.pool).await?;
        self.forget_identity(IdentityKey { user_id: &row.user_id, alias: &row.alias });
        Ok(done.rows_affected() > 0)
    }
}

impl ImportBatch {
    pub(crate) async fn find_user(&mut self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        Ok(sqlx::query_as(sql).bind(id).fetch_optional(&mut *self.tx).await?)
    }

    /// The user's attributes as `(name, value)`, by name (bytes) and position.
    pub(crate) async fn attributes(&mut self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, value FROM user_attributes WHERE user_id = $1 ORDER BY position")
                .bind(user_id)
                .fetch_all(&mut *self.tx)
                .await?;
        // By name in byte order whatever the database's collation; stable, so positions keep.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }

    pub(crate) async fn links(&mut self, user_id: &str) -> Result<Vec<LinkRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT user_id, alias, subject, username FROM federated_identities WHERE user_id = $1 ORDER BY alias",
        )
        .bind(user_id)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// Another user than `except_id` whose e-mail matches, ignoring case. No `ORDER BY id`:
    /// with it, a planner without statistics (right after a bulk import, or with autovacuum
    /// off) walked the primary key through every user for each lookup, and a re-import of
    /// 100,000 users crawled at 19 users/s.
    pub(crate) async fn email_holder(&mut self, email: &str, except_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1) AND id <> $2 LIMIT 1")
            .bind(email)
            .bind(except_id)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    /// The user the upstream account `(alias, subject)` is linked to, if any.
    pub(crate) async fn subject_holder(&mut self, alias: &str, subject: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT user_id FROM federated_identities WHERE alias = $1 AND subject = $2")
            .bind(alias)
            .bind(subject)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    /// Creates or updates the user, and replaces its attributes when given.
    pub(crate) async fn save_user(&mut self, write: &UserWrite<'_>, now: i64) -> Result<(), StoreError> {
        let user = write.user;
        sqlx::query(
            "INSERT INTO users (id, username, email, email_verified, first_name, last_name, full_name, enabled,
                                created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET username = $2, email = $3, email_verified = $4, first_name = $5,
                 last_name = $6, full_name = $7, enabled = $8, created_at = $9, updated_at = $10",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(i64::from(user.email_verified))
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(&user.full_name)
        .bind(i64::from(user.enabled))
        .bind(user.created_at)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        if let Some(attributes) = write.attributes {
            let values = attributes.iter().map(|(name, value)| (name.as_str(), value.as_str()));
            let replace = if write.existing { Replace::All } else { Replace::Nothing };
            write_attributes(&mut self.tx, self.backend, &user.id, values, replace).await?;
        }
        Ok(())
    }

    /// Links `(alias, subject)` to the user, or relinks the user's identity of `alias` to
    /// another subject: then the tokens stored for the old account are erased and its
    /// reauthentication mark cleared (both announced by the triggers of migration 0006).
    /// `Conflict` when another user holds the upstream account (a sign-in that raced).
    pub(crate) async fn link(&mut self, link: &LinkRow, relink: bool, now: i64) -> Result<(), StoreError> {
        if relink {
            Store::delete_vault_row(&mut self.tx, &link.user_id, &link.alias).await?;
        }
        let linked = sqlx::query(
            "INSERT INTO federated_identities (user_id, alias, subject, username, needs_reauth, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 0, $5, $5)
             ON CONFLICT (user_id, alias) DO UPDATE SET subject = $3, username = $4, needs_reauth = 0,
                 reauth_reason = NULL, updated_at = $5",
        )
        .bind(&link.user_id)
        .bind(&link.alias)
        .bind(&link.subject)
        .bind(&link.username)
        .bind(now)
        .execute(&mut *self.tx)
        .await;
        match linked {
            Err(err) if is_unique_violation(&err) => {
                Err(StoreError::Conflict(format!("the {} account is linked to another user", link.alias)))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// Ends the user's live sessions (announced by the sessions trigger of migration 0006),
    /// so a user the import disables keeps no session on any replica.
    pub(crate) async fn end_sessions(&mut self, user_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sso_sessions SET ended_at = $2 WHERE user_id = $1 AND ended_at IS NULL")
            .bind(user_id)
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
