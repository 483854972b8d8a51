//! Logout: a client's back-channel form, the administrator's (master realm), and RP-initiated logout.

use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::client_address::ClientAddress;
use super::error::no_store;
use super::pages::{logout_confirmation_page, signed_out_page};
use super::params::{Form, OAuth, Page, Query};
use super::realm::{OwnRealm, TokenRealm};
use super::token::authenticate_client;
use super::{About, AppError, AppState, Cookies, CorrelationId, paths};
use crate::clock::Clock;
use crate::oidc::admin::AdminRequest;
use crate::oidc::clients::ClientRegistry;
use crate::oidc::grants::Grants;
use crate::oidc::sessions::{Ending, confirms_logout, logout_confirmation_code};
use crate::signin::with_query;
use crate::urls::Urls;

/// What the logout endpoint uses.
#[derive(Debug, Clone)]
pub(crate) struct LogoutEndpoint {
    clients: ClientRegistry,
    grants: Grants,
    cookies: Arc<Cookies>,
    about: Arc<About>,
    clock: Clock,
}

impl FromRef<AppState> for LogoutEndpoint {
    fn from_ref(state: &AppState) -> Self {
        LogoutEndpoint {
            clients: FromRef::from_ref(state),
            grants: FromRef::from_ref(state),
            cookies: FromRef::from_ref(state),
            about: FromRef::from_ref(state),
            clock: FromRef::from_ref(state),
        }
    }
}

/// The confirmation form's field carrying the browser's confirmation code (Keycloak's name).
const CONFIRMATION_CODE: &str = "session_code";

/// RP-initiated logout's parameters (GET query or POST form), and the back-channel form's.
#[derive(Default, Deserialize)]
pub(crate) struct LogoutParams {
    id_token_hint: Option<String>,
    client_id: Option<String>,
    /// The back-channel form: a confidential client's `client_secret_post`.
    client_secret: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    /// `yes` once the user confirmed on our page; counts only in a POST with the right code.
    confirm: Option<String>,
    /// The confirmation code our page gave this browser.
    session_code: Option<String>,
    /// The back-channel form: present means the client ends this token's session.
    refresh_token: Option<String>,
}

debug_showing!(LogoutParams { client_id, post_logout_redirect_uri, confirm });

/// A POST: the master realm's `admin-cli`, a client's back-channel form, or the browser's
/// confirmation. The form is OAuth's whoever sends it, so its refusals are too.
pub(crate) async fn logout_post(
    realm: TokenRealm,
    State(state): State<LogoutEndpoint>,
    client: ClientAddress,
    headers: HeaderMap,
    jar: CookieJar,
    correlation: CorrelationId,
    Form(params, _): Form<LogoutParams, OAuth>,
) -> Result<Response, AppError> {
    let now = state.clock.now();
    if let TokenRealm::Master(admin) = realm {
        let client = client.budget_key();
        let request = AdminRequest { store: &state.grants.store, tokens: &state.grants.tokens, client: &client, now };
        let (client_id, token) = (params.client_id.as_deref(), params.refresh_token.as_deref());
        return super::admin::master_logout(&admin, request, client_id, token).await;
    }
    if let Some(token) = params.refresh_token.as_deref() {
        // Back-channel: the client ends the session of a refresh token it holds.
        let (client_id, secret) = (params.client_id.as_deref(), params.client_secret.as_deref());
        let client = authenticate_client(&state.clients, &headers, client_id, secret)?;
        state.grants.logout(client, token, now).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    browser_logout(&state, params, Method::Post, jar, &correlation).await
}

pub(crate) async fn logout_get(
    _: OwnRealm,
    State(state): State<LogoutEndpoint>,
    Query(params, _): Query<LogoutParams, Page>,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    browser_logout(&state, params, Method::Get, jar, &correlation).await
}

/// How the browser came: a top-level GET carries the Lax cookie from any site, so it never
/// confirms anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// What a browser's logout request may know about whose session it ends.
#[derive(Debug, Clone, Copy)]
struct LogoutFacts<'a> {
    method: Method,
    /// `confirm=yes`.
    confirm: bool,
    /// The confirmation code sent with it.
    code: Option<&'a str>,
    /// The session a valid `id_token_hint` names.
    hinted_session: Option<&'a str>,
    /// The SSO cookie's value, and its session's id when it has one.
    cookie: Option<&'a str>,
    own_session: Option<&'a str>,
}

/// What a browser's logout request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Ends the browser's own session and goes on to the client or the signed-out page.
    End,
    /// Shows the confirmation page.
    Ask,
    /// Shows it again, saying the confirmation did not come from it.
    AskAgain,
}

