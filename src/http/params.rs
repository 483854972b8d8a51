//! Typed request edges: a query string or form body read into one `Deserialize` struct per
//! endpoint by one rule, refusals answered in the surface's own dialect, and the bearer token
//! of the `Authorization` header.
//!
//! Parameters are read as RFC 6749 §3.1 asks: a repeated parameter is refused, and so is a
//! value longer than [`MAX_PARAMETER_LENGTH`]; an empty value counts as absent (python-keycloak
//! sends `username=&password=` with every code exchange).

use std::borrow::Cow;
use std::collections::HashSet;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::{AppError, CorrelationId};
use crate::oidc::error::{ErrorCode, OAuthError};

/// Longest value accepted for any parameter; longer ones are refused, not truncated.
pub(crate) const MAX_PARAMETER_LENGTH: usize = 2048;
/// Longest bearer token accepted: our JWTs are well under 2 KB.
const MAX_BEARER_LENGTH: usize = 8 * MAX_PARAMETER_LENGTH;
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

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

/// How a surface answers parameters it refuses. The rule that refuses them is the same
/// everywhere; only the answer's shape is the surface's own.
pub(crate) trait Dialect {
    type Rejection: IntoResponse;

    fn refuse(error: ParamError, correlation: &CorrelationId) -> Self::Rejection;
}

/// OAuth's JSON error, `invalid_request`: the token endpoint and its siblings, logout's form.
#[derive(Debug)]
pub(crate) struct OAuth;

impl Dialect for OAuth {
    type Rejection = AppError;

    fn refuse(error: ParamError, _: &CorrelationId) -> AppError {
        AppError::oauth(OAuthError::invalid_request(error.to_string()))
    }
}

/// The sign-in error page, for a person in a browser.
#[derive(Debug)]
pub(crate) struct Page;

impl Dialect for Page {
    type Rejection = AppError;

    fn refuse(error: ParamError, correlation: &CorrelationId) -> AppError {
        AppError::page(StatusCode::BAD_REQUEST, error.to_string(), correlation)
    }
}

/// The internal API's JSON error, `invalid_request`.
#[derive(Debug)]
pub(crate) struct Api;

impl Dialect for Api {
    type Rejection = AppError;

    fn refuse(error: ParamError, _: &CorrelationId) -> AppError {
        AppError::api(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, error.to_string())
    }
}

/// Keycloak's `{"errorMessage": …}`: the admin REST API.
#[derive(Debug)]
pub(crate) struct Keycloak;

impl Dialect for Keycloak {
    type Rejection = AppError;

    fn refuse(error: ParamError, _: &CorrelationId) -> AppError {
        AppError::keycloak(StatusCode::BAD_REQUEST, error.to_string())
    }
}

/// The refusal itself, answered as plain text: for a handler that answers it its own way
/// (taking `Result<Query<T, Plain>, ParamError>`), or a surface with no dialect of its own.
#[derive(Debug)]
pub(crate) struct Plain;

impl Dialect for Plain {
    type Rejection = ParamError;

    fn refuse(error: ParamError, _: &CorrelationId) -> ParamError {
        error
    }
}

impl IntoResponse for ParamError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.to_string()).into_response()
    }
}

/// A query string read into `T`, refused in dialect `D`; no query is an empty one.
#[derive(Debug)]
pub(crate) struct Query<T, D>(pub(crate) T, pub(crate) PhantomData<fn() -> D>);

impl<T: DeserializeOwned, D: Dialect, S: Send + Sync> FromRequestParts<S> for Query<T, D> {
    type Rejection = D::Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, D::Rejection> {
        match parse(parts.uri.query().unwrap_or_default().as_bytes()) {
            Ok(params) => Ok(Query(params, PhantomData)),
            Err(error) => Err(D::refuse(error, &CorrelationId::of(&parts.headers))),
        }
    }
}

/// A form body read into `T`, refused in dialect `D`; a body of another content type is
/// refused, an empty one is an empty form. `Option<Form<T, D>>` is `None` when the parameters
/// are refused, for an endpoint that reads a form only if it can.
#[derive(Debug)]
pub(crate) struct Form<T, D>(pub(crate) T, pub(crate) PhantomData<fn() -> D>);

impl<T: DeserializeOwned, D: Dialect, S: Send + Sync> FromRequest<S> for Form<T, D> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        match read_form(request, state).await? {
            Ok(form) => Ok(Form(form, PhantomData)),
            Err((error, correlation)) => Err(D::refuse(error, &correlation).into_response()),
        }
    }
}

impl<T: DeserializeOwned, D: Dialect, S: Send + Sync> OptionalFromRequest<S> for Form<T, D> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Response> {
        Ok(read_form(request, state).await?.ok().map(|form| Form(form, PhantomData)))
    }
}

