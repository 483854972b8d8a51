//! Who must act on a failed upstream call: one reading of `UpstreamError` for the sign-in and
//! the token refresh alike, naming in full the configuration key an operator must fix.

use super::UpstreamError;
use super::entra::{EntraErrorBody, ErrorClass, ReauthKind};

/// How long a provider rests when Entra throttles without a `Retry-After` (AADSTS50196 sends none).
const DEFAULT_THROTTLE_SECONDS: u64 = 60;
/// The longest rest a `Retry-After` may impose: beyond an hour it is more likely a mistake.
const MAX_THROTTLE_SECONDS: u64 = 3600;

/// The seconds a provider rests after Entra throttled it with `retry_after`, as it said when it
/// said so, bounded.
pub(crate) fn throttle_seconds(retry_after: Option<u64>) -> u64 {
    retry_after.unwrap_or(DEFAULT_THROTTLE_SECONDS).min(MAX_THROTTLE_SECONDS)
}

/// A failed upstream call, by who must act on it.
#[derive(Debug)]
pub(crate) enum Refusal<'a> {
    /// Nobody: the provider could not be reached or is failing; later may work.
    Transient,
    /// Nobody, after a wait: Entra throttles the provider's calls (429, AADSTS50196), for
    /// `retry_after` seconds when it said so. Never a reason to sign in again.
    Throttled { retry_after: Option<u64> },
    /// The user: sign in again, consent, or pass multi-factor authentication; `kind` is the
    /// class the internal API names, `cause` the words, and the claims challenge is `body`'s.
    User { kind: ReauthKind, cause: &'static str, body: &'a EntraErrorBody },
    /// The organization: a Conditional Access policy blocks the user; signing in again cannot help.
    Blocked { body: &'a EntraErrorBody },
    /// The operator: `config_key` (in full) or the app registration must change.
    Operator { cause: &'static str, config_key: String, body: &'a EntraErrorBody },
    /// This one request was refused or not understood (a replayed code, an ID token that does
    /// not verify, an answer out of shape); `body` is Entra's when it said why. Each flow
    /// decides what that means for it.
    Request { body: Option<&'a EntraErrorBody> },
}

impl<'a> Refusal<'a> {
    /// How `err`, from a call to provider `alias`, is to be read.
    pub(crate) fn of(alias: &str, err: &'a UpstreamError) -> Refusal<'a> {
        match err {
            UpstreamError::Refused { body, class: ErrorClass::Operator { cause, config_key: key }, .. } => {
                Refusal::Operator { cause, config_key: config_key(alias, key), body }
            }
            UpstreamError::Refused { body, class: ErrorClass::Reauthenticate { kind, cause }, .. } => {
                Refusal::User { kind: *kind, cause, body }
            }
            UpstreamError::Refused { body, class: ErrorClass::Blocked, .. } => Refusal::Blocked { body },
            UpstreamError::Throttled { retry_after, .. } => Refusal::Throttled { retry_after: *retry_after },
            UpstreamError::Refused { class: ErrorClass::Throttled, .. } => Refusal::Throttled { retry_after: None },
            err if err.is_transient() => Refusal::Transient,
            UpstreamError::Refused { body, .. } => Refusal::Request { body: Some(body) },
            _ => Refusal::Request { body: None },
        }
    }
}

/// The configuration key an operator must fix, in full: a key of the whole broker
/// (`http.hostname`) as it is, a provider's own (`client_secret`) under `providers.{alias}`.
pub(crate) fn config_key(alias: &str, key: &str) -> String {
    if key.contains('.') { key.to_owned() } else { format!("providers.{alias}.{key}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::entra::{IdTokenError, classify};

    fn refused(status: u16, error: &str, description: &str) -> UpstreamError {
        let body = EntraErrorBody { error: error.into(), error_description: description.into(), ..Default::default() };
        let class = classify(status, &body);
        UpstreamError::Refused { status, body, class }
    }

    /// A short name for each reading, with the operator's key.
    fn reading(refusal: &Refusal<'_>) -> String {
        match refusal {
            Refusal::Transient => "transient".to_owned(),
            Refusal::Throttled { retry_after } => format!("throttled {retry_after:?}"),
            Refusal::User { kind, .. } => format!("user {}", kind.as_str()),
            Refusal::Blocked { .. } => "blocked".to_owned(),
            Refusal::Operator { config_key, .. } => format!("operator {config_key}"),
            Refusal::Request { body: Some(body) } => format!("request {}", body.error),
            Refusal::Request { body: None } => "request".to_owned(),
        }
    }

    #[test]
    fn each_failure_names_who_must_act_and_the_operators_key_in_full() {
        let cases = [
            (refused(400, "invalid_request", "AADSTS50011: redirect"), "operator http.hostname", "a broker-wide key"),
            (
                refused(401, "invalid_client", "AADSTS7000215: Invalid client secret"),
                "operator providers.entra.client_secret",
                "a provider's key",
            ),
            (
                refused(400, "unauthorized_client", "AADSTS700016: Application not found"),
                "operator providers.entra.client_id",
                "an unknown application",
            ),
            (refused(400, "invalid_grant", "AADSTS70008: expired"), "user expired", "an expired grant"),
            (refused(400, "invalid_grant", "AADSTS65001: consent"), "user consent_required", "missing consent"),
            (refused(400, "invalid_grant", "AADSTS53003: blocked"), "blocked", "Conditional Access blocks"),
            (
                UpstreamError::Throttled { status: 429, body: EntraErrorBody::default(), retry_after: Some(30) },
                "throttled Some(30)",
                "throttled with Retry-After",
            ),
            (refused(503, "temporarily_unavailable", "AADSTS90033"), "transient", "Entra says so"),
            (UpstreamError::Malformed { status: 502, body: String::new() }, "transient", "a gateway error"),
            (
                refused(400, "invalid_grant", "AADSTS50148: code_verifier"),
                "request invalid_grant",
                "a refusal of this request",
            ),
            (UpstreamError::Malformed { status: 400, body: String::new() }, "request", "an answer out of shape"),
            (UpstreamError::IdToken(IdTokenError::Expired), "request", "an ID token that does not verify"),
        ];
        for (err, expected, case) in cases {
            assert_eq!(reading(&Refusal::of("entra", &err)), expected, "{case}");
        }
    }

    #[test]
    fn a_key_with_a_dot_is_the_brokers_and_any_other_the_providers() {
        assert_eq!(config_key("entra", "http.hostname"), "http.hostname");
        assert_eq!(config_key("entra", "authority"), "providers.entra.authority");
    }
}
