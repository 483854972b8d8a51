//! The built-in development identity provider of `start-dev`: Entra's URL layout, claims and
//! error bodies, served on the broker's own public listener, so that a whole sign-in works
//! without an Azure account. The broker talks to it over HTTP exactly as to Entra: discovery,
//! the code flow with PKCE, state and nonce, an RS256 ID token checked against the JWKS,
//! tokens sealed in the vault, refresh on read.
//!
//! Anyone may sign in as anyone here. It runs only in `start-dev`, only when no real provider
//! is configured, and only on a loopback listener; `start` refuses `development.provider`.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::config::{DEFAULT_DEVOPS_URL, DEFAULT_SCOPES, ProviderSettings, Tenant, UpstreamClientAuth};
use crate::crypto::{
    CtSecret, JwsAlgorithm, JwsKey, JwsKeyError, load_key, new_id, pkce_s256, random_token, token_hash,
};

/// The provider's alias: its broker endpoint is `/realms/{realm}/broker/dev/endpoint`.
pub(crate) const ALIAS: &str = "dev";
/// A path beneath where it is served on the public listener, as beneath Entra's
/// `https://login.microsoftonline.com`: one literal for the authority and the routes.
macro_rules! authority_path {
    ($rest:literal) => {
        concat!("/dev-entra", $rest)
    };
}
pub(crate) use authority_path;
/// Where it is served on the public listener.
pub(crate) const AUTHORITY_PATH: &str = authority_path!("");
/// Its one tenant.
pub(crate) const TENANT: Uuid = Uuid::from_u128(0xde7e_1000_0000_4000_8000_0000_0000_0001);
/// The client id the broker is registered under.
const CLIENT_ID: &str = "identity-broker-development";
/// The name of its signing key in the database's instance secrets.
pub(crate) const KEY_SECRET_NAME: &str = "development_provider_key";
const CODE_SECONDS: i64 = 300;
const ACCESS_TOKEN_SECONDS: i64 = 3600;
const REFRESH_TOKEN_SECONDS: i64 = 90 * 86_400;
/// The users offered on the sign-in page; any other e-mail address may be typed.
pub(crate) const SAMPLE_USERS: [(&str, &str); 2] =
    [("alice@example.test", "Alice Developer"), ("bob@example.test", "Bob Developer")];

/// The authorize request as the broker sends it (Entra's parameters).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub(crate) struct AuthorizeParams {
    pub(crate) client_id: Option<String>,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) response_type: Option<String>,
    pub(crate) response_mode: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: Option<String>,
    pub(crate) code_challenge_method: Option<String>,
    pub(crate) login_hint: Option<String>,
    pub(crate) prompt: Option<String>,
}

/// The token endpoint's form.
#[derive(Default, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

debug_showing!(TokenForm { grant_type, client_id, redirect_uri });

/// An Entra error answer: `error`, `error_description` starting `AADSTS<code>: `, `error_codes`.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{error}: {error_description}")]
pub(crate) struct EntraError {
    #[serde(skip)]
    pub(crate) status: u16,
    error: &'static str,
    error_description: String,
    error_codes: [u32; 1],
    trace_id: String,
    correlation_id: String,
}

fn entra_error(status: u16, error: &'static str, code: u32, text: &str) -> EntraError {
    EntraError {
        status,
        error,
        error_description: format!("AADSTS{code}: {text} (development provider)"),
        error_codes: [code],
        trace_id: new_id(),
        correlation_id: new_id(),
    }
}

/// Entra's token answer.
#[derive(Debug, Serialize)]
pub(crate) struct TokenAnswer {
    token_type: &'static str,
    scope: String,
    expires_in: i64,
    access_token: String,
    refresh_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

/// The parts of Entra's discovery document the broker reads.
#[derive(Debug, Serialize)]
pub(crate) struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    response_modes_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: [&'static str; 1],
}

/// Who signs in: an e-mail address and a display name, typed or picked on the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DevUser {
    pub(crate) email: String,
    pub(crate) name: String,
}

