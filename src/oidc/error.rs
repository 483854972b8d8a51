//! The one vocabulary of error codes the broker puts on the wire: RFC 6749, 6750 and OpenID
//! Connect's codes, and the token API's own; `Display` is the wire code.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidToken,
    InsufficientScope,
    AccessDenied,
    LoginRequired,
    ServerError,
    TemporarilyUnavailable,
    /// The token API: the user has no identity at that provider.
    NotLinked,
    /// The token API: the provider keeps no tokens (`store_token = false`).
    NotStored,
    /// The token API: the provider refused the stored grant; the user must sign in again.
    ReauthRequired,
    /// The token API: the provider refused the broker's own configuration.
    UpstreamMisconfigured,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::NotLinked => "not_linked",
            ErrorCode::NotStored => "not_stored",
            ErrorCode::ReauthRequired => "reauth_required",
            ErrorCode::UpstreamMisconfigured => "upstream_misconfigured",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to an OAuth client as `{"error": …, "error_description": …}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub(crate) struct OAuthError {
    pub(crate) code: ErrorCode,
    pub(crate) description: String,
}

impl OAuthError {
    pub(crate) fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        OAuthError { code, description: description.into() }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError::new(ErrorCode::InvalidRequest, description)
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        OAuthError::new(ErrorCode::InvalidGrant, description)
    }

    pub(crate) fn invalid_client() -> Self {
        OAuthError::new(ErrorCode::InvalidClient, "Invalid client or Invalid client credentials")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_serde_give_the_same_wire_code() {
        for code in [ErrorCode::InvalidGrant, ErrorCode::UnsupportedResponseType, ErrorCode::ReauthRequired] {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{code}\""), "{code:?}");
        }
    }
}
