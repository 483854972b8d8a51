//! The master realm administrator's sessions (`admin_sessions`): started by a password grant,
//! slid by refreshes, deleted by a logout, a credentials change or housekeeping.

use super::{Store, StoreError};

/// An administrator's session as stored; `credentials_fingerprint` is a digest, never a password.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AdminSessionRow {
    pub id: String,
    pub username: String,
    pub credentials_fingerprint: String,
    pub created_at: i64,
    pub last_refresh_at: i64,
    /// When the session dies unless refreshed: the earlier of its idle and its maximum end.
    pub expires_at: i64,
}

impl Store {
    pub(crate) async fn insert_admin_session(&self, session: &AdminSessionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_sessions (id, username, credentials_fingerprint, created_at, last_refresh_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.id)
        .bind(&session.username)
        .bind(&session.credentials_fingerprint)
        .bind(session.created_at)
        .bind(session.last_refresh_at)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn find_admin_session(&self, id: &str) -> Result<Option<AdminSessionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, username, credentials_fingerprint, created_at, last_refresh_at, expires_at
             FROM admin_sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a refresh at `now` that keeps the session until `expires_at`, if the session is
    /// still there, of `fingerprint`, and not yet expired; false when it is not (a logout or a
    /// credentials change got there first), and nothing changed.
    pub(crate) async fn refresh_admin_session(
        &self,
        id: &str,
        fingerprint: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE admin_sessions SET last_refresh_at = $3, expires_at = $4
             WHERE id = $1 AND credentials_fingerprint = $2 AND expires_at > $3",
        )
        .bind(id)
        .bind(fingerprint)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Deletes the session `id`; true when it was there.
    pub(crate) async fn delete_admin_session(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM admin_sessions WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Deletes the sessions that died unrefreshed before `now`; returns how many.
    pub(crate) async fn delete_expired_admin_sessions(&self, now: i64) -> Result<u64, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM admin_sessions WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
        Ok(deleted.rows_affected())
    }

    /// Every administrator session, for tests.
    #[cfg(feature = "testing")]
    pub async fn admin_sessions_for_tests(&self) -> Result<Vec<AdminSessionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, username, credentials_fingerprint, created_at, last_refresh_at, expires_at
             FROM admin_sessions ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
