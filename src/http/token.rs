//! The token endpoint and userinfo.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::realm::require_realm;
use super::{AppError, no_store};
use crate::app::AppState;
use crate::config::ClientSettings;
use crate::oidc::authorize::{MAX_PARAMETER_LENGTH, parse_parameters};
use crate::oidc::clients::PresentedCredentials;
use crate::oidc::error::{OAuthError, OAuthErrorCode};
use crate::oidc::grants::{self, CodeExchange};
use crate::oidc::tokens::IssuedTokens;

/// Parses an `application/x-www-form-urlencoded` body, refusing repeats and oversized values.
pub(super) fn form(headers: &HeaderMap, body: &Bytes) -> Result<std::collections::HashMap<String, String>, AppError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(AppError::oauth(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded")));
    }
    let pairs = url::form_urlencoded::parse(body).into_owned().collect();
    parse_parameters(pairs).map_err(|message| AppError::oauth(OAuthError::invalid_request(message)))
}

fn token_response(issued: &IssuedTokens) -> Response {
    let mut body = json!({
        "access_token": issued.access_token,
        "expires_in": issued.expires_in,
        "refresh_expires_in": issued.refresh_expires_in,
        "refresh_token": issued.refresh_token,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "session_state": issued.session_id,
        "scope": issued.scope,
    });
    if let Some(id_token) = &issued.id_token {
        body["id_token"] = json!(id_token);
    }
    (StatusCode::OK, no_store(), Json(body)).into_response()
}

pub(super) type Form = std::collections::HashMap<String, String>;

/// The client credentials of a request, by `client_secret_basic` or `client_secret_post`.
fn presented_credentials(headers: &HeaderMap, params: &Form) -> Result<PresentedCredentials, AppError> {
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    PresentedCredentials::from_parts(authorization, get("client_id"), get("client_secret"))
        .map_err(|message| AppError::oauth(OAuthError::invalid_request(message)))
}

fn invalid_client(credentials: &PresentedCredentials) -> AppError {
    AppError::OAuth {
        status: StatusCode::UNAUTHORIZED,
        error: OAuthError::invalid_client(),
        basic_challenge: credentials.via_basic,
    }
}

/// Authenticates the calling client application.
pub(super) fn authenticate_client<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    params: &Form,
) -> Result<&'a ClientSettings, AppError> {
    let credentials = presented_credentials(headers, params)?;
    state.clients.authenticate(&credentials).ok_or_else(|| invalid_client(&credentials))
}

/// `grant_type=client_credentials`: a service account's short-lived token for the internal
/// API. Client applications have no service account, as in Keycloak by default.
fn client_credentials(state: &AppState, headers: &HeaderMap, params: &Form) -> Result<Response, AppError> {
    let credentials = presented_credentials(headers, params)?;
    let Some(account) = state.service_accounts.authenticate(&credentials) else {
        if state.clients.authenticate(&credentials).is_some() {
            return Err(AppError::oauth(OAuthError::new(
                OAuthErrorCode::UnauthorizedClient,
                "Client not enabled to retrieve service account",
            )));
        }
        return Err(invalid_client(&credentials));
    };
    let (access_token, expires_in) = state
        .tokens
        .issue_service_token(&account.client_id, &account.allowed_providers, state.clock.now())
        .map_err(|err| AppError::Internal(err.to_string()))?;
    let body = json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "tokens",
    });
    Ok((StatusCode::OK, no_store(), Json(body)).into_response())
}

/// A non-empty form parameter, or `invalid_request` naming it.
pub(super) fn required<'a>(params: &'a Form, name: &str) -> Result<&'a str, AppError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AppError::oauth(OAuthError::invalid_request(format!("Missing parameter: {name}"))))
}

/// The common start of every client-authenticated POST: realm, form body, client.
fn client_request<'a>(
    state: &'a AppState,
    realm: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Form, &'a ClientSettings), AppError> {
    require_realm(&state.realm, realm)?;
    let params = form(headers, body)?;
    let client = authenticate_client(state, headers, &params)?;
    Ok((params, client))
}

pub async fn token(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let params = form(&headers, &body)?;
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if get("grant_type") == Some("client_credentials") {
        return client_credentials(&state, &headers, &params);
    }
    let client = authenticate_client(&state, &headers, &params)?;
    let now = state.clock.now();
    match get("grant_type") {
        Some("authorization_code") => {
            let code = required(&params, "code")?;
            let exchange =
                CodeExchange { code, redirect_uri: get("redirect_uri"), code_verifier: get("code_verifier") };
            let issued = state.grants().exchange_authorization_code(client, &exchange, now).await?;
            Ok(token_response(&issued))
        }
        Some("refresh_token") => {
            let token = required(&params, "refresh_token")?;
            let issued = state.grants().refresh(client, token, now).await?;
            Ok(token_response(&issued))
        }
        Some(_) => {
            Err(AppError::oauth(OAuthError::new(OAuthErrorCode::UnsupportedGrantType, "Unsupported grant_type")))
        }
        None => Err(AppError::oauth(OAuthError::invalid_request("Missing form parameter: grant_type"))),
    }
}

/// The bearer token of a request: the `Authorization` header, or `access_token` in a form.
pub fn bearer(headers: &HeaderMap, body: &Bytes) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    url::form_urlencoded::parse(body).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned())
}

pub async fn userinfo(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let invalid = |description: &str| AppError::Bearer {
        error: OAuthErrorCode::InvalidToken,
        description: description.to_owned(),
    };
    let token = bearer(&headers, &body)
        .filter(|t| !t.is_empty() && t.len() <= 8 * MAX_PARAMETER_LENGTH)
        .ok_or_else(|| invalid("Token not provided"))?;
    let now = state.clock.now();
    let claims =
        state.grants().authenticate_bearer(&token, now).await?.ok_or_else(|| invalid("Token verification failed"))?;
    let user = state.store.find_user(&claims.sub).await?.ok_or_else(|| invalid("User not found"))?;
    let current = grants::user_claims(&user, &claims.user.identity_provider);
    let mut body = serde_json::to_value(&current).map_err(|err| AppError::Internal(err.to_string()))?;
    body["sub"] = json!(user.id);
    Ok((no_store(), Json(body)).into_response())
}

/// RFC 7662 introspection; inactive tokens answer 200 `{"active": false}`.
pub async fn introspect(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (params, _client) = client_request(&state, &realm, &headers, &body)?;
    let token = params.get("token").map(String::as_str).unwrap_or_default();
    let answer = state.grants().introspect(token, state.clock.now()).await?;
    Ok((no_store(), Json(answer.unwrap_or_else(|| json!({ "active": false })))).into_response())
}

/// RFC 7009 revocation of refresh tokens; answers 200 whether or not the token was known.
pub async fn revoke(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let (params, client) = client_request(&state, &realm, &headers, &body)?;
    let token = required(&params, "token")?;
    state.grants().revoke(client, token, state.clock.now()).await?;
    Ok(StatusCode::OK.into_response())
}
