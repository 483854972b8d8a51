//! Validation of a client's authorization request, in the order RFC 6749 §4.1.2.1 demands:
//! errors before the redirect URI is trusted are shown to the user, later ones go back to it.

use super::clients::ClientRegistry;
use super::error::ErrorCode;
use crate::config::ClientSettings;
use crate::crypto::{PKCE_PLAIN, PKCE_S256};

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
    use secrecy::SecretString;

    use super::*;
    use crate::config::ClientCredential;
    use crate::crypto::CtSecret;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    const REDIRECT_URI: &str = "http://app.test/cb";

    fn client(client_id: &str, credential: ClientCredential, allow_plain_pkce: bool) -> ClientSettings {
        ClientSettings {
            client_id: client_id.to_owned(),
            credential,
            redirect_uris: vec![REDIRECT_URI.to_owned()],
            post_logout_redirect_uris: Vec::new(),
            read_token: true,
            rotate_refresh_tokens: false,
            allow_plain_pkce,
            direct_access_grants: false,
            roles_claim: false,
        }
    }

    fn registry(allow_plain_pkce: bool) -> ClientRegistry {
        ClientRegistry::new(vec![client("app", ClientCredential::Public, allow_plain_pkce)])
    }

    /// A confidential client `web`, which need not send PKCE, and a public one `spa`, which must.
    fn clients() -> ClientRegistry {
        let secret = ClientCredential::Confidential(CtSecret::new(SecretString::from("web-secret")));
        ClientRegistry::new(vec![client("web", secret, false), client("spa", ClientCredential::Public, false)])
    }

    fn request(challenge: Option<&str>, method: Option<&str>) -> AuthorizationParams {
        AuthorizationParams {
            client_id: Some("app".to_owned()),
            redirect_uri: Some(REDIRECT_URI.to_owned()),
            response_type: Some("code".to_owned()),
            code_challenge: challenge.map(str::to_owned),
            code_challenge_method: method.map(str::to_owned),
            ..AuthorizationParams::default()
        }
    }

    /// The confidential client's smallest valid request, with a state to send back.
    fn web() -> AuthorizationParams {
        AuthorizationParams {
            client_id: Some("web".to_owned()),
            redirect_uri: Some(REDIRECT_URI.to_owned()),
            response_type: Some("code".to_owned()),
            state: Some("st4te".to_owned()),
            ..AuthorizationParams::default()
        }
    }

    fn text(length: usize) -> Option<String> {
        Some("x".repeat(length))
    }

    /// The page's message, or the redirect's error and description (checking that a redirect
    /// goes to the request's URI with its state).
    fn refusal(params: AuthorizationParams, why: &str) -> (Option<ErrorCode>, String) {
        let state = params.state.clone();
        match validate(&clients(), params) {
            Ok(request) => panic!("{why}: accepted {request:?}"),
            Err(AuthorizeError::Page(message)) => (None, message),
            Err(AuthorizeError::Redirect { redirect_uri, state: sent_state, error, description }) => {
                assert_eq!(redirect_uri, REDIRECT_URI, "{why}: back to the request's redirect URI");
                assert_eq!(sent_state, state, "{why}: with the request's state");
                (Some(error), description)
            }
        }
    }

    #[test]
    fn an_untrusted_client_or_redirect_uri_is_answered_on_a_page() {
        let cases = [
            (AuthorizationParams { client_id: None, ..web() }, "The request names no client (client_id is missing)."),
            (
                AuthorizationParams { client_id: Some("nobody".to_owned()), ..web() },
                "The application is not registered with this sign-in service.",
            ),
            (AuthorizationParams { redirect_uri: None, ..web() }, "The request has no redirect_uri."),
            (
                AuthorizationParams { redirect_uri: Some("http://app.test/cb/".to_owned()), ..web() },
                "The redirect URI is not registered for this application.",
            ),
            (
                AuthorizationParams { redirect_uri: Some("http://evil.test/cb".to_owned()), ..web() },
                "The redirect URI is not registered for this application.",
            ),
            (
                AuthorizationParams { state: text(MAX_STATE_LENGTH + 1), ..web() },
                "The request's state is longer than 1024 characters.",
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(refusal(params, expected), (None, expected.to_owned()), "{expected}");
        }
    }

    #[test]
    fn later_refusals_go_back_to_the_client_with_its_state() {
        use ErrorCode::{InvalidRequest, UnsupportedResponseType};
        let cases = [
            (AuthorizationParams { response_type: None, ..web() }, InvalidRequest, "response_type is missing"),
            (
                AuthorizationParams { response_type: Some("token".to_owned()), ..web() },
                UnsupportedResponseType,
                "only response_type=code is supported",
            ),
            (
                AuthorizationParams { response_type: Some("code id_token".to_owned()), ..web() },
                UnsupportedResponseType,
                "only response_type=code is supported",
            ),
            (
                AuthorizationParams { response_mode: Some("fragment".to_owned()), ..web() },
                InvalidRequest,
                "only response_mode=query is supported",
            ),
            (
                AuthorizationParams { response_mode: Some("form_post".to_owned()), ..web() },
                InvalidRequest,
                "only response_mode=query is supported",
            ),
            (
                AuthorizationParams { client_id: Some("spa".to_owned()), ..web() },
                InvalidRequest,
                "public clients must send a PKCE code_challenge",
            ),
            (
                AuthorizationParams { max_age: Some("-1".to_owned()), ..web() },
                InvalidRequest,
                "Invalid parameter: max_age",
            ),
            (
                AuthorizationParams { max_age: Some("soon".to_owned()), ..web() },
                InvalidRequest,
                "Invalid parameter: max_age",
            ),
            (
                AuthorizationParams { kc_action: Some("idp_link:".to_owned()), ..web() },
                InvalidRequest,
                "kc_action must be idp_link:<alias>",
            ),
            (
                AuthorizationParams { kc_action: Some("UPDATE_PASSWORD".to_owned()), ..web() },
                InvalidRequest,
                "kc_action must be idp_link:<alias>",
            ),
            (
                AuthorizationParams { state: None, response_type: None, ..web() },
                InvalidRequest,
                "response_type is missing",
            ),
        ];
        for (params, error, description) in cases {
            assert_eq!(refusal(params, description), (Some(error), description.to_owned()), "{description}");
        }
    }

    #[test]
    fn what_is_kept_for_the_sign_in_is_bounded_and_a_value_at_its_bound_is_accepted() {
        type With = fn(Option<String>) -> AuthorizationParams;
        let bounded: [(&str, usize, With); 6] = [
            ("nonce", 512, |value| AuthorizationParams { nonce: value, ..web() }),
            ("login_hint", 320, |value| AuthorizationParams { login_hint: value, ..web() }),
            ("scope", 512, |value| AuthorizationParams { scope: value, ..web() }),
            ("prompt", 64, |value| AuthorizationParams { prompt: value, ..web() }),
            ("kc_idp_hint", 128, |value| AuthorizationParams { kc_idp_hint: value, ..web() }),
            ("kc_action", 128, |value| AuthorizationParams { kc_action: value, ..web() }),
        ];
        for (name, limit, with) in bounded {
            let at_limit = match name {
                // Only a link request is a valid action; its length is what counts here.
                "kc_action" => Some(format!("idp_link:{}", "x".repeat(limit - "idp_link:".len()))),
                _ => text(limit),
            };
            assert!(validate(&clients(), with(at_limit)).is_ok(), "{name} of {limit} characters is accepted");
            let expected = format!("Invalid parameter: {name} is longer than {limit} characters");
            assert_eq!(refusal(with(text(limit + 1)), name), (Some(ErrorCode::InvalidRequest), expected), "{name}");
        }
        let state = validate(&clients(), AuthorizationParams { state: text(MAX_STATE_LENGTH), ..web() });
        assert_eq!(state.expect("a state at its bound").state.map(|s| s.len()), Some(MAX_STATE_LENGTH));
    }

    #[test]
    fn the_first_refusal_in_rfc_order_is_the_one_answered() {
        let long = text(513);
        let cases = [
            (
                AuthorizationParams { client_id: Some("nobody".to_owned()), redirect_uri: None, ..web() },
                "The application is not registered with this sign-in service.",
                "an unknown client before its redirect URI",
            ),
            (
                AuthorizationParams {
                    redirect_uri: Some("http://evil.test/".to_owned()),
                    response_type: None,
                    ..web()
                },
                "The redirect URI is not registered for this application.",
                "an unregistered redirect URI is never redirected to, whatever else is wrong",
            ),
            (
                AuthorizationParams { state: text(MAX_STATE_LENGTH + 1), nonce: long.clone(), ..web() },
                "The request's state is longer than 1024 characters.",
                "a state too long to send back, before the other lengths",
            ),
            (
                AuthorizationParams { nonce: long.clone(), scope: long.clone(), ..web() },
                "Invalid parameter: nonce is longer than 512 characters",
                "the lengths in their order",
            ),
            (
                AuthorizationParams { scope: long, response_type: Some("token".to_owned()), ..web() },
                "Invalid parameter: scope is longer than 512 characters",
                "lengths before the response type",
            ),
            (
                AuthorizationParams {
                    response_type: Some("token".to_owned()),
                    response_mode: Some("fragment".to_owned()),
                    ..web()
                },
                "only response_type=code is supported",
                "the response type before the response mode",
            ),
            (
                AuthorizationParams {
                    response_mode: Some("fragment".to_owned()),
                    code_challenge_method: Some("S256".to_owned()),
                    ..web()
                },
                "only response_mode=query is supported",
                "the response mode before PKCE",
            ),
            (
                AuthorizationParams {
                    code_challenge: Some("short".to_owned()),
                    code_challenge_method: Some("S256".to_owned()),
                    max_age: Some("-5".to_owned()),
                    ..web()
                },
                "Invalid parameter: code_challenge",
                "PKCE before max_age",
            ),
            (
                AuthorizationParams {
                    client_id: Some("spa".to_owned()),
                    max_age: Some("-5".to_owned()),
                    kc_action: Some("x".to_owned()),
                    ..web()
                },
                "public clients must send a PKCE code_challenge",
                "a public client's missing PKCE before max_age",
            ),
            (
                AuthorizationParams { max_age: Some("-5".to_owned()), kc_action: Some("x".to_owned()), ..web() },
                "Invalid parameter: max_age",
                "max_age before kc_action",
            ),
        ];
        for (params, expected, why) in cases {
            assert_eq!(refusal(params, why).1, expected, "{why}");
        }
    }

    #[test]
    fn an_accepted_request_keeps_what_the_client_sent() {
        let params = AuthorizationParams {
            client_id: Some("spa".to_owned()),
            nonce: Some("n0nce".to_owned()),
            scope: Some("openid email".to_owned()),
            response_mode: Some("query".to_owned()),
            code_challenge: Some(CHALLENGE.to_owned()),
            code_challenge_method: Some("S256".to_owned()),
            prompt: Some("login consent".to_owned()),
            max_age: Some("0".to_owned()),
            login_hint: Some("dana@example.test".to_owned()),
            kc_idp_hint: Some("azure_devops".to_owned()),
            kc_action: Some("idp_link:azure_devops".to_owned()),
            ..web()
        };
        let request = validate(&clients(), params).expect("valid");

        assert_eq!(request.client_id, "spa");
        assert_eq!(request.redirect_uri, REDIRECT_URI);
        assert_eq!(request.scope, "openid email");
        assert_eq!(request.state.as_deref(), Some("st4te"));
        assert_eq!(request.nonce.as_deref(), Some("n0nce"));
        assert_eq!(request.code_challenge.as_deref(), Some(CHALLENGE));
        assert_eq!(request.code_challenge_method.as_deref(), Some("S256"));
        assert_eq!(request.prompt.as_deref(), Some("login consent"), "prompt is kept as sent, for the sign-in");
        assert_eq!(request.max_age, Some(0), "max_age=0 asks for a fresh sign-in");
        assert_eq!(request.login_hint.as_deref(), Some("dana@example.test"));
        assert_eq!(request.idp_hint.as_deref(), Some("azure_devops"));
        assert_eq!(request.link_alias.as_deref(), Some("azure_devops"));

        let minimal = validate(&clients(), AuthorizationParams { state: None, ..web() }).expect("valid");
        assert_eq!(minimal.scope, "openid", "no scope is openid");
        let nothing = (minimal.state, minimal.nonce, minimal.prompt, minimal.max_age, minimal.code_challenge_method);
        assert_eq!(nothing, (None, None, None, None, None), "nothing the client did not send");
        assert_eq!((minimal.idp_hint, minimal.link_alias), (None, None));
        let aged = validate(&clients(), AuthorizationParams { max_age: Some("3600".to_owned()), ..web() });
        assert_eq!(aged.expect("valid").max_age, Some(3600));
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
