//! Logout: the back-channel form OpenHands posts (client authentication and a refresh token,
//! 204) and RP-initiated logout from a browser (`id_token_hint`, `post_logout_redirect_uri`,
//! `state`).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;

use super::realm::require_realm;
use super::token::{Form, authenticate_client, form, required};
use super::{AppError, CorrelationId, no_store, page};
use crate::app::{AppState, Cookies};
use crate::crypto::token_hash;
use crate::oidc::authorize::parse_query;
use crate::signin::with_query;
use crate::store::AuditEvent;

pub async fn logout_post(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    jar: CookieJar,
    correlation: CorrelationId,
    body: Bytes,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let params = form(&headers, &body)?;
    if params.contains_key("refresh_token") {
        // Back-channel: the client ends the session of a refresh token it holds.
        let client = authenticate_client(&state, &headers, &params)?;
        let token = required(&params, "refresh_token")?;
        state.grants().logout(client, token, state.clock.now()).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    browser_logout(&state, &params, jar, &correlation).await
}

pub async fn logout_get(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    RawQuery(query): RawQuery,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let params = parse_query(query.as_deref()).map_err(|message| AppError::page(400, message, &correlation))?;
    browser_logout(&state, &params, jar, &correlation).await
}

/// RP-initiated logout. The redirect target must be registered for the client exactly, or
/// the user gets a page and no redirect. Without an `id_token_hint` another site could have
/// sent the browser here, so the user confirms first.
async fn browser_logout(
    state: &AppState,
    params: &Form,
    jar: CookieJar,
    correlation: &CorrelationId,
) -> Result<Response, AppError> {
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let refuse = |message: &str| AppError::page(400, message, correlation);
    let hint = match get("id_token_hint") {
        Some(token) => Some(
            state
                .tokens
                .verify_id_token_hint(token)
                .map_err(|_| refuse("The id_token_hint of this logout is not valid."))?,
        ),
        None => None,
    };
    let client_id = match (hint.as_ref().map(|claims| claims.aud.as_str()), get("client_id")) {
        (Some(hinted), Some(named)) if hinted != named => {
            return Err(refuse("The id_token_hint was issued to another application than client_id names."));
        }
        (hinted, named) => hinted.or(named),
    };
    let client = match client_id {
        Some(id) => Some(state.clients.find(id).ok_or_else(|| refuse("The application is not registered."))?),
        None => None,
    };
    let redirect = match get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let client = client.ok_or_else(|| refuse("post_logout_redirect_uri needs client_id or id_token_hint."))?;
            if !client.post_logout_redirect_uris.iter().any(|registered| registered == uri) {
                return Err(refuse("The post_logout_redirect_uri is not registered for this application."));
            }
            Some(uri)
        }
    };
    if hint.is_none() && get("confirm") != Some("yes") {
        return Ok((no_store(), confirmation_page(&state.realm.name, params)).into_response());
    }

    let now = state.clock.now();
    let mut ended = Vec::new();
    if let Some(claims) = &hint
        && let Some(session) = state.store.find_session(&claims.sid).await?
        && !session.offline
    {
        ended.push(session);
    }
    if let Some(cookie) = jar.get(Cookies::SSO_SESSION)
        && let Some(session) = state.store.find_session_by_cookie(&token_hash(cookie.value())).await?
    {
        ended.push(session);
    }
    for session in &ended {
        state.store.end_session(&session.id, now).await?;
        state
            .store
            .record_audit(&AuditEvent {
                at: now,
                kind: "logout".into(),
                outcome: "success".into(),
                user_id: Some(session.user_id.clone()),
                client_id: client_id.map(str::to_owned),
                alias: Some(session.identity_provider.clone()),
                detail: serde_json::json!({ "session_id": session.id, "initiated_by": "browser" }).to_string(),
            })
            .await?;
    }
    let jar = jar.add(state.cookies.removal(Cookies::SSO_SESSION));
    Ok(match redirect {
        Some(uri) => {
            let target = with_query(uri, &[("state", get("state"))])
                .ok_or_else(|| refuse("The post_logout_redirect_uri is not a valid URL."))?;
            (StatusCode::FOUND, jar, [(header::LOCATION, target.to_string())]).into_response()
        }
        None => (jar, no_store(), page("Signed out", "<h1>You are signed out</h1>")).into_response(),
    })
}

/// Asks the user to confirm, posting the same parameters back with `confirm=yes`.
fn confirmation_page(realm: &str, params: &Form) -> axum::response::Html<String> {
    let hidden: String = ["client_id", "post_logout_redirect_uri", "state"]
        .iter()
        .filter_map(|name| params.get(*name).map(|value| (name, value)))
        .map(|(name, value)| {
            format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                html_escape::encode_double_quoted_attribute(value)
            )
        })
        .collect();
    page(
        "Sign out",
        &format!(
            "<h1>Sign out?</h1><form method=\"post\" action=\"/realms/{}/protocol/openid-connect/logout\">{hidden}\
             <input type=\"hidden\" name=\"confirm\" value=\"yes\"><button type=\"submit\">Sign out</button></form>",
            html_escape::encode_double_quoted_attribute(realm)
        ),
    )
}
