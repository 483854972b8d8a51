//! The master realm's administrator (`admin-cli`): sign-in, sessions and logout; guessing slowed per caller.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quick_cache::sync::Cache;

use crate::audit::{AdminLoginFact, AuditLog, Event};
use crate::config::AdminSettings;
use crate::crypto::{CtSecret, constant_time_eq, new_id, sha256};
use crate::store::{AdminSessionRow, Store, StoreError};

use super::tokens::{ADMIN_CLIENT_ID, AdminClaims, AdminLifespans, AdminTokens, TokenError, TokenService};

// Brute-force detection follows Keycloak's (temporary lockout with a growing wait, failures
// forgotten after a quiet period), counted per caller, i.e. per (client address, user name): a
// stranger guessing slows down only their own attempts, never the administrator's from another
// address. The wait is capped and there is no permanent lockout. Counts live in this process;
// each replica counts its own attempts.

/// Failures allowed before any wait, as a person mistyping needs.
const FREE_FAILURES: u32 = 3;
/// The first wait; each further failure doubles it.
const FIRST_WAIT_SECONDS: i64 = 1;
/// The longest wait after a failure: what a caller's own guessing costs them at most per attempt.
pub(crate) const MAX_WAIT_SECONDS: i64 = 60;
/// Failures this long ago are forgotten (Keycloak's `maxDeltaTimeSeconds`, 12 hours).
const FAILURES_FORGOTTEN_AFTER_SECONDS: i64 = 12 * 3600;
/// Callers whose failures are remembered at most. An entry is about 100 bytes, so a stranger
/// with many addresses or user names costs this process about a megabyte, never more; beyond
/// it the callers with the fewest failures are forgotten first (see [`Guard::make_room`]).
const MAX_CALLERS: usize = 10_000;
/// Checked failures per minute from all callers together beyond which every further checked
/// attempt first waits [`CEILING_DELAY`]. One caller gets at most about 9 checks in its first
/// minute (3 free, then waits of 1, 2, 4, 8, 16 and 32 s) and one a minute after that, and the
/// administrator fails a handful at most: 120 means a dozen or more addresses guessing at
/// once, the one attack the per-caller count cannot slow.
const CEILING_FAILURES_PER_MINUTE: u32 = 120;
/// The window of [`CEILING_FAILURES_PER_MINUTE`].
const CEILING_WINDOW_SECONDS: i64 = 60;
/// The delay above the ceiling: never a refusal, so the administrator's right password still
/// gets in, half a second late; a guesser's rate falls to half a check per second per
/// connection it holds open.
const CEILING_DELAY: Duration = Duration::from_millis(500);
/// What the credentials fingerprint is bound to, so it equals no other digest of the password.
const FINGERPRINT_CONTEXT: &str = "identity-broker admin session credentials";
/// How long a session found live in the database is believed without asking again. The admin
/// API checks the session on every call, and OpenHands sends its calls in bursts (a sign-in's
/// lookups, the mailing-list sync's pages): one query per session per 10 seconds instead of one
/// per call. Another replica may so accept an ended session's access token for at most this
/// long, less than the access token's own minute.
const SESSION_RECHECK_SECONDS: i64 = 10;
/// Admin sessions whose liveness is remembered.
const REMEMBERED_SESSIONS: usize = 256;

/// Consecutive failed sign-ins of one caller, as a pure state: time comes in as `now`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttle {
    failures: u32,
    last_failure: i64,
}

impl Throttle {
    /// The seconds to wait before another attempt is even checked; 0 when one may come now.
    pub(crate) fn wait(&self, now: i64) -> i64 {
        if self.failures < FREE_FAILURES || self.is_forgotten(now) {
            return 0;
        }
        let doublings = (self.failures - FREE_FAILURES).min(16);
        let wait = (FIRST_WAIT_SECONDS << doublings).min(MAX_WAIT_SECONDS);
        (self.last_failure + wait - now).max(0)
    }

    pub(crate) fn failed(&mut self, now: i64) {
        if self.is_forgotten(now) {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
    }

    fn is_forgotten(&self, now: i64) -> bool {
        now - self.last_failure >= FAILURES_FORGOTTEN_AFTER_SECONDS
    }
}

/// Who is guessing: the client's address (`ClientAddress::budget_key`) and the user name they
/// give, lower-cased, as its digest (a long name costs no more memory than a short one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Caller {
    client: String,
    username: [u8; 32],
}

