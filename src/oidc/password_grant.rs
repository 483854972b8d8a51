//! Keycloak's password grant ("direct access grants") for clients that allow it: the user's
//! password checked against its Argon2id hash, Keycloak's temporary lockout per user, and the
//! same tokens a browser sign-in gives. The verdicts are pure functions; `Grants::password`
//! does the reading, hashing and writing around them.

use secrecy::SecretString;

use crate::config::ClientSettings;
use crate::crypto::verify_password;
use crate::store::PasswordLogin;

use super::error::{ErrorCode, OAuthError};
use super::grants::{GrantError, Grants, wants_offline};
use super::tokens::IssuedTokens;

/// Wrong passwords older than this are forgotten (Keycloak's `maxDeltaTimeSeconds`).
pub(crate) const FAILURE_MEMORY_SECONDS: i64 = 43_200;
/// Each lockout waits this much longer than the one before (Keycloak's `waitIncrementSeconds`)…
const WAIT_INCREMENT_SECONDS: i64 = 60;
/// …up to this (Keycloak's `maxFailureWaitSeconds`).
const MAX_WAIT_SECONDS: i64 = 900;
/// As the authorization endpoint bounds it.
const MAX_SCOPE_LENGTH: usize = 512;

/// How long the user's password sign-ins are locked after their `failures`th wrong password in
/// a row, if that locks them: every `factor`th failure does, for a minute per `factor` failures
/// so far, at most fifteen minutes (Keycloak's temporary lockout).
pub(crate) fn lockout_seconds(failures: i64, factor: i64) -> Option<i64> {
    (factor > 0 && failures > 0 && failures % factor == 0)
        .then(|| WAIT_INCREMENT_SECONDS.saturating_mul(failures / factor).min(MAX_WAIT_SECONDS))
}

/// What a password sign-in comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Issue,
    /// Unknown user, no password, wrong password, or locked: one answer for all, so that
    /// neither the users nor a lockout can be told apart from outside.
    InvalidCredentials,
    Disabled,
    NotFullySetUp,
}

/// The verdict once the password was checked (`matches`). A locked user is refused whatever
/// the password; a disabled or unfinished account is told so only to whoever knows its
/// password.
pub(crate) fn verdict(login: Option<&PasswordLogin>, matches: bool, now: i64) -> Verdict {
    let Some(login) = login else {
        return Verdict::InvalidCredentials;
    };
    let locked = login.locked_until.is_some_and(|until| now < until);
    if locked || !matches {
        Verdict::InvalidCredentials
    } else if !login.user.enabled {
        Verdict::Disabled
    } else if login.has_required_actions {
        Verdict::NotFullySetUp
    } else {
        Verdict::Issue
    }
}

/// The password grant's form fields.
pub(crate) struct PasswordRequest<'a> {
    pub(crate) username: &'a str,
    pub(crate) password: SecretString,
    pub(crate) scope: Option<&'a str>,
}

