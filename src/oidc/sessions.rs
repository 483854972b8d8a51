//! SSO and offline sessions, as Keycloak keeps them: started by a sign-in or an offline grant,
//! checked on every token they back, touched on use, and ended (with an audit event) by logout,
//! revocation or a detected theft. The one owner of the `sso_sessions` rows.

use std::sync::Arc;

use crate::audit::{AuditLog, Event};
use crate::config::RealmSettings;
use crate::crypto::{constant_time_eq, new_id, random_token, token_hash};
use crate::store::{SessionRow, Store, StoreError, TOUCH_GRANULARITY_SECONDS};

/// Why a session ends; each cause is one audit outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The user signed out in the browser (RP-initiated logout).
    BrowserLogout,
    /// The client ended the session of a refresh token it holds.
    BackChannelLogout,
    /// An offline token was revoked (RFC 7009), which ends its offline session.
    OfflineTokenRevoked,
    /// A rotated refresh token came back: taken as theft.
    RefreshTokenReused,
    /// An administrator signed the user out everywhere (Keycloak's `POST …/users/{id}/logout`).
    AdminLogout,
}

impl Ending {
    /// A revocation (`session_revoked` in the audit trail) rather than a logout.
    fn is_revocation(self) -> bool {
        match self {
            Ending::BrowserLogout | Ending::BackChannelLogout | Ending::AdminLogout => false,
            Ending::OfflineTokenRevoked | Ending::RefreshTokenReused => true,
        }
    }

    fn cause(self) -> &'static str {
        match self {
            Ending::BrowserLogout => "browser",
            Ending::BackChannelLogout => "back_channel",
            Ending::OfflineTokenRevoked => "offline_token_revoked",
            Ending::RefreshTokenReused => "refresh_token_reused",
            Ending::AdminLogout => "admin",
        }
    }
}

/// The session lifetimes of the realm, in seconds.
#[derive(Debug, Clone, Copy)]
struct Limits {
    idle: i64,
    max: i64,
    offline_idle: i64,
}

/// Sessions over the store; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    store: Store,
    audit: AuditLog,
    limits: Limits,
}

impl Sessions {
    pub(crate) fn new(store: Store, audit: AuditLog, realm: &RealmSettings) -> Self {
        let limits = Limits {
            idle: realm.sso_session_idle_seconds,
            max: realm.sso_session_max_seconds,
            offline_idle: realm.offline_session_idle_seconds,
        };
        Sessions { store, audit, limits }
    }

    /// True while the session is neither ended nor past its idle or maximum lifetime. An
    /// offline session has no maximum: it lives while it is used within its idle time.
    pub(crate) fn is_live(&self, session: &SessionRow, now: i64) -> bool {
        if session.ended_at.is_some() {
            return false;
        }
        if session.offline {
            return now < session.last_seen_at + self.limits.offline_idle;
        }
        now < session.last_seen_at + self.limits.idle && now < session.created_at + self.limits.max
    }

    /// A browser's SSO session after a sign-in through `provider`, and the secret its cookie
    /// carries (only its hash is stored).
    pub(crate) async fn start(
        &self,
        user_id: &str,
        provider: &str,
        now: i64,
    ) -> Result<(SessionRow, String), StoreError> {
        let secret = random_token();
        let session = new_session(user_id, provider, token_hash(&secret), false, now);
        self.store.insert_session(&session).await?;
        Ok((session, secret))
    }

    /// The session of a password grant: no browser and no provider; offline when the scope
    /// asks for `offline_access`.
    pub(crate) async fn start_direct(&self, user_id: &str, offline: bool, now: i64) -> Result<SessionRow, StoreError> {
        // No browser cookie; the hash of a discarded secret keeps the column unique.
        let session = new_session(user_id, "", token_hash(&random_token()), offline, now);
        self.store.insert_session(&session).await?;
        Ok(session)
    }

    /// An offline session beside `from`: its tokens outlive logout and the SSO limits.
    pub(crate) async fn start_offline(&self, from: &SessionRow, now: i64) -> Result<Arc<SessionRow>, StoreError> {
        // Offline sessions have no browser cookie; the hash of a discarded secret keeps the
        // column unique.
        let session = new_session(&from.user_id, &from.identity_provider, token_hash(&random_token()), true, now);
        self.store.insert_session(&session).await?;
        Ok(Arc::new(session))
    }

    /// The session `id` if it is live at `now`.
    pub(crate) async fn live(&self, id: &str, now: i64) -> Result<Option<Arc<SessionRow>>, StoreError> {
        // A copy in memory may have an older `last_seen_at`, never a newer one: if it is live,
        // the session is; if not, the database decides.
        if let Some(session) = self.store.cached_session(id).filter(|s| self.is_live(s, now)) {
            return Ok(Some(session));
        }
        Ok(self.store.find_session(id).await?.filter(|s| self.is_live(s, now)).map(Arc::new))
    }

