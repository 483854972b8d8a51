//! The development provider's endpoints (`start-dev` only), in Entra's layout: discovery, keys,
//! the sign-in page where anyone picks or types a user, and the token endpoint.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::error::no_store;
use super::pages::development_sign_in_page;
use super::params::{parse_form, parse_query};
use super::{AppState, paths};
use crate::oidc::clients::PresentedCredentials;
use crate::upstream::development::{
    AuthorizeParams, DevUser, DevelopmentProvider, EntraError, SAMPLE_USERS, TokenForm,
};

/// The routes, for the public router when the provider runs.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route(paths::DEV_DISCOVERY, get(discovery))
        .route(paths::DEV_JWKS, get(keys))
        .route(paths::DEV_AUTHORIZE, get(sign_in_page).post(approve))
        .route(paths::DEV_TOKEN, axum::routing::post(token))
}

fn entra_answer(err: EntraError) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, no_store(), Json(err)).into_response()
}

/// The provider when it runs and `tenant` is its own; Entra's answers otherwise.
fn provider(state: &AppState, tenant: &str) -> Result<Arc<DevelopmentProvider>, Box<Response>> {
    let provider = state.development.clone().ok_or_else(|| Box::new(StatusCode::NOT_FOUND.into_response()))?;
    if DevelopmentProvider::serves_tenant(tenant) {
        Ok(provider)
    } else {
        Err(Box::new(entra_answer(DevelopmentProvider::unknown_tenant(tenant))))
    }
}

async fn discovery(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    match provider(&state, &tenant) {
        Ok(provider) => Json(provider.discovery()).into_response(),
        Err(answer) => *answer,
    }
}

async fn keys(State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    match provider(&state, &tenant) {
        Ok(provider) => Json(provider.jwks()).into_response(),
        Err(answer) => *answer,
    }
}

/// An Entra error for a person: a page, never a redirect to an unchecked URI.
fn refused_page(err: &EntraError) -> Response {
    let page = development_sign_in_page(&[], &[], Some(&err.to_string()));
    (StatusCode::BAD_REQUEST, no_store(), page).into_response()
}

/// The sign-in page: the sample users, or any e-mail address.
async fn sign_in_page(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let provider = match provider(&state, &tenant) {
        Ok(provider) => provider,
        Err(answer) => return *answer,
    };
    let params: AuthorizeParams = match parse_query(query.as_deref()) {
        Ok(params) => params,
        Err(err) => return (StatusCode::BAD_REQUEST, Html(err.to_string())).into_response(),
    };
    if let Err(err) = provider.check_authorize(&params) {
        return refused_page(&err);
    }
    let hidden = hidden_fields(&params);
    let hidden: Vec<(&str, &str)> = hidden.iter().map(|(name, value)| (*name, value.as_str())).collect();
    (no_store(), development_sign_in_page(&hidden, &SAMPLE_USERS, None)).into_response()
}

/// The authorize parameters carried through the page's forms.
fn hidden_fields(params: &AuthorizeParams) -> Vec<(&'static str, String)> {
    [
        ("client_id", &params.client_id),
        ("redirect_uri", &params.redirect_uri),
        ("response_type", &params.response_type),
        ("response_mode", &params.response_mode),
        ("scope", &params.scope),
        ("state", &params.state),
        ("nonce", &params.nonce),
        ("code_challenge", &params.code_challenge),
        ("code_challenge_method", &params.code_challenge_method),
        ("login_hint", &params.login_hint),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.clone().map(|value| (name, value)))
    .collect()
}

/// The page's form: the authorize request again, and who signs in.
#[derive(Debug, Deserialize)]
struct ApproveForm {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    response_mode: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: Option<String>,
    login_email: Option<String>,
    login_name: Option<String>,
}

async fn approve(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let provider = match provider(&state, &tenant) {
        Ok(provider) => provider,
        Err(answer) => return *answer,
    };
    let form: ApproveForm = match parse_form(&headers, &body) {
        Ok(form) => form,
        Err(err) => return (StatusCode::BAD_REQUEST, Html(err.to_string())).into_response(),
    };
    let user = form.login_email.as_deref().and_then(|email| DevUser::from_form(email, form.login_name.as_deref()));
    let params = AuthorizeParams {
        client_id: form.client_id,
        redirect_uri: form.redirect_uri,
        response_type: form.response_type,
        response_mode: form.response_mode,
        scope: form.scope,
        state: form.state,
        nonce: form.nonce,
        code_challenge: form.code_challenge,
        code_challenge_method: form.code_challenge_method,
        login_hint: form.login_hint,
        prompt: None,
    };
    let Some(user) = user else {
        if let Err(err) = provider.check_authorize(&params) {
            return refused_page(&err);
        }
        let hidden = hidden_fields(&params);
        let hidden: Vec<(&str, &str)> = hidden.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let page =
            development_sign_in_page(&hidden, &SAMPLE_USERS, Some("Type an e-mail address such as dana@example.test."));
        return (StatusCode::BAD_REQUEST, no_store(), page).into_response();
    };
    tracing::warn!(email = %user.email, "DEVELOPMENT PROVIDER: signed in without any check of who this is");
    match provider.approve(&params, user, state.clock.now()) {
        Ok(target) => (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response(),
        Err(err) => refused_page(&err),
    }
}

async fn token(State(state): State<AppState>, Path(tenant): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let provider = match provider(&state, &tenant) {
        Ok(provider) => provider,
        Err(answer) => return *answer,
    };
    let form: TokenForm = match parse_form(&headers, &body) {
        Ok(form) => form,
        Err(err) => return (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let basic = match authorization {
        Some(value) => match PresentedCredentials::from_parts(Some(value), None, None) {
            Ok(credentials) => credentials.client_id.zip(credentials.client_secret),
            Err(_) => None,
        },
        None => None,
    };
    match provider.token(form, basic, state.clock.now()) {
        Ok(answer) => (no_store(), Json(answer)).into_response(),
        Err(err) => entra_answer(err),
    }
}
