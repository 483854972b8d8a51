//! The refresh coordinator's decisions, without I/O: what a stored token is worth at `now`,
//! what a failed refresh means, and when to try again; `refresh` performs what they decide.

use std::time::{Duration, Instant};

use super::error::VaultError;
use crate::store::{IdentityKey, LinkedTokens, ReauthMark, VaultRow};
use crate::upstream::UpstreamError;
use crate::upstream::entra::{EntraErrorBody, ReauthKind};
use crate::upstream::refusal::{self, Refusal};

/// Pauses between attempts when the upstream fails transiently; three attempts at most, all
/// begun before the refresh's deadline.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(250), Duration::from_millis(1000)];
/// The longest pause between two looks at a refresh another process holds the lease of.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(250);
/// The stored kind of an identity a Conditional Access policy blocks (`ReauthMark::kind`).
pub(super) const BLOCKED_KIND: &str = "blocked";

/// What a stored access token is worth at `now` to a reader that needs it valid for
/// `threshold` more seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Validity {
    /// Valid beyond the threshold: served as it is.
    Fresh,
    /// Valid, not for long enough: refreshed first, served as it is if the provider is down.
    Stale,
    /// Expired: refreshed first, or not served at all.
    Expired,
}

pub(super) fn validity(expires_at: i64, now: i64, threshold: i64) -> Validity {
    if expires_at - now > threshold {
        Validity::Fresh
    } else if expires_at > now {
        Validity::Stale
    } else {
        Validity::Expired
    }
}

/// An identity's row as a reader finds it in the database.
#[derive(Debug)]
pub(super) enum Found {
    /// Good beyond the reader's threshold: open it and serve it.
    Fresh(VaultRow),
    /// Expires within the reader's threshold: refresh first.
    Stale(VaultRow),
}

/// What the database's answer (`linked`) means for a reader at `now`: the row, fresh or due
/// for a refresh, or why the reader gets none (the identity is gone, its user disabled, its
/// tokens not kept, or the user must sign in again before a refresh can help).
pub(super) fn found(
    linked: Option<LinkedTokens>,
    identity: IdentityKey<'_>,
    now: i64,
    threshold: i64,
) -> Result<Found, VaultError> {
    let IdentityKey { user_id, alias } = identity;
    let linked =
        linked.ok_or_else(|| VaultError::NotLinked { user_id: user_id.to_owned(), alias: alias.to_owned() })?;
    if !linked.user_enabled {
        return Err(VaultError::UserDisabled { user_id: user_id.to_owned() });
    }
    let row = linked.tokens.ok_or_else(|| VaultError::NotStored { alias: alias.to_owned() })?;
    if validity(row.expires_at, now, threshold) == Validity::Fresh {
        return Ok(Found::Fresh(row));
    }
    if linked.needs_reauth {
        let reason = reauth_reason(linked.reauth_reason);
        if linked.reauth_kind.as_deref() == Some(BLOCKED_KIND) {
            return Err(VaultError::Blocked { reason });
        }
        return Err(VaultError::ReauthRequired { reason, kind: ReauthKind::parse(linked.reauth_kind.as_deref()) });
    }
    Ok(Found::Stale(row))
}

/// The row of `cached` when it may be served without asking the database: its user enabled,
/// its token fresh. Anything else is asked of the database, which knows better.
pub(super) fn served_from_cache(cached: &LinkedTokens, now: i64, threshold: i64) -> Option<&VaultRow> {
    cached
        .tokens
        .as_ref()
        .filter(|row| cached.user_enabled && validity(row.expires_at, now, threshold) == Validity::Fresh)
}

fn reauth_reason(stored: Option<String>) -> String {
    stored.unwrap_or_else(|| "The user must sign in again to renew access.".to_owned())
}

/// Whether a reader whose refresh failed with `err` is served the stored token instead: when
/// the upstream is unavailable but the token is still valid, as better than nothing.
pub(super) fn serves_stored_after(err: &VaultError, expires_at: i64, now: i64) -> bool {
    matches!(err, VaultError::Unavailable { .. }) && expires_at > now
}

