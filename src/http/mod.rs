//! The HTTP surfaces: one file per surface; handlers extract, call, and map the result.

mod actions;
pub(crate) mod admin;
pub(crate) mod broker;
pub(crate) mod browser;
pub(crate) mod client_address;
mod development;
mod error;
pub(crate) mod internal;
pub(crate) mod logout;
pub(crate) mod management;
mod pages;
mod params;
pub mod paths;
pub(crate) mod realm;
mod start;
mod state;
pub(crate) mod token;

pub(crate) use error::{AppError, CorrelationId, ErrorDetail};
pub(crate) use params::refuse_non_text;
pub(crate) use state::About;
pub use state::{AppState, Cookies, Health, Services};

/// The public listener: the start page, browser, OpenID Connect and broker endpoints, the
/// development provider's when it runs, and Keycloak's admin REST API when it is on.
pub(crate) fn public_router(development: bool, admin: bool) -> axum::Router<AppState> {
    let router = realm_router();
    let router = if development { router.merge(development::router()) } else { router };
    if admin { router.merge(admin::router()) } else { router }
}

fn realm_router() -> axum::Router<AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route(paths::START, get(start::start_page))
        .route(paths::DEMO_START, get(start::demo_start))
        .route(paths::DEMO_CALLBACK, get(start::demo_callback))
        .route(paths::REALM, get(realm::realm_info))
        .route(paths::DISCOVERY, get(realm::discovery))
        .route(paths::CERTS, get(realm::certs))
        .route(paths::AUTH, get(browser::authorize))
        .route(paths::BROKER_LOGIN, get(browser::broker_login))
        .route(paths::BROKER_ENDPOINT, get(browser::broker_endpoint_query).post(browser::broker_endpoint_form))
        .route(paths::TOKEN, axum::routing::post(token::token))
        .route(paths::USERINFO, get(token::userinfo).post(token::userinfo))
        .route(paths::LOGOUT, get(logout::logout_get).post(logout::logout_post))
        .route(paths::INTROSPECT, axum::routing::post(token::introspect))
        .route(paths::REVOKE, axum::routing::post(token::revoke))
        .route(paths::BROKER_TOKEN, get(broker::retrieve_token).options(broker::retrieve_token_preflight))
        .route(paths::ACTION_TOKEN, get(actions::action_token))
}

/// The internal listener: the token API for other services, and the token endpoint so that
/// services get their `client_credentials` tokens without leaving the cluster network.
pub(crate) fn internal_router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(paths::INTERNAL_USER_TOKEN, get(internal::read_token).delete(internal::unlink))
        .route(paths::INTERNAL_USERS, get(internal::find_users))
        .route(paths::INTERNAL_OPENAPI, get(internal::openapi))
        .route(paths::TOKEN, post(token::token))
}
