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

/// Entra's error body: `error`, `error_description` ("AADSTS70008: …"), `error_codes`, ids.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct EntraErrorBody {
    #[serde(default)]
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) error_description: String,
    #[serde(default)]
    pub(crate) error_codes: Vec<u32>,
    #[serde(default)]
    pub(crate) correlation_id: Option<String>,
}

impl EntraErrorBody {
    /// The AADSTS number, from `error_codes` or the description's prefix.
    pub(crate) fn aadsts(&self) -> Option<u32> {
        self.error_codes.first().copied().or_else(|| {
            let rest = self.error_description.strip_prefix("AADSTS")?;
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
    }

    /// The first line of the description: Entra's own words without trace ids.
    pub(crate) fn summary(&self) -> &str {
        self.error_description.lines().next().unwrap_or_default().trim()
    }
}

/// What kind of fix an upstream refusal needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The operator must change the configuration or the app registration.
    Operator { cause: &'static str, config_key: &'static str },
    /// The user must sign in again (or consent, or do MFA).
    Reauthenticate { cause: &'static str },
    /// Try again later.
    Transient,
    /// A refusal of this one request (bad or replayed code, …).
    Rejected,
}

pub(crate) fn classify(status: u16, body: &EntraErrorBody) -> ErrorClass {
    let code = body.aadsts();
    match (code, body.error.as_str()) {
        (Some(50011), _) => ErrorClass::Operator {
            cause: "the redirect URI is not registered on the Entra app registration",
            config_key: "http.hostname",
        },
        (Some(7000215), _) => ErrorClass::Operator {
            cause: "the client secret is wrong (the secret's ID may have been given instead of its value)",
            config_key: "client_secret",
        },
        (Some(7000222), _) => {
            ErrorClass::Operator { cause: "the client secret has expired", config_key: "client_secret" }
        }
        (Some(700016), _) => {
            ErrorClass::Operator { cause: "the application was not found in the tenant", config_key: "client_id" }
        }
        (Some(700022 | 90002 | 90023), _) | (_, "invalid_client" | "unauthorized_client") => {
            ErrorClass::Operator { cause: "the provider refused the client configuration", config_key: "client_id" }
        }
        (Some(65001), _) => ErrorClass::Reauthenticate { cause: "consent to the application is missing" },
        (Some(50076 | 50079), _) => ErrorClass::Reauthenticate { cause: "multi-factor authentication is required" },
        (Some(70008 | 700082 | 50173 | 54005), "invalid_grant") | (_, "interaction_required") => {
            ErrorClass::Reauthenticate { cause: "the upstream grant has expired or was revoked" }
        }
        (_, "temporarily_unavailable" | "server_error") => ErrorClass::Transient,
        _ if status == 429 || status >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, description: &str) -> EntraErrorBody {
        EntraErrorBody { error: error.into(), error_description: description.into(), ..Default::default() }
    }

    #[test]
    fn entra_answers_are_classified() {
        let cases = [
            (400, body("invalid_request", "AADSTS50011: The redirect URI 'x' does not match"), "operator"),
            (401, body("invalid_client", "AADSTS7000215: Invalid client secret provided."), "operator"),
            (401, body("invalid_client", "AADSTS7000222: The provided client secret keys are expired."), "operator"),
            (400, body("unauthorized_client", "AADSTS700016: Application not found"), "operator"),
            (400, body("invalid_grant", "AADSTS70008: The refresh token has expired due to inactivity."), "reauth"),
            (400, body("invalid_grant", "AADSTS65001: The user or administrator has not consented"), "reauth"),
            (
                400,
                body("interaction_required", "AADSTS50076: Due to a configuration change made by your administrator"),
                "reauth",
            ),
            (503, body("temporarily_unavailable", "AADSTS90033: Service unavailable"), "transient"),
            (500, body("", ""), "transient"),
            (429, body("", ""), "transient"),
            (400, body("invalid_grant", "AADSTS50148: The code_verifier does not match"), "rejected"),
        ];
        for (status, body, expected) in cases {
            let got = match classify(status, &body) {
                ErrorClass::Operator { .. } => "operator",
                ErrorClass::Reauthenticate { .. } => "reauth",
                ErrorClass::Transient => "transient",
                ErrorClass::Rejected => "rejected",
            };
            assert_eq!(got, expected, "{} {}", status, body.error_description);
        }
    }

    #[test]
    fn aadsts_code_comes_from_codes_or_description() {
        assert_eq!(body("x", "AADSTS7000215: Invalid").aadsts(), Some(7000215));
        let with_codes = EntraErrorBody { error_codes: vec![50011], ..body("x", "no prefix") };
        assert_eq!(with_codes.aadsts(), Some(50011));
        assert_eq!(body("x", "plain").aadsts(), None);
    }
}
