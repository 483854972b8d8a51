//! Microsoft Entra's protocol, without I/O: URL layout, authorize requests, ID-token checks
//! (single- and multi-tenant issuers) and the classification of Entra's error answers.
//!
//! ID tokens are checked with `jsonwebtoken` (aws-lc), the crate that also signs the
//! broker's own tokens, rather than `openidconnect`. `openidconnect`'s verifier could
//! take our clock (`set_time_fn`) and skip its issuer match, but it has no clock-skew
//! leeway; its discovery rejects Entra's `{tenantid}` issuer, and it would pull in about
//! 64 more crates, RustCrypto `rsa` among them. The tenant substitution,
//! `allowed_tenants`, refetching the JWKS on an unknown `kid` and the error classification
//! would remain ours either way. See docs/decisions.md.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use crate::config::{ProviderSettings, Tenant};

/// Seconds of clock difference tolerated between Entra and us.
pub(crate) const CLOCK_SKEW_SECONDS: i64 = 60;
/// The placeholder Entra's `organizations`/`common` documents carry in their issuer.
pub(crate) const TENANT_PLACEHOLDER: &str = "{tenantid}";

pub(crate) fn discovery_url(provider: &ProviderSettings) -> String {
    format!(
        "{}/{}/v2.0/.well-known/openid-configuration",
        provider.authority.as_str().trim_end_matches('/'),
        provider.tenant.path_segment()
    )
}

/// The parts of the discovery document the broker uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ProviderMetadata {
    pub(crate) issuer: String,
    pub(crate) authorization_endpoint: Url,
    pub(crate) token_endpoint: Url,
    pub(crate) jwks_uri: Url,
}

/// The authorize request for one sign-in; the state, nonce and PKCE challenge are ours.
pub(crate) struct AuthorizeRequest<'a> {
    pub(crate) redirect_uri: &'a str,
    pub(crate) state: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) code_challenge: &'a str,
    pub(crate) login_hint: Option<&'a str>,
    pub(crate) prompt: Option<&'a str>,
    /// The claims challenge Entra answered the user's last refresh with (Conditional Access):
    /// sent back as `claims`, or Entra would ask again and again.
    pub(crate) claims: Option<&'a str>,
}

impl std::fmt::Debug for AuthorizeRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizeRequest").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

pub(crate) fn authorize_url(
    metadata: &ProviderMetadata,
    provider: &ProviderSettings,
    request: &AuthorizeRequest<'_>,
) -> Url {
    let mut url = metadata.authorization_endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("client_id", &provider.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", request.redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", &provider.scopes)
            .append_pair("state", request.state)
            .append_pair("nonce", request.nonce)
            .append_pair("code_challenge", request.code_challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = request.login_hint {
            query.append_pair("login_hint", hint);
        }
        if let Some(prompt) = request.prompt {
            query.append_pair("prompt", prompt);
        }
        if let Some(claims) = request.claims {
            query.append_pair("claims", claims);
        }
    }
    url
}

/// The scope of a refresh request: the resource scopes only, as Entra issues one resource
/// per token request and an ID token is not wanted again.
pub(crate) fn refresh_scope(provider: &ProviderSettings) -> String {
    provider
        .scopes
        .split_whitespace()
        .filter(|s| !matches!(*s, "openid" | "profile" | "email"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdTokenError {
    #[error("the ID token is not a well-formed RS256 JWT")]
    Malformed,
    #[error("the ID token was signed with key `{0}`, which is not in the provider's JWKS")]
    UnknownKid(String),
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token is for another audience")]
    WrongAudience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token was issued in the future")]
    IssuedInFuture,
    #[error("the ID token's `tid` is not a tenant GUID")]
    BadTenant,
    #[error("the ID token's tenant `{0}` is not in allowed_tenants")]
    TenantNotAllowed(String),
    #[error("the ID token's issuer `{found}` is not `{expected}`")]
    WrongIssuer { expected: String, found: String },
    #[error("the ID token's nonce does not match this sign-in")]
    NonceMismatch,
}

/// Claims of an Entra v2.0 ID token that identify the user.
#[derive(Debug, Clone, Deserialize)]
struct EntraIdClaims {
    iss: String,
    sub: String,
    exp: i64,
    iat: i64,
    nonce: Option<String>,
    tid: Option<String>,
    oid: Option<String>,
    preferred_username: Option<String>,
    email: Option<String>,
    name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    /// The optional claim "email domain owner verified": a boolean, which some tenants send as
    /// a string or a number.
    xms_edov: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "one_or_many")]
    verified_primary_email: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    verified_secondary_email: Vec<String>,
    /// The app roles assigned to the user in the enterprise application.
    #[serde(default, deserialize_with = "one_or_many")]
    roles: Vec<String>,
}

/// A claim Entra sends as one string or as a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        Some(OneOrMany::One(one)) => vec![one],
        Some(OneOrMany::Many(many)) => many,
        None => Vec::new(),
    })
}

