//! send-verify-email's links: stored by the hash of their key, redeemed at most once.

use super::{Store, StoreError, StoredFlag};

/// A user as send-verify-email checks them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MailableUser {
    pub(crate) email: Option<String>,
    #[sqlx(try_from = "StoredFlag")]
    pub(crate) enabled: bool,
}

/// A link about to be sent; `token_hash` is `crypto::token_hash` of the key in the link.
#[derive(Debug)]
pub(crate) struct NewVerifyEmailToken<'a> {
    pub(crate) token_hash: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) email: &'a str,
    pub(crate) client_id: Option<&'a str>,
    pub(crate) redirect_uri: Option<&'a str>,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
}

/// A redeemed link: who was verified, and where the browser goes next.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VerifyEmailTokenRow {
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) client_id: Option<String>,
    pub(crate) redirect_uri: Option<String>,
}

/// What opening a link did; every outcome but `Verified` changed nothing.
#[derive(Debug)]
pub(crate) enum Redemption {
    Verified(VerifyEmailTokenRow),
    Unknown,
    AlreadyUsed,
    Expired,
    /// The user's address is no longer the one the link was sent to, or the user is gone.
    EmailChanged,
    UserDisabled,
}

macro_rules! token_columns {
    () => {
        "user_id, email, client_id, redirect_uri"
    };
}

impl Store {
    pub(crate) async fn find_mailable_user(&self, user_id: &str) -> Result<Option<MailableUser>, StoreError> {
        Ok(sqlx::query_as("SELECT email, enabled FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(crate) async fn insert_verify_email_token(&self, token: &NewVerifyEmailToken<'_>) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO verify_email_tokens (token_hash, ",
            token_columns!(),
            ", created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(token.token_hash)
        .bind(token.user_id)
        .bind(token.email)
        .bind(token.client_id)
        .bind(token.redirect_uri)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes back a link whose message could not be sent.
    pub(crate) async fn delete_verify_email_token(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM verify_email_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the link used and the user's e-mail verified, in one transaction, if the link is
    /// unused and unexpired and the user still has the address it was sent to and is enabled;
    /// otherwise changes nothing and says why. Of two concurrent openings one wins.
    pub(crate) async fn redeem_verify_email_token(&self, token_hash: &str, now: i64) -> Result<Redemption, StoreError> {
        let mut tx = self.pool.begin().await?;
        let taken: Option<VerifyEmailTokenRow> = sqlx::query_as(concat!(
            "UPDATE verify_email_tokens SET used_at = $2
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING ",
            token_columns!()
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = taken else {
            let found: Option<(Option<i64>, i64)> =
                sqlx::query_as("SELECT used_at, expires_at FROM verify_email_tokens WHERE token_hash = $1")
                    .bind(token_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(match found {
                None => Redemption::Unknown,
                Some((Some(_), _)) => Redemption::AlreadyUsed,
                Some((None, _)) => Redemption::Expired,
            });
        };
        let verified = sqlx::query(
            "UPDATE users SET email_verified = 1, updated_at = $3 WHERE id = $1 AND email = $2 AND enabled = 1",
        )
        .bind(&token.user_id)
        .bind(&token.email)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if verified.rows_affected() == 0 {
            let user = self.find_mailable_user_in(&mut tx, &token.user_id).await?;
            // Dropping the transaction rolls back: the link stays unused.
            return Ok(match user {
                Some(user) if user.email.as_deref() == Some(token.email.as_str()) && !user.enabled => {
                    Redemption::UserDisabled
                }
                _ => Redemption::EmailChanged,
            });
        }
        tx.commit().await?;
        self.forget_user_row(&token.user_id);
        Ok(Redemption::Verified(token))
    }

    async fn find_mailable_user_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        user_id: &str,
    ) -> Result<Option<MailableUser>, StoreError> {
        Ok(sqlx::query_as("SELECT email, enabled FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?)
    }

    /// Whether the user's e-mail is verified; for tests.
    #[cfg(feature = "testing")]
    pub async fn email_verified_for_tests(&self, user_id: &str) -> Result<Option<bool>, StoreError> {
        let row: Option<(StoredFlag,)> = sqlx::query_as("SELECT email_verified FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(flag,)| flag.into()))
    }
}
