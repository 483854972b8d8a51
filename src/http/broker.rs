//! Keycloak's stored-token endpoint, `GET /realms/{realm}/broker/{alias}/token`: a user's
//! own access token buys that user's upstream token, with Keycloak's answers and CORS.

use axum::Json;
use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Serialize;

use super::error::no_store;
use super::params::Bearer;
use super::realm::require_realm;
use super::{AppError, AppState};
use crate::broker_token::{BrokerReadError, read_for_bearer};
use crate::clock::Clock;
use crate::config::RealmSettings;
use crate::oidc::clients::ClientRegistry;
use crate::oidc::grants::Grants;
use crate::vault::{TokenVault, UpstreamTokens, VaultError};

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

/// What the stored-token endpoint uses.
#[derive(Debug, Clone)]
pub(crate) struct BrokerEndpoint {
    realm: Arc<RealmSettings>,
    clients: ClientRegistry,
    grants: Grants,
    vault: TokenVault,
    clock: Clock,
}

impl FromRef<AppState> for BrokerEndpoint {
    fn from_ref(state: &AppState) -> Self {
        BrokerEndpoint {
            realm: FromRef::from_ref(state),
            clients: FromRef::from_ref(state),
            grants: FromRef::from_ref(state),
            vault: FromRef::from_ref(state),
            clock: FromRef::from_ref(state),
        }
    }
}

pub(crate) async fn retrieve_token(
    State(endpoint): State<BrokerEndpoint>,
    Path((realm, alias)): Path<(String, String)>,
    Bearer(bearer): Bearer,
    headers: HeaderMap,
) -> Response {
    let (client_id, result) = endpoint.retrieve(&realm, &alias, bearer).await;
    let mut response = result.into_response();
    // Like Keycloak, an answer is readable cross-origin only by the web origins of the client
    // the bearer token was issued to: here, the origins of its redirect URIs.
    if let (Some(client_id), Some(origin)) = (client_id, headers.get(header::ORIGIN))
        && let Some(client) = endpoint.clients.find(&client_id)
        && origin.to_str().is_ok_and(|origin| client.allows_web_origin(origin))
    {
        let cors = response.headers_mut();
        cors.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        cors.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    response
}

impl BrokerEndpoint {
    /// The answer, and the client the bearer token belongs to once it is known.
    async fn retrieve(
        &self,
        realm: &str,
        alias: &str,
        bearer: Option<String>,
    ) -> (Option<String>, Result<Response, AppError>) {
        if let Err(err) = require_realm(&self.realm, realm) {
            return (None, Err(err));
        }
        let now = self.clock.now();
        let read = match bearer {
            Some(bearer) => read_for_bearer(&self.grants, &self.vault, &bearer, Some(alias), now).await,
            None => Ok(None),
        };
        match read {
            Ok(Some(read)) => {
                let answer = match read.result {
                    Ok(served) => Ok((no_store(), Json(keycloak_token_body(&served.tokens, now))).into_response()),
                    Err(err) => Err(broker_error(err)),
                };
                (Some(read.client_id), answer)
            }
            Ok(None) => (None, Err(AppError::keycloak(StatusCode::BAD_REQUEST, "Invalid token."))),
            Err(err) => (None, Err(err.into())),
        }
    }
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
fn broker_error(err: BrokerReadError) -> AppError {
    match err {
        BrokerReadError::NotAuthorized { .. } => AppError::keycloak(StatusCode::FORBIDDEN, err.to_string()),
        BrokerReadError::UnknownProvider { .. } => AppError::keycloak(StatusCode::NOT_FOUND, err.to_string()),
        BrokerReadError::Vault(err @ (VaultError::NotLinked { .. } | VaultError::NotStored { .. })) => {
            AppError::keycloak(StatusCode::BAD_REQUEST, err.to_string())
        }
        BrokerReadError::Vault(other) => AppError::vault(other),
    }
}