/// `xms_edov` read as Entra means it; `None` when the token does not carry the claim.
fn edov(value: Option<&serde_json::Value>) -> Option<bool> {
    match value? {
        serde_json::Value::Bool(flag) => Some(*flag),
        serde_json::Value::String(text) => Some(matches!(text.to_ascii_lowercase().as_str(), "true" | "1")),
        serde_json::Value::Number(number) => Some(number.as_i64() == Some(1)),
        _ => Some(false),
    }
}

/// A user as an Entra ID token proved them to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedIdentity {
    pub(crate) subject: String,
    pub(crate) object_id: Option<String>,
    pub(crate) tenant_id: Option<String>,
    pub(crate) preferred_username: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) given_name: Option<String>,
    pub(crate) family_name: Option<String>,
    /// `xms_edov`: whether the `email` claim's domain is verified by its owner; `None` when the
    /// token does not carry the optional claim.
    pub(crate) email_domain_verified: Option<bool>,
    /// `verified_primary_email` and `verified_secondary_email`: addresses Entra vouches for.
    pub(crate) verified_emails: Vec<String>,
    /// `roles`: the app roles assigned to the user in the enterprise application, as given.
    pub(crate) roles: Vec<String>,
}

pub(crate) struct IdTokenCheck<'a> {
    pub(crate) provider: &'a ProviderSettings,
    /// The discovery document's issuer, possibly holding `{tenantid}`.
    pub(crate) issuer_template: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) now: i64,
}

impl std::fmt::Debug for IdTokenCheck<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdTokenCheck")
            .field("provider", &self.provider.alias)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// Verifies an ID token against a JWKS; the caller re-fetches the JWKS on `UnknownKid`.
pub(crate) fn verify_id_token(
    token: &str,
    jwks: &JwkSet,
    check: &IdTokenCheck<'_>,
) -> Result<VerifiedIdentity, IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(IdTokenError::Malformed);
    }
    let kid = header.kid.ok_or(IdTokenError::Malformed)?;
    let jwk = jwks.find(&kid).ok_or_else(|| IdTokenError::UnknownKid(kid.clone()))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnknownKid(kid))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&check.provider.client_id]);
    // Time and issuer are checked below, against `now` and the tenant template.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<EntraIdClaims>(token, &key, &validation)
        .map_err(|err| match err.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAudience => IdTokenError::WrongAudience,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::BadSignature,
            _ => IdTokenError::Malformed,
        })?
        .claims;
    if claims.exp + CLOCK_SKEW_SECONDS <= check.now {
        return Err(IdTokenError::Expired);
    }
    if claims.iat - CLOCK_SKEW_SECONDS > check.now {
        return Err(IdTokenError::IssuedInFuture);
    }
    let expected_issuer = expected_issuer(check, claims.tid.as_deref())?;
    if claims.iss != expected_issuer {
        return Err(IdTokenError::WrongIssuer { expected: expected_issuer, found: claims.iss });
    }
    if claims.nonce.as_deref() != Some(check.nonce) {
        return Err(IdTokenError::NonceMismatch);
    }
    Ok(VerifiedIdentity {
        subject: claims.sub,
        object_id: claims.oid,
        tenant_id: claims.tid,
        preferred_username: claims.preferred_username,
        email: claims.email,
        name: claims.name,
        given_name: claims.given_name,
        family_name: claims.family_name,
        email_domain_verified: edov(claims.xms_edov.as_ref()),
        verified_emails: claims.verified_primary_email.into_iter().chain(claims.verified_secondary_email).collect(),
        roles: claims.roles,
    })
}