/// The seconds a reader is told to wait after an unavailable refresh: one refresh's timeout,
/// at least a second.
pub(super) fn retry_after(timeout: Duration) -> u64 {
    timeout.as_secs().max(1)
}

/// What a refresh refused by the upstream means for the identity and its readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RefreshRefused {
    /// The provider is unavailable; a later read tries again.
    Unavailable,
    /// Entra throttles the provider: no refresh of it before `retry_at` (Unix seconds), from any
    /// replica. The identity stays as it is.
    Throttled { retry_at: i64 },
    /// The grant is gone: the identity is marked (`mark`: the kind, and the claims challenge the
    /// next authorize request carries), and the user must sign in again; `reason` says so.
    Reauthenticate { reason: String, kind: ReauthKind, mark: ReauthMark },
    /// A Conditional Access policy blocks the user: the identity is marked blocked until a
    /// sign-in succeeds; `reason` names the policy as the cause, with Entra's trace id.
    Blocked { reason: String, mark: ReauthMark },
    /// The broker's configuration is wrong: an operator must fix `config_key`.
    Operator { cause: String, config_key: String },
}

/// Reads a failed refresh of provider `alias` (shown to users as `display_name`) at `now`. A
/// refused `invalid_grant` means the stored refresh token is dead; any other answer a refresh
/// does not expect points at the provider's `authority`.
pub(super) fn refresh_refused(err: &UpstreamError, alias: &str, display_name: &str, now: i64) -> RefreshRefused {
    let reauthenticate = |kind: ReauthKind, body: Option<&EntraErrorBody>, cause: &str| {
        let code = body.and_then(EntraErrorBody::aadsts).map(|c| format!("AADSTS{c}: ")).unwrap_or_default();
        let reason = format!("{code}{cause}. The user must sign in with {display_name} again to renew access.");
        let claims = body.and_then(EntraErrorBody::claims_challenge).map(str::to_owned);
        RefreshRefused::Reauthenticate { reason, kind, mark: ReauthMark { kind: kind.as_str().to_owned(), claims } }
    };
    match Refusal::of(alias, err) {
        Refusal::Transient => RefreshRefused::Unavailable,
        Refusal::Throttled { retry_after } => RefreshRefused::Throttled { retry_at: throttled_until(retry_after, now) },
        Refusal::User { kind, cause, body } => reauthenticate(kind, Some(body), cause),
        Refusal::Blocked { body } => RefreshRefused::Blocked {
            reason: blocked_reason(body, display_name),
            mark: ReauthMark { kind: BLOCKED_KIND.to_owned(), claims: None },
        },
        Refusal::Request { body: Some(body) } if body.error == "invalid_grant" => {
            reauthenticate(ReauthKind::Expired, Some(body), "the provider no longer accepts the stored refresh token")
        }
        Refusal::Operator { cause, config_key, .. } => RefreshRefused::Operator { cause: cause.to_owned(), config_key },
        Refusal::Request { .. } => RefreshRefused::Operator {
            cause: format!("unexpected answer to a refresh: {err}"),
            config_key: refusal::config_key(alias, "authority"),
        },
    }
}

/// What a reader of an identity a Conditional Access policy blocks is told: the policy is the
/// cause, signing in again will not help, and Entra's trace id for the administrator.
fn blocked_reason(body: &EntraErrorBody, display_name: &str) -> String {
    let code = body.aadsts().map(|c| format!("AADSTS{c}: ")).unwrap_or_default();
    let trace = body.trace_id().map(|t| format!(" (trace id {t})")).unwrap_or_default();
    format!(
        "{code}a Conditional Access policy of the user's organization blocks access to {display_name}{trace}; \
         signing in again will not help until an administrator of the organization allows it"
    )
}

/// The first second at which a provider throttled at `now` may be sent a refresh again: after
/// its `Retry-After` has passed whole (the clock counts whole seconds, so one more).
pub(super) fn throttled_until(retry_after: Option<u64>, now: i64) -> i64 {
    now + i64::try_from(refusal::throttle_seconds(retry_after)).unwrap_or(0) + 1
}

