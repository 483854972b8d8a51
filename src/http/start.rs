//! The start page at `/`, and in start-dev its "try a sign-in" demonstration under `/demo/`.
//! In production the demonstration's routes answer 404, as any unknown path does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;

use super::browser::redirect_to;
use super::error::no_store;
use super::pages::{self, ProviderView, StartView};
use super::params::{ParamError, Plain, Query};
use super::{About, AppError, AppState, Cookies, CorrelationId, Health, paths};
use crate::clock::Clock;
use crate::config::Mode;
use crate::demo::{self, DemoAnswer, DemoClient};
use crate::oidc::clients::ClientRegistry;
use crate::oidc::grants::Grants;
use crate::signin::SignInService;
use crate::urls::management_url;
use crate::vault::TokenVault;

/// What the start page and its demonstration use.
#[derive(Debug, Clone)]
pub(crate) struct StartPage {
    about: Arc<About>,
    health: Arc<Health>,
    sign_in: Arc<SignInService>,
    demo: Option<Arc<DemoClient>>,
    cookies: Arc<Cookies>,
    clients: ClientRegistry,
    grants: Grants,
    vault: TokenVault,
    clock: Clock,
}

impl FromRef<AppState> for StartPage {
    fn from_ref(state: &AppState) -> Self {
        StartPage {
            about: FromRef::from_ref(state),
            health: FromRef::from_ref(state),
            sign_in: FromRef::from_ref(state),
            demo: FromRef::from_ref(state),
            cookies: FromRef::from_ref(state),
            clients: FromRef::from_ref(state),
            grants: FromRef::from_ref(state),
            vault: FromRef::from_ref(state),
            clock: FromRef::from_ref(state),
        }
    }
}

pub(crate) async fn start_page(State(state): State<StartPage>) -> Response {
    let database_up = state.health.database.load(Ordering::SeqCst);
    let urls = &state.about.urls;
    let providers: Vec<ProviderView<'_>> = state
        .sign_in
        .upstream
        .providers()
        .map(|provider| ProviderView {
            display_name: &provider.display_name,
            alias: &provider.alias,
            redirect_uri: urls.broker_endpoint(&provider.alias),
        })
        .collect();
    let view = StartView {
        version: env!("CARGO_PKG_VERSION"),
        development: state.about.mode == Mode::Development,
        database: state.grants.store.kind(),
        database_up,
        issuer: urls.issuer(),
        discovery_url: urls.discovery(),
        health_url: management_url(state.about.management_addr, paths::HEALTH),
        // Without a provider nobody can sign in, and the page says so instead.
        demo_start: state.demo.as_ref().filter(|_| !providers.is_empty()).map(|_| demo_start_url(&state)),
        providers,
    };
    (no_store(), pages::start_page(&view)).into_response()
}

/// Absolute, so that the cookie is set on the host the callback (a registered redirect URI on
/// the public URL) comes back to, whichever address the start page was opened at.
fn demo_start_url(state: &StartPage) -> String {
    state.about.urls.public(paths::DEMO_START)
}

pub(crate) async fn demo_start(
    State(state): State<StartPage>,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    let Some(demo) = &state.demo else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let aliases: Vec<&str> = state.sign_in.upstream.providers().map(|p| p.alias.as_str()).collect();
    let invalid = "The authorization endpoint's URL is not valid.";
    let started =
        demo.begin(&aliases).map_err(|_| AppError::page(StatusCode::INTERNAL_SERVER_ERROR, invalid, &correlation))?;
    let cookie = state.cookies.demo(started.cookie);
    Ok((jar.add(cookie), redirect_to(started.authorization_url.as_str())).into_response())
}

/// The broker's answer to the demonstration; a refused query stops it like any failure, and
/// forgets its cookie too.
pub(crate) async fn demo_callback(
    State(state): State<StartPage>,
    answer: Result<Query<DemoAnswer, Plain>, ParamError>,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    let Some(demo) = &state.demo else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let cookie = jar.get(Cookies::DEMO_SIGN_IN).map(|c| c.value().to_owned());
    // One answer per sign-in: the state and verifier are forgotten whatever this one says.
    let jar = jar.add(state.cookies.demo_removal());
    let answer = match answer {
        Ok(Query(answer, _)) => answer,
        Err(err) => return Ok(stopped(jar, &err.to_string(), &correlation)),
    };
    let result = match demo::check_answer(cookie.as_deref(), answer) {
        Ok(redemption) => {
            demo.redeem(&state.clients, &state.grants, &state.vault, &redemption, state.clock.now()).await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(outcome) => {
            let page = pages::demo_result_page(&outcome, &state.about.urls, &demo_start_url(&state));
            Ok((jar, no_store(), page).into_response())
        }
        Err(err) if err.is_internal() => Ok((jar, AppError::internal(err)).into_response()),
        Err(err) => Ok(stopped(jar, &err.to_string(), &correlation)),
    }
}

fn stopped(jar: CookieJar, message: &str, correlation: &CorrelationId) -> Response {
    (StatusCode::BAD_REQUEST, jar, no_store(), pages::demo_failed_page(message, &correlation.0)).into_response()
}
