//! `start-dev` with no provider configured: the built-in development provider, Entra-shaped on
//! the broker's own listener, takes a whole sign-in through the same path as Entra (code flow
//! with PKCE, state and nonce, a signed ID token checked against its JWKS, sealed tokens,
//! refresh on read), and stays off wherever it must.

use identity_broker::http::paths;
use identity_broker::store::Table;
use reqwest::StatusCode;
use url::Url;

use crate::both_backends;
use crate::helpers::*;

const DEV_TENANT: &str = "de7e1000-0000-4000-8000-000000000001";

fn dev_path(template: &str) -> String {
    template.replace("{tenant}", DEV_TENANT)
}

/// Signs `email` in through the development provider's page, as a person clicking would,
/// and returns the client's authorization code.
async fn sign_in_as(app: &TestApp, browser: &reqwest::Client, email: &str) -> String {
    let authorize = app.until_upstream(browser, &[]).await;
    let authorize = Url::parse(&app.url("/")).unwrap().join(&authorize).unwrap();
    assert!(
        authorize.path().starts_with("/dev-entra/"),
        "the broker sends the browser to the development provider: {authorize}"
    );

    let page = browser.get(authorize.clone()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Development sign-in") && html.contains("Anyone can sign in here as anyone"), "loud: {html}");
    assert!(html.contains("alice@example.test"), "sample users are offered");

    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("login_email".into(), email.into()));
    let mut action = authorize.clone();
    action.set_query(None);
    let answer = browser.post(action).form(&form).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FOUND, "the provider approves and redirects");
    let callback = location(&answer);
    assert!(callback.contains("/broker/dev/endpoint?code="), "{callback}");
    app.follow(browser, &callback).await.code()
}

both_backends!(start_dev_signs_in_through_the_development_provider_and_refreshes_on_read, |backend| async move {
    let app = TestApp::builder(backend).development("127.0.0.1:0").spawn().await;
    let browser = browser_client();

    let code = sign_in_as(&app, &browser, "Carol@Example.test").await;
    let tokens: serde_json::Value = app.exchange(&code, &[]).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().expect("an access token");

    let userinfo: serde_json::Value = app.userinfo(access).await.json().await.unwrap();
    assert_eq!(userinfo["email"], "carol@example.test");
    assert_eq!(userinfo["identity_provider"], "dev");
    let read = app.broker_token(access, "dev").await;
    assert_eq!(read.status(), StatusCode::OK);
    let stored: serde_json::Value = read.json().await.unwrap();
    let upstream = stored["access_token"].as_str().unwrap().to_owned();
    assert!(upstream.starts_with("dev-access."), "{stored}");
    for cell in app.store.dump_table(Table::VaultTokens).await.unwrap() {
        assert!(!String::from_utf8_lossy(&cell).contains(&upstream), "tokens are sealed in the vault");
    }

    // An hour later the upstream token is about to expire: the read refreshes it first,
    // through the development provider's token endpoint.
    app.state.clock.advance(3_400);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let form = [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh),
    ];
    let renewed: serde_json::Value = app.post_form(paths::TOKEN, &form).await.json().await.unwrap();
    let read = app.broker_token(renewed["access_token"].as_str().unwrap(), "dev").await;
    assert_eq!(read.status(), StatusCode::OK);
    let refreshed: serde_json::Value = read.json().await.unwrap();
    assert_ne!(refreshed["access_token"].as_str().unwrap(), upstream, "refreshed on read");
    assert!(refreshed["expires_in"].as_i64().unwrap() > 3_000, "{refreshed}");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_provider_refuses_what_entra_would() {
    let app = TestApp::builder(Backend::Sqlite).development("127.0.0.1:0").spawn().await;
    let browser = browser_client();
    let authorize = app.until_upstream(&browser, &[]).await;
    let authorize = Url::parse(&app.url("/")).unwrap().join(&authorize).unwrap();

    // Another redirect URI: a page, never a redirect to it.
    let mut elsewhere = authorize.clone();
    let pairs: Vec<(String, String)> = authorize
        .query_pairs()
        .into_owned()
        .map(|(k, v)| if k == "redirect_uri" { (k, "http://evil.test/cb".to_owned()) } else { (k, v) })
        .collect();
    elsewhere.query_pairs_mut().clear().extend_pairs(pairs);
    let answer = browser.get(elsewhere).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert!(answer.headers().get("location").is_none());
    assert!(answer.text().await.unwrap().contains("AADSTS50011"));

    // Not an e-mail address: the page again, no code.
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("login_email".into(), "not an address".into()));
    let mut action = authorize.clone();
    action.set_query(None);
    assert_eq!(browser.post(action).form(&form).send().await.unwrap().status(), StatusCode::BAD_REQUEST);

    // The token endpoint wants the broker's secret, as Entra does.
    let token = app.url(&dev_path(paths::DEV_TOKEN));
    let answer = app
        .api
        .post(&token)
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "identity-broker-development"),
            ("client_secret", "guess"),
            ("code", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);

    // Another tenant: Entra's AADSTS90002.
    let other = app.url(&paths::DEV_DISCOVERY.replace("{tenant}", "11111111-1111-4111-8111-111111111111"));
    let answer = app.api.get(other).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    assert_eq!(answer.json::<serde_json::Value>().await.unwrap()["error_codes"][0], 90002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_provider_stays_off_with_a_real_provider_or_off_loopback() {
    let discovery = dev_path(paths::DEV_DISCOVERY);
    let configured = spawn_app(Backend::Sqlite).await;
    let answer = configured.api.get(configured.url(&discovery)).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND, "a configured provider turns it off");

    let exposed = TestApp::builder(Backend::Sqlite).development("0.0.0.0:0").spawn().await;
    let local = exposed.public.replace("0.0.0.0", "127.0.0.1");
    let answer = exposed.api.get(format!("{local}{discovery}")).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND, "a listener beyond loopback turns it off");
}
