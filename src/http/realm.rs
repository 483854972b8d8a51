//! Realm documents as Keycloak serves them: realm info, discovery and the JWKS.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppError, paths};
use crate::app::AppState;
use crate::config::RealmSettings;
use crate::oidc::tokens::TokenService;

/// Unknown realms answer 404 like Keycloak's `Realm does not exist`.
pub fn require_realm(realm: &RealmSettings, name: &str) -> Result<(), AppError> {
    if realm.name == name { Ok(()) } else { Err(AppError::UnknownRealm) }
}

pub async fn realm_info(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    require_realm(&state.realm, &name)?;
    let issuer = state.tokens.issuer();
    Ok(Json(json!({
        "realm": state.realm.name,
        "public_key": state.tokens.keys().active_public_key_base64(),
        "token-service": format!("{issuer}/protocol/openid-connect"),
        "account-service": format!("{issuer}/account"),
        "tokens-not-before": 0,
    }))
    .into_response())
}

pub fn discovery_document(tokens: &TokenService) -> Value {
    let issuer = tokens.issuer();
    let url = |template: &str| format!("{issuer}{}", paths::realm_relative(template));
    json!({
        "issuer": issuer,
        "authorization_endpoint": url(paths::AUTH),
        "token_endpoint": url(paths::TOKEN),
        "introspection_endpoint": url(paths::INTROSPECT),
        "userinfo_endpoint": url(paths::USERINFO),
        "end_session_endpoint": url(paths::LOGOUT),
        "revocation_endpoint": url(paths::REVOKE),
        "jwks_uri": url(paths::CERTS),
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "userinfo_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["aud", "sub", "iss", "auth_time", "name", "given_name", "family_name", "preferred_username", "email", "email_verified", "identity_provider"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    })
}

pub async fn discovery(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    require_realm(&state.realm, &name)?;
    Ok(Json(discovery_document(&state.tokens)).into_response())
}

pub async fn certs(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, AppError> {
    require_realm(&state.realm, &name)?;
    Ok(Json(state.tokens.keys().jwks()).into_response())
}
