//! Every error a handler answers with, and how each domain error maps to a status, a body
//! and, for failures of ours, the detail the logging middleware writes.

use std::error::Error as StdError;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::pages::error_page;
use crate::oidc::error::{ErrorCode, OAuthError};
use crate::oidc::grants::GrantError;
use crate::signin::{PENDING_BUDGET_RETRY_AFTER_SECONDS, SignInError};
use crate::store::{StoreError, unreachable_in};
use crate::telemetry::Chain;
use crate::vault::VaultError;

/// The request id tower-http assigned; shown on error pages so users can quote it.
#[derive(Debug, Clone)]
pub(crate) struct CorrelationId(pub(crate) String);

impl CorrelationId {
    pub(crate) fn of(headers: &axum::http::HeaderMap) -> Self {
        let id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
        CorrelationId(id.to_owned())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(CorrelationId::of(&parts.headers))
    }
}

/// A failure of ours, attached to the response for the logging middleware: the error and
/// its chain of causes, written once.
#[derive(Debug, Clone)]
pub(crate) struct ErrorDetail(pub(crate) String);

impl ErrorDetail {
    fn of(error: &(dyn StdError + 'static)) -> Self {
        ErrorDetail(Chain(error).to_string())
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// Every error a handler can answer with.
#[derive(Debug)]
pub(crate) enum AppError {
    /// JSON `{"error","error_description"}` for OAuth clients; `basic_challenge` adds
    /// `WWW-Authenticate: Basic` to a 401 (the client authenticated with `client_secret_basic`).
    OAuth { status: StatusCode, error: OAuthError, basic_challenge: bool },
    /// `401` with a `WWW-Authenticate: Bearer` challenge naming the error.
    Bearer { error: ErrorCode, description: String },
    /// An HTML page for a person in a browser.
    Page { status: StatusCode, title: &'static str, message: String, correlation_id: String, retry_after: Option<u64> },
    /// JSON `{"error","error_description"}` from the token APIs, with `Retry-After` when the
    /// caller should come back later, and `reauth_kind` beside a `reauth_required`.
    Api {
        status: StatusCode,
        error: ErrorCode,
        description: String,
        retry_after: Option<u64>,
        reauth_kind: Option<&'static str>,
    },
    /// Keycloak's own error shape, `{"errorMessage": …}`, where OpenHands matches the text.
    Keycloak { status: StatusCode, message: String },
    /// A realm other than the configured one: Keycloak's `Realm does not exist`.
    UnknownRealm,
    /// A failure only an operator can mend: `500 server_error` saying what to change, which
    /// the log repeats.
    Operator { description: String, detail: ErrorDetail },
    /// Keycloak's admin REST API's `{"error": …}` (`User not found`, `HTTP 401 Unauthorized`, …).
    Admin { status: StatusCode, error: &'static str },
    /// A failure of ours; the client sees a generic message, the log the whole chain. When the
    /// cause is a database that cannot be reached, the answer is `503` with `Retry-After`.
    Internal(BoxError),
}

/// What `Retry-After` suggests while the database cannot be reached: a few background checks.
const STORE_RETRY_AFTER_SECONDS: u64 = 5;

#[derive(Serialize)]
struct OAuthBody<'a> {
    error: ErrorCode,
    error_description: &'a str,
}

/// The token APIs' error body: OAuth's, and for `reauth_required` the stable `reauth_kind`.
#[derive(Serialize)]
struct ApiBody<'a> {
    error: ErrorCode,
    error_description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reauth_kind: Option<&'static str>,
}

#[derive(Serialize)]
struct KeycloakBody<'a> {
    #[serde(rename = "errorMessage")]
    error_message: &'a str,
}

/// `{"error": …}`: Keycloak's unknown realm, and its admin API's refusals.
#[derive(Serialize)]
struct ErrorOnlyBody {
    error: &'static str,
}

impl AppError {
    /// A sign-in's error page.
    pub(crate) fn page(status: StatusCode, message: impl Into<String>, correlation: &CorrelationId) -> Self {
        AppError::titled_page(status, "Sign-in failed", message, correlation)
    }

    /// A sign-in's page that asks the browser to come back after `retry_after` seconds.
    fn page_retried(status: StatusCode, err: SignInError, correlation: &CorrelationId, retry_after: u64) -> Self {
        let mut page = AppError::page(status, err.to_string(), correlation);
        if let AppError::Page { retry_after: header, .. } = &mut page {
            *header = Some(retry_after);
        }
        page
    }

    pub(crate) fn titled_page(
        status: StatusCode,
        title: &'static str,
        message: impl Into<String>,
        correlation: &CorrelationId,
    ) -> Self {
        AppError::Page {
            status,
            title,
            message: message.into(),
            correlation_id: correlation.0.clone(),
            retry_after: None,
        }
    }

    pub(crate) fn api(status: StatusCode, error: ErrorCode, description: impl Into<String>) -> Self {
        AppError::Api { status, error, description: description.into(), retry_after: None, reauth_kind: None }
    }

    pub(crate) fn keycloak(status: StatusCode, message: impl Into<String>) -> Self {
        AppError::Keycloak { status, message: message.into() }
    }

    pub(crate) fn internal(error: impl Into<BoxError>) -> Self {
        AppError::Internal(error.into())
    }

    pub(crate) fn oauth(error: OAuthError) -> Self {
        let status = match error.code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        AppError::OAuth { status, error, basic_challenge: false }
    }

    /// A sign-in that stopped: its page, with the status its cause deserves.
    pub(crate) fn sign_in(err: SignInError, correlation: &CorrelationId) -> Self {
        let status = match &err {
            SignInError::Store(_) => return AppError::internal(err),
            SignInError::NoProviderEnabled | SignInError::UpstreamUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            SignInError::UnknownProvider => StatusCode::NOT_FOUND,
            SignInError::IncompleteAnswer | SignInError::Misconfigured | SignInError::RequestRefused => {
                StatusCode::BAD_GATEWAY
            }
            SignInError::AlreadyLinked { .. } | SignInError::Contended | SignInError::EmailTaken { .. } => {
                StatusCode::CONFLICT
            }
            SignInError::UpstreamThrottled { retry_after } => {
                let seconds = *retry_after;
                return AppError::page_retried(StatusCode::SERVICE_UNAVAILABLE, err, correlation, seconds);
            }
            SignInError::TooManyPendingSignIns | SignInError::SignInsBusy => {
                let status = if matches!(err, SignInError::SignInsBusy) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::TOO_MANY_REQUESTS
                };
                return AppError::page_retried(status, err, correlation, PENDING_BUDGET_RETRY_AFTER_SECONDS);
            }
            SignInError::UserDisabled | SignInError::BlockedByPolicy => StatusCode::FORBIDDEN,
            SignInError::PendingSignInNotFound
            | SignInError::AlreadyStarted
            | SignInError::ExpiredOrUsed
            | SignInError::OtherBrowser
            | SignInError::OtherProvider
            | SignInError::NoCode
            | SignInError::ConsentRequired
            | SignInError::UpstreamReauthentication { .. }
            | SignInError::Unverifiable
            | SignInError::UpstreamRefused
            | SignInError::LinkedUserGone
            | SignInError::InvalidRedirectUri => StatusCode::BAD_REQUEST,
        };
        AppError::page(status, err.to_string(), correlation)
    }

    /// How a refusal of the vault reaches a service on the token API.
    pub(crate) fn vault(err: VaultError) -> Self {
        let (status, code) = match &err {
            VaultError::NotLinked { .. } => (StatusCode::NOT_FOUND, ErrorCode::NotLinked),
            VaultError::NotStored { .. } => (StatusCode::NOT_FOUND, ErrorCode::NotStored),
            VaultError::UserDisabled { .. } => (StatusCode::FORBIDDEN, ErrorCode::AccessDenied),
            VaultError::ReauthRequired { kind, .. } => {
                return AppError::Api {
                    status: StatusCode::CONFLICT,
                    error: ErrorCode::ReauthRequired,
                    description: err.to_string(),
                    retry_after: None,
                    reauth_kind: Some(kind.as_str()),
                };
            }
            VaultError::Blocked { .. } => (StatusCode::FORBIDDEN, ErrorCode::AccessDenied),
            VaultError::Misconfigured { .. } => (StatusCode::BAD_GATEWAY, ErrorCode::UpstreamMisconfigured),
            VaultError::Unavailable { retry_after, .. } => {
                return AppError::Api {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: ErrorCode::TemporarilyUnavailable,
                    description: err.to_string(),
                    retry_after: Some(*retry_after),
                    reauth_kind: None,
                };
            }
            VaultError::KeyNotConfigured { .. } => {
                return AppError::Operator { description: err.to_string(), detail: ErrorDetail::of(&err) };
            }
            VaultError::Internal { .. } => return AppError::internal(err),
        };
        AppError::api(status, code, err.to_string())
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        AppError::internal(err)
    }
}

impl From<GrantError> for AppError {
    fn from(err: GrantError) -> Self {
        match err {
            GrantError::OAuth(error) => AppError::oauth(error),
            err @ GrantError::InvalidUserCredentials => AppError::OAuth {
                status: StatusCode::UNAUTHORIZED,
                error: OAuthError::invalid_grant(err.to_string()),
                basic_challenge: false,
            },
            other => AppError::internal(other),
        }
    }
}

fn with_header(mut response: Response, name: header::HeaderName, value: Option<HeaderValue>) -> Response {
    if let Some(value) = value {
        response.headers_mut().insert(name, value);
    }
    response
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::OAuth { status, error, basic_challenge } => {
                let body = OAuthBody { error: error.code, error_description: &error.description };
                let response = (status, no_store(), Json(body)).into_response();
                let challenge = basic_challenge.then(|| HeaderValue::from_static("Basic realm=\"identity-broker\""));
                with_header(response, header::WWW_AUTHENTICATE, challenge)
            }
            AppError::Bearer { error, description } => {
                let challenge = format!(
                    "Bearer realm=\"identity-broker\", error=\"{error}\", error_description=\"{}\"",
                    description.replace('"', "'")
                );
                let body = OAuthBody { error, error_description: &description };
                let response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
                with_header(response, header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).ok())
            }
            AppError::Api { status, error, description, retry_after, reauth_kind } => {
                let body = ApiBody { error, error_description: &description, reauth_kind };
                let response = (status, no_store(), Json(body)).into_response();
                let response = with_header(response, header::RETRY_AFTER, retry_after.map(HeaderValue::from));
                let challenge = (status == StatusCode::UNAUTHORIZED)
                    .then(|| {
                        HeaderValue::from_str(&format!("Bearer realm=\"identity-broker\", error=\"{error}\"")).ok()
                    })
                    .flatten();
                with_header(response, header::WWW_AUTHENTICATE, challenge)
            }
            AppError::Keycloak { status, message } => {
                (status, no_store(), Json(KeycloakBody { error_message: &message })).into_response()
            }
            AppError::Page { status, title, message, correlation_id, retry_after } => {
                let response = (status, no_store(), error_page(title, &message, &correlation_id)).into_response();
                with_header(response, header::RETRY_AFTER, retry_after.map(HeaderValue::from))
            }
            AppError::UnknownRealm => {
                (StatusCode::NOT_FOUND, Json(ErrorOnlyBody { error: "Realm does not exist" })).into_response()
            }
            AppError::Operator { description, detail } => {
                let body = OAuthBody { error: ErrorCode::ServerError, error_description: &description };
                let mut response = (StatusCode::INTERNAL_SERVER_ERROR, no_store(), Json(body)).into_response();
                response.extensions_mut().insert(detail);
                response
            }
            AppError::Internal(error) if unreachable_in(error.as_ref()) => {
                let body = OAuthBody {
                    error: ErrorCode::TemporarilyUnavailable,
                    error_description: "The database cannot be reached; try again shortly",
                };
                let mut response = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    no_store(),
                    [(header::RETRY_AFTER, HeaderValue::from(STORE_RETRY_AFTER_SECONDS))],
                    Json(body),
                )
                    .into_response();
                response.extensions_mut().insert(ErrorDetail::of(error.as_ref()));
                response
            }
            AppError::Admin { status, error } => (status, no_store(), Json(ErrorOnlyBody { error })).into_response(),
            AppError::Internal(error) => {
                let body = OAuthBody { error: ErrorCode::ServerError, error_description: "An internal error occurred" };
                let mut response = (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
                response.extensions_mut().insert(ErrorDetail::of(error.as_ref()));
                response
            }
        }
    }
}

/// Token responses and error pages must not be cached (RFC 6749 §5.1).
pub(crate) fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}
