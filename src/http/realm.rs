//! Realm documents as Keycloak serves them: realm info, discovery and the JWKS.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{AppError, AppState, paths};
use crate::config::RealmSettings;
use crate::oidc::clients::ClientRegistry;
use crate::oidc::grants::GrantType;
use crate::oidc::tokens::TokenService;
use crate::urls::Urls;

/// Unknown realms answer 404 like Keycloak's `Realm does not exist`.
pub(crate) fn require_realm(realm: &RealmSettings, name: &str) -> Result<(), AppError> {
    if realm.name == name { Ok(()) } else { Err(AppError::UnknownRealm) }
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

pub(crate) async fn realm_info(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    require_realm(&state.realm, &name)?;
    let urls = &state.about.urls;
    let keys = state.tokens.keys().current();
    Ok(Json(RealmInfo {
        realm: &state.realm.name,
        public_key: keys.active_public_key_base64(),
        token_service: urls.token_service(),
        account_service: urls.account_service(),
        tokens_not_before: 0,
    })
    .into_response())
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

pub(crate) async fn discovery(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    require_realm(&state.realm, &name)?;
    Ok(Json(discovery_document(&state.about.urls, &state.tokens, &state.clients)).into_response())
}

pub(crate) async fn certs(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    require_realm(&state.realm, &name)?;
    Ok(Json(state.tokens.keys().current().jwks()).into_response())
}
