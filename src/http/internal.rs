//! The internal API for other services: fresh upstream tokens, user lookup and unlinking,
//! each call authorized by a service account's `client_credentials` token and its
//! `allowed_providers`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::AppError;
use super::error::no_store;
use super::params::{Api, Bearer, Query};
use crate::clock::Clock;
use crate::config::ServiceAccountSettings;
use crate::directory::Directory;
use crate::oidc::clients::ServiceAccountRegistry;
use crate::oidc::error::ErrorCode;
use crate::oidc::tokens::TokenService;
use crate::store::{IdentityKey, IdentityRow, Store, UserRow};
use crate::vault::{TokenReader, TokenVault, VaultError};

/// The OpenAPI 3 description of this API, served as written; a test holds it against the router.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");
/// The most users an e-mail lookup returns.
const MAX_USERS: i64 = 100;
/// The longest `min_validity` a caller may ask for: a day, more than any upstream token lives.
const MAX_MIN_VALIDITY: i64 = 86_400;

/// The service account behind a request's bearer token, as configured now: removing an
/// account or a provider from its list takes effect at once, whatever tokens it holds. The
/// registry's own entry, shared, not a copy.
#[derive(Debug)]
pub(crate) struct ServiceCaller(pub(crate) Arc<ServiceAccountSettings>);

impl<S: Send + Sync> FromRequestParts<S> for ServiceCaller
where
    Arc<TokenService>: FromRef<S>,
    ServiceAccountRegistry: FromRef<S>,
    Clock: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let unauthorized =
            |description: &str| AppError::api(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, description);
        let Ok(Bearer(token)) = Bearer::from_request_parts(parts, state).await;
        let token =
            token.ok_or_else(|| unauthorized("A bearer token from the client_credentials grant is required"))?;
        let claims = Arc::<TokenService>::from_ref(state)
            .verify_service(&token, Clock::from_ref(state).now())
            .map_err(|_| unauthorized("The token is invalid, expired or not a service account's"))?;
        let account = ServiceAccountRegistry::from_ref(state)
            .find(&claims.azp)
            .cloned()
            .ok_or_else(|| unauthorized("The service account is not configured"))?;
        Ok(ServiceCaller(account))
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
            ErrorCode::InsufficientScope,
            format!("Service account [{}] may not use identity provider [{alias}].", self.0.client_id),
        ))
    }
}

fn bad_request(message: impl Into<String>) -> AppError {
    AppError::api(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReadTokenParams {
    min_validity: Option<String>,
}

/// `GET /internal/v1/users/{user_id}/tokens/{alias}`'s answer.
#[derive(Debug, Serialize)]
struct UpstreamToken<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_in: i64,
    expires_at: i64,
    scope: &'a str,
}

/// `GET /internal/v1/users/{user_id}/tokens/{alias}?min_validity=<seconds>`
pub(crate) async fn read_token(
    State(vault): State<TokenVault>,
    State(clock): State<Clock>,
    caller: ServiceCaller,
    Path((user_id, alias)): Path<(String, String)>,
    Query(params, _): Query<ReadTokenParams, Api>,
) -> Result<Response, AppError> {
    let min_validity = match params.min_validity {
        None => 0,
        Some(text) => text.parse::<i64>().ok().filter(|s| (0..=MAX_MIN_VALIDITY).contains(s)).ok_or_else(|| {
            bad_request(format!("min_validity must be a whole number of seconds from 0 to {MAX_MIN_VALIDITY}"))
        })?,
    };
    caller.require_provider(&alias)?;
    let served = vault
        .read(&caller.reader(), IdentityKey { user_id: &user_id, alias: &alias }, min_validity)
        .await
        .map_err(AppError::vault)?;
    let tokens = served.tokens;
    let body = UpstreamToken {
        access_token: tokens.access_token.expose_secret(),
        token_type: &tokens.token_type,
        expires_in: (tokens.expires_at - clock.now()).max(1),
        expires_at: tokens.expires_at,
        scope: &tokens.scope,
    };
    Ok((no_store(), Json(body)).into_response())
}

/// `DELETE /internal/v1/users/{user_id}/tokens/{alias}`: unlink and erase; the user stays.
pub(crate) async fn unlink(
    State(vault): State<TokenVault>,
    caller: ServiceCaller,
    Path((user_id, alias)): Path<(String, String)>,
) -> Result<Response, AppError> {
    caller.require_provider(&alias)?;
    if vault
        .unlink(&caller.reader(), IdentityKey { user_id: &user_id, alias: &alias })
        .await
        .map_err(AppError::vault)?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(AppError::vault(VaultError::NotLinked { user_id, alias }))
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct FindUsersParams {
    provider: Option<String>,
    subject: Option<String>,
    email: Option<String>,
}

#[derive(Debug, Serialize)]
struct FoundUsers {
    users: Vec<FoundUser>,
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
    /// While `needs_reauth`: `mfa_required`, `policy`, `consent_required`, `password_expired`,
    /// `expired`, or `blocked` (a Conditional Access policy; signing in again will not help).
    #[serde(skip_serializing_if = "Option::is_none")]
    reauth_kind: Option<String>,
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
                reauth_kind: i.reauth_kind,
            })
            .collect(),
    }
}

/// `GET /internal/v1/users?provider=&subject=` or `?email=`
pub(crate) async fn find_users(
    State(directory): State<Directory>,
    State(store): State<Store>,
    caller: ServiceCaller,
    Query(params, _): Query<FindUsersParams, Api>,
) -> Result<Response, AppError> {
    let users = match (params.provider, params.subject, params.email) {
        (Some(alias), Some(subject), None) => {
            caller.require_provider(&alias)?;
            directory.find_by_identity(&alias, &subject).await?.into_iter().collect()
        }
        (None, None, Some(email)) => store.find_users_by_email(&email, MAX_USERS).await?,
        _ => return Err(bad_request("give either `provider` and `subject`, or `email`")),
    };
    let mut found = Vec::with_capacity(users.len());
    for user in users {
        let identities = store.list_identities(&user.id).await?;
        found.push(found_user(user, identities, &caller));
    }
    Ok((no_store(), Json(FoundUsers { users: found })).into_response())
}

/// `GET /internal/v1/openapi.json`: public, so that tools can read it before they have a token.
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
