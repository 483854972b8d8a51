//! Keycloak's login actions: the links the broker sends by e-mail, opened in a browser.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::browser::redirect_to;
use super::client_address::ClientAddress;
use super::error::no_store;
use super::pages::email_verified_page;
use super::params::parse_query;
use super::realm::require_realm;
use super::{AppError, AppState, CorrelationId};
use crate::verification::{RedeemError, Verified};

const FAILED: &str = "E-mail not verified";

#[derive(Deserialize)]
pub(crate) struct ActionTokenParams {
    key: Option<String>,
}

// The key is a bearer value: never shown.
debug_showing!(ActionTokenParams {});

/// `GET /realms/{realm}/login-actions/action-token?key=…`: verifies the address the link was
/// sent to and sends the browser to the redirect URI stored with it (one of its client's,
/// checked when the link was sent, so never an open redirect). A used, expired or unknown link
/// gets a page saying so, and changes nothing.
pub(crate) async fn action_token(
    State(state): State<AppState>,
    Path(realm): Path<String>,
    RawQuery(query): RawQuery,
    correlation: CorrelationId,
    client: ClientAddress,
) -> Result<Response, AppError> {
    require_realm(&state.realm, &realm)?;
    let params: ActionTokenParams = parse_query(query.as_deref())
        .map_err(|err| AppError::titled_page(StatusCode::BAD_REQUEST, FAILED, err.to_string(), &correlation))?;
    let key = params.key.ok_or_else(|| {
        AppError::titled_page(
            StatusCode::BAD_REQUEST,
            FAILED,
            "This link is not complete: open the whole link from the e-mail.",
            &correlation,
        )
    })?;
    match state.email_verification.redeem(&key, &client.budget_key()).await {
        Ok(Verified::Redirect(uri)) => Ok(redirect_to(&uri)),
        Ok(Verified::Done) => Ok((no_store(), email_verified_page()).into_response()),
        Err(RedeemError::Store(err)) => Err(AppError::internal(err)),
        Err(err) => Err(AppError::titled_page(StatusCode::BAD_REQUEST, FAILED, err.to_string(), &correlation)),
    }
}
