//! The internal API for other services: fresh upstream tokens, user lookup and unlinking,
//! each call authorized by a service account's `client_credentials` token and its
//! `allowed_providers`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;

use super::{AppError, no_store};
use crate::app::AppState;
use crate::config::ServiceAccountSettings;
use crate::oidc::authorize::{MAX_PARAMETER_LENGTH, parse_query};
use crate::store::{IdentityRow, UserRow};
use crate::vault::{TokenReader, VaultError};

/// The OpenAPI 3.1 description of this API, served as written.
const OPENAPI: &str = include_str!("openapi.json");
/// The most users an e-mail lookup returns.
const MAX_USERS: i64 = 100;
/// The longest `min_validity` a caller may ask for: a day, more than any upstream token lives.
const MAX_MIN_VALIDITY: i64 = 86_400;

/// The service account behind a request's bearer token, as configured now: removing an
/// account or a provider from its list takes effect at once, whatever tokens it holds.
#[derive(Debug)]
pub struct ServiceCaller(pub ServiceAccountSettings);

impl FromRequestParts<AppState> for ServiceCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let unauthorized = |description: &str| AppError::api(StatusCode::UNAUTHORIZED, "invalid_token", description);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty() && token.len() <= 8 * MAX_PARAMETER_LENGTH)
            .ok_or_else(|| unauthorized("A bearer token from the client_credentials grant is required"))?;
        let claims = state
            .tokens
            .verify_service(token, state.clock.now())
            .map_err(|_| unauthorized("The token is invalid, expired or not a service account's"))?;
        let account = state
            .service_accounts
            .find(&claims.azp)
            .ok_or_else(|| unauthorized("The service account is not configured"))?;
        Ok(ServiceCaller(account.clone()))
    }
}

impl ServiceCaller {
    fn reader(&self) -> TokenReader<'_> {
        TokenReader { surface: "internal", client_id: &self.0.client_id }
    }

    /// Refuses a provider outside the account's `allowed_providers`.
    fn require_provider(&self, alias: &str) -> Result<(), AppError> {
        if self.0.may_read(alias) {
            return Ok(());
        }
        Err(AppError::api(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("Service account [{}] may not use identity provider [{alias}].", self.0.client_id),
        ))
    }
}

/// How a refusal of the vault reaches a service.
pub fn vault_error(err: VaultError) -> AppError {
    let description = err.to_string();
    match err {
        VaultError::NotLinked { .. } => AppError::api(StatusCode::NOT_FOUND, "not_linked", description),
        VaultError::NotStored { .. } => AppError::api(StatusCode::NOT_FOUND, "not_stored", description),
        VaultError::ReauthRequired { .. } => AppError::api(StatusCode::CONFLICT, "reauth_required", description),
        VaultError::Misconfigured { .. } => {
            AppError::api(StatusCode::BAD_GATEWAY, "upstream_misconfigured", description)
        }
        VaultError::Unavailable { retry_after } => AppError::Api {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "temporarily_unavailable",
            description,
            retry_after: Some(retry_after),
        },
        VaultError::Internal(detail) => AppError::Internal(detail),
    }
}

fn query(raw: Option<String>) -> Result<HashMap<String, String>, AppError> {
    parse_query(raw.as_deref()).map_err(|message| AppError::api(StatusCode::BAD_REQUEST, "invalid_request", message))
}

/// `GET /internal/v1/users/{user_id}/tokens/{alias}?min_validity=<seconds>`
pub async fn read_token(
    State(state): State<AppState>,
    caller: ServiceCaller,
    Path((user_id, alias)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let params = query(raw)?;
    let min_validity = match params.get("min_validity") {
        None => 0,
        Some(text) => text.parse::<i64>().ok().filter(|s| (0..=MAX_MIN_VALIDITY).contains(s)).ok_or_else(|| {
            AppError::api(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("min_validity must be a whole number of seconds from 0 to {MAX_MIN_VALIDITY}"),
            )
        })?,
    };
    caller.require_provider(&alias)?;
    let served = state.vault.read(&caller.reader(), &user_id, &alias, min_validity).await.map_err(vault_error)?;
    let tokens = served.tokens;
    let body = json!({
        "access_token": tokens.access_token.expose_secret(),
        "token_type": tokens.token_type,
        "expires_in": (tokens.expires_at - state.clock.now()).max(1),
        "expires_at": tokens.expires_at,
        "scope": tokens.scope,
    });
    Ok((no_store(), Json(body)).into_response())
}

/// `DELETE /internal/v1/users/{user_id}/tokens/{alias}`: unlink and erase; the user stays.
pub async fn unlink(
    State(state): State<AppState>,
    caller: ServiceCaller,
    Path((user_id, alias)): Path<(String, String)>,
) -> Result<Response, AppError> {
    caller.require_provider(&alias)?;
    if state.vault.unlink(&caller.reader(), &user_id, &alias).await.map_err(vault_error)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(vault_error(VaultError::NotLinked { user_id, alias }))
    }
}

#[derive(Debug, Serialize)]
struct FoundUser {
    id: String,
    username: String,
    email: Option<String>,
    email_verified: bool,
    first_name: Option<String>,
    last_name: Option<String>,
    identities: Vec<FoundIdentity>,
}

#[derive(Debug, Serialize)]
struct FoundIdentity {
    provider: String,
    subject: String,
    username: Option<String>,
    needs_reauth: bool,
}

fn found_user(user: UserRow, identities: Vec<IdentityRow>, caller: &ServiceCaller) -> FoundUser {
    FoundUser {
        id: user.id,
        username: user.username,
        email: user.email,
        email_verified: user.email_verified,
        first_name: user.first_name,
        last_name: user.last_name,
        // A service sees only the providers it may use.
        identities: identities
            .into_iter()
            .filter(|i| caller.0.may_read(&i.alias))
            .map(|i| FoundIdentity {
                provider: i.alias,
                subject: i.subject,
                username: i.username,
                needs_reauth: i.needs_reauth,
            })
            .collect(),
    }
}

/// `GET /internal/v1/users?provider=&subject=` or `?email=`
pub async fn find_users(
    State(state): State<AppState>,
    caller: ServiceCaller,
    RawQuery(raw): RawQuery,
) -> Result<Response, AppError> {
    let params = query(raw)?;
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let users = match (get("provider"), get("subject"), get("email")) {
        (Some(alias), Some(subject), None) => {
            caller.require_provider(alias)?;
            let identity = state.store.find_identity_by_subject(alias, subject).await?;
            match identity {
                Some(identity) => state.store.find_user(&identity.user_id).await?.into_iter().collect(),
                None => Vec::new(),
            }
        }
        (None, None, Some(email)) => state.store.find_users_by_email(email, MAX_USERS).await?,
        _ => {
            return Err(AppError::api(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give either `provider` and `subject`, or `email`",
            ));
        }
    };
    let mut found = Vec::with_capacity(users.len());
    for user in users {
        let identities = state.store.list_identities(&user.id).await?;
        found.push(found_user(user, identities, &caller));
    }
    Ok((no_store(), Json(json!({ "users": found }))).into_response())
}

/// `GET /internal/v1/openapi.json`: public, so that tools can read it before they have a token.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
