//! Validation of a client's authorization request, in the order RFC 6749 §4.1.2.1 demands:
//! errors before the redirect URI is trusted are shown to the user, later ones go back to it.

use super::clients::ClientRegistry;
use super::error::ErrorCode;
use crate::config::ClientSettings;

/// RFC 7636's code challenge methods.
pub(crate) const PKCE_S256: &str = "S256";
pub(crate) const PKCE_PLAIN: &str = "plain";

/// The longest `state` kept for a client. Each pending sign-in stores the client's parameters
/// until it finishes or expires, so each is bounded far below the 2 KB any parameter may be
/// (the others are bounded in `validate`, beside their names).
pub(crate) const MAX_STATE_LENGTH: usize = 1024;

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
    pub(crate) max_age: Option<String>,
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
    /// Seconds since the user's last authentication beyond which they must authenticate again
    /// (OIDC Core §3.1.2.1).
    pub(crate) max_age: Option<i64>,
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

pub(crate) fn validate(
    clients: &ClientRegistry,
    params: AuthorizationParams,
) -> Result<AuthorizationRequest, AuthorizeError> {
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
    // A state too long to store is not sent back either: the page says so instead.
    if params.state.as_ref().is_some_and(|state| state.len() > MAX_STATE_LENGTH) {
        return Err(AuthorizeError::Page(format!("The request's state is longer than {MAX_STATE_LENGTH} characters.")));
    }
    let state = params.state;
    let refuse = |error: ErrorCode, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone(),
        error,
        description: description.to_owned(),
    };
    let stored = [
        ("nonce", &params.nonce, 512),
        ("login_hint", &params.login_hint, 320),
        ("scope", &params.scope, 512),
        ("prompt", &params.prompt, 64),
        ("kc_idp_hint", &params.kc_idp_hint, 128),
        ("kc_action", &params.kc_action, 128),
    ];
    if let Some((name, _, limit)) =
        stored.iter().find(|(_, value, limit)| value.as_ref().is_some_and(|v| v.len() > *limit))
    {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            &format!("Invalid parameter: {name} is longer than {limit} characters"),
        ));
    }
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
        (None, Some(_)) => return Err(refuse(ErrorCode::InvalidRequest, "Missing parameter: code_challenge")),
        (Some(challenge), method) => {
            let method = pkce_method(client, method.as_deref())
                .map_err(|description| refuse(ErrorCode::InvalidRequest, description))?;
            if !(43..=128).contains(&challenge.len()) || !challenge.chars().all(is_pkce_char) {
                return Err(refuse(ErrorCode::InvalidRequest, "Invalid parameter: code_challenge"));
            }
            Some(method.to_owned())
        }
    };
    if client.is_public() && code_challenge.is_none() {
        return Err(refuse(ErrorCode::InvalidRequest, "public clients must send a PKCE code_challenge"));
    }
    let max_age = match params.max_age.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(seconds)) if seconds >= 0 => Some(seconds),
        Some(_) => return Err(refuse(ErrorCode::InvalidRequest, "Invalid parameter: max_age")),
    };
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
        max_age,
        login_hint: params.login_hint,
        idp_hint: params.kc_idp_hint,
        link_alias,
    })
}

/// The PKCE method a client may use, in Keycloak's words when it may not. No method means
/// `plain` (RFC 7636 §4.3), which a client must be configured to allow: it protects nothing
/// once the authorization request is seen (RFC 9700 §2.1.1).
fn pkce_method(client: &ClientSettings, method: Option<&str>) -> Result<&'static str, &'static str> {
    match method.unwrap_or(PKCE_PLAIN) {
        PKCE_S256 => Ok(PKCE_S256),
        PKCE_PLAIN if client.allow_plain_pkce => Ok(PKCE_PLAIN),
        PKCE_PLAIN if method.is_none() => Err("Missing parameter: code_challenge_method"),
        PKCE_PLAIN => Err("Invalid parameter: code challenge method is not configured one"),
        _ => Err("Invalid parameter: code challenge method is not supported."),
    }
}

fn is_pkce_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientCredential;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn registry(allow_plain_pkce: bool) -> ClientRegistry {
        ClientRegistry::new(vec![ClientSettings {
            client_id: "app".to_owned(),
            credential: ClientCredential::Public,
            redirect_uris: vec!["http://app.test/cb".to_owned()],
            post_logout_redirect_uris: Vec::new(),
            read_token: true,
            rotate_refresh_tokens: false,
            allow_plain_pkce,
        }])
    }

    fn request(challenge: Option<&str>, method: Option<&str>) -> AuthorizationParams {
        AuthorizationParams {
            client_id: Some("app".to_owned()),
            redirect_uri: Some("http://app.test/cb".to_owned()),
            response_type: Some("code".to_owned()),
            code_challenge: challenge.map(str::to_owned),
            code_challenge_method: method.map(str::to_owned),
            ..AuthorizationParams::default()
        }
    }

    #[test]
    fn only_s256_is_accepted_unless_the_client_allows_plain() {
        let cases = [
            (false, Some(CHALLENGE), Some("S256"), Ok(Some("S256")), "S256 always"),
            (
                false,
                Some(CHALLENGE),
                Some("plain"),
                Err("Invalid parameter: code challenge method is not configured one"),
                "plain by default",
            ),
            (false, Some(CHALLENGE), None, Err("Missing parameter: code_challenge_method"), "no method means plain"),
            (
                false,
                Some(CHALLENGE),
                Some("S512"),
                Err("Invalid parameter: code challenge method is not supported."),
                "unknown method",
            ),
            (false, None, Some("S256"), Err("Missing parameter: code_challenge"), "a method without a challenge"),
            (false, Some("short"), Some("S256"), Err("Invalid parameter: code_challenge"), "a malformed challenge"),
            (true, Some(CHALLENGE), Some("plain"), Ok(Some("plain")), "plain where the client allows it"),
            (true, Some(CHALLENGE), None, Ok(Some("plain")), "no method is plain where allowed"),
            (true, Some(CHALLENGE), Some("S256"), Ok(Some("S256")), "S256 where plain is allowed"),
        ];
        for (allow_plain, challenge, method, expected, context) in cases {
            let answer = validate(&registry(allow_plain), request(challenge, method));
            let got = match &answer {
                Ok(request) => Ok(request.code_challenge_method.as_deref()),
                Err(AuthorizeError::Redirect { error: ErrorCode::InvalidRequest, description, .. }) => {
                    Err(description.as_str())
                }
                Err(other) => panic!("{context}: {other:?}"),
            };
            assert_eq!(got, expected, "{context}");
        }
    }
}
