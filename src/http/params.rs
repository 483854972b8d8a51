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

use super::AppError;
use crate::oidc::error::ErrorCode;

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
    #[error("parameter `{0}` holds a NUL byte or bytes that are not UTF-8")]
    NotText(String),
    #[error("the body must be application/x-www-form-urlencoded")]
    NotAForm,
    #[error("malformed parameters: {0}")]
    Malformed(#[from] serde_urlencoded::de::Error),
}

/// Reads `application/x-www-form-urlencoded` pairs (a query string or a form body) into `T`.
pub(crate) fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ParamError> {
    let mut seen = std::collections::HashSet::new();
    let mut present = url::form_urlencoded::Serializer::new(String::new());
    for pair in pairs(raw) {
        let (name, value) = decode_pair(pair)?;
        if value.len() > MAX_PARAMETER_LENGTH {
            return Err(ParamError::TooLong(name));
        }
        if !seen.insert(name.clone()) {
            return Err(ParamError::Repeated(name));
        }
        if !value.is_empty() {
            present.append_pair(&name, &value);
        }
    }
    Ok(serde_urlencoded::from_str(&present.finish())?)
}

/// One `name=value` pair, percent- and `+`-decoded. Unlike `form_urlencoded::parse`, bytes
/// that are not UTF-8 are refused rather than replaced, and so is NUL: no database stores it
/// in text (Postgres refuses it), and no protocol value holds it.
fn decode_pair(pair: &[u8]) -> Result<(String, String), ParamError> {
    let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &[][..]),
    };
    let name = decode_component(name).ok_or_else(|| ParamError::NotText(String::from_utf8_lossy(name).into_owned()))?;
    let value = decode_component(value).ok_or_else(|| ParamError::NotText(name.clone()))?;
    Ok((name, value))
}

fn decode_component(raw: &[u8]) -> Option<String> {
    let plus_as_space: Vec<u8> = raw.iter().map(|&byte| if byte == b'+' { b' ' } else { byte }).collect();
    let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(decoded).ok().filter(|text| !text.contains('\0'))
}

/// The one rule for every listener, before any handler runs: a path, query string, form body
/// or JSON body holding NUL or bytes that are not UTF-8 (percent-encoded or JSON-escaped ones
/// included) is refused with `400 invalid_request` (`errorMessage` on the admin API). Handlers never see such a value, so none
/// reaches a database (Postgres refuses NUL in text with an error that would be a 500).
pub(crate) async fn refuse_non_text(
    axum::extract::State(max_body_bytes): axum::extract::State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    // Keycloak's admin API answers bad input in its own dialect (`errorMessage`), which its
    // OpenAPI document promises; every other surface in OAuth's.
    let admin = request.uri().path().starts_with("/admin/");
    let refuse = |what: &str| {
        let message = format!("the {what} holds a NUL byte or bytes that are not UTF-8");
        let status = axum::http::StatusCode::BAD_REQUEST;
        let error = if admin {
            AppError::keycloak(status, message)
        } else {
            AppError::api(status, ErrorCode::InvalidRequest, message)
        };
        error.into_response()
    };
    if decode_component(request.uri().path().as_bytes()).is_none() {
        return refuse("path");
    }
    if request.uri().query().is_some_and(|query| holds_non_text(query.as_bytes())) {
        return refuse("query string");
    }
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let body_kind = if content_type.starts_with("application/x-www-form-urlencoded") {
        Some("form body")
    } else if content_type.starts_with("application/json") {
        Some("JSON body")
    } else {
        None
    };
    let Some(body_kind) = body_kind else { return next.run(request).await };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, max_body_bytes).await else {
        return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    let refused = match body_kind {
        "form body" => holds_non_text(&bytes),
        _ => std::str::from_utf8(&bytes).map_or(true, holds_escaped_nul),
    };
    if refused {
        return refuse(body_kind);
    }
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Whether any pair of a query string or form body is not text.
fn holds_non_text(raw: &[u8]) -> bool {
    pairs(raw).any(|pair| decode_pair(pair).is_err())
}

fn pairs(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|&byte| byte == b'&').filter(|pair| !pair.is_empty())
}

/// Whether JSON text escapes a NUL (`\u0000`); an escaped backslash before `u0000` does not.
fn holds_escaped_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut at = 0;
    while let Some(found) = json[at..].find("u0000") {
        let start = at + found;
        let backslashes = bytes[..start].iter().rev().take_while(|&&b| b == b'\\').count();
        if backslashes % 2 == 1 {
            return true;
        }
        at = start + 1;
    }
    false
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
