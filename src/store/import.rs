//! The queries of `import keycloak` and `export keycloak`: users with their attributes and
//! linked identities, read and written as Keycloak's user representation carries them.
//!
//! An import chunk reads and writes its users a set at a time: each statement carries the whole
//! chunk's rows as one JSON parameter, unpacked by the database's own JSON functions (sqlx's
//! `Any` driver binds no arrays), so a chunk of 500 users costs about ten round trips, not six per
//! user. On Postgres, lookups by a list of keys are written `= ANY (ARRAY(…))` or as a `LATERAL`
//! join fenced by `OFFSET 0`: both keep each key on its index whatever the planner guesses of the
//! list's length or of a table that the import itself is filling.

use serde::Serialize;
use sqlx::{Any, Transaction};

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

/// What the database holds of some users: their rows, attributes and linked identities.
#[derive(Debug, Default)]
pub struct StoredUsers {
    pub users: Vec<UserRow>,
    /// By user, then name (in byte order, whatever the database's collation), then position.
    pub attributes: Vec<AttributeRow>,
    /// By user, then alias.
    pub links: Vec<LinkRow>,
}

/// What one chunk of an import writes, each list in one statement.
#[derive(Debug, Default)]
pub struct ChunkWrites {
    /// Users created or changed, written whole.
    pub users: Vec<UserRow>,
    /// Stored users whose attributes are all replaced: deleted before `attributes` are inserted.
    pub replaced_attributes: Vec<String>,
    /// Attribute values to insert: each user's together, each name's values together and in order.
    pub attributes: Vec<AttributeRow>,
    /// Linked identities created or changed.
    pub links: Vec<LinkRow>,
    /// `(user_id, alias)` of identities moving to another upstream account: the tokens stored for
    /// the old one are erased (and their reauthentication mark cleared with the link's update).
    pub relinked: Vec<(String, String)>,
    /// Users the import disables: their live sessions end.
    pub disabled: Vec<String>,
    /// `(user_id, digest)` of each user the chunk found or left equal to its export.
    pub digests: Vec<(String, String)>,
}

/// One chunk of an import: every read and write of its users in one transaction, so a chunk
/// lands whole or not at all. A chunk that writes locks, on Postgres, the stored users it reads
/// (rows, attributes, links) until it ends, so that no other writer changes them between the
/// read and the chunk's writes; SQLite's writer holds the whole database already.
pub struct ImportBatch {
    tx: Transaction<'static, Any>,
    backend: Backend,
    writes: bool,
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
        Ok(ImportBatch { tx, backend: self.backend, writes })
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

/// `column` is one of the ids of the JSON array `$1`, on each database.
macro_rules! among_postgres {
    ($column:literal) => {
        concat!($column, " = ANY (ARRAY(SELECT json_array_elements_text($1::json)))")
    };
}
macro_rules! among_sqlite {
    ($column:literal) => {
        concat!($column, " IN (SELECT value FROM json_each($1))")
    };
}

/// The users' columns an import writes, then what an update of a stored user sets from them.
macro_rules! imported_user_columns {
    () => {
        "id, username, email, email_verified, first_name, last_name, full_name, enabled, created_at, updated_at"
    };
}
macro_rules! imported_user_update {
    () => {
        " ON CONFLICT (id) DO UPDATE SET username = excluded.username, email = excluded.email,
             email_verified = excluded.email_verified, first_name = excluded.first_name,
             last_name = excluded.last_name, full_name = excluded.full_name, enabled = excluded.enabled,
             created_at = excluded.created_at, updated_at = excluded.updated_at"
    };
}
macro_rules! imported_link_update {
    () => {
        " ON CONFLICT (user_id, alias) DO UPDATE SET subject = excluded.subject, username = excluded.username,
             needs_reauth = 0, reauth_reason = NULL, reauth_kind = NULL, reauth_claims = NULL,
             updated_at = excluded.updated_at"
    };
}

/// A user's fields as a chunk's JSON carries them; flags as the schema stores them.
#[derive(Serialize)]
struct UserJson<'a> {
    id: &'a str,
    username: &'a str,
    email: Option<&'a str>,
    email_verified: i64,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    full_name: Option<&'a str>,
    enabled: i64,
    created_at: i64,
}

