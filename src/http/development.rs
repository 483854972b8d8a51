//! The development provider's endpoints (`start-dev` only), in Entra's layout: discovery, keys,
//! the sign-in page where anyone picks or types a user, and the token endpoint.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::error::no_store;
use super::pages::development_sign_in_page;
use super::params::{Dialect, Form, ParamError, Plain, Query};
use super::{AppState, CorrelationId, paths};
use crate::clock::Clock;
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

/// The provider, when it runs and the path's `{tenant}` is its own; Entra's answers otherwise,
/// before the rest of the request is read.
#[derive(Debug)]
struct Tenant(Arc<DevelopmentProvider>);

impl<S: Send + Sync> FromRequestParts<S> for Tenant
where
    Option<Arc<DevelopmentProvider>>: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(tenant) =
            Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let provider =
            Option::<Arc<DevelopmentProvider>>::from_ref(state).ok_or_else(|| StatusCode::NOT_FOUND.into_response())?;
        if DevelopmentProvider::serves_tenant(&tenant) {
            Ok(Tenant(provider))
        } else {
            Err(entra_answer(DevelopmentProvider::unknown_tenant(&tenant)))
        }
    }
}

/// The sign-in page's refusal of its parameters: the message alone, as HTML.
#[derive(Debug)]
struct HtmlMessage;

impl Dialect for HtmlMessage {
    type Rejection = (StatusCode, Html<String>);

    fn refuse(error: ParamError, _: &CorrelationId) -> Self::Rejection {
        (StatusCode::BAD_REQUEST, Html(error.to_string()))
    }
}

async fn discovery(Tenant(provider): Tenant) -> Response {
    Json(provider.discovery()).into_response()
}

async fn keys(Tenant(provider): Tenant) -> Response {
    Json(provider.jwks()).into_response()
}

/// An Entra error for a person: a page, never a redirect to an unchecked URI.
fn refused_page(err: &EntraError) -> Response {
    let page = development_sign_in_page(&[], &[], Some(&err.to_string()));
    (StatusCode::BAD_REQUEST, no_store(), page).into_response()
}

/// The sign-in page: the sample users, or any e-mail address.
async fn sign_in_page(Tenant(provider): Tenant, Query(params, _): Query<AuthorizeParams, HtmlMessage>) -> Response {
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
    Tenant(provider): Tenant,
    State(clock): State<Clock>,
    Form(form, _): Form<ApproveForm, HtmlMessage>,
) -> Response {
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
    match provider.approve(&params, user, clock.now()) {
        Ok(target) => (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response(),
        Err(err) => refused_page(&err),
    }
}

async fn token(
    Tenant(provider): Tenant,
    State(clock): State<Clock>,
    headers: HeaderMap,
    Form(form, _): Form<TokenForm, Plain>,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let basic = match authorization {
        Some(value) => match PresentedCredentials::from_parts(Some(value), None, None) {
            Ok(credentials) => credentials.client_id.zip(credentials.client_secret),
            Err(_) => None,
        },
        None => None,
    };
    match provider.token(form, basic, clock.now()) {
        Ok(answer) => (no_store(), Json(answer)).into_response(),
        Err(err) => entra_answer(err),
    }
}