fn expected_issuer(check: &IdTokenCheck<'_>, tid: Option<&str>) -> Result<String, IdTokenError> {
    match &check.provider.tenant {
        Tenant::Single(_) => Ok(check.issuer_template.to_owned()),
        Tenant::Multi(_) => {
            let tid = tid.and_then(|t| Uuid::parse_str(t).ok()).ok_or(IdTokenError::BadTenant)?;
            let allowed = &check.provider.allowed_tenants;
            if !allowed.is_empty() && !allowed.contains(&tid) {
                return Err(IdTokenError::TenantNotAllowed(tid.to_string()));
            }
            Ok(check.issuer_template.replace(TENANT_PLACEHOLDER, &tid.to_string()))
        }
    }
}

/// Entra's error body: `error`, `error_description` ("AADSTS70008: …"), `error_codes`, ids, and
/// what Microsoft's guidance branches on besides `error`: `suberror` and a `claims` challenge.
#[derive(Clone, Default, Deserialize)]
pub(crate) struct EntraErrorBody {
    #[serde(default)]
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) error_description: String,
    #[serde(default)]
    pub(crate) error_codes: Vec<u32>,
    #[serde(default)]
    pub(crate) correlation_id: Option<String>,
    #[serde(default)]
    pub(crate) trace_id: Option<String>,
    #[serde(default)]
    pub(crate) suberror: Option<String>,
    /// A Conditional Access challenge (`{"access_token":{"capolids":…}}`), to send back on the
    /// next authorize request.
    #[serde(default)]
    pub(crate) claims: Option<String>,
}

impl std::fmt::Debug for EntraErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraErrorBody")
            .field("error", &self.error)
            .field("aadsts", &self.aadsts())
            .field("suberror", &self.suberror)
            .field("has_claims", &self.claims.is_some())
            .field("trace_id", &self.trace_id())
            .field("correlation_id", &self.correlation_id())
            .finish()
    }
}

impl EntraErrorBody {
    /// The AADSTS number, from `error_codes` or the description's prefix.
    pub(crate) fn aadsts(&self) -> Option<u32> {
        self.error_codes.first().copied().or_else(|| aadsts_in(&self.error_description))
    }

    /// The first line of the description: Entra's own words without trace ids.
    pub(crate) fn summary(&self) -> &str {
        self.error_description.lines().next().unwrap_or_default().trim()
    }

    /// Entra's trace id, from the body or the description's `Trace ID:` line.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref().filter(|t| !t.is_empty()).or_else(|| described(&self.error_description, "Trace ID:"))
    }

    /// Entra's correlation id, from the body or the description's `Correlation ID:` line.
    pub(crate) fn correlation_id(&self) -> Option<&str> {
        self.correlation_id
            .as_deref()
            .filter(|t| !t.is_empty())
            .or_else(|| described(&self.error_description, "Correlation ID:"))
    }

    /// The claims challenge, when Entra sent a non-empty one.
    pub(crate) fn claims_challenge(&self) -> Option<&str> {
        self.claims.as_deref().map(str::trim).filter(|c| !c.is_empty())
    }

    /// The body of an error Entra sent to the redirect URI (`error`, `error_description`,
    /// `suberror`), read as the token endpoint's.
    pub(crate) fn from_redirect(error: &str, description: Option<&str>, suberror: Option<&str>) -> EntraErrorBody {
        EntraErrorBody {
            error: error.to_owned(),
            error_description: description.unwrap_or_default().to_owned(),
            suberror: suberror.map(str::to_owned),
            ..EntraErrorBody::default()
        }
    }
}

