//! The start page at `/`: what it tells an operator, its "Try a sign-in" demonstration in
//! start-dev (in a real headless chromium, and over plain HTTP for its errors), and its absence
//! in production.

use std::time::{Duration, Instant};

use identity_broker::config::Mode;
use reqwest::StatusCode;
use serde_json::Value;

use crate::headless::{chromium, node_env};
use crate::helpers::*;
use crate::python::target_dir;
use crate::support::fake_entra::FakeEntra;

/// The exact redirect URI to register for `alias`, on the public base URL `public`.
fn redirect_uri(public: &str, alias: &str) -> String {
    format!("{public}{}", provider_path(paths::BROKER_ENDPOINT, alias))
}

/// Every secret of the test configuration and of the running application.
fn secrets(app: &TestApp) -> Vec<String> {
    let mut secrets: Vec<String> = [
        CLIENT_SECRET,
        OTHER_CLIENT_SECRET,
        SERVICE_SECRET,
        LIMITED_SERVICE_SECRET,
        UPSTREAM_SECRET,
        VAULT_KEY,
        VAULT_KEY.split_once(':').expect("id:key").1,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    secrets.extend(app.state.demo.as_ref().map(|demo| demo.client_secret().to_owned()));
    secrets
}

/// Fails if `html` shows a secret, a token the fake provider issued, or anything JWT-shaped.
fn assert_nothing_secret(html: &str, secrets: &[String], entra: &FakeEntra, page: &str) {
    for secret in secrets {
        assert!(!html.contains(secret.as_str()), "{page} shows the secret {secret:?}");
    }
    for token in entra.issued_tokens() {
        assert!(!html.contains(&token), "{page} shows a token the provider issued");
        assert!(!html.contains(&token[..24]), "{page} shows the start of a token the provider issued");
    }
    assert!(!html.contains("eyJ"), "{page} shows something JWT-shaped");
}

/// `1234` as the page writes it, `1,234`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Runs tests/browser/start_page.mjs against `app` in a fresh chromium profile and returns what
/// it saw; with `pick`, the sign-in goes through the development provider's page.
async fn browse(
    app: &TestApp,
    chromium: &std::path::Path,
    node: &crate::headless::NodeEnv,
    start_screenshot: &std::path::Path,
    screenshot: &std::path::Path,
    pick: Option<&str>,
) -> Value {
    let profile = std::env::temp_dir().join(format!("ib-chromium-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&profile).expect("a fresh profile directory");
    let _ = std::fs::remove_file(screenshot);
    let browsing = Instant::now();
    let mut command = tokio::process::Command::new("node");
    command
        .arg(node.script("start_page.mjs"))
        .env("START_URL", app.url(paths::START))
        .env("NODE_ENV_DIR", node.dir())
        .env("CHROMIUM", chromium)
        .env("USER_DATA_DIR", &profile)
        .env("START_SCREENSHOT", start_screenshot)
        .env("SCREENSHOT", screenshot)
        .kill_on_drop(true);
    if let Some(user) = pick {
        command.env("PICK_USER", user);
    }
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the browser run ends within 3 minutes")
        .expect("node starts");
    let _ = std::fs::remove_dir_all(&profile);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser run failed ({}):\n{stderr}", output.status);
    eprintln!("tests: the browser run took {:.1} s", browsing.elapsed().as_secs_f64());
    serde_json::from_slice(&output.stdout).expect("the script prints one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_page_and_demonstration_in_a_real_browser() {
    // Arrange: the browser and its driver (installed on first use), the application in start-dev.
    let started = Instant::now();
    let chromium = chromium().await;
    let node = node_env().await;
    eprintln!("tests: browser provisioning took {:.1} s", started.elapsed().as_secs_f64());
    let app = spawn_app(Backend::Sqlite).await;
    assert!(app.state.demo.is_some(), "spawn_app runs start-dev, which enables the demonstration client");
    let screenshot = target_dir().join("start-page.png");
    let start_screenshot = target_dir().join("start-page-home.png");

    // Act: open `/`, click "Try a sign-in", follow the whole sign-in back to the result page.
    let seen = browse(&app, chromium, node, &start_screenshot, &screenshot, None).await;

    let (start, result) = (&seen["start"], &seen["result"]);
    let html = |page: &Value| page["html"].as_str().expect("html").to_owned();
    let text = |page: &Value| page["text"].as_str().expect("text").to_owned();

    // Assert: the start page tells what runs and what to register.
    assert_eq!(start["status"], 200, "GET /");
    let start_html = html(start);
    let issuer = format!("{}/realms/{REALM_NAME}", app.public);
    for (what, expected) in [
        ("the version", format!("<td>{}</td>", env!("CARGO_PKG_VERSION"))),
        ("the database kind", "<td>SQLite</td>".to_owned()),
        ("the provider's display name", "Azure DevOps".to_owned()),
        ("the exact redirect URI", format!("<code>{}</code>", redirect_uri(&app.public, "azure_devops"))),
        ("the issuer", format!("<code>{issuer}</code>")),
        ("the discovery URL", format!("{issuer}/.well-known/openid-configuration")),
        ("where health is", format!("{}{}", app.management, paths::HEALTH)),
        ("the database check", "UP".to_owned()),
        ("the button", "Try a sign-in".to_owned()),
    ] {
        assert!(start_html.contains(&expected), "the start page shows {what} ({expected}):\n{start_html}");
    }
    assert!(!start_html.contains(&app.db.url), "the start page never shows the database URL");

    // The browser went the whole way: the broker's /auth, the provider, the broker's endpoint, back.
    let navigations: Vec<&str> =
        seen["navigations"].as_array().expect("navigations").iter().filter_map(Value::as_str).collect();
    for step in [
        paths::DEMO_START.to_owned(),
        realm_path(paths::AUTH),
        format!("{}/", app.entra.authority()),
        provider_path(paths::BROKER_ENDPOINT, "azure_devops"),
        paths::DEMO_CALLBACK.to_owned(),
    ] {
        assert!(navigations.iter().any(|url| url.contains(&step)), "the browser went through {step}: {navigations:#?}");
    }

    // The result page shows the claims and the stored-token read, described.
    assert_eq!(result["status"], 200, "the result page:\n{}", html(result));
    let result_text = text(result);
    for expected in [
        "Signed in",
        "alice@contoso.onmicrosoft.com",
        "Alice Anderson",
        "identity_provider",
        "azure_devops",
        "Stored token read",
        "Bearer",
        "expires in",
    ] {
        assert!(result_text.contains(expected), "the result page shows {expected:?}:\n{result_text}");
    }
    let described =
        app.entra.issued_tokens().iter().any(|token| {
            result_text.contains(&format!("{} characters, expires in 35", thousands(token.chars().count())))
        });
    assert!(described, "the stored access token is described by its length and lifetime:\n{result_text}");
    let secrets = secrets(&app);
    assert_nothing_secret(&start_html, &secrets, &app.entra, "the start page");
    assert_nothing_secret(&html(result), &secrets, &app.entra, "the result page");
    let png = std::fs::metadata(&screenshot).expect("the screenshot was saved");
    assert!(png.len() > 1000, "the screenshot has content");
}

/// A browser's reqwest: runs `/demo/start` through the fake provider to the callback's page.
async fn demonstrate(app: &TestApp, browser: &reqwest::Client) -> Outcome {
    app.follow(browser, &app.url(paths::DEMO_START)).await
}

fn page_body(outcome: Outcome) -> (StatusCode, String) {
    match outcome {
        Outcome::Page { status, body } => (status, body),
        Outcome::ToClient(params) => panic!("the demonstration went to a client's redirect URI: {params:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_page_demonstration_over_http() {
    let app = spawn_app(Backend::Postgres).await;

    // `/demo/start`: state and PKCE in an HttpOnly cookie, the real authorization endpoint.
    let browser = browser_client();
    let response = browser.get(app.url(paths::DEMO_START)).send().await.expect("demo start");
    assert_eq!(response.status(), StatusCode::FOUND);
    let cookie = response.headers()[reqwest::header::SET_COOKIE].to_str().expect("ascii").to_owned();
    for flag in ["IB_DEMO=", "HttpOnly", "Path=/demo/", "SameSite=Lax"] {
        assert!(cookie.contains(flag), "the demonstration's cookie has {flag}: {cookie}");
    }
    let target = location(&response);
    assert!(target.starts_with(&app.url(&realm_path(paths::AUTH))), "to the broker's /auth: {target}");
    let query = query_of(&target);
    assert_eq!(query["client_id"], "broker-demo");
    assert_eq!(query["redirect_uri"], app.url(paths::DEMO_CALLBACK));
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["kc_idp_hint"], "azure_devops", "one provider: hinted");
    assert!(!cookie.contains(&query["code_challenge"]), "the cookie keeps the verifier, not the challenge");

    // The whole sign-in, as a browser follows it.
    let (status, body) = page_body(demonstrate(&app, &browser_client()).await);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("alice@contoso.onmicrosoft.com") && body.contains("Bearer"), "{body}");
    assert_nothing_secret(&body, &secrets(&app), &app.entra, "the result page");

    // Errors give a page that says what happened.
    app.entra.deny_next_authorization();
    let (status, body) = page_body(demonstrate(&app, &browser_client()).await);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("cancelled (access_denied)"), "a cancelled sign-in: {body}");

    let browser = browser_client();
    browser.get(app.url(paths::DEMO_START)).send().await.expect("demo start");
    let forged = format!("{}?code=some-code&state=not-the-state", app.url(paths::DEMO_CALLBACK));
    let response = browser.get(&forged).send().await.expect("callback");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().await.expect("text");
    assert!(body.contains("state does not match"), "a state mismatch: {body}");

    let response = browser_client().get(&forged).send().await.expect("callback");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().await.expect("text");
    assert!(body.contains("No sign-in was started from this browser"), "no cookie: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_page_in_production_has_no_demonstration() {
    let db = TestDb::new(Backend::Sqlite).await;
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let development = settings_toml(&entra, &ProviderSetup::default());
    let text = development
        .replace("[http]\n", "[http]\nhostname = \"https://auth.test\"\n")
        .replace("display_name = \"Azure DevOps\"", "display_name = \"Azure <DevOps> & Co\"")
        + "allow_insecure_http = true\n";
    assert!(text.contains("https://auth.test") && text.contains("<DevOps>"), "the settings were rewritten");
    let (running, shutdown, server) = start_application_in(Mode::Production, &text, &db.url).await;
    assert!(running.state.demo.is_none(), "no demonstration client in production");
    let client = api_client();

    let response = client.get(format!("{}{}", running.public, paths::START)).send().await.expect("start page");
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.expect("text");
    assert!(html.contains(&redirect_uri("https://auth.test", "azure_devops")), "the redirect URI: {html}");
    assert!(html.contains("<code>https://auth.test/realms/allhands</code>"), "the issuer: {html}");
    assert!(html.contains("<td>production</td>"), "the mode: {html}");
    assert!(html.contains("Azure &lt;DevOps&gt; &amp; Co"), "names are escaped: {html}");
    assert!(!html.contains("Try a sign-in") && !html.contains("/demo/"), "no button in production: {html}");
    for secret in [CLIENT_SECRET, OTHER_CLIENT_SECRET, SERVICE_SECRET, UPSTREAM_SECRET, VAULT_KEY] {
        assert!(!html.contains(secret), "the start page shows {secret:?}");
    }

    for route in [paths::DEMO_START, paths::DEMO_CALLBACK] {
        let response = client.get(format!("{}{route}?state=s&code=c", running.public)).send().await.expect("demo");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{route} in production");
    }
    let response = client
        .post(format!("{}{}", running.public, realm_path(paths::TOKEN)))
        .form(&[("grant_type", "authorization_code"), ("client_id", "broker-demo"), ("code", "c")])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "no broker-demo client is registered in production");
    let _ = shutdown.send(());
    let _ = server.await;
}

/// `cargo run -- start-dev` with no provider, then a browser on `/`: the whole sign-in goes
/// through the development provider's page, where the person picks a user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_dev_signs_in_through_the_development_provider_in_a_real_browser() {
    let chromium = chromium().await;
    let node = node_env().await;
    let app = TestApp::builder(Backend::Sqlite).development("127.0.0.1:0").spawn().await;
    let home = target_dir().join("start-page-dev-home.png");
    let screenshot = target_dir().join("start-page-dev.png");

    let seen = browse(&app, chromium, node, &home, &screenshot, Some("Alice Developer")).await;

    let start = seen["start"]["html"].as_str().expect("html");
    assert!(start.contains(&format!("<code>{}</code>", redirect_uri(&app.public, "dev"))), "{start}");
    let provider = &seen["provider"];
    assert!(provider["url"].as_str().expect("url").contains("/dev-entra/"), "{provider}");
    let provider_text = provider["text"].as_str().expect("text");
    assert!(provider_text.contains("Anyone can sign in here as anyone"), "loud on its page: {provider_text}");
    let result = seen["result"]["text"].as_str().expect("text");
    for expected in
        ["Signed in", "alice@example.test", "Alice Developer", "identity_provider", "Stored token read", "Bearer"]
    {
        assert!(result.contains(expected), "the result page shows {expected:?}:\n{result}");
    }
    assert!(result.contains("dev"), "{result}");
    assert!(!seen["result"]["html"].as_str().expect("html").contains("eyJ"), "no token on the page");
}