    /// The browser's SSO session, by its cookie, if it is live at `now`.
    pub(crate) async fn live_by_cookie(&self, cookie: &str, now: i64) -> Result<Option<SessionRow>, StoreError> {
        Ok(self.by_cookie(cookie).await?.filter(|s| self.is_live(s, now)))
    }

    /// The browser's SSO session by its cookie, live or not.
    pub(crate) async fn by_cookie(&self, cookie: &str) -> Result<Option<SessionRow>, StoreError> {
        self.store.find_session_by_cookie(&token_hash(cookie)).await
    }

    /// The session `id`, live or not.
    pub(crate) async fn find(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        self.store.find_session(id).await
    }

    /// Records a use, which restarts the idle timer. The row in hand is never newer than the
    /// database's: when it was seen within `TOUCH_GRANULARITY_SECONDS`, so was the stored one,
    /// and the write would change nothing (a refresh grant saves a round trip).
    pub(crate) async fn touch(&self, session: &SessionRow, now: i64) -> Result<(), StoreError> {
        if session.last_seen_at >= now - TOUCH_GRANULARITY_SECONDS {
            return Ok(());
        }
        self.store.touch_session(&session.id, now).await
    }

    /// Ends a session with its tokens, and records why.
    pub(crate) async fn end(
        &self,
        session: &SessionRow,
        ending: Ending,
        client_id: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.store.end_session(&session.id, now).await?;
        let event = Event::SessionEnded {
            revoked: ending.is_revocation(),
            cause: ending.cause(),
            user_id: &session.user_id,
            client_id,
            alias: &session.identity_provider,
            session_id: &session.id,
        };
        self.audit.event(now, event).await;
        Ok(())
    }

    /// Ends every session of a user not yet ended, browser and offline alike; returns how many.
    pub(crate) async fn end_all_of(
        &self,
        user_id: &str,
        ending: Ending,
        client_id: Option<&str>,
        now: i64,
    ) -> Result<usize, StoreError> {
        let ids = self.store.open_session_ids(user_id).await?;
        for id in &ids {
            self.end_by_id(id, ending, client_id, now).await?;
        }
        Ok(ids.len())
    }

    /// Ends the session `id` if it exists (live or not); see [`Sessions::end`].
    pub(crate) async fn end_by_id(
        &self,
        id: &str,
        ending: Ending,
        client_id: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        match self.find(id).await? {
            Some(session) => self.end(&session, ending, client_id, now).await,
            None => Ok(()),
        }
    }
}

/// What the logout confirmation code is bound to, so that it equals no other digest of the cookie.
const LOGOUT_CONFIRMATION_CONTEXT: &str = "identity-broker logout confirmation";

/// The code the logout confirmation form carries for the browser whose SSO cookie holds
/// `cookie`. Derived from the cookie's secret, which only that browser holds (the cookie is
/// HttpOnly, the page cannot be framed), so another site can neither read nor compute it; no
/// row to store, and valid exactly as long as the cookie. The database keeps only the
/// cookie's own digest, which is not this one.
pub(crate) fn logout_confirmation_code(cookie: &str) -> String {
    token_hash(&format!("{LOGOUT_CONFIRMATION_CONTEXT}\0{cookie}"))
}

/// Whether `presented` is the logout confirmation code of the browser holding `cookie`.
pub(crate) fn confirms_logout(cookie: &str, presented: &str) -> bool {
    constant_time_eq(&logout_confirmation_code(cookie), presented)
}

fn new_session(user_id: &str, provider: &str, cookie_hash: String, offline: bool, now: i64) -> SessionRow {
    SessionRow {
        id: new_id(),
        cookie_hash,
        user_id: user_id.to_owned(),
        identity_provider: provider.to_owned(),
        created_at: now,
        last_seen_at: now,
        ended_at: None,
        offline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logout_confirmation_code_confirms_only_its_own_browser() {
        let cookie = random_token();
        let code = logout_confirmation_code(&cookie);
        let stored = token_hash(&cookie);

        let cases = [
            (cookie.as_str(), code.as_str(), true, "the browser's own code"),
            (cookie.as_str(), "", false, "no code"),
            (cookie.as_str(), stored.as_str(), false, "the cookie's stored digest is not the code"),
            ("another-browser", code.as_str(), false, "another browser's cookie"),
        ];
        for (cookie, presented, expected, why) in cases {
            assert_eq!(confirms_logout(cookie, presented), expected, "{why}");
        }
    }
}