/// The form of a request: a body that cannot be read is answered at once (too large, say);
/// parameters refused are returned with the request's correlation id, for the dialect.
async fn read_form<T: DeserializeOwned, S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<Result<T, (ParamError, CorrelationId)>, Response> {
    let is_form = content_type(request.headers()).starts_with(FORM_CONTENT_TYPE);
    let correlation = CorrelationId::of(request.headers());
    let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
    if !body.is_empty() && !is_form {
        return Ok(Err((ParamError::NotAForm, correlation)));
    }
    Ok(parse(&body).map_err(|error| (error, correlation)))
}

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Reads `application/x-www-form-urlencoded` pairs (a query string or a form body) into `T`.
/// Every pair is checked first; the raw pairs are then deserialized as they came, without the
/// empty ones.
pub(crate) fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ParamError> {
    let mut seen = HashSet::new();
    let mut any_empty = false;
    for pair in pairs(raw) {
        let (name, value) = decode_pair(pair)?;
        if value.len() > MAX_PARAMETER_LENGTH {
            return Err(ParamError::TooLong(name.into_owned()));
        }
        any_empty |= value.is_empty();
        if let Some(name) = seen.replace(name) {
            return Err(ParamError::Repeated(name.into_owned()));
        }
    }
    // A value is empty exactly when its raw form is: every raw byte decodes to at least one.
    let present: Cow<'_, [u8]> = if any_empty {
        Cow::Owned(pairs(raw).filter(|pair| !split_pair(pair).1.is_empty()).collect::<Vec<_>>().join(&b'&'))
    } else {
        Cow::Borrowed(raw)
    };
    Ok(serde_urlencoded::from_bytes(&present)?)
}

/// One `name=value` pair, percent- and `+`-decoded. Unlike `form_urlencoded::parse`, bytes
/// that are not UTF-8 are refused rather than replaced, and so is NUL: no database stores it
/// in text (Postgres refuses it), and no protocol value holds it.
fn decode_pair(pair: &[u8]) -> Result<(Cow<'_, str>, Cow<'_, str>), ParamError> {
    let (name, value) = split_pair(pair);
    let name = decode_component(name).ok_or_else(|| ParamError::NotText(String::from_utf8_lossy(name).into_owned()))?;
    let value = decode_component(value).ok_or_else(|| ParamError::NotText(name.clone().into_owned()))?;
    Ok((name, value))
}

/// A pair's raw name and value; a pair without `=` has an empty value.
fn split_pair(pair: &[u8]) -> (&[u8], &[u8]) {
    match pair.iter().position(|&byte| byte == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &[]),
    }
}

/// The decoded text, borrowed when nothing is encoded; `None` when it is not text.
fn decode_component(raw: &[u8]) -> Option<Cow<'_, str>> {
    let text: Cow<'_, str> = if raw.iter().any(|&byte| byte == b'+' || byte == b'%') {
        let plus_as_space: Vec<u8> = raw.iter().map(|&byte| if byte == b'+' { b' ' } else { byte }).collect();
        let decoded: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
        Cow::Owned(String::from_utf8(decoded).ok()?)
    } else {
        Cow::Borrowed(std::str::from_utf8(raw).ok()?)
    };
    (!text.contains('\0')).then_some(text)
}

