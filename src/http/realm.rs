//! Realm documents as Keycloak serves them (realm info, discovery, the JWKS), and the
//! extractors that accept a path's realm only if it is the configured one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts, RawPathParams, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{About, AppError, paths};
use crate::config::RealmSettings;
use crate::oidc::admin::AdminSignIn;
use crate::oidc::clients::ClientRegistry;
use crate::oidc::grants::GrantType;
use crate::oidc::tokens::TokenService;
use crate::urls::Urls;

/// Unknown realms answer 404 like Keycloak's `Realm does not exist`.
pub(crate) fn require_realm(realm: &RealmSettings, name: &str) -> Result<(), AppError> {
    if realm.name == name { Ok(()) } else { Err(AppError::UnknownRealm) }
}

/// The path's `{realm}`.
async fn realm_in_path(parts: &mut Parts) -> Result<String, Response> {
    let params = RawPathParams::from_request_parts(parts, &()).await.map_err(IntoResponse::into_response)?;
    Ok(params.iter().find_map(|(name, value)| (name == "realm").then(|| value.to_owned())).unwrap_or_default())
}

/// The configured realm, as the path's `{realm}` names it; any other is refused (404) before
/// the rest of the request is read.
#[derive(Debug)]
pub(crate) struct OwnRealm;

impl<S: Send + Sync> FromRequestParts<S> for OwnRealm
where
    Arc<RealmSettings>: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let name = realm_in_path(parts).await?;
        require_realm(&Arc::<RealmSettings>::from_ref(state), &name).map_err(IntoResponse::into_response)?;
        Ok(OwnRealm)
    }
}

/// The realm of the token and logout endpoints: the configured one, or the master realm, whose
/// `admin-cli` shares them while the admin REST API is on. Any other is refused (404).
#[derive(Debug)]
pub(crate) enum TokenRealm {
    Own,
    Master(Arc<AdminSignIn>),
}

impl<S: Send + Sync> FromRequestParts<S> for TokenRealm
where
    Arc<RealmSettings>: FromRef<S>,
    Option<Arc<AdminSignIn>>: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let name = realm_in_path(parts).await?;
        if name == paths::MASTER_REALM
            && let Some(admin) = Option::<Arc<AdminSignIn>>::from_ref(state)
        {
            return Ok(TokenRealm::Master(admin));
        }
        require_realm(&Arc::<RealmSettings>::from_ref(state), &name).map_err(IntoResponse::into_response)?;
        Ok(TokenRealm::Own)
    }
}

/// `GET /realms/{realm}`, Keycloak's realm document.
#[derive(Debug, Serialize)]
struct RealmInfo<'a> {
    realm: &'a str,
    public_key: &'a str,
    #[serde(rename = "token-service")]
    token_service: String,
    #[serde(rename = "account-service")]
    account_service: String,
    #[serde(rename = "tokens-not-before")]
    tokens_not_before: i64,
}

pub(crate) async fn realm_info(
    _: OwnRealm,
    State(realm): State<Arc<RealmSettings>>,
    State(about): State<Arc<About>>,
    State(tokens): State<Arc<TokenService>>,
) -> Response {
    let keys = tokens.keys().current();
    Json(RealmInfo {
        realm: &realm.name,
        public_key: keys.active_public_key_base64(),
        token_service: about.urls.token_service(),
        account_service: about.urls.account_service(),
        tokens_not_before: 0,
    })
    .into_response()
}

/// The OpenID Connect discovery document.
#[derive(Debug, Serialize)]
pub(crate) struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    introspection_endpoint: String,
    userinfo_endpoint: String,
    end_session_endpoint: String,
    revocation_endpoint: String,
    jwks_uri: String,
    grant_types_supported: Vec<&'static str>,
    response_types_supported: &'static [&'static str],
    response_modes_supported: &'static [&'static str],
    subject_types_supported: &'static [&'static str],
    id_token_signing_alg_values_supported: [&'static str; 1],
    userinfo_signing_alg_values_supported: [&'static str; 1],
    token_endpoint_auth_methods_supported: &'static [&'static str],
    introspection_endpoint_auth_methods_supported: &'static [&'static str],
    revocation_endpoint_auth_methods_supported: &'static [&'static str],
    code_challenge_methods_supported: &'static [&'static str],
    /// RFC 9207: authorization responses, codes and errors alike, carry `iss`.
    authorization_response_iss_parameter_supported: bool,
    scopes_supported: &'static [&'static str],
    claims_supported: &'static [&'static str],
    claims_parameter_supported: bool,
    request_parameter_supported: bool,
    request_uri_parameter_supported: bool,
}

/// How a client may prove itself: a confidential client by its secret, a public client (`none`)
/// by its id; introspection takes only a secret (a service account's or a confidential client's).
const CLIENT_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "none"];
const SECRET_AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post"];

pub(crate) fn discovery_document(urls: &Urls, tokens: &TokenService, clients: &ClientRegistry) -> Discovery {
    Discovery {
        issuer: urls.issuer().to_owned(),
        authorization_endpoint: urls.endpoint(paths::AUTH),
        token_endpoint: urls.endpoint(paths::TOKEN),
        introspection_endpoint: urls.endpoint(paths::INTROSPECT),
        userinfo_endpoint: urls.endpoint(paths::USERINFO),
        end_session_endpoint: urls.endpoint(paths::LOGOUT),
        revocation_endpoint: urls.endpoint(paths::REVOKE),
        jwks_uri: urls.endpoint(paths::CERTS),
        grant_types_supported: GrantType::ALL.iter().map(|grant| grant.as_str()).collect(),
        response_types_supported: &["code"],
        response_modes_supported: &["query"],
        subject_types_supported: &["public"],
        id_token_signing_alg_values_supported: [tokens.keys().algorithm().name()],
        userinfo_signing_alg_values_supported: [tokens.keys().algorithm().name()],
        token_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
        introspection_endpoint_auth_methods_supported: SECRET_AUTH_METHODS,
        revocation_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
        code_challenge_methods_supported: clients.code_challenge_methods(),
        authorization_response_iss_parameter_supported: true,
        scopes_supported: &["openid", "profile", "email", "offline_access"],
        claims_supported: &[
            "aud",
            "sub",
            "iss",
            "auth_time",
            "name",
            "given_name",
            "family_name",
            "preferred_username",
            "email",
            "email_verified",
            "identity_provider",
        ],
        claims_parameter_supported: false,
        request_parameter_supported: false,
        request_uri_parameter_supported: false,
    }
}

pub(crate) async fn discovery(
    _: OwnRealm,
    State(about): State<Arc<About>>,
    State(tokens): State<Arc<TokenService>>,
    State(clients): State<ClientRegistry>,
) -> Response {
    Json(discovery_document(&about.urls, &tokens, &clients)).into_response()
}

pub(crate) async fn certs(_: OwnRealm, State(tokens): State<Arc<TokenService>>) -> Response {
    Json(tokens.keys().current().jwks()).into_response()
}