impl DevUser {
    /// A user from the sign-in form; `None` unless the address looks like one.
    pub(crate) fn from_form(email: &str, name: Option<&str>) -> Option<DevUser> {
        let email = email.trim().to_lowercase();
        let (local, domain) = email.split_once('@')?;
        let plausible = !local.is_empty() && domain.contains('.') && email.len() <= 254 && !email.contains(' ');
        let name = name.map(str::trim).filter(|n| !n.is_empty() && n.len() <= 100).unwrap_or(local).to_owned();
        plausible.then_some(DevUser { email, name })
    }

    /// A stable per-user id, as Entra's object id.
    fn object_id(&self) -> Uuid {
        let digest = token_hash(&format!("oid\u{1f}{}", self.email));
        Uuid::from_u128(u128::from_le_bytes(digest.as_bytes()[..16].try_into().unwrap_or([0; 16])))
    }
}

#[derive(Debug)]
struct PendingCode {
    user: DevUser,
    redirect_uri: String,
    nonce: Option<String>,
    code_challenge: String,
    scope: String,
    expires_at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdClaims {
    ver: &'static str,
    iss: String,
    aud: String,
    sub: String,
    oid: String,
    tid: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    preferred_username: String,
    email: String,
    name: String,
}

/// A refresh token is a signed statement of who and until when, so it survives restarts.
#[derive(Debug, Serialize, Deserialize)]
struct RefreshClaims {
    typ: String,
    iss: String,
    aud: String,
    email: String,
    name: String,
    scope: String,
    exp: i64,
}

/// The provider: its key, the broker's registration, and the codes waiting to be redeemed.
pub(crate) struct DevelopmentProvider {
    authority: Url,
    client_secret: CtSecret,
    client_secret_value: String,
    redirect_uri: String,
    signer: JwsKey,
    codes: Mutex<HashMap<String, PendingCode>>,
}

impl std::fmt::Debug for DevelopmentProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevelopmentProvider").field("authority", &self.authority.as_str()).finish_non_exhaustive()
    }
}

impl DevelopmentProvider {
    /// The provider served at `authority` (the public URL's [`AUTHORITY_PATH`]), signing with
    /// the PKCS#8 key `key`, for a broker whose endpoint for it is `redirect_uri`.
    pub(crate) fn new(authority: &str, redirect_uri: String, key: &[u8]) -> Result<Self, JwsKeyError> {
        let kid = format!("dev-{}", &token_hash(&String::from_utf8_lossy(key))[..16]);
        let authority = Url::parse(authority).map_err(|_| JwsKeyError::Malformed(JwsAlgorithm::Rs256))?;
        let client_secret_value = random_token();
        Ok(DevelopmentProvider {
            authority,
            client_secret: CtSecret::new(SecretString::from(client_secret_value.clone())),
            client_secret_value,
            redirect_uri,
            signer: load_key(&kid, JwsAlgorithm::Rs256, key)?,
            codes: Mutex::new(HashMap::new()),
        })
    }

    /// How the broker's upstream client sees it: an Entra tenant like any other.
    pub(crate) fn settings(&self) -> ProviderSettings {
        ProviderSettings {
            alias: ALIAS.to_owned(),
            display_name: "Development sign-in (not for production)".to_owned(),
            tenant: Tenant::Single(TENANT),
            organization: None,
            client_id: CLIENT_ID.to_owned(),
            client_secret: SecretString::from(self.client_secret_value.clone()),
            client_auth: UpstreamClientAuth::ClientSecretPost,
            scopes: DEFAULT_SCOPES.to_owned(),
            authority: self.authority.clone(),
            devops_url: Url::parse(DEFAULT_DEVOPS_URL).unwrap_or_else(|_| self.authority.clone()),
            allowed_tenants: Vec::new(),
            trust_email: true,
            verified_email_domains: Vec::new(),
            store_token: true,
        }
    }

    fn tenant_url(&self) -> String {
        format!("{}/{TENANT}", self.authority.as_str().trim_end_matches('/'))
    }

    fn issuer(&self) -> String {
        format!("{}/v2.0", self.tenant_url())
    }

    /// True when `tenant`, as the URL names it, is this provider's.
    pub(crate) fn serves_tenant(tenant: &str) -> bool {
        Uuid::parse_str(tenant).is_ok_and(|t| t == TENANT)
    }

