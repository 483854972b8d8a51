//! Validation of a client's authorization request, in the order RFC 6749 §4.1.2.1 demands:
//! errors before the redirect URI is trusted are shown to the user, later ones go back to it.

use super::clients::ClientRegistry;
use super::error::ErrorCode;
use crate::config::ClientSettings;

/// The authorization endpoint's parameters as the client sent them (absent when empty).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct AuthorizationParams {
    pub(crate) client_id: Option<String>,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) response_type: Option<String>,
    pub(crate) response_mode: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: Option<String>,
    pub(crate) code_challenge_method: Option<String>,
    pub(crate) prompt: Option<String>,
    pub(crate) login_hint: Option<String>,
    pub(crate) kc_idp_hint: Option<String>,
    pub(crate) kc_action: Option<String>,
}

/// A validated authorization request.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizationRequest {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: String,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: Option<String>,
    pub(crate) code_challenge_method: Option<String>,
    pub(crate) prompt: Option<String>,
    pub(crate) login_hint: Option<String>,
    pub(crate) idp_hint: Option<String>,
    pub(crate) link_alias: Option<String>,
}

/// Why a request was refused, and whether its redirect URI may carry the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthorizeError {
    /// Shown as a page: the client or redirect URI cannot be trusted.
    Page(String),
    /// Sent back to the client's redirect URI with its state.
    Redirect { redirect_uri: String, state: Option<String>, error: ErrorCode, description: String },
}

pub(crate) fn validate(clients: &ClientRegistry, params: AuthorizationParams) -> Result<AuthorizationRequest, AuthorizeError> {
    let client_id = params
        .client_id
        .ok_or_else(|| AuthorizeError::Page("The request names no client (client_id is missing).".into()))?;
    let client: &ClientSettings = clients
        .find(&client_id)
        .ok_or_else(|| AuthorizeError::Page("The application is not registered with this sign-in service.".into()))?;
    let redirect_uri =
        params.redirect_uri.ok_or_else(|| AuthorizeError::Page("The request has no redirect_uri.".into()))?;
    if !client.allows_redirect(&redirect_uri) {
        return Err(AuthorizeError::Page("The redirect URI is not registered for this application.".into()));
    }
    let state = params.state;
    let refuse = |error: ErrorCode, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description: description.to_owned(),
    };
    match params.response_type.as_deref() {
        Some("code") => {}
        Some(_) => {
            return Err(refuse(ErrorCode::UnsupportedResponseType, "only response_type=code is supported"));
        }
        None => return Err(refuse(ErrorCode::InvalidRequest, "response_type is missing")),
    }
    if params.response_mode.is_some_and(|mode| mode != "query") {
        return Err(refuse(ErrorCode::InvalidRequest, "only response_mode=query is supported"));
    }
    let code_challenge = params.code_challenge;
    let code_challenge_method = match (&code_challenge, params.code_challenge_method) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(refuse(ErrorCode::InvalidRequest, "code_challenge_method without code_challenge"));
        }
        (Some(challenge), method) => {
            let method = method.unwrap_or_else(|| "plain".to_owned());
            if method != "S256" && method != "plain" {
                return Err(refuse(ErrorCode::InvalidRequest, "code_challenge_method must be S256 or plain"));
            }
            if !(43..=128).contains(&challenge.len()) || !challenge.chars().all(is_pkce_char) {
                return Err(refuse(ErrorCode::InvalidRequest, "code_challenge is malformed"));
            }
            Some(method)
        }
    };
    if client.is_public() && code_challenge.is_none() {
        return Err(refuse(ErrorCode::InvalidRequest, "public clients must send a PKCE code_challenge"));
    }
    let scope = params.scope.unwrap_or_else(|| "openid".to_owned());
    let link_alias = match params.kc_action {
        None => None,
        Some(action) => match action.strip_prefix("idp_link:") {
            Some(alias) if !alias.is_empty() => Some(alias.to_owned()),
            _ => return Err(refuse(ErrorCode::InvalidRequest, "kc_action must be idp_link:<alias>")),
        },
    };
    Ok(AuthorizationRequest {
        client_id,
        redirect_uri,
        scope,
        state,
        nonce: params.nonce,
        code_challenge,
        code_challenge_method,
        prompt: params.prompt,
        login_hint: params.login_hint,
        idp_hint: params.kc_idp_hint,
        link_alias,
    })
}

fn is_pkce_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}
