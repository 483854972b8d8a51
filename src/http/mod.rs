//! The HTTP surfaces: one file per surface; handlers extract, call, and map the result.

pub mod broker;
pub mod browser;
pub mod internal;
pub mod logout;
pub mod management;
pub mod paths;
pub mod realm;
pub mod token;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use crate::oidc::error::{OAuthError, OAuthErrorCode};
use crate::oidc::grants::GrantError;
use crate::signin::SignInError;
use crate::store::StoreError;

/// The request id tower-http assigned; shown on error pages so users can quote it.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
        Ok(CorrelationId(id.to_owned()))
    }
}

/// The detail of a server-side failure, attached to the response for the logging middleware.
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String);

/// Every error a handler can answer with.
#[derive(Debug)]
pub enum AppError {
    /// JSON `{"error","error_description"}` for OAuth clients.
    OAuth { status: StatusCode, error: OAuthError, basic_challenge: bool },
    /// `401` with `WWW-Authenticate: Bearer` for a bad bearer token.
    Bearer { error: OAuthErrorCode, description: String },
    /// An HTML page for a person in a browser.
    Page { status: StatusCode, message: String, correlation_id: String },
    /// JSON `{"error","error_description"}` from the token APIs, with `Retry-After` when the
    /// caller should come back later and a `Bearer` challenge on 401.
    Api { status: StatusCode, error: &'static str, description: String, retry_after: Option<u64> },
    /// Keycloak's own error shape, `{"errorMessage": …}`, where OpenHands matches the text.
    Keycloak { status: StatusCode, message: String },
    /// A realm other than the configured one: Keycloak's `Realm does not exist`.
    UnknownRealm,
    /// A failure of ours; the client sees a generic message.
    Internal(String),
}

impl AppError {
    pub fn page(status: u16, message: impl Into<String>, correlation: &CorrelationId) -> Self {
        AppError::Page {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            message: message.into(),
            correlation_id: correlation.0.clone(),
        }
    }

    pub fn api(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        AppError::Api { status, error, description: description.into(), retry_after: None }
    }

    pub fn keycloak(status: StatusCode, message: impl Into<String>) -> Self {
        AppError::Keycloak { status, message: message.into() }
    }

    pub fn oauth(error: OAuthError) -> Self {
        let status = match error.code {
            OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        AppError::OAuth { status, error, basic_challenge: false }
    }

    pub fn from_sign_in(err: SignInError, correlation: &CorrelationId) -> Self {
        match err {
            SignInError::Page { status, message } => AppError::page(status, message, correlation),
            SignInError::ToClient(_) => AppError::Internal("client redirect used as an error".into()),
            SignInError::Store(err) => err.into(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        AppError::Internal(err.to_string())
    }
}

impl From<GrantError> for AppError {
    fn from(err: GrantError) -> Self {
        match err {
            GrantError::OAuth(error) => AppError::oauth(error),
            GrantError::Store(err) => err.into(),
            GrantError::Token(err) => AppError::Internal(err.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::OAuth { status, error, basic_challenge } => {
                let mut response = (
                    status,
                    no_store(),
                    Json(json!({ "error": error.code.as_str(), "error_description": error.description })),
                )
                    .into_response();
                if basic_challenge {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"identity-broker\""));
                }
                response
            }
            AppError::Bearer { error, description } => {
                let challenge = format!(
                    "Bearer realm=\"identity-broker\", error=\"{}\", error_description=\"{}\"",
                    error.as_str(),
                    description.replace('"', "'")
                );
                let mut response = (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({ "error": error.as_str(), "error_description": description })),
                )
                    .into_response();
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
            AppError::Api { status, error, description, retry_after } => {
                let mut response =
                    (status, no_store(), Json(json!({ "error": error, "error_description": description })))
                        .into_response();
                if let Some(seconds) = retry_after {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                if status == StatusCode::UNAUTHORIZED {
                    let challenge = format!("Bearer realm=\"identity-broker\", error=\"{error}\"");
                    if let Ok(value) = HeaderValue::from_str(&challenge) {
                        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                    }
                }
                response
            }
            AppError::Keycloak { status, message } => {
                (status, no_store(), Json(json!({ "errorMessage": message }))).into_response()
            }
            AppError::Page { status, message, correlation_id } => {
                (status, no_store(), error_page("Sign-in failed", &message, &correlation_id)).into_response()
            }
            AppError::UnknownRealm => {
                (StatusCode::NOT_FOUND, Json(json!({ "error": "Realm does not exist" }))).into_response()
            }
            AppError::Internal(detail) => {
                let mut response = (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({ "error": "server_error", "error_description": "An internal error occurred" })),
                )
                    .into_response();
                response.extensions_mut().insert(ErrorDetail(detail));
                response
            }
        }
    }
}

/// Token responses and error pages must not be cached (RFC 6749 §5.1).
pub fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

fn escape(text: &str) -> String {
    html_escape::encode_safe(text).into_owned()
}

/// The shell of every page the broker renders; `body` must already be escaped HTML.
pub fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         a.button{{display:block;margin:.5rem 0;padding:.75rem 1rem;border:1px solid #888;border-radius:.4rem;text-decoration:none;color:#222}}\
         small{{color:#666}}</style></head><body>{body}</body></html>",
        title = escape(title),
    ))
}

pub fn error_page(title: &str, message: &str, correlation_id: &str) -> Html<String> {
    page(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p><p><small>Reference: {}</small></p>",
            escape(title),
            escape(message),
            escape(correlation_id)
        ),
    )
}

/// Renders the provider chooser: one button per provider.
pub fn chooser_page(buttons: &[(String, String)]) -> Html<String> {
    let links: String = buttons
        .iter()
        .map(|(href, label)| {
            let href = html_escape::encode_double_quoted_attribute(href);
            format!("<a class=\"button\" href=\"{href}\">Sign in with {}</a>", escape(label))
        })
        .collect();
    page("Sign in", &format!("<h1>Sign in</h1>{links}"))
}

/// The public listener: browser, OpenID Connect and broker endpoints.
pub fn public_router() -> axum::Router<crate::app::AppState> {
    use axum::routing::get;
    axum::Router::new()
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
}

/// The internal listener: the token API for other services, and the token endpoint so that
/// services get their `client_credentials` tokens without leaving the cluster network.
pub fn internal_router() -> axum::Router<crate::app::AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(paths::INTERNAL_USER_TOKEN, get(internal::read_token).delete(internal::unlink))
        .route(paths::INTERNAL_USERS, get(internal::find_users))
        .route(paths::INTERNAL_OPENAPI, get(internal::openapi))
        .route(paths::TOKEN, post(token::token))
}
