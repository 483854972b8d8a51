//! Keycloak's login actions: the links the broker sends by e-mail, opened in a browser.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::browser::redirect_to;
use super::client_address::ClientAddress;
use super::error::no_store;
use super::pages::email_verified_page;
use super::params::{Dialect, ParamError, Query};
use super::realm::OwnRealm;
use super::{AppError, CorrelationId};
use crate::verification::{EmailVerification, RedeemError, Verified};

const FAILED: &str = "E-mail not verified";

/// A page saying the address was not verified, and why.
#[derive(Debug)]
pub(crate) struct FailedPage;

impl Dialect for FailedPage {
    type Rejection = AppError;

    fn refuse(error: ParamError, correlation: &CorrelationId) -> AppError {
        AppError::titled_page(StatusCode::BAD_REQUEST, FAILED, error.to_string(), correlation)
    }
}

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
    _: OwnRealm,
    State(verification): State<Arc<EmailVerification>>,
    Query(params, _): Query<ActionTokenParams, FailedPage>,
    correlation: CorrelationId,
    client: ClientAddress,
) -> Result<Response, AppError> {
    let key = params.key.ok_or_else(|| {
        AppError::titled_page(
            StatusCode::BAD_REQUEST,
            FAILED,
            "This link is not complete: open the whole link from the e-mail.",
            &correlation,
        )
    })?;
    match verification.redeem(&key, &client.budget_key()).await {
        Ok(Verified::Redirect(uri)) => Ok(redirect_to(&uri)),
        Ok(Verified::Done) => Ok((no_store(), email_verified_page()).into_response()),
        Err(RedeemError::Store(err)) => Err(AppError::internal(err)),
        Err(err) => Err(AppError::titled_page(StatusCode::BAD_REQUEST, FAILED, err.to_string(), &correlation)),
    }
}
