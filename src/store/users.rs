//! Users and their federated identities.

use super::attributes::{Replace, write_attributes};
use super::{IdentityKey, Store, StoreError, StoredFlag, VaultRow};

/// A user's own fields: what tokens, the admin API, the import and the export read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub(crate) id: String,
    pub(crate) username: String,
    pub(crate) email: Option<String>,
    #[sqlx(try_from = "StoredFlag")]
    pub(crate) email_verified: bool,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) full_name: Option<String>,
    /// A disabled user cannot sign in, and their tokens, sessions and stored tokens are refused.
    #[sqlx(try_from = "StoredFlag")]
    pub(crate) enabled: bool,
    /// Seconds since the epoch.
    pub(crate) created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityRow {
    pub user_id: String,
    pub(crate) alias: String,
    pub subject: String,
    pub(crate) username: Option<String>,
    #[sqlx(try_from = "StoredFlag")]
    pub needs_reauth: bool,
    /// While `needs_reauth`: what kind of sign-in Entra asked for (see [`ReauthMark`]).
    pub(crate) reauth_kind: Option<String>,
}

/// Why an identity must sign in again, as stored: the kind (`mfa_required`, `policy`,
/// `consent_required`, `password_expired`, `expired`, or `blocked`) and Entra's claims challenge.
#[derive(Clone, PartialEq, Eq)]
pub struct ReauthMark {
    pub kind: String,
    pub claims: Option<String>,
}

impl std::fmt::Debug for ReauthMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReauthMark").field("kind", &self.kind).field("has_claims", &self.claims.is_some()).finish()
    }
}

/// What one sign-in learned about the user, written in one transaction with the tokens.
#[derive(Debug, Clone)]
pub struct ProfileUpdate {
    pub user_id: String,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    pub alias: String,
    pub subject: String,
    pub identity_username: Option<String>,
    pub tenant_id: Option<String>,
    pub object_id: Option<String>,
    /// The user attributes this sign-in maps (`identity_provider`, `{alias}_id`, `tid`, `oid`):
    /// each replaces the attribute's values; the identity keeps them too, as a JSON object.
    pub attributes: Vec<(String, String)>,
    /// The realm roles the provider gives the user (Entra's `roles` claim): they replace what
    /// the last sign-in through the provider gave.
    pub roles: Vec<String>,
}

// Column lists as macros, so that every query is one literal built at compile time.
macro_rules! identity_columns {
    () => {
        "user_id, alias, subject, username, needs_reauth, CASE WHEN needs_reauth = 1 THEN reauth_kind END AS reauth_kind"
    };
}

impl Store {
    pub async fn find_identity_by_subject(
        &self,
        alias: &str,
        subject: &str,
    ) -> Result<Option<IdentityRow>, StoreError> {
        let sql =
            concat!("SELECT ", identity_columns!(), " FROM federated_identities WHERE alias = $1 AND subject = $2");
        Ok(sqlx::query_as(sql).bind(alias).bind(subject).fetch_optional(&self.pool).await?)
    }

    #[cfg(feature = "testing")]
    pub async fn find_identity(&self, identity: IdentityKey<'_>) -> Result<Option<IdentityRow>, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let sql =
            concat!("SELECT ", identity_columns!(), " FROM federated_identities WHERE user_id = $1 AND alias = $2");
        Ok(sqlx::query_as(sql).bind(user_id).bind(alias).fetch_optional(&self.pool).await?)
    }

    /// The user, from memory when this process has it (see `cache`).
    pub(crate) async fn find_user(&self, user_id: &str) -> Result<Option<UserRow>, StoreError> {
        if let Some(user) = self.cache.as_ref().and_then(|cache| cache.user(user_id)) {
            return Ok(Some(UserRow::clone(&user)));
        }
        let ticket = self.cache.as_ref().map(|cache| cache.ticket());
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        let user: Option<UserRow> = sqlx::query_as(sql).bind(user_id).fetch_optional(&self.pool).await?;
        if let (Some(cache), Some(ticket), Some(user)) = (&self.cache, ticket, &user) {
            cache.keep_user(ticket, user);
        }
        Ok(user)
    }

