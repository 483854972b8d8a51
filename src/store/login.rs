//! Pending sign-ins, SSO sessions and authorization codes: the short-lived login state.

use std::sync::Arc;

use super::{Store, StoreError, StoredFlag};

/// A client's authorization request waiting for the upstream sign-in to finish.
#[derive(Clone, sqlx::FromRow)]
pub struct AuthRequestRow {
    pub id: String,
    /// Hash of the browser cookie that binds this request to one browser.
    pub browser_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub client_state: Option<String>,
    pub client_nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub login_hint: Option<String>,
    pub alias: Option<String>,
    pub upstream_state_hash: Option<String>,
    pub upstream_nonce: Option<String>,
    pub pkce_verifier: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The signed-in user a `kc_action=idp_link` request links the provider to.
    pub link_user_id: Option<String>,
    /// The client's `prompt`, carried on to the provider (`login`).
    pub prompt: Option<String>,
}

impl std::fmt::Debug for AuthRequestRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequestRow")
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("alias", &self.alias)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The upstream half of a pending sign-in, recorded when the browser leaves for the provider.
#[derive(Clone)]
pub struct UpstreamLogin {
    pub alias: String,
    pub state_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl std::fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLogin").field("alias", &self.alias).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub cookie_hash: String,
    pub user_id: String,
    pub identity_provider: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub ended_at: Option<i64>,
    /// An offline session (scope `offline_access`), which survives logout.
    #[sqlx(try_from = "StoredFlag")]
    pub offline: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuthorizationCodeRow {
    pub code_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub user_id: String,
    pub session_id: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// The outcome of presenting a code: it is used exactly once.
#[derive(Debug)]
pub enum CodeRedemption {
    Redeemed(AuthorizationCodeRow),
    /// The code was already used; the session it created has been ended.
    Replayed(AuthorizationCodeRow),
    Unknown,
}

// Column lists as macros, so that every query is one literal built at compile time.
macro_rules! auth_request_columns {
    () => {
        "id, browser_hash, client_id, redirect_uri, scope, client_state, client_nonce, code_challenge,
         code_challenge_method, login_hint, alias, upstream_state_hash, upstream_nonce, pkce_verifier, created_at,
         expires_at, link_user_id, prompt"
    };
}
macro_rules! code_columns {
    () => {
        "code_hash, client_id, redirect_uri, user_id, session_id, scope, nonce, code_challenge, code_challenge_method,
         created_at, expires_at, used_at"
    };
}
macro_rules! session_columns {
    () => {
        "id, cookie_hash, user_id, identity_provider, created_at, last_seen_at, ended_at, offline"
    };
}

/// Binds a pending sign-in's columns in `auth_request_columns!` order, as `$1` to `$18`.
fn bind_auth_request<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    row: &'q AuthRequestRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&row.id)
        .bind(&row.browser_hash)
        .bind(&row.client_id)
        .bind(&row.redirect_uri)
        .bind(&row.scope)
        .bind(&row.client_state)
        .bind(&row.client_nonce)
        .bind(&row.code_challenge)
        .bind(&row.code_challenge_method)
        .bind(&row.login_hint)
        .bind(&row.alias)
        .bind(&row.upstream_state_hash)
        .bind(&row.upstream_nonce)
        .bind(&row.pkce_verifier)
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(&row.link_user_id)
        .bind(&row.prompt)
}

/// How stale a session's `last_seen_at` may be before a use writes it again.
pub(crate) const TOUCH_GRANULARITY_SECONDS: i64 = 30;

impl Store {
    pub async fn insert_auth_request(&self, row: &AuthRequestRow) -> Result<(), StoreError> {
        let query = sqlx::query(concat!(
            "INSERT INTO auth_requests (",
            auth_request_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
        ));
        bind_auth_request(query, row).execute(&self.pool).await?;
        Ok(())
    }

