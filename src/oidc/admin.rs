//! The master realm's administrator as Keycloak's `admin-cli` signs in: the `password` and
//! `refresh_token` grants, repeated failures slowed down, every attempt audited.
//!
//! Brute-force detection follows Keycloak's (temporary lockout with a growing wait, failures
//! forgotten after a quiet period), but the wait is capped at [`MAX_WAIT_SECONDS`] and there is
//! no permanent lockout: a stranger guessing can slow the administrator down, never shut them
//! out for good. The count lives in this process; each replica counts its own attempts.

use std::sync::Mutex;

use serde_json::json;
use uuid::Uuid;

use crate::audit::AuditLog;
use crate::config::AdminSettings;
use crate::store::AuditEvent;

use super::tokens::{ADMIN_CLIENT_ID, AdminClaims, AdminLifespans, AdminTokens, TokenError, TokenService};

/// Failures allowed before any wait, as a person mistyping needs.
const FREE_FAILURES: u32 = 3;
/// The first wait; each further failure doubles it.
const FIRST_WAIT_SECONDS: i64 = 1;
/// The longest wait after a failure: what a stranger can cost the administrator at most.
pub(crate) const MAX_WAIT_SECONDS: i64 = 60;
/// Failures this long ago are forgotten (Keycloak's `maxDeltaTimeSeconds`, 12 hours).
const FAILURES_FORGOTTEN_AFTER_SECONDS: i64 = 12 * 3600;

/// Consecutive failed sign-ins, as a pure state: time comes in as `now`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttle {
    failures: u32,
    last_failure: i64,
}

impl Throttle {
    /// The seconds to wait before another attempt is even checked; 0 when one may come now.
    pub(crate) fn wait(&self, now: i64) -> i64 {
        if self.failures < FREE_FAILURES || now - self.last_failure >= FAILURES_FORGOTTEN_AFTER_SECONDS {
            return 0;
        }
        let doublings = (self.failures - FREE_FAILURES).min(16);
        let wait = (FIRST_WAIT_SECONDS << doublings).min(MAX_WAIT_SECONDS);
        (self.last_failure + wait - now).max(0)
    }

    pub(crate) fn failed(&mut self, now: i64) {
        if now - self.last_failure >= FAILURES_FORGOTTEN_AFTER_SECONDS {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
    }

    pub(crate) fn succeeded(&mut self) {
        *self = Throttle::default();
    }
}

/// Why an administrator's grant was refused; each has Keycloak's wire text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminGrantError {
    /// A wrong user name or password, or an attempt during a wait (not told apart, as Keycloak does).
    #[error("Invalid user credentials")]
    InvalidCredentials,
    /// A refresh token that is expired, malformed or not the administrator's.
    #[error("Token is not active")]
    NotActive,
    #[error("cannot sign the administrator's tokens")]
    Signing(#[source] TokenError),
}

/// The administrator's sign-in; shared by every request.
#[derive(Debug)]
pub(crate) struct AdminSignIn {
    username: String,
    password: crate::crypto::CtSecret,
    lifespans: AdminLifespans,
    throttle: Mutex<Throttle>,
    audit: AuditLog,
}

impl AdminSignIn {
    /// The administrator of `settings`, or `None` when no password is set (the admin API is off).
    pub(crate) fn new(settings: &AdminSettings, audit: AuditLog) -> Option<AdminSignIn> {
        Some(AdminSignIn {
            username: settings.username.clone(),
            password: settings.password.clone()?,
            lifespans: AdminLifespans {
                access: settings.access_token_lifespan_seconds,
                refresh: settings.session_idle_seconds,
            },
            throttle: Mutex::new(Throttle::default()),
            audit,
        })
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `grant_type=password` for `admin-cli`: both halves compared in constant time, and
    /// nothing compared at all while a wait after failures runs.
    pub(crate) async fn password_grant(
        &self,
        tokens: &TokenService,
        username: &str,
        password: &str,
        now: i64,
    ) -> Result<AdminTokens, AdminGrantError> {
        // Counted as a failure before the check, under one lock: attempts sent at once cannot
        // all slip through before the first of them is counted.
        let wait = {
            let mut throttle = self.throttle();
            let wait = throttle.wait(now);
            if wait == 0 {
                throttle.failed(now);
            }
            wait
        };
        if wait > 0 {
            self.record("admin_login", "throttled", json!({ "grant_type": "password", "wait_seconds": wait }), now)
                .await;
            return Err(AdminGrantError::InvalidCredentials);
        }
        // Both compared, always, so the time taken does not tell which one was wrong.
        let username_matches = crate::crypto::constant_time_eq(&username.to_lowercase(), &self.username.to_lowercase());
        let password_matches = self.password.matches(password);
        if !(username_matches && password_matches) {
            self.record("admin_login", "failure", json!({ "grant_type": "password", "username_known": username_matches }), now)
                .await;
            return Err(AdminGrantError::InvalidCredentials);
        }
        self.throttle().succeeded();
        let session_id = Uuid::new_v4().to_string();
        let issued = tokens.issue_admin(&self.username, &session_id, self.lifespans, now).await.map_err(AdminGrantError::Signing)?;
        self.record("admin_login", "success", json!({ "grant_type": "password", "session_id": session_id }), now).await;
        Ok(issued)
    }

    /// `grant_type=refresh_token` for `admin-cli`: new tokens in the same admin session, whose
    /// refresh token lives `session_idle_seconds` from this use.
    pub(crate) async fn refresh_grant(
        &self,
        tokens: &TokenService,
        refresh_token: &str,
        now: i64,
    ) -> Result<AdminTokens, AdminGrantError> {
        let claims = match tokens.verify_admin_refresh(refresh_token, now) {
            Ok(claims) => claims,
            Err(err) => {
                let cause = if err == TokenError::Expired { "expired" } else { "invalid" };
                self.record("admin_login", "failure", json!({ "grant_type": "refresh_token", "cause": cause }), now)
                    .await;
                return Err(AdminGrantError::NotActive);
            }
        };
        let issued =
            tokens.issue_admin(&self.username, &claims.sid, self.lifespans, now).await.map_err(AdminGrantError::Signing)?;
        self.record("admin_login", "success", json!({ "grant_type": "refresh_token", "session_id": claims.sid }), now)
            .await;
        Ok(issued)
    }

    /// True when `claims` are of this administrator (a token of a renamed one is refused).
    pub(crate) fn is_administrator(&self, claims: &AdminClaims) -> bool {
        claims.preferred_username == self.username
    }

    async fn record(&self, kind: &str, outcome: &str, detail: serde_json::Value, now: i64) {
        self.audit
            .record(AuditEvent {
                at: now,
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
                user_id: None,
                client_id: Some(ADMIN_CLIENT_ID.to_owned()),
                alias: None,
                detail: detail.to_string(),
            })
            .await;
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
    fn a_success_or_a_quiet_half_day_forgets_the_failures() {
        let mut throttle = Throttle::default();
        for _ in 0..10 {
            throttle.failed(100);
        }
        assert!(throttle.wait(100) > 0);
        assert_eq!(throttle.wait(100 + FAILURES_FORGOTTEN_AFTER_SECONDS), 0, "forgotten after 12 hours");
        throttle.failed(100 + FAILURES_FORGOTTEN_AFTER_SECONDS);
        assert_eq!(throttle.wait(100 + FAILURES_FORGOTTEN_AFTER_SECONDS), 0, "a fresh count starts at one");
        throttle.succeeded();
        assert_eq!(throttle, Throttle::default(), "a success clears the count");
    }
}