fn aadsts_in(description: &str) -> Option<u32> {
    let rest = description.strip_prefix("AADSTS")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The value of a `Label: value` line of Entra's description.
fn described<'a>(description: &'a str, label: &str) -> Option<&'a str> {
    description.lines().find_map(|line| line.trim().strip_prefix(label)).map(str::trim).filter(|v| !v.is_empty())
}

/// Why a user must sign in again, in the five words the internal API's `reauth_kind` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReauthKind {
    /// Multi-factor authentication, or a stronger method, is required.
    MfaRequired,
    /// A Conditional Access policy (device, location, terms of use, …) requires an interactive sign-in.
    Policy,
    /// The user or an administrator must consent to the application.
    ConsentRequired,
    /// The user's password has expired.
    PasswordExpired,
    /// The grant ended: expired, revoked, inactive, or the sign-in frequency policy.
    Expired,
}

impl ReauthKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReauthKind::MfaRequired => "mfa_required",
            ReauthKind::Policy => "policy",
            ReauthKind::ConsentRequired => "consent_required",
            ReauthKind::PasswordExpired => "password_expired",
            ReauthKind::Expired => "expired",
        }
    }

    /// The stored word back; anything unknown (rows marked before kinds existed) is `Expired`.
    pub(crate) fn parse(stored: Option<&str>) -> ReauthKind {
        match stored {
            Some("mfa_required") => ReauthKind::MfaRequired,
            Some("policy") => ReauthKind::Policy,
            Some("consent_required") => ReauthKind::ConsentRequired,
            Some("password_expired") => ReauthKind::PasswordExpired,
            _ => ReauthKind::Expired,
        }
    }
}

/// What kind of fix an upstream refusal needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The operator must change the configuration or the app registration.
    Operator { cause: &'static str, config_key: &'static str },
    /// The user must sign in again (or consent, or do MFA); `cause` says why in a user's words.
    Reauthenticate { kind: ReauthKind, cause: &'static str },
    /// A Conditional Access policy blocks the user outright: signing in again cannot help.
    Blocked,
    /// Entra throttles (429, or AADSTS50196 loop detection): wait, then try again.
    Throttled,
    /// Try again later.
    Transient,
    /// A refusal of this one request (bad or replayed code, …).
    Rejected,
}