/// Another site can send the browser here with its cookie, but cannot read the confirmation
/// code, nor hold an ID token of the browser's own session: only those end it unasked. A hint
/// naming another session ends nothing (whoever sends it may hold someone else's ID token).
/// Without a cookie nothing can be ended, so a confirmation needs no code.
fn verdict(facts: LogoutFacts<'_>) -> Verdict {
    if facts.hinted_session.is_some() && facts.hinted_session == facts.own_session {
        return Verdict::End;
    }
    if facts.method != Method::Post || !facts.confirm {
        return Verdict::Ask;
    }
    match facts.cookie {
        None => Verdict::End,
        Some(cookie) if confirms_logout(cookie, facts.code.unwrap_or_default()) => Verdict::End,
        Some(_) => Verdict::AskAgain,
    }
}

/// RP-initiated logout. The redirect target must be registered for the client exactly, or
/// the user gets a page and no redirect; the browser's session ends as [`verdict`] says.
async fn browser_logout(
    state: &LogoutEndpoint,
    params: LogoutParams,
    method: Method,
    jar: CookieJar,
    correlation: &CorrelationId,
) -> Result<Response, AppError> {
    let refuse = |message: &str| AppError::page(StatusCode::BAD_REQUEST, message, correlation);
    let hint = match params.id_token_hint.as_deref() {
        Some(token) => Some(
            state
                .grants
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

    let now = state.clock.now();
    let cookie = jar.get(Cookies::SSO_SESSION).map(|cookie| cookie.value().to_owned());
    let own = match cookie.as_deref() {
        Some(cookie) => state.grants.sessions.by_cookie(cookie).await?,
        None => None,
    };
    let facts = LogoutFacts {
        method,
        confirm: params.confirm.as_deref() == Some("yes"),
        code: params.session_code.as_deref(),
        hinted_session: hint.as_ref().map(|claims| claims.sid.as_str()),
        cookie: cookie.as_deref(),
        own_session: own.as_ref().map(|session| session.id.as_str()),
    };
    let ask = |status: StatusCode, notice: Option<&str>| {
        let page = confirmation_page(&state.about.urls, client_id, &params, cookie.as_deref(), notice);
        Ok((status, no_store(), page).into_response())
    };
    match verdict(facts) {
        Verdict::Ask => return ask(StatusCode::OK, None),
        Verdict::AskAgain => {
            let notice =
                "This sign-out was not confirmed on this page, so nothing was ended. Sign out here if you meant to.";
            return ask(StatusCode::BAD_REQUEST, Some(notice));
        }
        Verdict::End => {}
    }

    if let Some(session) = own.filter(|session| state.grants.sessions.is_live(session, now)) {
        state.grants.sessions.end(&session, Ending::BrowserLogout, client_id, now).await?;
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

/// Asks the user to confirm, posting the request back with `confirm=yes` and, when the browser
/// has an SSO cookie, its confirmation code. The client is named by id even when an
/// `id_token_hint` named it, so that the redirect is still checked on the way back.
fn confirmation_page(
    urls: &Urls,
    client_id: Option<&str>,
    params: &LogoutParams,
    cookie: Option<&str>,
    notice: Option<&str>,
) -> axum::response::Html<String> {
    let code = cookie.map(logout_confirmation_code);
    let hidden: Vec<(&str, &str)> = [
        ("client_id", client_id),
        ("post_logout_redirect_uri", params.post_logout_redirect_uri.as_deref()),
        ("state", params.state.as_deref()),
        (CONFIRMATION_CODE, code.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name, value)))
    .collect();
    logout_confirmation_page(&urls.path(paths::LOGOUT), &hidden, notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_browsers_own_hint_or_its_own_confirmation_ends_its_session() {
        let cookie = "cookie-secret";
        let code = logout_confirmation_code(cookie);
        let own = LogoutFacts {
            method: Method::Get,
            confirm: false,
            code: None,
            hinted_session: None,
            cookie: Some(cookie),
            own_session: Some("s-own"),
        };
        let post = LogoutFacts { method: Method::Post, confirm: true, ..own };

        let cases = [
            (own, Verdict::Ask, "no hint, no confirmation"),
            (LogoutFacts { confirm: true, code: Some(&code), ..own }, Verdict::Ask, "a GET never confirms"),
            (LogoutFacts { hinted_session: Some("s-own"), ..own }, Verdict::End, "the browser's own hint"),
            (LogoutFacts { hinted_session: Some("s-other"), ..own }, Verdict::Ask, "another session's hint"),
            (LogoutFacts { code: Some(&code), ..post }, Verdict::End, "the right code"),
            (post, Verdict::AskAgain, "a POST without a code"),
            (LogoutFacts { code: Some("forged"), ..post }, Verdict::AskAgain, "a wrong code"),
            (LogoutFacts { code: Some(&code), confirm: false, ..post }, Verdict::Ask, "a code without confirm=yes"),
            (LogoutFacts { cookie: None, own_session: None, ..post }, Verdict::End, "nothing to end: no code needed"),
            (
                LogoutFacts { cookie: None, own_session: None, hinted_session: Some("s-other"), ..own },
                Verdict::Ask,
                "a hint without a browser session",
            ),
        ];
        for (facts, expected, why) in cases {
            assert_eq!(verdict(facts), expected, "{why}");
        }
    }
}
