//! The start page at `/`, and in start-dev its "try a sign-in" demonstration under `/demo/`.
//! In production the demonstration's routes answer 404, as any unknown path does.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;

use super::browser::redirect_to;
use super::error::no_store;
use super::pages::{self, ProviderView, StartView};
use super::params::parse_query;
use super::{AppError, AppState, Cookies, CorrelationId, paths};
use crate::config::Mode;
use crate::demo::{self, DemoAnswer};
use crate::urls::management_url;

pub(crate) async fn start_page(State(state): State<AppState>) -> Response {
    let database_up = state.health.database.load(std::sync::atomic::Ordering::SeqCst);
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
        database: state.store.kind(),
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
fn demo_start_url(state: &AppState) -> String {
    state.about.urls.public(paths::DEMO_START)
}

pub(crate) async fn demo_start(
    State(state): State<AppState>,
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

pub(crate) async fn demo_callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    jar: CookieJar,
    correlation: CorrelationId,
) -> Result<Response, AppError> {
    let Some(demo) = &state.demo else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let cookie = jar.get(Cookies::DEMO_SIGN_IN).map(|c| c.value().to_owned());
    // One answer per sign-in: the state and verifier are forgotten whatever this one says.
    let jar = jar.add(state.cookies.demo_removal());
    let answer: DemoAnswer = match parse_query(query.as_deref()) {
        Ok(answer) => answer,
        Err(err) => return Ok(stopped(jar, &err.to_string(), &correlation)),
    };
    let result = match demo::check_answer(cookie.as_deref(), answer) {
        Ok(redemption) => {
            demo.redeem(&state.clients, state.grants(), &state.vault, &redemption, state.clock.now()).await
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