/// The seconds left before a provider deferred until `retry_at` may be sent a refresh at `now`;
/// `None` once it may.
pub(super) fn deferral_left(retry_at: Option<i64>, now: i64) -> Option<u64> {
    retry_at.filter(|at| *at > now).and_then(|at| u64::try_from(at - now).ok())
}

/// The `Retry-After` a reader of a deferred provider is told: the wait left, plus up to a tenth
/// more (at most 10 s) drawn from `random`, so that waiting callers come back spread out.
pub(super) fn deferred_retry_after(left: u64, random: u16) -> u64 {
    let spread = (left / 10).clamp(1, 10);
    left + u64::from(random) % (spread + 1)
}

/// The refresh pacer's next slot: the earliest moment after `next_free` (or now) to send a
/// refresh, and the next one after it, `interval` apart stretched by up to half again from
/// `random`: a bounded rate, never two replicas in lockstep. `None` when the slot would begin
/// at or past `deadline` (the reader is answered without the refresh).
pub(super) fn paced_slot(
    next_free: Instant,
    now: Instant,
    interval: Duration,
    random: u16,
    deadline: Instant,
) -> Option<(Instant, Instant)> {
    let slot = next_free.max(now);
    if slot >= deadline {
        return None;
    }
    let stretch = interval.mul_f64(f64::from(random) / f64::from(u16::MAX) / 2.0);
    Some((slot, slot + interval + stretch))
}

/// The pause before trying a failed refresh call again, or `None` to give up: only a transient
/// failure is tried again, at most `RETRY_DELAYS.len()` times after the first `attempt` (0),
/// and only when the next attempt would begin before `deadline`.
pub(super) fn retry_delay(err: &UpstreamError, attempt: usize, now: Instant, deadline: Instant) -> Option<Duration> {
    let delay = *RETRY_DELAYS.get(attempt)?;
    let throttled = matches!(Refusal::of("", err), Refusal::Throttled { .. });
    (err.is_transient() && !throttled && now + delay < deadline).then_some(delay)
}

/// While another process refreshes: how long to wait before looking again (`pause`, cut to
/// the `left` before the deadline) and the pause after that, doubling up to `MAX_POLL_PAUSE`;
/// `None` once no time is left.
pub(super) fn poll_wait(pause: Duration, left: Duration) -> Option<(Duration, Duration)> {
    (!left.is_zero()).then(|| (pause.min(left), (pause * 2).min(MAX_POLL_PAUSE)))
}