    /// Inserts a pending sign-in started from `client_key`, unless that address already holds
    /// `budget` live ones (then false, and nothing is written): the count and the insert are
    /// one statement.
    pub async fn insert_auth_request_within_budget(
        &self,
        row: &AuthRequestRow,
        client_key: &str,
        budget: u32,
    ) -> Result<bool, StoreError> {
        let query = sqlx::query(concat!(
            "INSERT INTO auth_requests (",
            auth_request_columns!(),
            ", client_key) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19
             WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM auth_requests WHERE client_key = $19 AND expires_at >= $15
                                          LIMIT $20) AS live) < $20"
        ));
        let inserted =
            bind_auth_request(query, row).bind(client_key).bind(i64::from(budget)).execute(&self.pool).await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// Live pending sign-ins, counted up to `at_most`.
    pub async fn count_live_auth_requests(&self, now: i64, at_most: u32) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM auth_requests WHERE expires_at >= $1 LIMIT $2) AS live",
        )
        .bind(now)
        .bind(i64::from(at_most))
        .fetch_one(&self.pool)
        .await?)
    }

    /// A live pending request, only for the browser that holds its cookie.
    pub async fn find_auth_request(
        &self,
        id: &str,
        browser_hash: &str,
        now: i64,
    ) -> Result<Option<AuthRequestRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            auth_request_columns!(),
            " FROM auth_requests WHERE id = $1 AND browser_hash = $2 AND expires_at >= $3"
        ))
        .bind(id)
        .bind(browser_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records the upstream state of a sign-in that has not left for the provider yet; a
    /// request can start the upstream sign-in once, so a second tab cannot fork it.
    pub async fn begin_upstream_login(&self, id: &str, login: &UpstreamLogin) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE auth_requests SET alias = $2, upstream_state_hash = $3, upstream_nonce = $4, pkce_verifier = $5
             WHERE id = $1 AND upstream_state_hash IS NULL",
        )
        .bind(id)
        .bind(&login.alias)
        .bind(&login.state_hash)
        .bind(&login.nonce)
        .bind(&login.pkce_verifier)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Removes and returns the pending sign-in for an upstream `state`, whatever happens next:
    /// a state is good for one callback only.
    pub async fn take_auth_request_by_state(&self, state_hash: &str) -> Result<Option<AuthRequestRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "DELETE FROM auth_requests WHERE upstream_state_hash = $1 RETURNING ",
            auth_request_columns!()
        ))
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn insert_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO sso_sessions (",
            session_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&row.id)
        .bind(&row.cookie_hash)
        .bind(&row.user_id)
        .bind(&row.identity_provider)
        .bind(row.created_at)
        .bind(row.last_seen_at)
        .bind(row.ended_at)
        .bind(i64::from(row.offline))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn find_session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let ticket = self.cache.as_ref().map(|cache| cache.ticket());
        let session: Option<SessionRow> =
            sqlx::query_as(concat!("SELECT ", session_columns!(), " FROM sso_sessions WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        if let (Some(cache), Some(ticket), Some(session)) = (&self.cache, ticket, &session) {
            cache.keep_session(ticket, session);
        }
        Ok(session)
    }

    /// The session as kept in memory, when it is (see `cache`). Its `last_seen_at` may be
    /// older than the database's, never newer: a session it shows as live is live.
    pub(crate) fn cached_session(&self, id: &str) -> Option<Arc<SessionRow>> {
        self.cache.as_ref()?.session(id)
    }

    /// The browser's SSO session, by the hash of its cookie.
    pub(crate) async fn find_session_by_cookie(&self, cookie_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sso_sessions WHERE cookie_hash = $1 AND offline = 0"
        ))
        .bind(cookie_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records use of a live session, which restarts its idle timer. A session used within
    /// the last `TOUCH_GRANULARITY_SECONDS` is not written again: idle limits are hours or
    /// days, and skipping the write spares a commit on most refreshes.
    pub(crate) async fn touch_session(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sso_sessions SET last_seen_at = $2 WHERE id = $1 AND ended_at IS NULL AND last_seen_at < $3",
        )
        .bind(id)
        .bind(now)
        .bind(now - TOUCH_GRANULARITY_SECONDS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes one token, refresh or access, by its `jti` until it would have expired anyway.
    /// Returns false when it was revoked already, which is how a reused rotated token is caught.
    pub(crate) async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<bool, StoreError> {
        let inserted =
            sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
                .bind(jti)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
        if let Some(cache) = &self.cache {
            cache.forget_unrevoked(jti);
        }
        Ok(inserted.rows_affected() > 0)
    }

    /// Whether a token (refresh or access) was revoked; a token found unrevoked is remembered
    /// as such (see `cache`) until a revocation is announced.
    pub(crate) async fn is_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        if self.cache.as_ref().is_some_and(|cache| cache.known_unrevoked(jti)) {
            return Ok(false);
        }
        let ticket = self.cache.as_ref().map(|cache| cache.ticket());
        let found: Option<String> = sqlx::query_scalar("SELECT jti FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?;
        if let (Some(cache), Some(ticket), None) = (&self.cache, ticket, &found) {
            cache.keep_unrevoked(ticket, jti);
        }
        Ok(found.is_some())
    }

    pub(crate) async fn end_session(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sso_sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        if let Some(cache) = &self.cache {
            cache.forget_session(id);
        }
        Ok(())
    }

    pub async fn insert_authorization_code(&self, row: &AuthorizationCodeRow) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO authorization_codes (",
            code_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&row.code_hash)
        .bind(&row.client_id)
        .bind(&row.redirect_uri)
        .bind(&row.user_id)
        .bind(&row.session_id)
        .bind(&row.scope)
        .bind(&row.nonce)
        .bind(&row.code_challenge)
        .bind(&row.code_challenge_method)
        .bind(row.created_at)
        .bind(row.expires_at)
        .bind(row.used_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a code used, atomically; a second presentation ends the session the first one
    /// started (RFC 6749 §4.1.2: revoke what the code issued).
    pub async fn redeem_authorization_code(&self, code_hash: &str, now: i64) -> Result<CodeRedemption, StoreError> {
        let redeemed: Option<AuthorizationCodeRow> = sqlx::query_as(concat!(
            "UPDATE authorization_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL RETURNING ",
            code_columns!()
        ))
        .bind(code_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = redeemed {
            return Ok(CodeRedemption::Redeemed(row));
        }
        let used: Option<AuthorizationCodeRow> =
            sqlx::query_as(concat!("SELECT ", code_columns!(), " FROM authorization_codes WHERE code_hash = $1"))
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await?;
        match used {
            Some(row) => {
                self.end_session(&row.session_id, now).await?;
                Ok(CodeRedemption::Replayed(row))
            }
            None => Ok(CodeRedemption::Unknown),
        }
    }
}
