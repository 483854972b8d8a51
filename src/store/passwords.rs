//! Users the admin API creates, with their password hash and required actions, the
//! administrator's password resets, and what the password grant reads and counts.

use super::attributes::{Replace, write_attributes};
use super::{AttributeValue, Backend, Store, StoreError, UserRow};

/// Keycloak's required action for a temporary password.
pub(crate) const UPDATE_PASSWORD: &str = "UPDATE_PASSWORD";

/// Serializes the admin API's user creations on Postgres (SQLite's `BEGIN IMMEDIATE` already
/// does), so that two at once cannot both find a username or e-mail free. An arbitrary key,
/// fixed for good: replicas of every version must take the same lock.
const CREATE_USER_LOCK: i64 = 0x1d_b0_0c_e4;

/// A user as the admin API creates them; the username is already lowercased (Keycloak's).
pub(crate) struct NewUser {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) email: Option<String>,
    pub(crate) email_verified: bool,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) full_name: Option<String>,
    pub(crate) enabled: bool,
    pub(crate) attributes: Vec<AttributeValue>,
    /// An Argon2id PHC string; `None` for a user without a password.
    pub(crate) password_hash: Option<String>,
    pub(crate) required_actions: Vec<String>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("enabled", &self.enabled)
            .field("has_password", &self.password_hash.is_some())
            .field("required_actions", &self.required_actions)
            .finish_non_exhaustive()
    }
}

/// What a creation came to; on a refusal nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Creation {
    Created,
    /// Another user has the username (ignoring case).
    UsernameTaken,
    /// Another user has the e-mail address (ignoring case).
    EmailTaken,
}

/// What a password sign-in needs of a user: the user, the stored hash (none for a user without
/// a password), the lockout and whether required actions are pending.
pub(crate) struct PasswordLogin {
    pub(crate) user: UserRow,
    pub(crate) hash: Option<String>,
    pub(crate) locked_until: Option<i64>,
    pub(crate) has_required_actions: bool,
}

impl std::fmt::Debug for PasswordLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordLogin")
            .field("user_id", &self.user.id)
            .field("has_password", &self.hash.is_some())
            .field("locked_until", &self.locked_until)
            .field("has_required_actions", &self.has_required_actions)
            .finish()
    }
}

impl Store {
    /// The user a password sign-in names: by username, else by e-mail (both ignoring case),
    /// as Keycloak's "login with e-mail" does.
    pub(crate) async fn find_password_login(&self, login: &str) -> Result<Option<PasswordLogin>, StoreError> {
        let by_username = concat!("SELECT ", user_columns!(), " FROM users WHERE lower(username) = lower($1) LIMIT 1");
        let by_email = concat!("SELECT ", user_columns!(), " FROM users WHERE lower(email) = lower($1) LIMIT 1");
        let mut user: Option<UserRow> = sqlx::query_as(by_username).bind(login).fetch_optional(&self.pool).await?;
        if user.is_none() && login.contains('@') {
            user = sqlx::query_as(by_email).bind(login).fetch_optional(&self.pool).await?;
        }
        let Some(user) = user else {
            return Ok(None);
        };
        let password: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT hash, locked_until FROM user_passwords WHERE user_id = $1")
                .bind(&user.id)
                .fetch_optional(&self.pool)
                .await?;
        let actions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_required_actions WHERE user_id = $1")
            .bind(&user.id)
            .fetch_one(&self.pool)
            .await?;
        let (hash, locked_until) = password.map_or((None, None), |(hash, locked)| (Some(hash), locked));
        Ok(Some(PasswordLogin { user, hash, locked_until, has_required_actions: actions > 0 }))
    }

    /// Counts one more wrong password for the user, starting again from one when the last was
    /// longer than `memory` seconds ago; the count, in one statement so that guesses at once
    /// are all counted.
    pub(crate) async fn count_password_failure(&self, user_id: &str, memory: i64, now: i64) -> Result<i64, StoreError> {
        let failures: Option<i64> = sqlx::query_scalar(
            "UPDATE user_passwords
             SET failures = CASE WHEN last_failure_at IS NULL OR last_failure_at < $2 THEN 1 ELSE failures + 1 END,
                 last_failure_at = $3
             WHERE user_id = $1
             RETURNING failures",
        )
        .bind(user_id)
        .bind(now - memory)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(failures.unwrap_or(0))
    }

    /// Locks the user's password sign-ins until `until`.
    pub(crate) async fn lock_password(&self, user_id: &str, until: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE user_passwords SET locked_until = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(until)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets the user's wrong passwords after a right one.
    pub(crate) async fn clear_password_failures(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE user_passwords SET failures = 0, last_failure_at = NULL, locked_until = NULL
             WHERE user_id = $1 AND (failures > 0 OR locked_until IS NOT NULL)",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Creates `user` with their attributes, password and required actions, all or nothing.
    pub(crate) async fn create_user(&self, user: &NewUser, now: i64) -> Result<Creation, StoreError> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CREATE_USER_LOCK).execute(&mut *tx).await?;
        }
        let named: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE lower(username) = lower($1) LIMIT 1")
                .bind(&user.username)
                .fetch_optional(&mut *tx)
                .await?;
        if named.is_some() {
            return Ok(Creation::UsernameTaken);
        }
        if let Some(email) = &user.email {
            let holder: Option<String> =
                sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1) LIMIT 1")
                    .bind(email)
                    .fetch_optional(&mut *tx)
                    .await?;
            if holder.is_some() {
                return Ok(Creation::EmailTaken);
            }
        }
        sqlx::query(
            "INSERT INTO users (id, username, email, email_verified, first_name, last_name, full_name, enabled,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(i64::from(user.email_verified))
        .bind(&user.first_name)
        .bind(&user.last_name)
        .bind(&user.full_name)
        .bind(i64::from(user.enabled))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let values = user.attributes.iter().map(|a| (a.name.as_str(), a.value.as_str()));
        write_attributes(&mut tx, self.backend, &user.id, values, Replace::All).await?;
        if let Some(hash) = &user.password_hash {
            sqlx::query("INSERT INTO user_passwords (user_id, hash, created_at, updated_at) VALUES ($1, $2, $3, $3)")
                .bind(&user.id)
                .bind(hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        for action in &user.required_actions {
            sqlx::query("INSERT INTO user_required_actions (user_id, action) VALUES ($1, $2)")
                .bind(&user.id)
                .bind(action)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Creation::Created)
    }

    /// Sets a user's password (Keycloak's reset-password): a temporary one adds
    /// `UPDATE_PASSWORD` to the required actions, a permanent one takes it away; earlier wrong
    /// guesses and a lockout are forgotten, they were guesses of the old one. False when
    /// there is no such user, and then nothing was written.
    pub(crate) async fn set_password(
        &self,
        user_id: &str,
        hash: &str,
        temporary: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(user_id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO user_passwords (user_id, hash, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (user_id) DO UPDATE SET hash = $2, failures = 0, last_failure_at = NULL,
                 locked_until = NULL, updated_at = $3",
        )
        .bind(user_id)
        .bind(hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let action = if temporary {
            "INSERT INTO user_required_actions (user_id, action) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM user_required_actions WHERE user_id = $1 AND action = $2"
        };
        sqlx::query(action).bind(user_id).bind(UPDATE_PASSWORD).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A user's required actions, in name order.
    pub(crate) async fn required_actions(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT action FROM user_required_actions WHERE user_id = $1 ORDER BY action")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Whether the user has a password, for tests that check what was stored.
    #[cfg(feature = "testing")]
    pub async fn password_hash(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT hash FROM user_passwords WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}
