//! Typed request edges: a query string or form body read into one `Deserialize` struct per
//! endpoint, and the bearer token of the `Authorization` header.
//!
//! Parameters are read as RFC 6749 §3.1 asks: a repeated parameter is refused, and so is a
//! value longer than [`MAX_PARAMETER_LENGTH`]; an empty value counts as absent (python-keycloak
//! sends `username=&password=` with every code exchange).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

/// Longest value accepted for any parameter; longer ones are refused, not truncated.
pub(crate) const MAX_PARAMETER_LENGTH: usize = 2048;
/// Longest bearer token accepted: our JWTs are well under 2 KB.
const MAX_BEARER_LENGTH: usize = 8 * MAX_PARAMETER_LENGTH;

/// Why a request's parameters were refused; `Display` is the message for the client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParamError {
    #[error("parameter `{0}` was given more than once")]
    Repeated(String),
    #[error("parameter `{0}` is longer than {MAX_PARAMETER_LENGTH} characters")]
    TooLong(String),
    #[error("the body must be application/x-www-form-urlencoded")]
    NotAForm,
    #[error("malformed parameters: {0}")]
    Malformed(#[from] serde_urlencoded::de::Error),
}

/// Reads `application/x-www-form-urlencoded` pairs (a query string or a form body) into `T`.
pub(crate) fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ParamError> {
    let mut seen = std::collections::HashSet::new();
    let mut present = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(raw) {
        if value.len() > MAX_PARAMETER_LENGTH {
            return Err(ParamError::TooLong(name.into_owned()));
        }
        if !seen.insert(name.clone()) {
            return Err(ParamError::Repeated(name.into_owned()));
        }
        if !value.is_empty() {
            present.append_pair(&name, &value);
        }
    }
    Ok(serde_urlencoded::from_str(&present.finish())?)
}

/// Reads a query string; no query is an empty one.
pub(crate) fn parse_query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, ParamError> {
    parse(raw.unwrap_or_default().as_bytes())
}

/// Reads a form body; a body of another content type is refused.
pub(crate) fn parse_form<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ParamError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(ParamError::NotAForm);
    }
    parse(body)
}

/// The bearer token of the `Authorization` header, when there is a plausible one. Each
/// surface answers its absence in its own dialect (OAuth, Keycloak, the token API).
#[derive(Debug)]
pub(crate) struct Bearer(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Bearer(bearer_token(&parts.headers).map(str::to_owned)))
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let (scheme, token) = headers.get(header::AUTHORIZATION)?.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_BEARER_LENGTH).then_some(token)
}

/// A bearer token sent in a form body (`access_token`, RFC 6750 §2.2), within the same bounds.
pub(crate) fn form_bearer(access_token: Option<String>) -> Option<String> {
    access_token.filter(|token| token.len() <= MAX_BEARER_LENGTH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Example {
        code: Option<String>,
        state: Option<String>,
        min_validity: Option<i64>,
    }

    #[test]
    fn parameters_are_typed_once_and_repeats_and_long_values_are_refused() {
        let parsed: Example = parse(b"code=abc&state=&min_validity=30&other=x").expect("parses");
        assert_eq!(parsed, Example { code: Some("abc".into()), state: None, min_validity: Some(30) }, "empty = absent");
        let cases: [(&[u8], &str); 3] =
            [(b"code=a&code=b", "more than once"), (b"min_validity=soon", "malformed"), (b"", "ok")];
        for (raw, expected) in cases {
            match parse::<Example>(raw) {
                Ok(_) => assert_eq!(expected, "ok", "{raw:?} should be refused"),
                Err(err) => assert!(err.to_string().contains(expected), "{raw:?}: {err}"),
            }
        }
        let long = format!("code={}", "x".repeat(MAX_PARAMETER_LENGTH + 1));
        assert!(matches!(parse::<Example>(long.as_bytes()), Err(ParamError::TooLong(name)) if name == "code"));
    }

    #[test]
    fn only_a_bearer_authorization_gives_a_token() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
            assert_eq!(bearer_token(&headers), expected, "{value:?}");
        }
    }
}
