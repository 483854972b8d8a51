//! HTTP as the tests and benchmarks speak it to the broker: the route paths of the test realm,
//! taken from the router's own constants, a browser-like client, and where a redirect points.

use std::collections::HashMap;

pub use identity_broker::http::paths;
use url::Url;

/// The realm every test and benchmark configuration leaves at its default name.
pub const REALM_NAME: &str = "allhands";

/// A route of [`paths`] in the test realm: `realm_path(paths::TOKEN)`.
pub fn realm_path(template: &str) -> String {
    fill(template, &[("realm", REALM_NAME)])
}

/// A route of [`paths`] in the test realm for the provider `alias`:
/// `provider_path(paths::BROKER_TOKEN, "azure_devops")`.
pub fn provider_path(template: &str, alias: &str) -> String {
    fill(template, &[("realm", REALM_NAME), ("alias", alias)])
}

/// The internal API's route to a user's tokens from the provider `alias`.
pub fn user_token_path(user_id: &str, alias: &str) -> String {
    fill(paths::INTERNAL_USER_TOKEN, &[("user_id", user_id), ("alias", alias)])
}

/// `template` with each `{name}` replaced; a placeholder left over means a route gained one
/// that its callers do not give, which must fail here rather than as a 404 somewhere else.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let path =
        values.iter().fold(template.to_owned(), |path, (name, value)| path.replace(&format!("{{{name}}}"), value));
    assert!(!path.contains('{'), "route {template} has a placeholder this helper does not fill: {path}");
    path
}

/// reqwest is built without a rustls crypto provider of its own: building a client, even for
/// plain HTTP, needs one installed in the process first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A browser: keeps cookies, follows no redirects.
pub fn browser_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// Where a redirect points, as sent.
pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location on a {} answer", response.status()))
        .to_owned()
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    Url::parse(url).expect("absolute URL").query_pairs().into_owned().collect()
}