#[derive(Serialize)]
struct AttributeJson<'a> {
    user_id: &'a str,
    name: &'a str,
    position: i64,
    value: &'a str,
}

#[derive(Serialize)]
struct LinkJson<'a> {
    user_id: &'a str,
    alias: &'a str,
    subject: &'a str,
    username: Option<&'a str>,
}

#[derive(Serialize)]
struct AccountJson<'a> {
    alias: &'a str,
    subject: &'a str,
}

#[derive(Serialize)]
struct DigestJson<'a> {
    user_id: &'a str,
    digest: &'a str,
}

fn json(value: &impl Serialize) -> Result<String, StoreError> {
    Ok(serde_json::to_string(value)?)
}

impl ImportBatch {
    /// A read's text for this batch: on Postgres, `locking` when the batch writes.
    fn read_sql(&self, postgres: &'static str, locking: &'static str, sqlite: &'static str) -> &'static str {
        match (self.backend, self.writes) {
            (Backend::Postgres, true) => locking,
            (Backend::Postgres, false) => postgres,
            (Backend::Sqlite, _) => sqlite,
        }
    }

    fn sql(&self, postgres: &'static str, sqlite: &'static str) -> &'static str {
        match self.backend {
            Backend::Postgres => postgres,
            Backend::Sqlite => sqlite,
        }
    }

    /// The import digests stored for those of `user_ids` that have one: `(user_id, digest)`.
    pub(crate) async fn digests(&mut self, user_ids: &[&str]) -> Result<Vec<(String, String)>, StoreError> {
        let sql = self.sql(
            concat!("SELECT user_id, digest FROM user_import_digests WHERE ", among_postgres!("user_id")),
            concat!("SELECT user_id, digest FROM user_import_digests WHERE ", among_sqlite!("user_id")),
        );
        Ok(sqlx::query_as(sql).bind(json(&user_ids)?).fetch_all(&mut *self.tx).await?)
    }

    /// Who holds each of `emails`, ignoring case as the database lowers it: `(the e-mail as
    /// given, user_id)`, a row per holder.
    pub(crate) async fn email_holders(&mut self, emails: &[&str]) -> Result<Vec<(String, String)>, StoreError> {
        let sql = self.sql(
            "SELECT e.value, u.id FROM json_array_elements_text($1::json) AS e(value)
             CROSS JOIN LATERAL (SELECT id FROM users WHERE lower(email) = lower(e.value) OFFSET 0) AS u",
            "SELECT e.value, u.id FROM json_each($1) AS e JOIN users AS u ON lower(u.email) = lower(e.value)",
        );
        Ok(sqlx::query_as(sql).bind(json(&emails)?).fetch_all(&mut *self.tx).await?)
    }

    /// The users the upstream accounts `(alias, subject)` are linked to: `(alias, subject,
    /// user_id)` for each account linked.
    pub(crate) async fn subject_holders(
        &mut self,
        accounts: &[(&str, &str)],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let accounts: Vec<AccountJson<'_>> =
            accounts.iter().map(|&(alias, subject)| AccountJson { alias, subject }).collect();
        let sql = self.sql(
            "SELECT w.alias, w.subject, f.user_id FROM json_to_recordset($1::json) AS w(alias TEXT, subject TEXT)
             CROSS JOIN LATERAL (SELECT user_id FROM federated_identities
                                 WHERE alias = w.alias AND subject = w.subject OFFSET 0) AS f",
            "SELECT f.alias, f.subject, f.user_id FROM json_each($1) AS w
             JOIN federated_identities AS f ON f.alias = w.value ->> 'alias' AND f.subject = w.value ->> 'subject'",
        );
        Ok(sqlx::query_as(sql).bind(json(&accounts)?).fetch_all(&mut *self.tx).await?)
    }