/// Reads one Entra refusal as Microsoft's guidance says: the HTTP status and `error` first, then
/// `suberror` and a `claims` challenge; the AADSTS number refines the cause.
pub(crate) fn classify(status: u16, body: &EntraErrorBody) -> ErrorClass {
    let code = body.aadsts();
    let error = body.error.as_str();
    let reauth = |kind, cause| ErrorClass::Reauthenticate { kind, cause };
    if status == 429 || code == Some(50196) {
        return ErrorClass::Throttled;
    }
    if matches!(code, Some(53003 | 53000 | 530003)) || body.suberror.as_deref() == Some("message_only") {
        return ErrorClass::Blocked;
    }
    match (code, error) {
        (Some(50011), _) => {
            return ErrorClass::Operator {
                cause: "the redirect URI is not registered on the Entra app registration",
                config_key: "http.hostname",
            };
        }
        (Some(7000215), _) => {
            return ErrorClass::Operator {
                cause: "the client secret is wrong (the secret's ID may have been given instead of its value)",
                config_key: "client_secret",
            };
        }
        (Some(7000222), _) => {
            return ErrorClass::Operator { cause: "the client secret has expired", config_key: "client_secret" };
        }
        (Some(700016), _) => {
            return ErrorClass::Operator {
                cause: "the application was not found in the tenant",
                config_key: "client_id",
            };
        }
        (Some(700022 | 90002 | 90023), _) | (_, "invalid_client" | "unauthorized_client") => {
            return ErrorClass::Operator {
                cause: "the provider refused the client configuration",
                config_key: "client_id",
            };
        }
        _ => {}
    }
    match body.suberror.as_deref() {
        Some("consent_required") => {
            return reauth(ReauthKind::ConsentRequired, "consent to the application is required");
        }
        Some("user_password_expired") => return reauth(ReauthKind::PasswordExpired, "the password has expired"),
        Some("basic_action") => {
            return reauth(
                ReauthKind::Policy,
                "the organization requires an action at sign-in (such as accepting its terms of use)",
            );
        }
        Some("additional_action") => {
            return reauth(
                ReauthKind::Policy,
                "the organization requires an additional step (such as registering for multi-factor authentication)",
            );
        }
        Some("device_authentication_failed") => {
            return reauth(ReauthKind::Policy, "the device could not be authenticated for the organization's policy");
        }
        Some("bad_token") => return reauth(ReauthKind::Expired, "the stored sign-in is no longer valid"),
        Some("client_mismatch") => {
            return reauth(ReauthKind::Expired, "the stored sign-in was issued to another application");
        }
        _ => {}
    }
    match (code, error) {
        (Some(65001), _) => reauth(ReauthKind::ConsentRequired, "consent to the application is missing"),
        (Some(50076 | 50079), _) => reauth(ReauthKind::MfaRequired, "multi-factor authentication is required"),
        (Some(50158 | 50125), _) => {
            reauth(ReauthKind::Policy, "a Conditional Access policy requires an interactive sign-in")
        }
        (Some(50055), _) => reauth(ReauthKind::PasswordExpired, "the password has expired"),
        (Some(70043), _) => reauth(ReauthKind::Expired, "the sign-in frequency policy requires a new sign-in"),
        (Some(700082), _) => reauth(ReauthKind::Expired, "the grant expired after 90 days without use"),
        (Some(70008), _) => reauth(ReauthKind::Expired, "the upstream grant has expired or was revoked"),
        (Some(50173 | 54005 | 70000), "invalid_grant") => {
            reauth(ReauthKind::Expired, "the upstream grant was revoked or is no longer valid")
        }
        (_, "interaction_required" | "invalid_grant") if body.claims_challenge().is_some() => {
            reauth(ReauthKind::Policy, "a Conditional Access policy requires an interactive sign-in")
        }
        (_, "interaction_required") => {
            reauth(ReauthKind::Policy, "the provider requires the user to sign in interactively")
        }
        (_, "temporarily_unavailable" | "server_error") => ErrorClass::Transient,
        _ if status >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Rejected,
    }
}

