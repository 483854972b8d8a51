//! The browser's path: the authorization endpoint, the provider hand-off and its callback.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;

use super::realm::require_realm;
use super::{AppError, CorrelationId, chooser_page};
use crate::app::{AppState, Cookies};
use crate::oidc::authorize::{self, AuthorizeError};
use crate::signin::{CallbackParams, SignInError, Started, with_query};

/// 302 Found, as Keycloak answers; the browser follows it with a GET.
fn redirect_to(url: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, url.to_owned())]).into_response()
}

pub async fn authorize(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    RawQuery(query): RawQuery,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let params =
        authorize::parse_query(query.as_deref()).map_err(|message| AppError::page(400, message, &correlation))?;
    let request = match authorize::validate(&state.clients, &params) {
        Ok(request) => request,
        Err(AuthorizeError::Page(message)) => return Err(AppError::page(400, message, &correlation)),
        Err(AuthorizeError::Redirect { redirect_uri, state: client_state, error, description }) => {
            let url = with_query(
                &redirect_uri,
                &[
                    ("error", Some(error)),
                    ("error_description", Some(&description)),
                    ("state", client_state.as_deref()),
                ],
            )
            .ok_or_else(|| AppError::page(400, "The redirect URI is not valid.", &correlation))?;
            return Ok(redirect_to(url.as_str()));
        }
    };
    let existing = jar.get(Cookies::PENDING_SIGN_IN).map(|c| c.value().to_owned());
    let session = jar.get(Cookies::SSO_SESSION).map(|c| c.value().to_owned());
    let now = state.clock.now();
    let started = match state.sign_in.start(&request, existing.as_deref(), session.as_deref(), now).await {
        Ok(started) => started,
        Err(SignInError::ToClient(url)) => return Ok(redirect_to(url.as_str())),
        Err(err) => return Err(AppError::from_sign_in(err, &correlation)),
    };
    let login_url = |request_id: &str, alias: &str| {
        let query: String =
            url::form_urlencoded::Serializer::new(String::new()).append_pair("request", request_id).finish();
        format!("/realms/{}/broker/{alias}/login?{query}", state.realm.name)
    };
    let cookie = |secret: String| state.cookies.build(Cookies::PENDING_SIGN_IN, secret, state.cookies.login_max_age);
    Ok(match started {
        Started::SignedIn(url) => redirect_to(url.as_str()),
        Started::Provider { request_id, browser_secret, alias } => {
            (jar.add(cookie(browser_secret)), redirect_to(&login_url(&request_id, &alias))).into_response()
        }
        Started::Choose { request_id, browser_secret } => {
            let buttons: Vec<(String, String)> = state
                .sign_in
                .upstream
                .providers()
                .map(|p| (login_url(&request_id, &p.alias), p.display_name.clone()))
                .collect();
            (jar.add(cookie(browser_secret)), chooser_page(&buttons)).into_response()
        }
    })
}

pub async fn broker_login(
    State(state): State<AppState>,
    Path((realm, alias)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let request_id = query.get("request").ok_or_else(|| {
        AppError::page(
            400,
            "This link does not belong to a sign-in. Go back to the application and sign in again.",
            &correlation,
        )
    })?;
    let browser_secret = jar.get(Cookies::PENDING_SIGN_IN).map(|c| c.value().to_owned());
    let url = state
        .sign_in
        .begin_upstream(&alias, request_id, browser_secret.as_deref(), state.clock.now())
        .await
        .map_err(|err| AppError::from_sign_in(err, &correlation))?;
    Ok(redirect_to(url.as_str()))
}

pub async fn broker_endpoint_query(
    state: State<AppState>,
    path: Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    broker_endpoint(state, path, params, jar, correlation).await
}

/// Entra's `form_post` response mode.
pub async fn broker_endpoint_form(
    state: State<AppState>,
    path: Path<(String, String)>,
    jar: CookieJar,
    correlation: CorrelationId,
    Form(params): Form<HashMap<String, String>>,
) -> Result<Response, AppError> {
    broker_endpoint(state, path, params, jar, correlation).await
}

async fn broker_endpoint(
    State(state): State<AppState>,
    Path((realm, alias)): Path<(String, String)>,
    params: HashMap<String, String>,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let browser_secret = jar.get(Cookies::PENDING_SIGN_IN).map(|c| c.value().to_owned());
    let params = CallbackParams::from_map(params);
    match state.sign_in.complete(&alias, params, browser_secret.as_deref(), state.clock.now()).await {
        Ok(done) => {
            let session = state.cookies.build(Cookies::SSO_SESSION, done.session_secret, state.cookies.session_max_age);
            Ok((jar.add(session), redirect_to(done.client_redirect.as_str())).into_response())
        }
        Err(SignInError::ToClient(url)) => Ok(redirect_to(url.as_str())),
        Err(err) => Err(AppError::from_sign_in(err, &correlation)),
    }
}