/// The one rule for every listener, before any handler runs: a path, query string, form body
/// or JSON body holding NUL or bytes that are not UTF-8 (percent-encoded or JSON-escaped ones
/// included) is refused with `400 invalid_request` (`errorMessage` on the admin API). Handlers
/// never see such a value, so none reaches a database (Postgres refuses NUL in text with an
/// error that would be a 500).
pub(crate) async fn refuse_non_text(
    axum::extract::State(max_body_bytes): axum::extract::State<usize>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    // Keycloak's admin API answers bad input in its own dialect (`errorMessage`), which its
    // OpenAPI document promises; every other surface in OAuth's.
    let admin = request.uri().path().starts_with("/admin/");
    let refuse = |what: &str| {
        let message = format!("the {what} holds a NUL byte or bytes that are not UTF-8");
        let error = if admin {
            AppError::keycloak(StatusCode::BAD_REQUEST, message)
        } else {
            AppError::api(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
        };
        error.into_response()
    };
    if decode_component(request.uri().path().as_bytes()).is_none() {
        return refuse("path");
    }
    if request.uri().query().is_some_and(|query| holds_non_text(query.as_bytes())) {
        return refuse("query string");
    }
    let content_type = content_type(request.headers());
    let body_kind = if content_type.starts_with(FORM_CONTENT_TYPE) {
        Some("form body")
    } else if content_type.starts_with("application/json") {
        Some("JSON body")
    } else {
        None
    };
    let Some(body_kind) = body_kind else { return next.run(request).await };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, max_body_bytes).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    let refused = match body_kind {
        "form body" => holds_non_text(&bytes),
        _ => std::str::from_utf8(&bytes).map_or(true, holds_escaped_nul),
    };
    if refused {
        return refuse(body_kind);
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
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

    fn example(code: Option<&str>, state: Option<&str>, min_validity: Option<i64>) -> Example {
        Example { code: code.map(str::to_owned), state: state.map(str::to_owned), min_validity }
    }

    #[test]
    fn parameters_are_typed_once_and_repeats_and_long_values_are_refused() {
        let parsed: Example = parse(b"code=abc&state=&min_validity=30&other=x").expect("parses");
        assert_eq!(parsed, example(Some("abc"), None, Some(30)), "empty = absent");
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
    fn values_are_decoded_once_whether_or_not_an_empty_one_is_dropped() {
        let cases: [(&[u8], Example, &str); 7] = [
            (b"code=a%26b%3Dc&state=x+y", example(Some("a&b=c"), Some("x y"), None), "encoded, none empty"),
            (b"code=a%26b%3Dc&state=&x", example(Some("a&b=c"), None, None), "encoded, empties dropped"),
            (b"state&code=%2B+", example(Some("+ "), None, None), "a name without `=` is absent"),
            (b"&&code=%C3%A9&&", example(Some("é"), None, None), "empty pairs skipped"),
            (b"min_validity=&code=", example(None, None, None), "all empty"),
            (b"=x&code=c", example(Some("c"), None, None), "a pair without a name is ignored"),
            (b"code=%zz", example(Some("%zz"), None, None), "a stray `%` is kept as written"),
        ];
        for (raw, expected, why) in cases {
            assert_eq!(parse::<Example>(raw).expect(why), expected, "{why}");
        }
    }

    #[test]
    fn names_are_compared_decoded_and_only_text_is_accepted() {
        let cases: [(&[u8], &str); 6] = [
            (b"code=a&%63ode=b", "parameter `code` was given more than once"),
            (b"code=&code=b", "parameter `code` was given more than once"),
            (b"code=%00", "parameter `code` holds a NUL byte"),
            (b"code=%FF", "parameter `code` holds a NUL byte or bytes that are not UTF-8"),
            (b"c%FFde=x", "parameter `c%FFde` holds a NUL byte or bytes that are not UTF-8"),
            (b"min_validity=1.5", "malformed parameters: invalid digit found in string"),
        ];
        for (raw, expected) in cases {
            let refused = parse::<Example>(raw).expect_err(expected);
            assert!(refused.to_string().starts_with(expected), "{raw:?}: {refused}");
        }
    }

    fn request(content_type: Option<&str>, body: &'static str) -> Request {
        let mut request = Request::new(axum::body::Body::from(body));
        if let Some(content_type) = content_type {
            request.headers_mut().insert(header::CONTENT_TYPE, content_type.parse().expect("header"));
        }
        request.headers_mut().insert("x-request-id", "req-1".parse().expect("header"));
        request
    }

    async fn body_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        String::from_utf8(bytes.to_vec()).expect("text")
    }

    async fn form<D: Dialect>(request: Request) -> Result<Example, Response> {
        <Form<Example, D> as FromRequest<()>>::from_request(request, &()).await.map(|Form(form, _)| form)
    }

    async fn optional_form(request: Request) -> Result<Option<Example>, Response> {
        let read = <Form<Example, OAuth> as OptionalFromRequest<()>>::from_request(request, &()).await;
        read.map(|form| form.map(|Form(form, _)| form))
    }

    #[tokio::test]
    async fn a_form_is_read_only_from_a_form_body_and_refused_in_its_surfaces_dialect() {
        let form_type = "application/x-www-form-urlencoded; charset=UTF-8";
        let read = form::<Plain>(request(Some(form_type), "code=abc")).await.expect("a form");
        assert_eq!(read, example(Some("abc"), None, None));
        let empty = form::<Plain>(request(None, "")).await.expect("an empty body, of any type");
        assert_eq!(empty, example(None, None, None));

        let refused = form::<OAuth>(request(Some("application/json"), "{}")).await.expect_err("not a form");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let body = body_of(refused).await;
        assert!(body.contains("invalid_request") && body.contains("application/x-www-form-urlencoded"), "{body}");

        let refused = form::<Page>(request(Some(form_type), "code=a&code=b")).await.expect_err("repeated");
        let page = body_of(refused).await;
        assert!(page.contains("more than once") && page.contains("req-1"), "a page with its correlation id: {page}");
    }

    #[tokio::test]
    async fn an_optional_form_is_absent_when_refused() {
        let read = optional_form(request(Some("text/plain"), "code=abc")).await.expect("no rejection");
        assert_eq!(read, None, "a body of another type is no form");
        let read = optional_form(request(Some(FORM_CONTENT_TYPE), "code=abc")).await.expect("no rejection");
        assert_eq!(read, Some(example(Some("abc"), None, None)));
    }

    #[tokio::test]
    async fn a_query_is_read_by_the_same_rule_and_refused_in_its_surfaces_dialect() {
        let (mut parts, ()) = Request::builder().uri("/x?code=a&state=").body(()).expect("request").into_parts();
        let Query(read, _) = Query::<Example, Api>::from_request_parts(&mut parts, &()).await.expect("a query");
        assert_eq!(read, example(Some("a"), None, None));

        let (mut parts, ()) = Request::builder().uri("/x?code=a&code=b").body(()).expect("request").into_parts();
        let refused = Query::<Example, Keycloak>::from_request_parts(&mut parts, &()).await.expect_err("repeated");
        assert!(
            matches!(refused, AppError::Keycloak { status: StatusCode::BAD_REQUEST, ref message } if message.contains("more than once"))
        );
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