/// `Retry-After` in seconds (RFC 9110 also allows an HTTP date, which Entra does not send).
pub(crate) fn retry_after_seconds(header: Option<&str>) -> Option<u64> {
    header?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, description: &str) -> EntraErrorBody {
        EntraErrorBody { error: error.into(), error_description: description.into(), ..Default::default() }
    }

    fn with(body: EntraErrorBody, suberror: Option<&str>, claims: Option<&str>) -> EntraErrorBody {
        EntraErrorBody { suberror: suberror.map(Into::into), claims: claims.map(Into::into), ..body }
    }

    fn reading(class: ErrorClass) -> String {
        match class {
            ErrorClass::Operator { .. } => "operator".to_owned(),
            ErrorClass::Reauthenticate { kind, .. } => format!("reauth {}", kind.as_str()),
            ErrorClass::Blocked => "blocked".to_owned(),
            ErrorClass::Throttled => "throttled".to_owned(),
            ErrorClass::Transient => "transient".to_owned(),
            ErrorClass::Rejected => "rejected".to_owned(),
        }
    }

    #[test]
    fn entra_answers_are_classified_by_status_error_suberror_and_claims() {
        let challenge = Some(r#"{"access_token":{"capolids":{"essential":true,"values":["c1"]}}}"#);
        let cases = [
            (400, body("invalid_request", "AADSTS50011: The redirect URI 'x' does not match"), "operator"),
            (401, body("invalid_client", "AADSTS7000215: Invalid client secret provided."), "operator"),
            (401, body("invalid_client", "AADSTS7000222: The provided client secret keys are expired."), "operator"),
            (400, body("unauthorized_client", "AADSTS700016: Application not found"), "operator"),
            (
                400,
                body("invalid_grant", "AADSTS70008: The refresh token has expired due to inactivity."),
                "reauth expired",
            ),
            (400, body("invalid_grant", "AADSTS700082: inactive for 90 days"), "reauth expired"),
            (400, body("invalid_grant", "AADSTS70043: sign-in frequency"), "reauth expired"),
            (400, body("invalid_grant", "AADSTS50173: grant revoked"), "reauth expired"),
            (400, body("invalid_grant", "AADSTS54005: code already redeemed"), "reauth expired"),
            (400, body("invalid_grant", "AADSTS70000: grant invalid"), "reauth expired"),
            (
                400,
                body("invalid_grant", "AADSTS65001: The user or administrator has not consented"),
                "reauth consent_required",
            ),
            (400, body("interaction_required", "AADSTS50076: Due to a configuration change"), "reauth mfa_required"),
            (400, with(body("invalid_grant", "AADSTS50079: enroll"), None, challenge), "reauth mfa_required"),
            (400, with(body("invalid_grant", "AADSTS50158: external"), None, challenge), "reauth policy"),
            (400, with(body("interaction_required", "AADSTS50125: interrupt"), None, challenge), "reauth policy"),
            (400, with(body("invalid_grant", "AADSTS99999: new"), None, challenge), "reauth policy"),
            (400, body("interaction_required", ""), "reauth policy"),
            (400, with(body("invalid_grant", ""), Some("consent_required"), None), "reauth consent_required"),
            (400, with(body("invalid_grant", ""), Some("user_password_expired"), None), "reauth password_expired"),
            (400, with(body("interaction_required", ""), Some("basic_action"), None), "reauth policy"),
            (400, with(body("interaction_required", ""), Some("additional_action"), None), "reauth policy"),
            (400, with(body("invalid_grant", ""), Some("device_authentication_failed"), None), "reauth policy"),
            (400, with(body("invalid_grant", ""), Some("bad_token"), None), "reauth expired"),
            (400, with(body("invalid_grant", ""), Some("client_mismatch"), None), "reauth expired"),
            (400, body("invalid_grant", "AADSTS53003: blocked by Conditional Access"), "blocked"),
            (400, body("invalid_grant", "AADSTS53000: device not compliant"), "blocked"),
            (400, body("interaction_required", "AADSTS530003: managed device"), "blocked"),
            (400, with(body("interaction_required", ""), Some("message_only"), None), "blocked"),
            (429, body("", ""), "throttled"),
            (400, body("invalid_grant", "AADSTS50196: loop detected"), "throttled"),
            (503, body("temporarily_unavailable", "AADSTS90033: Service unavailable"), "transient"),
            (500, body("", ""), "transient"),
            (400, body("invalid_grant", "AADSTS50148: The code_verifier does not match"), "rejected"),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                reading(classify(status, &body)),
                expected,
                "{} {} {:?}",
                status,
                body.error_description,
                body.suberror
            );
        }
    }

    #[test]
    fn trace_and_correlation_ids_come_from_the_body_or_the_description() {
        let described =
            body("invalid_grant", "AADSTS53003: blocked\r\nTrace ID: t-1\r\nCorrelation ID: c-1\r\nTimestamp: x");
        assert_eq!((described.trace_id(), described.correlation_id()), (Some("t-1"), Some("c-1")));
        let given = EntraErrorBody { trace_id: Some("t-2".into()), correlation_id: Some("c-2".into()), ..described };
        assert_eq!((given.trace_id(), given.correlation_id()), (Some("t-2"), Some("c-2")));
        assert_eq!(body("x", "plain").trace_id(), None);
        assert_eq!(retry_after_seconds(Some(" 30 ")), Some(30));
        assert_eq!(retry_after_seconds(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after_seconds(None), None);
    }

    #[test]
    fn aadsts_code_comes_from_codes_or_description() {
        assert_eq!(body("x", "AADSTS7000215: Invalid").aadsts(), Some(7000215));
        let with_codes = EntraErrorBody { error_codes: vec![50011], ..body("x", "no prefix") };
        assert_eq!(with_codes.aadsts(), Some(50011));
        assert_eq!(body("x", "plain").aadsts(), None);
    }
}