/// Whether a keep-alive pass takes another batch of `batch` after one that `claimed` rows and
/// `failed` some: not after a short batch, nor after a failure, which would be claimed again at
/// once (it is left to the next pass).
pub(super) fn another_batch(claimed: usize, batch: i64, failed: usize) -> bool {
    claimed as i64 >= batch && failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::entra::{EntraErrorBody, IdTokenError, classify};

    const NOW: i64 = 1_800_000_000;
    const THRESHOLD: i64 = 300;
    const IDENTITY: IdentityKey<'static> = IdentityKey { user_id: "user-1", alias: "entra" };

    fn row(expires_at: i64) -> VaultRow {
        VaultRow {
            user_id: "user-1".into(),
            alias: "entra".into(),
            vault_key_id: "k1".into(),
            access_token: vec![1],
            refresh_token: Some(vec![2]),
            id_token: None,
            token_type: "Bearer".into(),
            scope: "scope".into(),
            expires_at,
            refresh_expires_at: None,
            refreshed_at: NOW - 3000,
            updated_at: NOW - 3000,
        }
    }

    fn linked(user_enabled: bool, needs_reauth: bool, reason: Option<&str>, expires_at: Option<i64>) -> LinkedTokens {
        LinkedTokens {
            user_enabled,
            needs_reauth,
            reauth_reason: reason.map(Into::into),
            reauth_kind: None,
            tokens: expires_at.map(row),
        }
    }

    fn refused(status: u16, error: &str, code: Option<u32>) -> UpstreamError {
        let body = EntraErrorBody {
            error: error.into(),
            error_description: code.map(|c| format!("AADSTS{c}: words")).unwrap_or_default(),
            error_codes: code.into_iter().collect(),
            ..EntraErrorBody::default()
        };
        let class = classify(status, &body);
        UpstreamError::Refused { status, body, class }
    }

    #[test]
    fn a_token_is_fresh_beyond_the_threshold_stale_until_it_expires_then_expired() {
        let cases = [
            (NOW + THRESHOLD + 1, Validity::Fresh, "a second beyond the threshold"),
            (NOW + THRESHOLD, Validity::Stale, "exactly at the threshold"),
            (NOW + 1, Validity::Stale, "its last second"),
            (NOW, Validity::Expired, "expiring now"),
            (NOW - 60, Validity::Expired, "expired a minute ago"),
        ];
        for (expires_at, expected, case) in cases {
            assert_eq!(validity(expires_at, NOW, THRESHOLD), expected, "{case}");
        }
        assert_eq!(validity(NOW + 10, NOW, 0), Validity::Fresh, "no threshold: any valid token is fresh");
    }

    /// A short name for what `found` decided.
    fn found_kind(result: Result<Found, VaultError>) -> String {
        match result {
            Ok(Found::Fresh(row)) => format!("fresh {}", row.expires_at - NOW),
            Ok(Found::Stale(row)) => format!("stale {}", row.expires_at - NOW),
            Err(VaultError::ReauthRequired { reason, kind }) => format!("reauth_required {}: {reason}", kind.as_str()),
            Err(VaultError::Blocked { reason }) => format!("blocked: {reason}"),
            Err(err) => err.outcome().to_owned(),
        }
    }

    #[test]
    fn a_reader_finds_a_fresh_or_stale_row_or_learns_why_there_is_none() {
        let cases = [
            (None, "not_linked", "the identity is not linked"),
            (Some(linked(false, false, None, Some(NOW + 3600))), "user_disabled", "a disabled user, even fresh"),
            (Some(linked(true, false, None, None)), "not_stored", "no tokens kept"),
            (Some(linked(true, false, None, Some(NOW + 3600))), "fresh 3600", "a fresh row"),
            (Some(linked(true, true, None, Some(NOW + 3600))), "fresh 3600", "marked, but still fresh: served"),
            (Some(linked(true, false, None, Some(NOW + 60))), "stale 60", "due for a refresh"),
            (Some(linked(true, false, None, Some(NOW - 60))), "stale -60", "expired: refreshed too"),
            (
                Some(linked(true, true, Some("AADSTS70008: gone."), Some(NOW + 60))),
                "reauth_required expired: AADSTS70008: gone.",
                "marked and stale: the stored reason",
            ),
            (
                Some(linked(true, true, None, Some(NOW + 60))),
                "reauth_required expired: The user must sign in again to renew access.",
                "marked without a reason",
            ),
        ];
        for (linked, expected, case) in cases {
            assert_eq!(found_kind(found(linked, IDENTITY, NOW, THRESHOLD)), expected, "{case}");
        }
        let not_linked = found(None, IDENTITY, NOW, THRESHOLD).unwrap_err();
        assert_eq!(not_linked.to_string(), "User [user-1] is not associated with identity provider [entra].");
    }

    #[test]
    fn only_a_fresh_token_of_an_enabled_user_is_served_from_memory() {
        let cases = [
            (linked(true, false, None, Some(NOW + 3600)), true, "fresh and enabled"),
            (linked(true, true, None, Some(NOW + 3600)), true, "fresh though marked, as from the database"),
            (linked(false, false, None, Some(NOW + 3600)), false, "a disabled user: the database decides"),
            (linked(true, false, None, Some(NOW + 60)), false, "stale: the database decides"),
            (linked(true, false, None, None), false, "no tokens: the database decides"),
        ];
        for (cached, served, case) in cases {
            assert_eq!(served_from_cache(&cached, NOW, THRESHOLD).is_some(), served, "{case}");
        }
    }

    #[test]
    fn the_stored_token_stands_in_only_for_an_unavailable_refresh_and_only_while_valid() {
        let unavailable = VaultError::Unavailable { cause: "down", retry_after: 5 };
        let reauth = VaultError::ReauthRequired { reason: "gone".into(), kind: ReauthKind::Expired };
        let blocked = VaultError::Blocked { reason: "policy".into() };
        let misconfigured = VaultError::Misconfigured { cause: "c".into(), config_key: "k".into() };
        let cases = [
            (&unavailable, NOW + 1, true, "unavailable, still valid"),
            (&unavailable, NOW, false, "unavailable, expired"),
            (&reauth, NOW + 60, false, "the grant is gone: never the old token"),
            (&blocked, NOW + 60, false, "blocked by policy: never the old token"),
            (&misconfigured, NOW + 60, false, "an operator must act"),
        ];
        for (err, expires_at, serves, case) in cases {
            assert_eq!(serves_stored_after(err, expires_at, NOW), serves, "{case}");
        }
    }

    #[test]
    fn readers_are_told_to_wait_one_refresh_timeout_at_least_a_second() {
        assert_eq!(retry_after(Duration::from_secs(10)), 10);
        assert_eq!(retry_after(Duration::from_millis(1500)), 1);
        assert_eq!(retry_after(Duration::from_millis(200)), 1, "a sub-second timeout");
    }

    #[test]
    fn a_failed_refresh_means_wait_sign_in_again_or_an_operators_fix() {
        let reauth_as = |kind: ReauthKind, claims: Option<&str>, reason: &str| RefreshRefused::Reauthenticate {
            reason: reason.to_owned(),
            kind,
            mark: ReauthMark { kind: kind.as_str().to_owned(), claims: claims.map(Into::into) },
        };
        let reauth = |reason: &str| reauth_as(ReauthKind::Expired, None, reason);
        let challenge = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;
        let with = |err: UpstreamError, suberror: Option<&str>, claims: Option<&str>| match err {
            UpstreamError::Refused { status, body, .. } => {
                let body =
                    EntraErrorBody { suberror: suberror.map(Into::into), claims: claims.map(Into::into), ..body };
                let class = classify(status, &body);
                UpstreamError::Refused { status, body, class }
            }
            other => other,
        };
        let operator = |cause: &str, config_key: &str| RefreshRefused::Operator {
            cause: cause.to_owned(),
            config_key: config_key.to_owned(),
        };
        let cases = [
            (refused(503, "temporarily_unavailable", None), RefreshRefused::Unavailable, "Entra is down"),
            (refused(429, "", None), RefreshRefused::Throttled { retry_at: NOW + 61 }, "throttled, no Retry-After"),
            (
                UpstreamError::Throttled { status: 429, body: EntraErrorBody::default(), retry_after: Some(30) },
                RefreshRefused::Throttled { retry_at: NOW + 31 },
                "throttled for 30 seconds: the 31st second is the first free one",
            ),
            (
                refused(400, "invalid_grant", Some(50196)),
                RefreshRefused::Throttled { retry_at: NOW + 61 },
                "loop detection is throttling, not a dead grant",
            ),
            (
                UpstreamError::Throttled { status: 429, body: EntraErrorBody::default(), retry_after: Some(86_400) },
                RefreshRefused::Throttled { retry_at: NOW + 3601 },
                "an hour at most",
            ),
            (
                with(refused(400, "invalid_grant", Some(50079)), None, Some(challenge)),
                reauth_as(
                    ReauthKind::MfaRequired,
                    Some(challenge),
                    "AADSTS50079: multi-factor authentication is required. The user must sign in with Contoso again to renew access.",
                ),
                "a claims challenge is kept for the next authorize request",
            ),
            (
                with(refused(400, "invalid_grant", None), Some("user_password_expired"), None),
                reauth_as(
                    ReauthKind::PasswordExpired,
                    None,
                    "the password has expired. The user must sign in with Contoso again to renew access.",
                ),
                "suberror user_password_expired",
            ),
            (
                refused(400, "invalid_grant", Some(53003)),
                RefreshRefused::Blocked {
                    reason: "AADSTS53003: a Conditional Access policy of the user's organization blocks access to Contoso; signing in again will not help until an administrator of the organization allows it".into(),
                    mark: ReauthMark { kind: BLOCKED_KIND.into(), claims: None },
                },
                "blocked by Conditional Access",
            ),
            (UpstreamError::Malformed { status: 500, body: String::new() }, RefreshRefused::Unavailable, "a 500"),
            (
                refused(400, "invalid_grant", Some(70008)),
                reauth(
                    "AADSTS70008: the upstream grant has expired or was revoked. The user must sign in with Contoso again to renew access.",
                ),
                "an expired refresh token",
            ),
            (
                refused(400, "interaction_required", Some(50076)),
                reauth_as(
                    ReauthKind::MfaRequired,
                    None,
                    "AADSTS50076: multi-factor authentication is required. The user must sign in with Contoso again to renew access.",
                ),
                "MFA required",
            ),
            (
                refused(400, "invalid_grant", None),
                reauth(
                    "the provider no longer accepts the stored refresh token. The user must sign in with Contoso again to renew access.",
                ),
                "a refused grant without a code",
            ),
            (
                refused(400, "invalid_grant", Some(50148)),
                reauth(
                    "AADSTS50148: the provider no longer accepts the stored refresh token. The user must sign in with Contoso again to renew access.",
                ),
                "a refused grant with an unclassified code",
            ),
            (
                refused(401, "invalid_client", Some(7000222)),
                operator("the client secret has expired", "providers.entra.client_secret"),
                "a provider's key",
            ),
            (
                refused(400, "invalid_request", Some(50011)),
                operator("the redirect URI is not registered on the Entra app registration", "http.hostname"),
                "a broker-wide key stays as it is",
            ),
            (
                refused(400, "invalid_scope", Some(70011)),
                operator(
                    "unexpected answer to a refresh: the provider refused: invalid_scope (AADSTS70011: words)",
                    "providers.entra.authority",
                ),
                "any other refusal",
            ),
            (
                UpstreamError::Malformed { status: 404, body: "not found".into() },
                operator(
                    "unexpected answer to a refresh: the provider answered with HTTP 404: not found",
                    "providers.entra.authority",
                ),
                "an answer out of shape",
            ),
            (
                UpstreamError::IdToken(IdTokenError::Expired),
                operator("unexpected answer to a refresh: the ID token has expired", "providers.entra.authority"),
                "an ID token, which a refresh does not check",
            ),
        ];
        for (err, expected, case) in cases {
            assert_eq!(refresh_refused(&err, "entra", "Contoso", NOW), expected, "{case}");
        }
    }

    #[test]
    fn a_throttled_provider_rests_until_its_deadline_and_readers_come_back_spread_out() {
        let cases = [
            (None, None, "never throttled"),
            (Some(NOW - 1), None, "a past deadline"),
            (Some(NOW), None, "the deadline's own second is free"),
            (Some(NOW + 30), Some(30), "thirty seconds left"),
        ];
        for (retry_at, expected, case) in cases {
            assert_eq!(deferral_left(retry_at, NOW), expected, "{case}");
        }
        for random in [0, 1, 7, 999, u16::MAX] {
            let told = deferred_retry_after(30, random);
            assert!((30..=33).contains(&told), "at least the wait left, a tenth more at most: {told}");
            assert!((1..=2).contains(&deferred_retry_after(1, random)), "a second's wait, one more at most");
        }
        assert_ne!(deferred_retry_after(100, 3), deferred_retry_after(100, 4), "spread by the random draw");
    }

    #[test]
    fn the_pacer_spaces_refreshes_by_the_interval_stretched_at_random_and_never_past_the_deadline() {
        let now = Instant::now();
        let interval = Duration::from_millis(20);
        let deadline = now + Duration::from_secs(1);
        let (slot, next) = paced_slot(now, now, interval, 0, deadline).expect("a slot");
        assert_eq!((slot, next), (now, now + interval), "at once, then one interval later");
        let (slot, next) = paced_slot(next, now, interval, u16::MAX, deadline).expect("a slot");
        assert_eq!(slot, now + interval, "the next caller waits its turn");
        assert_eq!(next, slot + interval + interval / 2, "stretched by half an interval at most");
        let past = now - Duration::from_secs(5);
        assert_eq!(paced_slot(past, now, interval, 0, deadline).map(|(slot, _)| slot), Some(now), "idle: at once");
        assert_eq!(paced_slot(deadline, now, interval, 0, deadline), None, "a slot at the deadline is no slot");
        // A storm: however many wait, no second holds more slots than the rate allows.
        let mut next = now;
        let mut slots = Vec::new();
        let far = now + Duration::from_secs(60);
        for random in (0..500u32).map(|i| (i * 7919 % 65_536) as u16) {
            let (slot, after) = paced_slot(next, now, interval, random, far).expect("a slot");
            slots.push(slot);
            next = after;
        }
        for (i, first) in slots.iter().enumerate() {
            let within = slots[i..].iter().take_while(|slot| **slot < *first + Duration::from_secs(1)).count();
            assert!(within <= 50, "{within} slots in one second at 50 a second");
        }
    }

    #[test]
    fn only_transient_failures_are_tried_again_twice_and_only_before_the_deadline() {
        let now = Instant::now();
        let far = now + Duration::from_secs(10);
        let transient = UpstreamError::Malformed { status: 503, body: String::new() };
        let cases = [
            (&transient, 0, far, Some(Duration::from_millis(250)), "the first retry"),
            (&transient, 1, far, Some(Duration::from_millis(1000)), "the second retry, later"),
            (&transient, 2, far, None, "three attempts at most"),
            (&transient, 0, now + Duration::from_millis(250), None, "a retry that would begin at the deadline"),
            (&transient, 1, now + Duration::from_millis(900), None, "a retry that would begin past it"),
        ];
        for (err, attempt, deadline, expected, case) in cases {
            assert_eq!(retry_delay(err, attempt, now, deadline), expected, "{case}");
        }
        let refused = refused(400, "invalid_grant", Some(70008));
        assert_eq!(retry_delay(&refused, 0, now, far), None, "a refusal is final");
        let throttled = UpstreamError::Throttled { status: 429, body: EntraErrorBody::default(), retry_after: Some(1) };
        assert_eq!(retry_delay(&throttled, 0, now, far), None, "no retry inside a throttling window");
    }

    #[test]
    fn a_reader_waiting_for_another_process_looks_again_sooner_than_its_deadline() {
        let ms = Duration::from_millis;
        let cases = [
            (ms(20), ms(5000), Some((ms(20), ms(40))), "the pause doubles"),
            (ms(160), ms(5000), Some((ms(160), ms(250))), "up to a quarter second"),
            (ms(250), ms(5000), Some((ms(250), ms(250))), "and stays there"),
            (ms(250), ms(100), Some((ms(100), ms(250))), "the last wait ends at the deadline"),
            (ms(20), Duration::ZERO, None, "no time left"),
        ];
        for (pause, left, expected, case) in cases {
            assert_eq!(poll_wait(pause, left), expected, "{case}");
        }
    }

    #[test]
    fn keep_alive_takes_another_batch_only_after_a_full_one_without_failures() {
        let cases = [
            (100, 100, 0, true, "a full batch: there may be more"),
            (99, 100, 0, false, "a short batch: that was all"),
            (100, 100, 1, false, "a failure would be claimed again at once"),
            (0, 100, 0, false, "nothing to do"),
        ];
        for (claimed, batch, failed, expected, case) in cases {
            assert_eq!(another_batch(claimed, batch, failed), expected, "{case}");
        }
    }
}