    pub(crate) fn unknown_tenant(tenant: &str) -> EntraError {
        entra_error(400, "invalid_request", 90002, &format!("Tenant '{tenant}' not found."))
    }

    pub(crate) fn discovery(&self) -> Discovery {
        let tenant = self.tenant_url();
        Discovery {
            issuer: self.issuer(),
            authorization_endpoint: format!("{tenant}/oauth2/v2.0/authorize"),
            token_endpoint: format!("{tenant}/oauth2/v2.0/token"),
            jwks_uri: format!("{tenant}/discovery/v2.0/keys"),
            response_modes_supported: ["query"],
            id_token_signing_alg_values_supported: ["RS256"],
        }
    }

    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.signer.jwk().cloned().into_iter().collect() }
    }

    /// Checks an authorize request before anything is shown or redirected: only the broker's
    /// registration and exact redirect URI, the code flow, S256 PKCE, a state and a nonce.
    pub(crate) fn check_authorize(&self, params: &AuthorizeParams) -> Result<(), EntraError> {
        let refuse = |code: u32, text: &str| entra_error(400, "invalid_request", code, text);
        if params.client_id.as_deref() != Some(CLIENT_ID) {
            return Err(refuse(700016, "Application not found in the directory."));
        }
        if params.redirect_uri.as_deref() != Some(self.redirect_uri.as_str()) {
            return Err(refuse(
                50011,
                "The redirect URI does not match the redirect URIs configured for the application.",
            ));
        }
        if params.response_type.as_deref() != Some("code") {
            return Err(refuse(900144, "The request body must contain the following parameter: 'response_type=code'."));
        }
        if params.code_challenge_method.as_deref() != Some("S256") || params.code_challenge.is_none() {
            return Err(refuse(50148, "The code_challenge with S256 is required."));
        }
        if params.state.is_none() || params.nonce.is_none() {
            return Err(refuse(900144, "The request must carry a state and a nonce."));
        }
        Ok(())
    }

    /// Signs `user` in for a checked request: a single-use code, and where to send the browser.
    pub(crate) fn approve(&self, params: &AuthorizeParams, user: DevUser, now: i64) -> Result<Url, EntraError> {
        self.check_authorize(params)?;
        let code = random_token();
        let pending = PendingCode {
            user,
            redirect_uri: self.redirect_uri.clone(),
            nonce: params.nonce.clone(),
            code_challenge: params.code_challenge.clone().unwrap_or_default(),
            scope: params.scope.clone().unwrap_or_default(),
            expires_at: now + CODE_SECONDS,
        };
        let mut codes = self.codes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        codes.retain(|_, waiting| waiting.expires_at > now);
        codes.insert(token_hash(&code), pending);
        let mut target = Url::parse(&self.redirect_uri)
            .map_err(|_| entra_error(400, "invalid_request", 50011, "bad redirect URI"))?;
        target
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", params.state.as_deref().unwrap_or_default());
        Ok(target)
    }

    /// The token endpoint: the broker's code exchange and refreshes, authenticated by its
    /// client secret (in the form, or by HTTP Basic as `basic`).
    pub(crate) fn token(
        &self,
        form: TokenForm,
        basic: Option<(String, String)>,
        now: i64,
    ) -> Result<TokenAnswer, EntraError> {
        let (client_id, secret) = match basic {
            Some(credentials) => (Some(credentials.0), Some(credentials.1)),
            None => (form.client_id.clone(), form.client_secret.clone()),
        };
        if client_id.as_deref() != Some(CLIENT_ID) {
            return Err(entra_error(400, "unauthorized_client", 700016, "Application not found in the directory."));
        }
        if !secret.is_some_and(|secret| self.client_secret.matches(&secret)) {
            return Err(entra_error(401, "invalid_client", 7000215, "Invalid client secret provided."));
        }
        match form.grant_type.as_deref() {
            Some("authorization_code") => self.redeem_code(&form, now),
            Some("refresh_token") => self.refresh(&form, now),
            _ => Err(entra_error(400, "unsupported_grant_type", 70003, "The grant type is not supported.")),
        }
    }

    fn redeem_code(&self, form: &TokenForm, now: i64) -> Result<TokenAnswer, EntraError> {
        let invalid = |text: &str| entra_error(400, "invalid_grant", 70008, text);
        let code = form.code.as_deref().ok_or_else(|| invalid("The code is missing."))?;
        let pending =
            self.codes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&token_hash(code)).ok_or_else(
                || invalid("The provided authorization code is unknown, was used already or has expired."),
            )?;
        if pending.expires_at <= now {
            return Err(invalid("The provided authorization code has expired."));
        }
        if form.redirect_uri.as_deref() != Some(pending.redirect_uri.as_str()) {
            return Err(entra_error(
                400,
                "invalid_grant",
                50011,
                "The redirect URI does not match the one of the code.",
            ));
        }
        let verifier = form.code_verifier.as_deref().unwrap_or_default();
        if !crate::crypto::constant_time_eq(&pkce_s256(verifier), &pending.code_challenge) {
            return Err(entra_error(
                400,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge.",
            ));
        }
        let id_token = self.id_token(&pending.user, pending.nonce, now)?;
        self.answer(&pending.user, &pending.scope, Some(id_token), now)
    }

    fn refresh(&self, form: &TokenForm, now: i64) -> Result<TokenAnswer, EntraError> {
        let invalid = || entra_error(400, "invalid_grant", 70008, "The refresh token has expired or is invalid.");
        let token = form.refresh_token.as_deref().ok_or_else(invalid)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_audience(&[CLIENT_ID]);
        validation.set_issuer(&[self.issuer()]);
        let claims = jsonwebtoken::decode::<RefreshClaims>(token, self.signer.decoding(), &validation)
            .map_err(|_| invalid())?
            .claims;
        if claims.typ != "refresh" || claims.exp <= now {
            return Err(invalid());
        }
        let user = DevUser { email: claims.email, name: claims.name };
        let scope = form.scope.clone().unwrap_or(claims.scope);
        self.answer(&user, &scope, None, now)
    }

    fn answer(
        &self,
        user: &DevUser,
        scope: &str,
        id_token: Option<String>,
        now: i64,
    ) -> Result<TokenAnswer, EntraError> {
        let refresh = RefreshClaims {
            typ: "refresh".to_owned(),
            iss: self.issuer(),
            aud: CLIENT_ID.to_owned(),
            email: user.email.clone(),
            name: user.name.clone(),
            scope: scope.to_owned(),
            exp: now + REFRESH_TOKEN_SECONDS,
        };
        Ok(TokenAnswer {
            token_type: "Bearer",
            scope: resource_scopes(scope),
            expires_in: ACCESS_TOKEN_SECONDS,
            // Opaque, as Entra's access tokens are to their clients.
            access_token: format!("dev-access.{}", random_token()),
            refresh_token: self.sign(&refresh)?,
            id_token,
        })
    }

    fn id_token(&self, user: &DevUser, nonce: Option<String>, now: i64) -> Result<String, EntraError> {
        let oid = user.object_id().to_string();
        self.sign(&IdClaims {
            ver: "2.0",
            iss: self.issuer(),
            aud: CLIENT_ID.to_owned(),
            // Pairwise, as Entra's `sub`: per application.
            sub: token_hash(&format!("sub\u{1f}{CLIENT_ID}\u{1f}{oid}"))[..43].to_owned(),
            oid,
            tid: TENANT.to_string(),
            iat: now,
            nbf: now,
            exp: now + ACCESS_TOKEN_SECONDS,
            nonce,
            preferred_username: user.email.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
        })
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, EntraError> {
        self.signer
            .sign_jwt(claims)
            .map_err(|_| entra_error(500, "server_error", 50000, "The token could not be signed."))
    }
}

/// The resource scopes of a request, as Entra answers them (no `openid`, `profile`, …).
fn resource_scopes(requested: &str) -> String {
    const OIDC: [&str; 4] = ["openid", "profile", "email", "offline_access"];
    requested.split_whitespace().filter(|s| !OIDC.contains(s)).collect::<Vec<_>>().join(" ")
}