    /// Those of `user_ids` that are stored, with their attributes and linked identities.
    pub(crate) async fn stored_users(&mut self, user_ids: &[&str]) -> Result<StoredUsers, StoreError> {
        let users_sql = self.read_sql(
            concat!("SELECT ", user_columns!(), " FROM users WHERE ", among_postgres!("id"), " ORDER BY id"),
            concat!("SELECT ", user_columns!(), " FROM users WHERE ", among_postgres!("id"), " ORDER BY id FOR UPDATE"),
            concat!("SELECT ", user_columns!(), " FROM users WHERE ", among_sqlite!("id"), " ORDER BY id"),
        );
        let users: Vec<UserRow> = sqlx::query_as(users_sql).bind(json(&user_ids)?).fetch_all(&mut *self.tx).await?;
        if users.is_empty() {
            return Ok(StoredUsers::default());
        }
        let found = json(&users.iter().map(|user| user.id.as_str()).collect::<Vec<_>>())?;
        let attributes_sql = self.read_sql(
            concat!(
                "SELECT user_id, name, value FROM user_attributes WHERE ",
                among_postgres!("user_id"),
                " ORDER BY user_id, name, position"
            ),
            concat!(
                "SELECT user_id, name, value FROM user_attributes WHERE ",
                among_postgres!("user_id"),
                " ORDER BY user_id, name, position FOR UPDATE"
            ),
            concat!(
                "SELECT user_id, name, value FROM user_attributes WHERE ",
                among_sqlite!("user_id"),
                " ORDER BY user_id, name, position"
            ),
        );
        let mut attributes: Vec<AttributeRow> =
            sqlx::query_as(attributes_sql).bind(&found).fetch_all(&mut *self.tx).await?;
        // By name in byte order whatever the database's collation; stable, so positions keep.
        attributes.sort_by(|a, b| (&a.user_id, &a.name).cmp(&(&b.user_id, &b.name)));
        let links_sql = self.read_sql(
            concat!(
                "SELECT user_id, alias, subject, username FROM federated_identities WHERE ",
                among_postgres!("user_id"),
                " ORDER BY user_id, alias"
            ),
            concat!(
                "SELECT user_id, alias, subject, username FROM federated_identities WHERE ",
                among_postgres!("user_id"),
                " ORDER BY user_id, alias FOR UPDATE"
            ),
            concat!(
                "SELECT user_id, alias, subject, username FROM federated_identities WHERE ",
                among_sqlite!("user_id"),
                " ORDER BY user_id, alias"
            ),
        );
        let links = sqlx::query_as(links_sql).bind(&found).fetch_all(&mut *self.tx).await?;
        Ok(StoredUsers { users, attributes, links })
    }