impl Caller {
    pub(crate) fn new(client: &str, username: &str) -> Caller {
        Caller { client: client.to_owned(), username: sha256(username.to_lowercase().as_bytes()) }
    }
}

/// Checked failures of all callers together, in fixed windows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RecentFailures {
    window_start: i64,
    failures: u32,
}

impl RecentFailures {
    fn above_ceiling(&self, now: i64) -> bool {
        now - self.window_start < CEILING_WINDOW_SECONDS && self.failures >= CEILING_FAILURES_PER_MINUTE
    }

    fn failed(&mut self, now: i64) {
        if now - self.window_start >= CEILING_WINDOW_SECONDS {
            *self = RecentFailures { window_start: now, failures: 0 };
        }
        self.failures = self.failures.saturating_add(1);
    }

    fn succeeded(&mut self, now: i64) {
        if now - self.window_start < CEILING_WINDOW_SECONDS {
            self.failures = self.failures.saturating_sub(1);
        }
    }
}

/// What happens to a sign-in attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Refused unchecked: this caller's wait after failures runs `wait` more seconds.
    Throttled { wait: i64 },
    /// Checked, after [`CEILING_DELAY`] when `delayed` (the ceiling of all callers is passed).
    Check { delayed: bool },
}

/// The failed sign-ins of every caller and of all together, as a pure state: time comes in as
/// `now`. An attempt is counted as a failure when admitted, before the password is compared,
/// and taken back on success: attempts sent at once cannot all slip through before the first
/// of them is counted.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    callers: HashMap<Caller, Throttle>,
    recent: RecentFailures,
}

impl Guard {
    pub(crate) fn admit(&mut self, caller: &Caller, now: i64) -> Admission {
        if !self.callers.contains_key(caller) {
            self.make_room(now);
        }
        let throttle = self.callers.entry(caller.clone()).or_default();
        let wait = throttle.wait(now);
        if wait > 0 {
            // A refused attempt compares nothing and teaches nothing: it does not count.
            return Admission::Throttled { wait };
        }
        throttle.failed(now);
        let delayed = self.recent.above_ceiling(now);
        self.recent.failed(now);
        Admission::Check { delayed }
    }

    /// The caller signed in: their failures are forgotten, and the one counted on admission
    /// taken back.
    pub(crate) fn succeeded(&mut self, caller: &Caller, now: i64) {
        self.callers.remove(caller);
        self.recent.succeeded(now);
    }

    /// Keeps the map under [`MAX_CALLERS`] before a new caller is added. Forgotten callers go
    /// first; if that is not enough, the eighth with the fewest (then the oldest) failures, so
    /// that a stranger spraying new user names cannot push out a caller in a long wait, and the
    /// scan over the whole map runs once per eighth of it, not once per attempt.
    fn make_room(&mut self, now: i64) {
        if self.callers.len() < MAX_CALLERS {
            return;
        }
        self.callers.retain(|_, throttle| !throttle.is_forgotten(now));
        if self.callers.len() < MAX_CALLERS {
            return;
        }
        let mut ranks: Vec<(u32, i64)> = self.callers.values().map(|t| (t.failures, t.last_failure)).collect();
        let cut = ranks.len() / 8;
        let (_, threshold, _) = ranks.select_nth_unstable(cut);
        let threshold = *threshold;
        self.callers.retain(|_, t| (t.failures, t.last_failure) > threshold);
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.callers.len()
    }
}

/// Whether a stored admin session still backs tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionState {
    Live,
    /// Logged out, or deleted by housekeeping.
    Gone,
    /// Idle past its refresh token, or past `admin.session_max_seconds`.
    Expired,
    /// Signed in with another user name or password than the configured ones.
    CredentialsChanged,
}

impl SessionState {
    /// The audit trail's word for a session that is not live.
    fn cause(self) -> &'static str {
        match self {
            SessionState::Live => "live",
            SessionState::Gone => "session_ended",
            SessionState::Expired => "session_expired",
            SessionState::CredentialsChanged => "credentials_changed",
        }
    }
}