    /// Users whose e-mail address matches, ignoring case; at most `limit`.
    pub(crate) async fn find_users_by_email(&self, email: &str, limit: i64) -> Result<Vec<UserRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE lower(email) = lower($1) ORDER BY created_at, id LIMIT $2"
        );
        Ok(sqlx::query_as(sql).bind(email).bind(limit).fetch_all(&self.pool).await?)
    }

    /// A user's attributes as (name, value) pairs, by name and then in each name's order.
    #[cfg(feature = "testing")]
    pub async fn user_attributes(&self, user_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let sql = "SELECT name, value FROM user_attributes WHERE user_id = $1 ORDER BY name, position";
        Ok(sqlx::query_as(sql).bind(user_id).fetch_all(&self.pool).await?)
    }

    /// Every provider linked to a user.
    pub(crate) async fn list_identities(&self, user_id: &str) -> Result<Vec<IdentityRow>, StoreError> {
        let sql =
            concat!("SELECT ", identity_columns!(), " FROM federated_identities WHERE user_id = $1 ORDER BY alias");
        Ok(sqlx::query_as(sql).bind(user_id).fetch_all(&self.pool).await?)
    }

    /// Unlinks a provider from a user: the identity, its stored tokens and the roles it gave go,
    /// the user stays.
    /// Returns false when the user was not linked to it.
    pub(crate) async fn unlink_identity(&self, identity: IdentityKey<'_>) -> Result<bool, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let mut tx = self.pool.begin().await?;
        Store::delete_vault_row(&mut tx, user_id, alias).await?;
        let deleted = sqlx::query("DELETE FROM federated_identities WHERE user_id = $1 AND alias = $2")
            .bind(user_id)
            .bind(alias)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND source = $2")
            .bind(user_id)
            .bind(alias)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.forget_user_row(user_id);
        self.forget_identity(IdentityKey { user_id, alias });
        Ok(deleted.rows_affected() > 0)
    }

    /// Disables or enables a user; false when there is no such user. Replicas forget the user
    /// and the user's cached identities through the change triggers of migrations 0008 and
    /// 0010, this process at once.
    #[cfg(feature = "testing")]
    pub async fn set_user_enabled(&self, user_id: &str, enabled: bool, now: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query("UPDATE users SET enabled = $2, updated_at = $3 WHERE id = $1")
            .bind(user_id)
            .bind(i64::from(enabled))
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.forget_user(user_id).await?;
        Ok(updated.rows_affected() > 0)
    }

    /// Drops this process's copy of a user's row and stored roles after a write to either;
    /// other replicas hear of it from the triggers of migrations 0010 and 0017.
    pub(super) fn forget_user_row(&self, user_id: &str) {
        if let Some(cache) = &self.cache {
            cache.forget_user(user_id);
        }
    }

    /// Drops this process's copies of a user's row and identities after a change to the user
    /// that a token read must see (`enabled`); other replicas hear of it from the triggers of
    /// migrations 0008 and 0010.
    pub(super) async fn forget_user(&self, user_id: &str) -> Result<(), StoreError> {
        self.forget_user_row(user_id);
        for identity in self.list_identities(user_id).await? {
            self.forget_identity(IdentityKey { user_id, alias: &identity.alias });
        }
        Ok(())
    }

    /// Records that the upstream refused this identity's grant for good: the rows stay for the
    /// record and the next successful sign-in clears the mark. `mark` says what Entra asked for
    /// (its kind, and the claims challenge the next authorize request must carry).
    pub async fn mark_needs_reauth(
        &self,
        identity: IdentityKey<'_>,
        mark: &ReauthMark,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let IdentityKey { user_id, alias } = identity;
        sqlx::query(
            "UPDATE federated_identities SET needs_reauth = 1, reauth_reason = $3, reauth_kind = $4,
                 reauth_claims = $5, updated_at = $6
             WHERE user_id = $1 AND alias = $2",
        )
        .bind(user_id)
        .bind(alias)
        .bind(reason)
        .bind(&mark.kind)
        .bind(&mark.claims)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.forget_identity(identity);
        Ok(())
    }

    /// The identity's mark, when it must sign in again; `None` when it need not (or is not linked).
    pub(crate) async fn find_reauth_mark(&self, identity: IdentityKey<'_>) -> Result<Option<ReauthMark>, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT reauth_kind, reauth_claims FROM federated_identities
             WHERE user_id = $1 AND alias = $2 AND needs_reauth = 1",
        )
        .bind(user_id)
        .bind(alias)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(kind, claims)| ReauthMark { kind: kind.unwrap_or_default(), claims }))
    }

    /// Links `identity` to the upstream account `subject` (Keycloak's admin link), with the
    /// attributes a sign-in writes (`identity_provider`, `{alias}_id`); no tokens until that
    /// account signs in. False when the user is already linked to the provider; `Conflict`
    /// when the account is linked to another user.
    pub(crate) async fn link_identity(
        &self,
        identity: IdentityKey<'_>,
        subject: &str,
        username: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let IdentityKey { user_id, alias } = identity;
        let attributes =
            [("identity_provider".to_owned(), alias.to_owned()), (format!("{alias}_id"), subject.to_owned())];
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO federated_identities (user_id, alias, subject, username, attributes, needs_reauth, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $6)
             ON CONFLICT (user_id, alias) DO NOTHING",
        )
        .bind(user_id)
        .bind(alias)
        .bind(subject)
        .bind(username)
        .bind(identity_attributes(&attributes))
        .bind(now)
        .execute(&mut *tx)
        .await;
        let inserted = match inserted {
            Ok(done) => done.rows_affected() > 0,
            Err(err) if is_unique_violation(&err) => {
                return Err(StoreError::Conflict(format!("the {alias} account is already linked to another user")));
            }
            Err(err) => return Err(err.into()),
        };
        if inserted {
            let values = attributes.iter().map(|(name, value)| (name.as_str(), value.as_str()));
            write_attributes(&mut tx, self.backend, user_id, values, Replace::SameNames).await?;
        }
        tx.commit().await?;
        self.forget_user_row(user_id);
        self.forget_identity(identity);
        Ok(inserted)
    }

    /// Creates or updates the user and the identity and replaces the stored tokens, all or
    /// nothing. A concurrent first sign-in of the same subject surfaces as `Conflict`.
    /// `tokens` is `None` for a provider that does not store them; any old ones are erased.
    pub async fn save_sign_in(
        &self,
        profile: &ProfileUpdate,
        tokens: Option<&VaultRow>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, username, email, email_verified, first_name, last_name, full_name, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
             ON CONFLICT (id) DO UPDATE SET username = $2, email = $3, email_verified = $4,
                 first_name = $5, last_name = $6, full_name = $7, updated_at = $8",
        )
        .bind(&profile.user_id)
        .bind(&profile.username)
        .bind(&profile.email)
        .bind(i64::from(profile.email_verified))
        .bind(&profile.first_name)
        .bind(&profile.last_name)
        .bind(&profile.full_name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let identity = sqlx::query(
            "INSERT INTO federated_identities (user_id, alias, subject, username, tenant_id, object_id, attributes, needs_reauth, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)
             ON CONFLICT (user_id, alias) DO UPDATE SET subject = $3, username = $4, tenant_id = $5,
                 object_id = $6, attributes = $7, needs_reauth = 0, reauth_reason = NULL, reauth_kind = NULL,
                 reauth_claims = NULL, updated_at = $8",
        )
        .bind(&profile.user_id)
        .bind(&profile.alias)
        .bind(&profile.subject)
        .bind(&profile.identity_username)
        .bind(&profile.tenant_id)
        .bind(&profile.object_id)
        .bind(identity_attributes(&profile.attributes))
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(err) = identity {
            if is_unique_violation(&err) {
                return Err(StoreError::Conflict(format!(
                    "the {} identity is already linked to another user",
                    profile.alias
                )));
            }
            return Err(err.into());
        }
        let values = profile.attributes.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        write_attributes(&mut tx, self.backend, &profile.user_id, values, Replace::SameNames).await?;
        sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND source = $2")
            .bind(&profile.user_id)
            .bind(&profile.alias)
            .execute(&mut *tx)
            .await?;
        for role in &profile.roles {
            sqlx::query("INSERT INTO user_roles (user_id, source, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(&profile.user_id)
                .bind(&profile.alias)
                .bind(role)
                .execute(&mut *tx)
                .await?;
        }
        match tokens {
            Some(row) => Store::upsert_vault_row(&mut tx, row).await?,
            None => Store::delete_vault_row(&mut tx, &profile.user_id, &profile.alias).await?,
        }
        tx.commit().await?;
        self.forget_user_row(&profile.user_id);
        self.forget_identity(IdentityKey { user_id: &profile.user_id, alias: &profile.alias });
        Ok(())
    }
}

fn identity_attributes(attributes: &[(String, String)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> =
        attributes.iter().map(|(name, value)| (name.clone(), value.clone().into())).collect();
    serde_json::Value::Object(object).to_string()
}

pub(super) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
