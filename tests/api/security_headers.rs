//! Keycloak's default security headers on every response: pages that no other site may frame
//! (the logout confirmation's one button ends a session), no sniffing, no referrer (URLs carry
//! codes and states), no indexing; HSTS only when the public hostname is https.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::helpers::*;

const EXPECTED: &[(&str, &str)] = &[
    ("x-frame-options", "SAMEORIGIN"),
    ("content-security-policy", "frame-src 'self'; frame-ancestors 'self'; object-src 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-robots-tag", "none"),
];

fn assert_security_headers(what: &str, headers: &HeaderMap) {
    for (name, value) in EXPECTED {
        let got = headers.get(*name).map(|v| v.to_str().unwrap_or("<not text>"));
        assert_eq!(got, Some(*value), "{what}: {name}");
    }
}

/// Pages and API answers of each listener, with the status each must have.
async fn responses(app: &TestApp) -> Vec<(&'static str, StatusCode, reqwest::Response)> {
    let get = |url: String| async move { app.api.get(url).send().await.expect("request") };
    vec![
        ("the start page", StatusCode::OK, get(app.url("/")).await),
        ("the logout confirmation page", StatusCode::OK, get(app.url(&realm_path(paths::LOGOUT))).await),
        (
            "an error page (unknown client)",
            StatusCode::BAD_REQUEST,
            get(app.auth_url_for("no-such-client", REDIRECT_URI, &[])).await,
        ),
        ("the discovery document", StatusCode::OK, get(app.url(&realm_path(paths::DISCOVERY))).await),
        ("an unknown path", StatusCode::NOT_FOUND, get(app.url("/no/such/page")).await),
        (
            "an internal API error",
            StatusCode::UNAUTHORIZED,
            get(format!("{}{}", app.internal, user_token_path("u", "azure_devops"))).await,
        ),
        ("management's liveness", StatusCode::OK, get(format!("{}{}", app.management, paths::HEALTH_LIVE)).await),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_keycloaks_security_headers_and_no_hsts_over_http() {
    let app = spawn_app(Backend::Sqlite).await;

    for (what, status, response) in responses(&app).await {
        assert_eq!(response.status(), status, "{what}");
        assert_security_headers(what, response.headers());
        assert!(response.headers().get("strict-transport-security").is_none(), "{what}: no HSTS over http");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_hostname_adds_strict_transport_security() {
    let app = TestApp::builder(Backend::Sqlite).http("hostname = \"https://auth.example.test\"").spawn().await;

    for (what, _, response) in responses(&app).await {
        assert_security_headers(what, response.headers());
        let hsts = response.headers().get("strict-transport-security").map(|v| v.to_str().unwrap_or_default());
        assert_eq!(hsts, Some("max-age=31536000; includeSubDomains"), "{what}");
    }
}