/// The state of `session` at `now` for the configured credentials `fingerprint` and maximum
/// lifetime `max_seconds` (the current configuration's, which a restart may have lowered).
pub(crate) fn session_state(
    session: Option<&AdminSessionRow>,
    fingerprint: &str,
    max_seconds: i64,
    now: i64,
) -> SessionState {
    let Some(session) = session else { return SessionState::Gone };
    if !constant_time_eq(&session.credentials_fingerprint, fingerprint) {
        return SessionState::CredentialsChanged;
    }
    if now >= session.expires_at || now >= session.created_at + max_seconds {
        return SessionState::Expired;
    }
    SessionState::Live
}

/// Why an administrator's grant or logout was refused; each has Keycloak's wire text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminGrantError {
    /// A wrong user name or password, or an attempt during a wait (not told apart, as Keycloak does).
    #[error("Invalid user credentials")]
    InvalidCredentials,
    /// A refresh token that is expired, malformed, not the administrator's, or whose session ended.
    #[error("Token is not active")]
    NotActive,
    /// A logout with a refresh token that is malformed, expired or not the administrator's.
    #[error("Invalid refresh token")]
    InvalidRefreshToken,
    #[error("cannot sign the administrator's tokens")]
    Signing(#[source] TokenError),
    #[error("cannot read or write the administrator's sessions")]
    Store(#[from] StoreError),
}

/// A session found live, and until when that may be believed without the database.
#[derive(Debug, Clone, Copy)]
struct KnownLive {
    checked_at: i64,
    expires_at: i64,
}

/// The administrator's sign-in and sessions; shared by every request.
pub(crate) struct AdminSignIn {
    username: String,
    password: CtSecret,
    /// A digest of the configured user name and password, stored with each session.
    fingerprint: String,
    access_lifespan: i64,
    idle_seconds: i64,
    max_seconds: i64,
    guard: Mutex<Guard>,
    known_live: Cache<String, KnownLive>,
    audit: AuditLog,
}

impl std::fmt::Debug for AdminSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSignIn").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Who asks, and from where, for the audit trail and the throttle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdminRequest<'a> {
    pub(crate) store: &'a Store,
    pub(crate) tokens: &'a TokenService,
    /// The client's address as budgets count it (`ClientAddress::budget_key`).
    pub(crate) client: &'a str,
    pub(crate) now: i64,
}

impl AdminSignIn {
    /// The administrator of `settings`, or `None` when no password is set (the admin API is off).
    pub(crate) fn new(settings: &AdminSettings, audit: AuditLog) -> Option<AdminSignIn> {
        let password = settings.password.clone()?;
        let fingerprint = password.fingerprint(&format!("{FINGERPRINT_CONTEXT}\0{}", settings.username));
        Some(AdminSignIn {
            username: settings.username.clone(),
            password,
            fingerprint,
            access_lifespan: settings.access_token_lifespan_seconds,
            idle_seconds: settings.session_idle_seconds,
            max_seconds: settings.session_max_seconds,
            guard: Mutex::new(Guard::default()),
            known_live: Cache::new(REMEMBERED_SESSIONS),
            audit,
        })
    }

    fn guard(&self) -> MutexGuard<'_, Guard> {
        self.guard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token lifetimes of a session started at `created_at`, from `now`: none outlives the
    /// session's maximum, as in Keycloak.
    fn lifespans(&self, created_at: i64, now: i64) -> AdminLifespans {
        let remaining = created_at + self.max_seconds - now;
        AdminLifespans { access: self.access_lifespan.min(remaining), refresh: self.idle_seconds.min(remaining) }
    }

