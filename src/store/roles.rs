//! Users' realm roles beyond the realm's default roles: those an administrator grants, and
//! those a provider's ID token gives (kept per provider, replaced at each sign-in through it).

use super::{Store, StoreError, UserRow};

/// The `source` of the roles an administrator grants; a provider's roles carry its alias,
/// which is never empty.
const GRANTED: &str = "";

impl Store {
    /// Every role the user holds from any source, by name, once each; from memory when this
    /// process has them (see `cache`), so that a refresh grant stays without a database call.
    pub(crate) async fn user_roles(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        if let Some(roles) = self.cache.as_ref().and_then(|cache| cache.user_roles(user_id)) {
            return Ok(Vec::clone(&roles));
        }
        let ticket = self.cache.as_ref().map(|cache| cache.ticket());
        let roles: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT role FROM user_roles WHERE user_id = $1 ORDER BY role")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        if let (Some(cache), Some(ticket)) = (&self.cache, ticket) {
            cache.keep_user_roles(ticket, user_id, &roles);
        }
        Ok(roles)
    }

    /// Every role some user holds, by name, once each.
    pub(crate) async fn held_roles(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT DISTINCT role FROM user_roles ORDER BY role").fetch_all(&self.pool).await?)
    }

    /// Grants `roles` to the user; false when there is no such user (nothing written).
    pub(crate) async fn grant_roles(&self, user_id: &str, roles: &[String]) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(user_id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Ok(false);
        }
        for role in roles {
            sqlx::query("INSERT INTO user_roles (user_id, source, role) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(user_id)
                .bind(GRANTED)
                .bind(role)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.forget_user_row(user_id);
        Ok(true)
    }

    /// Takes back roles an administrator granted; those a provider gives stay.
    pub(crate) async fn revoke_roles(&self, user_id: &str, roles: &[String]) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for role in roles {
            sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND source = $2 AND role = $3")
                .bind(user_id)
                .bind(GRANTED)
                .bind(role)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.forget_user_row(user_id);
        Ok(())
    }

    /// The users who hold `role` from any source, by username, `max` from the `first`th.
    pub(crate) async fn users_with_role(&self, role: &str, first: i64, max: i64) -> Result<Vec<UserRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id IN (SELECT user_id FROM user_roles WHERE role = $1)",
            " ORDER BY username, id LIMIT $2 OFFSET $3"
        );
        Ok(sqlx::query_as(sql).bind(role).bind(max).bind(first).fetch_all(&self.pool).await?)
    }
}
