//! Keycloak's stored-token endpoint, `GET /realms/{realm}/broker/{alias}/token`: a user's
//! own access token buys that user's upstream token, with Keycloak's answers and CORS.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Serialize;

use super::error::no_store;
use super::params::Bearer;
use super::realm::require_realm;
use super::{AppError, AppState};
use crate::oidc::tokens::READ_TOKEN_ROLE;
use crate::vault::{TokenReader, UpstreamTokens, VaultError};

const ALLOWED_HEADERS: &str = "Origin, Accept, X-Requested-With, Content-Type, Access-Control-Request-Method, \
                               Access-Control-Request-Headers, Authorization";

/// The CORS preflight, as Keycloak answers it: any origin may ask; the real answer decides.
pub(crate) async fn retrieve_token_preflight(headers: HeaderMap) -> Response {
    let mut response = StatusCode::OK.into_response();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let cors = response.headers_mut();
        cors.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        cors.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        cors.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
        cors.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
        cors.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("3600"));
    }
    response
}

pub(crate) async fn retrieve_token(
    State(state): State<AppState>,
    Path((realm, alias)): Path<(String, String)>,
    Bearer(bearer): Bearer,
    headers: HeaderMap,
) -> Response {
    let (client_id, result) = retrieve(&state, &realm, &alias, bearer).await;
    let mut response = result.into_response();
    // Like Keycloak, an answer is readable cross-origin only by the web origins of the client
    // the bearer token was issued to: here, the origins of its redirect URIs.
    if let (Some(client_id), Some(origin)) = (client_id, headers.get(header::ORIGIN))
        && let Some(client) = state.clients.find(&client_id)
        && origin.to_str().is_ok_and(|origin| client.allows_web_origin(origin))
    {
        let cors = response.headers_mut();
        cors.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        cors.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    response
}

/// The answer, and the client the bearer token belongs to once it is known.
async fn retrieve(
    state: &AppState,
    realm: &str,
    alias: &str,
    bearer: Option<String>,
) -> (Option<String>, Result<Response, AppError>) {
    if let Err(err) = require_realm(&state.realm, realm) {
        return (None, Err(err));
    }
    let invalid = || AppError::keycloak(StatusCode::BAD_REQUEST, "Invalid token.");
    let Some(bearer) = bearer else {
        return (None, Err(invalid()));
    };
    let now = state.clock.now();
    let claims = match state.grants().authenticate_bearer(&bearer, now).await {
        Ok(Some(claims)) => claims,
        Ok(None) => return (None, Err(invalid())),
        Err(err) => return (None, Err(err.into())),
    };
    let client_id = Some(claims.azp.clone());
    if !claims.has_broker_role(READ_TOKEN_ROLE) {
        let message =
            format!("Client [{}] not authorized to retrieve tokens from identity provider [{alias}].", claims.azp);
        return (client_id, Err(AppError::keycloak(StatusCode::FORBIDDEN, message)));
    }
    if !state.vault.knows_provider(alias) {
        let message = format!("Identity Provider [{alias}] not found.");
        return (client_id, Err(AppError::keycloak(StatusCode::NOT_FOUND, message)));
    }
    let reader = TokenReader { surface: "broker", client_id: &claims.azp };
    let result = match state.vault.read(&reader, &claims.sub, alias, 0).await {
        Ok(served) => Ok((no_store(), Json(keycloak_token_body(&served.tokens, now))).into_response()),
        Err(err) => Err(broker_error(err)),
    };
    (client_id, result)
}

/// The stored token as Keycloak serves it, with `expires_in` counting the seconds that are
/// really left and Keycloak's `accessTokenExpiration`.
#[derive(Debug, Serialize)]
struct KeycloakTokenBody<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_in: i64,
    scope: &'a str,
    #[serde(rename = "accessTokenExpiration")]
    access_token_expiration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_expires_in: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
}

fn keycloak_token_body(tokens: &UpstreamTokens, now: i64) -> KeycloakTokenBody<'_> {
    KeycloakTokenBody {
        access_token: tokens.access_token.expose_secret(),
        token_type: &tokens.token_type,
        expires_in: (tokens.expires_at - now).max(1),
        scope: &tokens.scope,
        access_token_expiration: tokens.expires_at,
        refresh_token: tokens.refresh_token.as_ref().map(|t| t.expose_secret()),
        refresh_expires_in: tokens.refresh_expires_at.map(|at| (at - now).max(0)),
        id_token: tokens.id_token.as_ref().map(|t| t.expose_secret()),
    }
}

/// Keycloak's texts where it has them; for what Keycloak never says, the token API's shape.
fn broker_error(err: VaultError) -> AppError {
    match err {
        VaultError::NotLinked { .. } | VaultError::NotStored { .. } => {
            AppError::keycloak(StatusCode::BAD_REQUEST, err.to_string())
        }
        other => AppError::vault(other),
    }
}