    /// `grant_type=password` for `admin-cli`: both halves compared in constant time, nothing
    /// compared at all while this caller's wait after failures runs, and a new admin session.
    pub(crate) async fn password_grant(
        &self,
        request: AdminRequest<'_>,
        username: &str,
        password: &str,
    ) -> Result<AdminTokens, AdminGrantError> {
        let AdminRequest { store, tokens, client, now } = request;
        let caller = Caller::new(client, username);
        let admission = self.guard().admit(&caller, now);
        match admission {
            Admission::Throttled { wait } => {
                self.login_refused(
                    client,
                    now,
                    "throttled",
                    "password",
                    AdminLoginFact::Throttled { wait_seconds: wait },
                )
                .await;
                return Err(AdminGrantError::InvalidCredentials);
            }
            Admission::Check { delayed: true } => tokio::time::sleep(CEILING_DELAY).await,
            Admission::Check { delayed: false } => {}
        }
        // Both compared, always, so the time taken does not tell which one was wrong.
        let username_matches = constant_time_eq(&username.to_lowercase(), &self.username.to_lowercase());
        let password_matches = self.password.matches(password);
        if !(username_matches && password_matches) {
            let fact = AdminLoginFact::WrongCredentials { username_known: username_matches };
            self.login_refused(client, now, "failure", "password", fact).await;
            return Err(AdminGrantError::InvalidCredentials);
        }
        self.guard().succeeded(&caller, now);
        let lifespans = self.lifespans(now, now);
        let session = AdminSessionRow {
            id: new_id(),
            username: self.username.clone(),
            credentials_fingerprint: self.fingerprint.clone(),
            created_at: now,
            last_refresh_at: now,
            expires_at: now + lifespans.refresh,
        };
        store.insert_admin_session(&session).await?;
        let issued =
            tokens.issue_admin(&self.username, &session.id, lifespans, now).await.map_err(AdminGrantError::Signing)?;
        self.login(now, "success", "password", AdminLoginFact::Issued { session_id: &session.id }).await;
        Ok(issued)
    }

    /// `grant_type=refresh_token` for `admin-cli`: new tokens in the same admin session, if it
    /// is live, whose refresh token lives `session_idle_seconds` from this use but never past the
    /// session's maximum lifetime.
    pub(crate) async fn refresh_grant(
        &self,
        request: AdminRequest<'_>,
        refresh_token: &str,
    ) -> Result<AdminTokens, AdminGrantError> {
        let AdminRequest { store, tokens, client, now } = request;
        let claims = match tokens.verify_admin_refresh(refresh_token, now) {
            Ok(claims) => claims,
            Err(err) => {
                let cause = if err == TokenError::Expired { "expired" } else { "invalid" };
                self.login_refused(client, now, "failure", "refresh_token", AdminLoginFact::Refused { cause }).await;
                return Err(AdminGrantError::NotActive);
            }
        };
        let session = store.find_admin_session(&claims.sid).await?;
        let state = session_state(session.as_ref(), &self.fingerprint, self.max_seconds, now);
        if state == SessionState::CredentialsChanged {
            self.end(store, &claims.sid, "credentials_changed", now).await?;
        }
        let session = match (state, session) {
            (SessionState::Live, Some(session)) => session,
            (state, _) => {
                let fact = AdminLoginFact::Refused { cause: state.cause() };
                self.login_refused(client, now, "failure", "refresh_token", fact).await;
                return Err(AdminGrantError::NotActive);
            }
        };
        let lifespans = self.lifespans(session.created_at, now);
        // A logout or a credentials change between the read and this write wins.
        if !store.refresh_admin_session(&session.id, &self.fingerprint, now, now + lifespans.refresh).await? {
            let fact = AdminLoginFact::Refused { cause: "session_ended" };
            self.login_refused(client, now, "failure", "refresh_token", fact).await;
            return Err(AdminGrantError::NotActive);
        }
        let issued =
            tokens.issue_admin(&self.username, &session.id, lifespans, now).await.map_err(AdminGrantError::Signing)?;
        self.login(now, "success", "refresh_token", AdminLoginFact::Issued { session_id: &session.id }).await;
        Ok(issued)
    }

    /// Keycloak's back-channel logout for `admin-cli` (python-keycloak's `KeycloakOpenID.logout`):
    /// ends the session of `refresh_token`. A session already ended is no error, as in Keycloak.
    pub(crate) async fn logout(&self, request: AdminRequest<'_>, refresh_token: &str) -> Result<(), AdminGrantError> {
        let AdminRequest { store, tokens, client, now } = request;
        let Ok(claims) = tokens.verify_admin_refresh(refresh_token, now) else {
            let event = Event::AdminLogout {
                outcome: "failure",
                client_id: ADMIN_CLIENT_ID,
                session_id: None,
                cause: "invalid_refresh_token",
            };
            self.audit.anonymous_failure(now, event, client).await;
            return Err(AdminGrantError::InvalidRefreshToken);
        };
        self.end(store, &claims.sid, "logout", now).await?;
        Ok(())
    }

