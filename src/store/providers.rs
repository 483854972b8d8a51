//! What the broker keeps about each upstream provider as a whole: the deadline before which no
//! replica sends it a refresh (Entra throttles), and what its last sign-in's ID token showed.

use super::{Store, StoreError, StoredFlag};

impl Store {
    /// Records that no refresh of `alias` may be sent before `retry_at`; a later deadline
    /// already recorded (by this or another replica) stays. Returns the deadline now in force.
    pub(crate) async fn defer_provider(&self, alias: &str, retry_at: i64, now: i64) -> Result<i64, StoreError> {
        let (deadline,): (i64,) = sqlx::query_as(
            "INSERT INTO provider_backoffs (alias, retry_at, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (alias) DO UPDATE SET
                 retry_at = CASE WHEN provider_backoffs.retry_at > $2 THEN provider_backoffs.retry_at ELSE $2 END,
                 updated_at = $3
             RETURNING retry_at",
        )
        .bind(alias)
        .bind(retry_at)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(deadline)
    }

    /// The deadline before which no refresh of `alias` may be sent, if one was ever recorded.
    pub(crate) async fn provider_deferred_until(&self, alias: &str) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT retry_at FROM provider_backoffs WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(retry_at,)| retry_at))
    }

    /// Records whether the ID token of a sign-in through `alias` carried `xms_edov`.
    pub async fn record_email_proof_claim(&self, alias: &str, present: bool, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO provider_sign_in_facts (alias, email_proof, observed_at) VALUES ($1, $2, $3)
             ON CONFLICT (alias) DO UPDATE SET email_proof = $2, observed_at = $3",
        )
        .bind(alias)
        .bind(i64::from(present))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// For each provider that saw a sign-in: whether its last ID token carried `xms_edov`, and
    /// when (`doctor`).
    pub(crate) async fn email_proof_claims(&self) -> Result<Vec<(String, bool, i64)>, StoreError> {
        let rows: Vec<(String, StoredFlag, i64)> =
            sqlx::query_as("SELECT alias, email_proof, observed_at FROM provider_sign_in_facts ORDER BY alias")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(alias, flag, at)| (alias, flag.into(), at)).collect())
    }

    /// How many users hold an e-mail address that is not verified (`doctor`: OpenHands asks
    /// `send-verify-email` for them).
    pub(crate) async fn count_unverified_emails(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM users WHERE email IS NOT NULL AND email_verified = 0")
                .fetch_one(&self.pool)
                .await?;
        Ok(count)
    }
}