impl std::fmt::Debug for PasswordRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordRequest").field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl Grants {
    /// `grant_type=password`: tokens for a user with a password, as a browser sign-in would
    /// give them; `offline_access` opens an offline session. Exactly one Argon2id check is made
    /// whoever is named, and a wrong password counts towards the user's lockout (not while it
    /// runs, so a locked account cannot be kept locked for longer by guessing on).
    pub(crate) async fn password(
        &self,
        client: &ClientSettings,
        request: PasswordRequest<'_>,
        now: i64,
    ) -> Result<IssuedTokens, GrantError> {
        if !client.direct_access_grants {
            return Err(
                OAuthError::new(ErrorCode::UnauthorizedClient, "Client not allowed for direct access grants").into()
            );
        }
        let scope = request.scope.unwrap_or("openid");
        if scope.len() > MAX_SCOPE_LENGTH {
            return Err(OAuthError::invalid_request(format!(
                "Invalid parameter: scope is longer than {MAX_SCOPE_LENGTH} characters"
            ))
            .into());
        }
        let login = match request.username.trim() {
            "" => None,
            name => self.store.find_password_login(name).await?,
        };
        let stored = login.as_ref().and_then(|login| login.hash.clone());
        let matches = verify_password(stored, request.password).await?;
        let verdict = verdict(login.as_ref(), matches, now);
        let Some(login) = login else {
            return Err(GrantError::InvalidUserCredentials);
        };
        let user_id = login.user.id.as_str();
        let locked = login.locked_until.is_some_and(|until| now < until);
        if !matches && !locked && login.hash.is_some() {
            let failures = self.store.count_password_failure(user_id, FAILURE_MEMORY_SECONDS, now).await?;
            if let Some(wait) = lockout_seconds(failures, self.realm.brute_force_failures) {
                self.store.lock_password(user_id, now + wait).await?;
                tracing::warn!(
                    user_id,
                    failures,
                    wait_seconds = wait,
                    "password sign-ins locked after wrong passwords"
                );
            }
        }
        match verdict {
            Verdict::InvalidCredentials => return Err(GrantError::InvalidUserCredentials),
            Verdict::Disabled => return Err(OAuthError::invalid_grant("Account disabled").into()),
            Verdict::NotFullySetUp => return Err(OAuthError::invalid_grant("Account is not fully set up").into()),
            Verdict::Issue => {}
        }
        self.store.clear_password_failures(user_id).await?;
        let session = self.sessions.start_direct(user_id, wants_offline(scope), now).await?;
        self.issue(client, &session, user_id, scope, None, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserRow;

    fn login(enabled: bool, locked_until: Option<i64>, has_required_actions: bool) -> PasswordLogin {
        let user = UserRow {
            id: "u".into(),
            username: "ann".into(),
            email: None,
            email_verified: false,
            first_name: None,
            last_name: None,
            full_name: None,
            enabled,
            created_at: 0,
        };
        PasswordLogin { user, hash: Some("$argon2id$…".into()), locked_until, has_required_actions }
    }

    #[test]
    fn every_factorth_failure_locks_a_minute_longer_up_to_fifteen() {
        let cases = [
            (29, 30, None, "before the factor"),
            (30, 30, Some(60), "the factor: a minute"),
            (31, 30, None, "between lockouts"),
            (60, 30, Some(120), "twice the factor: two minutes"),
            (900, 30, Some(900), "never beyond fifteen minutes"),
            (1, 1, Some(60), "a factor of one"),
            (0, 30, None, "no failure"),
        ];
        for (failures, factor, expected, case) in cases {
            assert_eq!(lockout_seconds(failures, factor), expected, "{case}");
        }
    }

    #[test]
    fn the_verdict_tells_nothing_to_whoever_lacks_the_password() {
        let now = 1_000;
        let cases = [
            (None, true, Verdict::InvalidCredentials, "unknown user"),
            (Some(login(true, None, false)), false, Verdict::InvalidCredentials, "wrong password"),
            (Some(login(true, Some(now + 1), false)), true, Verdict::InvalidCredentials, "locked, right password"),
            (Some(login(true, Some(now), false)), true, Verdict::Issue, "the lock ran out"),
            (Some(login(false, None, false)), false, Verdict::InvalidCredentials, "disabled, wrong password"),
            (Some(login(false, None, false)), true, Verdict::Disabled, "disabled, right password"),
            (Some(login(true, None, true)), false, Verdict::InvalidCredentials, "unfinished, wrong password"),
            (Some(login(true, None, true)), true, Verdict::NotFullySetUp, "unfinished, right password"),
            (Some(login(true, None, false)), true, Verdict::Issue, "right password"),
        ];
        for (found, matches, expected, case) in cases {
            assert_eq!(verdict(found.as_ref(), matches, now), expected, "{case}");
        }
    }
}
