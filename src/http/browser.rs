//! The browser's path: the authorization endpoint, the provider hand-off and its callback.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::client_address::ClientAddress;
use super::pages::chooser_page;
use super::params::{Form, Page, Query};
use super::realm::{OwnRealm, require_realm};
use super::{About, AppError, AppState, Cookies, CorrelationId};
use crate::clock::Clock;
use crate::config::RealmSettings;
use crate::oidc::authorize::{self, AuthorizationParams, AuthorizeError};
use crate::oidc::clients::ClientRegistry;
use crate::signin::{CallbackParams, Completed, SignInService, Started, with_query};

/// What the browser's endpoints use.
#[derive(Debug, Clone)]
pub(crate) struct Browser {
    realm: Arc<RealmSettings>,
    clients: ClientRegistry,
    sign_in: Arc<SignInService>,
    about: Arc<About>,
    cookies: Arc<Cookies>,
    clock: Clock,
}

impl FromRef<AppState> for Browser {
    fn from_ref(state: &AppState) -> Self {
        Browser {
            realm: FromRef::from_ref(state),
            clients: FromRef::from_ref(state),
            sign_in: FromRef::from_ref(state),
            about: FromRef::from_ref(state),
            cookies: FromRef::from_ref(state),
            clock: FromRef::from_ref(state),
        }
    }
}

/// 302 Found, as Keycloak answers; the browser follows it with a GET.
pub(super) fn redirect_to(url: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, url.to_owned())]).into_response()
}

pub(crate) async fn authorize(
    _: OwnRealm,
    State(state): State<Browser>,
    Query(params, _): Query<AuthorizationParams, Page>,
    jar: CookieJar,
    correlation: CorrelationId,
    client: ClientAddress,
) -> Result<Response, AppError> {
    let request = match authorize::validate(&state.clients, params) {
        Ok(request) => request,
        Err(AuthorizeError::Page(message)) => {
            return Err(AppError::page(StatusCode::BAD_REQUEST, message, &correlation));
        }
        Err(AuthorizeError::Redirect { redirect_uri, state: client_state, error, description }) => {
            let url = with_query(
                &redirect_uri,
                &[
                    ("error", Some(error.as_str())),
                    ("error_description", Some(&description)),
                    ("state", client_state.as_deref()),
                    ("iss", Some(state.about.urls.issuer())),
                ],
            )
            .ok_or_else(|| AppError::page(StatusCode::BAD_REQUEST, "The redirect URI is not valid.", &correlation))?;
            return Ok(redirect_to(url.as_str()));
        }
    };
    let existing = jar.get(Cookies::PENDING_SIGN_IN).map(|c| c.value().to_owned());
    let session = jar.get(Cookies::SSO_SESSION).map(|c| c.value().to_owned());
    let now = state.clock.now();
    let started = state
        .sign_in
        .start(&request, &client.budget_key(), existing.as_deref(), session.as_deref(), now)
        .await
        .map_err(|err| AppError::sign_in(err, &correlation))?;
    let login_url = |request_id: &str, alias: &str| state.about.urls.broker_login(alias, request_id);
    let cookie = |secret: String| state.cookies.build(Cookies::PENDING_SIGN_IN, secret, state.cookies.login_max_age);
    Ok(match started {
        Started::ToClient(url) => redirect_to(url.as_str()),
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

#[derive(Debug, Deserialize)]
pub(crate) struct BrokerLoginParams {
    request: Option<String>,
}

pub(crate) async fn broker_login(
    _: OwnRealm,
    State(state): State<Browser>,
    Path((_, alias)): Path<(String, String)>,
    Query(params, _): Query<BrokerLoginParams, Page>,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    let request_id = params.request.ok_or_else(|| {
        AppError::page(
            StatusCode::BAD_REQUEST,
            "This link does not belong to a sign-in. Go back to the application and sign in again.",
            &correlation,
        )
    })?;
    let browser_secret = jar.get(Cookies::PENDING_SIGN_IN).map(|c| c.value().to_owned());
    let session = jar.get(Cookies::SSO_SESSION).map(|c| c.value().to_owned());
    let url = state
        .sign_in
        .begin_upstream(&alias, &request_id, browser_secret.as_deref(), session.as_deref(), state.clock.now())
        .await
        .map_err(|err| AppError::sign_in(err, &correlation))?;
    Ok(redirect_to(url.as_str()))
}

/// The provider's answer; its parameters are read before the realm is checked.
pub(crate) async fn broker_endpoint_query(
    state: State<Browser>,
    path: Path<(String, String)>,
    Query(params, _): Query<CallbackParams, Page>,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    broker_endpoint(state, path, params, jar, correlation).await
}

/// Entra's `form_post` response mode.
pub(crate) async fn broker_endpoint_form(
    state: State<Browser>,
    path: Path<(String, String)>,
    jar: CookieJar,
    correlation: CorrelationId,
    Form(params, _): Form<CallbackParams, Page>,
) -> Result<Response, AppError> {
    broker_endpoint(state, path, params, jar, correlation).await
}

async fn broker_endpoint(
    State(state): State<Browser>,
    Path((realm, alias)): Path<(String, String)>,
    params: CallbackParams,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let browser_secret = jar.get(Cookies::PENDING_SIGN_IN).map(|c| c.value().to_owned());
    let completed = state
        .sign_in
        .complete(&alias, params, browser_secret.as_deref(), state.clock.now())
        .await
        .map_err(|err| AppError::sign_in(err, &correlation))?;
    Ok(match completed {
        Completed::SignedIn { client_redirect, session_secret } => {
            let session = state.cookies.build(Cookies::SSO_SESSION, session_secret, state.cookies.session_max_age);
            (jar.add(session), redirect_to(client_redirect.as_str())).into_response()
        }
        Completed::ToClient(url) => redirect_to(url.as_str()),
    })
}