    /// Whether the session of an administrator's access token still backs it. A session signed
    /// in with other credentials than the configured ones is ended here, at its first use.
    pub(crate) async fn session_is_live(
        &self,
        store: &Store,
        claims: &AdminClaims,
        now: i64,
    ) -> Result<bool, StoreError> {
        if let Some(known) = self.known_live.get(claims.sid.as_str())
            && now < known.checked_at + SESSION_RECHECK_SECONDS
            && now < known.expires_at
        {
            return Ok(true);
        }
        let session = store.find_admin_session(&claims.sid).await?;
        match (session_state(session.as_ref(), &self.fingerprint, self.max_seconds, now), session) {
            (SessionState::Live, Some(session)) => {
                let known = KnownLive { checked_at: now, expires_at: session.expires_at };
                self.known_live.insert(session.id, known);
                Ok(true)
            }
            (SessionState::CredentialsChanged, _) => {
                self.end(store, &claims.sid, "credentials_changed", now).await?;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Deletes the session `id`, and records why when it was there.
    async fn end(&self, store: &Store, id: &str, cause: &str, now: i64) -> Result<(), StoreError> {
        self.known_live.remove(id);
        if store.delete_admin_session(id).await? {
            let event =
                Event::AdminLogout { outcome: "success", client_id: ADMIN_CLIENT_ID, session_id: Some(id), cause };
            self.audit.event(now, event).await;
        }
        Ok(())
    }

    /// True when `claims` are of this administrator (a token of a renamed one is refused).
    pub(crate) fn is_administrator(&self, claims: &AdminClaims) -> bool {
        claims.preferred_username == self.username
    }

    async fn login(&self, now: i64, outcome: &'static str, grant_type: &'static str, fact: AdminLoginFact<'_>) {
        self.audit.event(now, Event::AdminLogin { outcome, client_id: ADMIN_CLIENT_ID, grant_type, fact }).await;
    }

    /// A refusal of a caller nobody authenticated: a flood of them costs a few rows a minute.
    async fn login_refused(
        &self,
        client: &str,
        now: i64,
        outcome: &'static str,
        grant_type: &'static str,
        fact: AdminLoginFact<'_>,
    ) {
        let event = Event::AdminLogin { outcome, client_id: ADMIN_CLIENT_ID, grant_type, fact };
        self.audit.anonymous_failure(now, event, client).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_free_ones_make_a_growing_capped_wait_that_ends() {
        let mut throttle = Throttle::default();
        let start = 1_000_000;
        for n in 0..FREE_FAILURES {
            assert_eq!(throttle.wait(start), 0, "no wait after {n} failures");
            throttle.failed(start);
        }
        assert_eq!(throttle.wait(start), 1, "the first wait after {FREE_FAILURES} failures");
        assert_eq!(throttle.wait(start + 1), 0, "and it ends");
        throttle.failed(start + 1);
        assert_eq!(throttle.wait(start + 1), 2, "each failure doubles the wait");
        for _ in 0..40 {
            throttle.failed(start + 2);
        }
        assert_eq!(throttle.wait(start + 2), MAX_WAIT_SECONDS, "capped: never a lockout for good");
        assert_eq!(throttle.wait(start + 2 + MAX_WAIT_SECONDS), 0, "even after many failures the wait ends");
    }

    #[test]
    fn a_quiet_half_day_forgets_the_failures() {
        let mut throttle = Throttle::default();
        for _ in 0..10 {
            throttle.failed(100);
        }
        assert!(throttle.wait(100) > 0);
        assert_eq!(throttle.wait(100 + FAILURES_FORGOTTEN_AFTER_SECONDS), 0, "forgotten after 12 hours");
        throttle.failed(100 + FAILURES_FORGOTTEN_AFTER_SECONDS);
        assert_eq!(throttle.wait(100 + FAILURES_FORGOTTEN_AFTER_SECONDS), 0, "a fresh count starts at one");
    }

    #[test]
    fn one_callers_failures_never_hold_back_another_caller() {
        let mut guard = Guard::default();
        let now = 1_000_000;
        let stranger = Caller::new("192.0.2.9", "admin");
        let administrator = Caller::new("192.0.2.1", "admin");
        let same_address_other_name = Caller::new("192.0.2.9", "root");
        for _ in 0..50 {
            guard.admit(&stranger, now);
        }

        let cases = [
            (&stranger, true, "the guesser waits"),
            (&Caller::new("192.0.2.9", "ADMIN"), true, "the user name is compared lower-cased"),
            (&administrator, false, "another address is checked at once"),
            (&same_address_other_name, false, "another user name from the same address too"),
        ];
        for (caller, throttled, why) in cases {
            let admitted = guard.admit(caller, now);
            assert_eq!(matches!(admitted, Admission::Throttled { .. }), throttled, "{why}: {admitted:?}");
        }
        guard.succeeded(&administrator, now);
        assert_eq!(guard.admit(&administrator, now), Admission::Check { delayed: false }, "a success clears the count");
    }

    #[test]
    fn many_checked_failures_from_everywhere_delay_every_check_but_refuse_none() {
        let mut guard = Guard::default();
        let now = 1_000_000;
        for n in 0..CEILING_FAILURES_PER_MINUTE {
            let admitted = guard.admit(&Caller::new(&format!("10.0.{}.{}", n / 256, n % 256), "admin"), now);
            assert_eq!(admitted, Admission::Check { delayed: false }, "under the ceiling: attempt {n}");
        }

        let administrator = Caller::new("192.0.2.1", "admin");
        assert_eq!(guard.admit(&administrator, now), Admission::Check { delayed: true }, "above it: delayed, checked");
        assert_eq!(
            guard.admit(&administrator, now + CEILING_WINDOW_SECONDS),
            Admission::Check { delayed: false },
            "the next window starts afresh"
        );
    }

    #[test]
    fn the_callers_remembered_stay_bounded_and_a_long_wait_outlives_a_spray() {
        let mut guard = Guard::default();
        let now = 1_000_000;
        let guesser = Caller::new("192.0.2.9", "admin");
        for _ in 0..5 {
            guard.admit(&guesser, now);
        }

        // The same address sprays user names while many addresses guess once or twice each.
        for n in 0..3 * MAX_CALLERS {
            let caller = if n % 2 == 0 {
                Caller::new("192.0.2.9", &format!("user{n}"))
            } else {
                Caller::new(&format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255), "admin")
            };
            for _ in 0..=(n % 4) / 2 {
                guard.admit(&caller, now);
            }
        }

        assert!(guard.remembered() <= MAX_CALLERS, "{} callers remembered", guard.remembered());
        assert!(
            matches!(guard.admit(&guesser, now), Admission::Throttled { .. }),
            "the spray did not push out the guesser's wait"
        );
        guard.admit(&Caller::new("192.0.2.10", "admin"), now + FAILURES_FORGOTTEN_AFTER_SECONDS + 2);
        assert!(guard.remembered() <= MAX_CALLERS);
    }

    #[test]
    fn a_session_is_live_with_the_same_credentials_before_its_ends() {
        let session = AdminSessionRow {
            id: "s1".to_owned(),
            username: "admin".to_owned(),
            credentials_fingerprint: "fp".to_owned(),
            created_at: 1_000,
            last_refresh_at: 1_500,
            expires_at: 3_000,
        };
        let cases = [
            (Some(&session), "fp", 36_000, 2_999, SessionState::Live, "within both ends"),
            (Some(&session), "fp", 36_000, 3_000, SessionState::Expired, "idle past its refresh token"),
            (Some(&session), "fp", 1_500, 2_500, SessionState::Expired, "past a maximum lowered since"),
            (Some(&session), "other", 36_000, 2_000, SessionState::CredentialsChanged, "another password"),
            (None, "fp", 36_000, 2_000, SessionState::Gone, "logged out"),
        ];
        for (row, fingerprint, max, now, expected, why) in cases {
            assert_eq!(session_state(row, fingerprint, max, now), expected, "{why}");
        }
    }
}
