//! Logout: the back-channel form OpenHands posts (client authentication and a refresh token,
//! 204) and RP-initiated logout from a browser (`id_token_hint`, `post_logout_redirect_uri`,
//! `state`).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::error::no_store;
use super::pages::{logout_confirmation_page, signed_out_page};
use super::params::{ParamError, parse_form, parse_query};
use super::realm::require_realm;
use super::token::client_request;
use super::{AppError, AppState, Cookies, CorrelationId, paths};
use crate::oidc::sessions::Ending;
use crate::signin::with_query;

/// RP-initiated logout's parameters (GET query or POST form).
#[derive(Default, Deserialize)]
pub(crate) struct LogoutParams {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    /// `yes` once the user confirmed on our page.
    confirm: Option<String>,
    /// The back-channel form: present means the client ends this token's session.
    refresh_token: Option<String>,
}

debug_showing!(LogoutParams { client_id, post_logout_redirect_uri, confirm });

fn bad_parameters(err: ParamError, correlation: &CorrelationId) -> AppError {
    AppError::page(StatusCode::BAD_REQUEST, err.to_string(), correlation)
}

pub(crate) async fn logout_post(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    correlation: CorrelationId,
    body: Bytes,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let params: LogoutParams = parse_form(&headers, &body)
        .map_err(|err| AppError::oauth(crate::oidc::error::OAuthError::invalid_request(err.to_string())))?;
    if params.refresh_token.is_some() {
        // Back-channel: the client ends the session of a refresh token it holds.
        let (form, client) = client_request(&state, &realm, &headers, &body)?;
        let token = form.refresh_token.as_deref().unwrap_or_default();
        state.grants().logout(client, token, state.clock.now()).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    browser_logout(&state, params, jar, &correlation).await
}

pub(crate) async fn logout_get(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    RawQuery(query): RawQuery,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let params = parse_query(query.as_deref()).map_err(|err| bad_parameters(err, &correlation))?;
    browser_logout(&state, params, jar, &correlation).await
}

/// RP-initiated logout. The redirect target must be registered for the client exactly, or
/// the user gets a page and no redirect. Without an `id_token_hint` another site could have
/// sent the browser here, so the user confirms first.
async fn browser_logout(
    state: &AppState,
    params: LogoutParams,
    jar: CookieJar,
    correlation: &CorrelationId,
) -> Result<Response, AppError> {
    let refuse = |message: &str| AppError::page(StatusCode::BAD_REQUEST, message, correlation);
    let hint = match params.id_token_hint.as_deref() {
        Some(token) => Some(
            state
                .tokens
                .verify_id_token_hint(token)
                .map_err(|_| refuse("The id_token_hint of this logout is not valid."))?,
        ),
        None => None,
    };
    let client_id = match (hint.as_ref().map(|claims| claims.aud.as_str()), params.client_id.as_deref()) {
        (Some(hinted), Some(named)) if hinted != named => {
            return Err(refuse("The id_token_hint was issued to another application than client_id names."));
        }
        (hinted, named) => hinted.or(named),
    };
    let client = match client_id {
        Some(id) => Some(state.clients.find(id).ok_or_else(|| refuse("The application is not registered."))?),
        None => None,
    };
    let redirect = match params.post_logout_redirect_uri.as_deref() {
        None => None,
        Some(uri) => {
            let client = client.ok_or_else(|| refuse("post_logout_redirect_uri needs client_id or id_token_hint."))?;
            if !client.post_logout_redirect_uris.iter().any(|registered| registered == uri) {
                return Err(refuse("The post_logout_redirect_uri is not registered for this application."));
            }
            Some(uri)
        }
    };
    if hint.is_none() && params.confirm.as_deref() != Some("yes") {
        return Ok((no_store(), confirmation_page(&state.realm.name, &params)).into_response());
    }

    let now = state.clock.now();
    let mut ended = Vec::new();
    if let Some(claims) = &hint
        && let Some(session) = state.sessions.find(&claims.sid).await?
        && !session.offline
    {
        ended.push(session);
    }
    if let Some(cookie) = jar.get(Cookies::SSO_SESSION)
        && let Some(session) = state.sessions.by_cookie(cookie.value()).await?
    {
        ended.push(session);
    }
    for session in &ended {
        state.sessions.end(session, Ending::BrowserLogout, client_id, now).await?;
    }
    let jar = jar.add(state.cookies.removal(Cookies::SSO_SESSION));
    Ok(match redirect {
        Some(uri) => {
            let target = with_query(uri, &[("state", params.state.as_deref())])
                .ok_or_else(|| refuse("The post_logout_redirect_uri is not a valid URL."))?;
            (StatusCode::FOUND, jar, [(header::LOCATION, target.to_string())]).into_response()
        }
        None => (jar, no_store(), signed_out_page()).into_response(),
    })
}

/// Asks the user to confirm, posting the same parameters back with `confirm=yes`.
fn confirmation_page(realm: &str, params: &LogoutParams) -> axum::response::Html<String> {
    let hidden: Vec<(&str, &str)> = [
        ("client_id", params.client_id.as_deref()),
        ("post_logout_redirect_uri", params.post_logout_redirect_uri.as_deref()),
        ("state", params.state.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name, value)))
    .collect();
    logout_confirmation_page(&paths::LOGOUT.replace("{realm}", realm), &hidden)
}