    /// Writes a chunk's decisions, a statement per kind of row. `Conflict` when another user
    /// holds one of the upstream accounts linked (a sign-in that raced the chunk).
    pub(crate) async fn write(&mut self, writes: &ChunkWrites, now: i64) -> Result<(), StoreError> {
        if !writes.users.is_empty() {
            let users: Vec<UserJson<'_>> = writes
                .users
                .iter()
                .map(|user| UserJson {
                    id: &user.id,
                    username: &user.username,
                    email: user.email.as_deref(),
                    email_verified: i64::from(user.email_verified),
                    first_name: user.first_name.as_deref(),
                    last_name: user.last_name.as_deref(),
                    full_name: user.full_name.as_deref(),
                    enabled: i64::from(user.enabled),
                    created_at: user.created_at,
                })
                .collect();
            let sql = self.sql(
                concat!(
                    "INSERT INTO users (",
                    imported_user_columns!(),
                    ")
                     SELECT u.id, u.username, u.email, u.email_verified, u.first_name, u.last_name, u.full_name,
                            u.enabled, u.created_at, $2
                     FROM json_to_recordset($1::json) AS u(id TEXT, username TEXT, email TEXT, email_verified BIGINT,
                          first_name TEXT, last_name TEXT, full_name TEXT, enabled BIGINT, created_at BIGINT)",
                    imported_user_update!()
                ),
                concat!(
                    "INSERT INTO users (",
                    imported_user_columns!(),
                    ")
                     SELECT value ->> 'id', value ->> 'username', value ->> 'email', value ->> 'email_verified',
                            value ->> 'first_name', value ->> 'last_name', value ->> 'full_name', value ->> 'enabled',
                            value ->> 'created_at', $2
                     FROM json_each($1) WHERE true",
                    imported_user_update!()
                ),
            );
            sqlx::query(sql).bind(json(&users)?).bind(now).execute(&mut *self.tx).await?;
        }
        if !writes.replaced_attributes.is_empty() {
            let sql = self.sql(
                concat!("DELETE FROM user_attributes WHERE ", among_postgres!("user_id")),
                concat!("DELETE FROM user_attributes WHERE ", among_sqlite!("user_id")),
            );
            sqlx::query(sql).bind(json(&writes.replaced_attributes)?).execute(&mut *self.tx).await?;
        }
        if !writes.attributes.is_empty() {
            let mut attributes: Vec<AttributeJson<'_>> = Vec::with_capacity(writes.attributes.len());
            for row in &writes.attributes {
                let position = match attributes.last() {
                    Some(previous) if previous.user_id == row.user_id && previous.name == row.name => {
                        previous.position + 1
                    }
                    _ => 0,
                };
                attributes.push(AttributeJson { user_id: &row.user_id, name: &row.name, position, value: &row.value });
            }
            let sql = self.sql(
                "INSERT INTO user_attributes (user_id, name, position, value)
                 SELECT a.user_id, a.name, a.position, a.value
                 FROM json_to_recordset($1::json) AS a(user_id TEXT, name TEXT, position BIGINT, value TEXT)",
                "INSERT INTO user_attributes (user_id, name, position, value)
                 SELECT value ->> 'user_id', value ->> 'name', value ->> 'position', value ->> 'value' FROM json_each($1)",
            );
            sqlx::query(sql).bind(json(&attributes)?).execute(&mut *self.tx).await?;
        }
        // Rare (an account replaced in Keycloak): a statement each.
        for (user_id, alias) in &writes.relinked {
            Store::delete_vault_row(&mut self.tx, user_id, alias).await?;
        }
        if !writes.links.is_empty() {
            let links: Vec<LinkJson<'_>> = writes
                .links
                .iter()
                .map(|link| LinkJson {
                    user_id: &link.user_id,
                    alias: &link.alias,
                    subject: &link.subject,
                    username: link.username.as_deref(),
                })
                .collect();
            let sql = self.sql(
                concat!(
                    "INSERT INTO federated_identities (user_id, alias, subject, username, needs_reauth, created_at,
                                                       updated_at)
                     SELECT l.user_id, l.alias, l.subject, l.username, 0, $2, $2
                     FROM json_to_recordset($1::json) AS l(user_id TEXT, alias TEXT, subject TEXT, username TEXT)",
                    imported_link_update!()
                ),
                concat!(
                    "INSERT INTO federated_identities (user_id, alias, subject, username, needs_reauth, created_at,
                                                       updated_at)
                     SELECT value ->> 'user_id', value ->> 'alias', value ->> 'subject', value ->> 'username', 0, $2, $2
                     FROM json_each($1) WHERE true",
                    imported_link_update!()
                ),
            );
            let linked = sqlx::query(sql).bind(json(&links)?).bind(now).execute(&mut *self.tx).await;
            match linked {
                Err(err) if is_unique_violation(&err) => {
                    return Err(StoreError::Conflict("an upstream account is linked to another user".to_owned()));
                }
                other => other?,
            };
        }
        if !writes.disabled.is_empty() {
            // Announced to every replica by the sessions trigger of migration 0006.
            let sql = self.sql(
                concat!(
                    "UPDATE sso_sessions SET ended_at = $2 WHERE ended_at IS NULL AND ",
                    among_postgres!("user_id")
                ),
                concat!("UPDATE sso_sessions SET ended_at = $2 WHERE ended_at IS NULL AND ", among_sqlite!("user_id")),
            );
            sqlx::query(sql).bind(json(&writes.disabled)?).bind(now).execute(&mut *self.tx).await?;
        }
        if !writes.digests.is_empty() {
            let digests: Vec<DigestJson<'_>> =
                writes.digests.iter().map(|(user_id, digest)| DigestJson { user_id, digest }).collect();
            // Last: the triggers of migration 0014 deleted the digests of the rows written above.
            let sql = self.sql(
                "INSERT INTO user_import_digests (user_id, digest)
                 SELECT d.user_id, d.digest FROM json_to_recordset($1::json) AS d(user_id TEXT, digest TEXT)
                 ON CONFLICT (user_id) DO UPDATE SET digest = excluded.digest",
                "INSERT INTO user_import_digests (user_id, digest)
                 SELECT value ->> 'user_id', value ->> 'digest' FROM json_each($1) WHERE true
                 ON CONFLICT (user_id) DO UPDATE SET digest = excluded.digest",
            );
            sqlx::query(sql).bind(json(&digests)?).execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
