//! Validation of a client's authorization request, in the order RFC 6749 §4.1.2.1 demands:
//! errors before the redirect URI is trusted are shown to the user, later ones go back to it.

use std::collections::HashMap;

use super::clients::ClientRegistry;
use crate::config::ClientSettings;

/// Longest value accepted for any parameter; longer ones are refused, not truncated.
pub const MAX_PARAMETER_LENGTH: usize = 2048;

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub login_hint: Option<String>,
    pub idp_hint: Option<String>,
    pub link_alias: Option<String>,
}

/// Why a request was refused, and whether its redirect URI may carry the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Shown as a page: the client or redirect URI cannot be trusted.
    Page(String),
    /// Sent back to the client's redirect URI with its state.
    Redirect { redirect_uri: String, state: Option<String>, error: &'static str, description: String },
}

/// Parses a raw query string as `parse_parameters` does.
pub fn parse_query(raw: Option<&str>) -> Result<HashMap<String, String>, String> {
    parse_parameters(url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect())
}

/// Parses raw query pairs; a repeated parameter is an error (RFC 6749 §3.1).
pub fn parse_parameters(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for (name, value) in pairs {
        if value.len() > MAX_PARAMETER_LENGTH {
            return Err(format!("parameter `{name}` is longer than {MAX_PARAMETER_LENGTH} characters"));
        }
        if params.insert(name.clone(), value).is_some() {
            return Err(format!("parameter `{name}` was given more than once"));
        }
    }
    Ok(params)
}

pub fn validate(
    clients: &ClientRegistry,
    params: &HashMap<String, String>,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let get = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let client_id = get("client_id")
        .ok_or_else(|| AuthorizeError::Page("The request names no client (client_id is missing).".into()))?;
    let client: &ClientSettings = clients
        .find(&client_id)
        .ok_or_else(|| AuthorizeError::Page("The application is not registered with this sign-in service.".into()))?;
    let redirect_uri =
        get("redirect_uri").ok_or_else(|| AuthorizeError::Page("The request has no redirect_uri.".into()))?;
    if !client.allows_redirect(&redirect_uri) {
        return Err(AuthorizeError::Page("The redirect URI is not registered for this application.".into()));
    }
    let state = get("state");
    let refuse = |error: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description: description.to_owned(),
    };
    match get("response_type").as_deref() {
        Some("code") => {}
        Some(_) => return Err(refuse("unsupported_response_type", "only response_type=code is supported")),
        None => return Err(refuse("invalid_request", "response_type is missing")),
    }
    if get("response_mode").is_some_and(|mode| mode != "query") {
        return Err(refuse("invalid_request", "only response_mode=query is supported"));
    }
    let code_challenge = get("code_challenge");
    let code_challenge_method = match (&code_challenge, get("code_challenge_method")) {
        (None, None) => None,
        (None, Some(_)) => return Err(refuse("invalid_request", "code_challenge_method without code_challenge")),
        (Some(challenge), method) => {
            let method = method.unwrap_or_else(|| "plain".to_owned());
            if method != "S256" && method != "plain" {
                return Err(refuse("invalid_request", "code_challenge_method must be S256 or plain"));
            }
            if !(43..=128).contains(&challenge.len()) || !challenge.chars().all(is_pkce_char) {
                return Err(refuse("invalid_request", "code_challenge is malformed"));
            }
            Some(method)
        }
    };
    if client.is_public() && code_challenge.is_none() {
        return Err(refuse("invalid_request", "public clients must send a PKCE code_challenge"));
    }
    let scope = get("scope").unwrap_or_else(|| "openid".to_owned());
    let link_alias = match get("kc_action") {
        None => None,
        Some(action) => match action.strip_prefix("idp_link:") {
            Some(alias) if !alias.is_empty() => Some(alias.to_owned()),
            _ => return Err(refuse("invalid_request", "kc_action must be idp_link:<alias>")),
        },
    };
    Ok(AuthorizationRequest {
        client_id,
        redirect_uri: redirect_uri.clone(),
        scope,
        state,
        nonce: get("nonce"),
        code_challenge,
        code_challenge_method,
        prompt: get("prompt"),
        login_hint: get("login_hint"),
        idp_hint: get("kc_idp_hint"),
        link_alias,
    })
}

fn is_pkce_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}
