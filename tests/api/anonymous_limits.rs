//! What an anonymous caller sends can neither grow the broker nor the database: metrics labels
//! from fixed sets, pending sign-ins and audit rows within per-address budgets and a ceiling,
//! NUL and non-UTF-8 refused at the edge, and the client address rule behind trusted proxies.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures_util::StreamExt as _;
use identity_broker::store::Table;
use reqwest::StatusCode;
use serde_json::Value;

use crate::admin::{admin_token, admin_toml};
use crate::both_backends;
use crate::helpers::*;
use crate::replicas::{HOSTNAME, start_process};

/// A browser sending from `address` (any of 127.0.0.0/8 reaches the listeners).
fn browser_from(address: &str) -> reqwest::Client {
    let address: IpAddr = address.parse().expect("address");
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(address)
        .build()
        .expect("client")
}

/// Sends `count` requests made by `request(n)`, `parallel` at a time; returns each status.
async fn flood<F>(count: usize, parallel: usize, request: F) -> Vec<StatusCode>
where
    F: Fn(usize) -> reqwest::RequestBuilder,
{
    futures_util::stream::iter(0..count)
        .map(|n| {
            let sent = request(n).send();
            async move { sent.await.expect("request").status() }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// The series of a Prometheus text exposition: each sample line without its value.
fn series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.rsplit_once(' ').map_or(line, |(name, _)| name).to_owned())
        .collect()
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

/// Requests a stranger can make up: unknown aliases, realms, clients and grant types.
fn stranger_request(client: &reqwest::Client, public: &str, n: usize) -> reqwest::RequestBuilder {
    match n % 4 {
        0 => client.get(format!("{public}/realms/allhands/broker/alias-{n}/endpoint?state=s&code=c")),
        1 => client
            .post(format!("{public}/realms/realm-{n}/protocol/openid-connect/token"))
            .form(&[("grant_type", "client_credentials"), ("client_id", "x")]),
        2 => client.post(format!("{public}/realms/allhands/protocol/openid-connect/token")).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", format!("client-{n}").as_str()),
            ("client_secret", "nope"),
        ]),
        _ => client.post(format!("{public}/realms/allhands/protocol/openid-connect/token")).form(&[
            ("grant_type", format!("urn:grant:{n}").as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_thousand_made_up_names_leave_metrics_and_memory_as_they_were() {
    // Arrange: a broker process of its own (its memory is not the test's), warmed up with
    // every kind of request once so that each fixed series exists.
    let app = spawn_app(Backend::Postgres).await;
    let process = start_process(&settings_toml(&app.entra, &ProviderSetup::default()), &app.db.url, HOSTNAME).await;
    let client = api_client();
    let public = process.public.clone();
    let statuses = flood(2_000, 16, |n| stranger_request(&client, &public, n)).await;
    assert!(statuses.iter().all(|s| s.is_client_error()), "strangers are refused: {statuses:?}");
    let metrics_url = format!("{}/metrics", process.management);
    client.get(&metrics_url).send().await.expect("metrics");
    let before = client.get(&metrics_url).send().await.expect("metrics").text().await.expect("text");
    let rss_before = resident_kib(process.pid());

    // Act
    let statuses = flood(20_000, 16, |n| stranger_request(&client, &public, n + 2_000)).await;

    // Assert
    assert!(statuses.iter().all(|s| s.is_client_error() || *s == StatusCode::NOT_FOUND), "refused");
    let after = client.get(&metrics_url).send().await.expect("metrics").text().await.expect("text");
    let rss_after = resident_kib(process.pid());
    eprintln!(
        "20,000 made-up names: /metrics {} -> {} bytes, RSS {rss_before} -> {rss_after} KiB",
        before.len(),
        after.len()
    );
    assert_eq!(series(&after), series(&before), "no series added by names a stranger made up");
    assert!(after.len().abs_diff(before.len()) < 512, "/metrics grew from {} to {} bytes", before.len(), after.len());
    assert!(!after.contains("alias-"), "no alias from a URL is a label");
    assert!(
        after.contains("identity_broker_sign_ins_total{provider=\"unknown\""),
        "an unknown alias is counted as `unknown`:\n{after}"
    );
    assert!(rss_after < rss_before + 2 * 1024, "RSS grew from {rss_before} KiB to {rss_after} KiB");
}

/// `/auth` in a fresh browser from `address`; the status of the answer.
async fn start_sign_in_from(app: &TestApp, address: &str) -> reqwest::Response {
    browser_from(address).get(app.auth_url(&[])).send().await.expect("auth")
}

both_backends!(ten_thousand_sign_ins_from_one_address_store_at_most_its_budget, |backend| async move {
    // Arrange: the default budget (100 a client address).
    let app = spawn_app(backend).await;
    let stranger = browser_from("127.0.0.2");
    let url = app.auth_url(&[("state", &"s".repeat(1024)), ("nonce", &"n".repeat(200))]);

    // Act
    let statuses = flood(10_000, 8, |_| stranger.get(&url)).await;

    // Assert: the budget's worth stored, the rest refused with a clear 429; another address
    // signs in all the same, and the stranger's own XFF header changes nothing.
    let stored = app.count(Table::AuthRequests).await;
    assert_eq!(stored, 100, "pending sign-ins stored for one address");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::FOUND).count(), 100);
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 9_900, "{statuses:?}");
    let refused = stranger.get(&url).header("x-forwarded-for", "198.51.100.1").send().await.expect("auth");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "X-Forwarded-For of an untrusted peer is ignored");
    assert_eq!(refused.headers()["retry-after"], "60");
    assert!(refused.text().await.expect("page").contains("Too many sign-ins"), "the page says why");
    let code = app.follow(&browser_from("127.0.0.3"), &app.auth_url(&[])).await.code();
    assert_eq!(app.exchange(&code, &[]).await.status(), StatusCode::OK, "another address signs in");
    assert_eq!(app.count(Table::AuthRequests).await, 100, "the finished sign-in left nothing behind");
});

both_backends!(the_ceiling_answers_503_to_new_sign_ins_but_never_to_a_session, |backend| async move {
    // Arrange: a ceiling of 30 pending sign-ins, a user signed in in a browser of their own.
    let app = TestApp::builder(backend).http("max_pending_sign_ins = 30").spawn().await;
    let user = browser_from("127.0.0.4");
    let code = app.follow(&user, &app.auth_url(&[])).await.code();
    assert_eq!(app.exchange(&code, &[]).await.status(), StatusCode::OK);
    // The ceiling's count is read again each second; the user's finished sign-in leaves it then.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for n in 0..30 {
        let address = format!("127.0.1.{}", n + 1);
        assert_eq!(start_sign_in_from(&app, &address).await.status(), StatusCode::FOUND, "sign-in {n}");
    }

    // Act
    let busy = start_sign_in_from(&app, "127.0.2.1").await;
    let with_session = app.follow(&user, &app.auth_url(&[])).await;

    // Assert
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.headers()["retry-after"], "60");
    assert!(busy.text().await.expect("page").contains("busy"), "the page says why");
    assert_eq!(app.exchange(&with_session.code(), &[]).await.status(), StatusCode::OK, "a session is answered");
    assert_eq!(app.count(Table::AuthRequests).await, 30, "nothing stored beyond the ceiling");
});

both_backends!(behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget, |backend| async move {
    // Arrange: 127.0.0.5 is the ingress; its clients come in X-Forwarded-For.
    let app = TestApp::builder(backend)
        .http("trusted_proxies = [\"127.0.0.5/32\"]\npending_sign_ins_per_address = 3")
        .spawn()
        .await;
    let ingress = browser_from("127.0.0.5");
    let url = app.auth_url(&[]);
    let from = |client: &str| ingress.get(&url).header("x-forwarded-for", format!("6.6.6.6, {client}"));

    // Act
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(from("198.51.100.7").send().await.expect("auth").status());
    }
    let other = from("198.51.100.8").send().await.expect("auth").status();

    // Assert: the nearest untrusted hop is the client; what it wrote before it is not believed.
    assert_eq!(first, [StatusCode::FOUND, StatusCode::FOUND, StatusCode::FOUND, StatusCode::TOO_MANY_REQUESTS]);
    assert_eq!(other, StatusCode::FOUND, "another client behind the same proxy has its own budget");
});

both_backends!(junk_links_from_one_address_cost_two_audit_rows, |backend| async move {
    // Arrange
    let app = spawn_app(backend).await;
    let stranger = browser_from("127.0.0.6");
    let public = app.public.clone();
    let before = app.store.list_audit(Some("verify_email")).await.expect("audit").len();

    // Act: 500 made-up e-mail links.
    let statuses =
        flood(500, 8, |n| stranger.get(format!("{public}/realms/allhands/login-actions/action-token?key=junk-{n}")))
            .await;
    app.state.audit.flush().await;

    // Assert: the first refusal as it came, the 499 repeats in one summary row.
    assert!(statuses.iter().all(|s| *s == StatusCode::BAD_REQUEST), "{statuses:?}");
    let rows = app.store.list_audit(Some("verify_email")).await.expect("audit");
    assert_eq!(rows.len() - before, 2, "{rows:?}");
    let details: Vec<Value> = rows.iter().map(|row| serde_json::from_str(&row.detail).expect("json")).collect();
    assert!(details.iter().all(|d| d["client"] == "127.0.0.6"), "{details:?}");
    assert!(details.iter().any(|d| d["repeated"] == 499), "the repeats are counted: {details:?}");
});

/// One request a bad byte reaches, and what it is.
struct BadByte {
    why: &'static str,
    request: reqwest::RequestBuilder,
}

both_backends!(nul_and_non_utf8_are_400_invalid_request_on_every_listener, |backend| async move {
    // Arrange
    let app = TestApp::builder(backend).extra(&admin_toml(60)).spawn().await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let user_id = user_id_of(&app.tokens().await);
    let admin = admin_token(&app).await;
    let client = api_client();
    let token_url = app.url(&realm_path(paths::TOKEN));
    let form = |body: &'static str| {
        client.post(&token_url).header("content-type", "application/x-www-form-urlencoded").body(body)
    };
    let cases = [
        BadByte {
            why: "state=%00 on /auth",
            request: client.get(app.auth_url(&[]).replace("state=client-state-123", "state=%00")),
        },
        BadByte { why: "a NUL state on /auth", request: client.get(app.auth_url(&[("state", "a\0b")])) },
        BadByte { why: "invalid UTF-8 in a query", request: client.get(app.auth_url(&[]) + "&nonce=%FF%FE") },
        BadByte { why: "a NUL in a form field", request: form("grant_type=client_credentials&client_id=a%00b") },
        BadByte { why: "invalid UTF-8 in a form field", request: form("grant_type=password&username=%C3%28") },
        BadByte {
            why: "email=a%00b on /internal/v1/users",
            request: client.get(format!("{}/internal/v1/users?email=a%00b", app.internal)).bearer_auth(&service),
        },
        BadByte {
            why: "a NUL in a path",
            request: client
                .get(format!("{}/internal/v1/users/a%00b/tokens/azure_devops", app.internal))
                .bearer_auth(&service),
        },
        BadByte {
            why: "a NUL escaped in JSON",
            request: client
                .put(app.url(&format!("/admin/realms/allhands/users/{user_id}")))
                .bearer_auth(&admin)
                .json(&serde_json::json!({ "firstName": "a\u{0}b" })),
        },
        BadByte {
            why: "a NUL in a management query",
            request: client.get(format!("{}/health/ready?x=%00", app.management)),
        },
    ];

    for BadByte { why, request } in cases {
        // Act
        let response = request.send().await.expect("request");

        // Assert
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
        let body: Value = response.json().await.unwrap_or_else(|_| panic!("{why}: a JSON body"));
        if why.contains("JSON") {
            // The admin API's own dialect, as its OpenAPI document says.
            assert!(body["errorMessage"].as_str().is_some_and(|m| m.contains("NUL")), "{why}: {body}");
        } else {
            assert_eq!(body["error"], "invalid_request", "{why}: {body}");
        }
    }
    let user_url = app.url(&format!("/admin/realms/allhands/users/{user_id}"));
    let user: Value = client.get(&user_url).bearer_auth(&admin).send().await.expect("get").json().await.expect("json");
    assert_ne!(user["firstName"], "a\u{0}b", "nothing changed: {user}");
    let escaped = client
        .put(app.url(&format!("/admin/realms/allhands/users/{user_id}")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "firstName": "back\\u0000slash" }))
        .send()
        .await
        .expect("put");
    assert_eq!(escaped.status(), StatusCode::NO_CONTENT, "an escaped backslash before u0000 is text");
});

both_backends!(max_age_and_prompt_login_send_the_user_to_the_provider_again, |backend| async move {
    // Arrange: a user with a session in their browser.
    let app = spawn_app(backend).await;
    let browser = browser_client();
    let first = app.follow(&browser, &app.auth_url(&[])).await.code();
    let first_tokens: Value = app.exchange(&first, &[]).await.json().await.expect("json");
    let first_auth_time = jwt_claims(first_tokens["id_token"].as_str().expect("id_token"))["auth_time"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;

    // Act / Assert: a young enough session answers at once; an older one, or max_age=0, or
    // prompt=login, goes to the provider with prompt=login.
    let young = browser.get(app.auth_url(&[("max_age", "3600")])).send().await.expect("auth");
    assert!(location(&young).starts_with(REDIRECT_URI), "max_age=3600: a code from the session");
    for extra in [[("max_age", "1")], [("max_age", "0")], [("prompt", "login")]] {
        let authorize = app.until_upstream(&browser, &extra).await;
        assert_eq!(query_of(&authorize).get("prompt").map(String::as_str), Some("login"), "{extra:?}");
    }
    let again = app.follow(&browser, &app.auth_url(&[("max_age", "1")])).await.code();
    let tokens: Value = app.exchange(&again, &[]).await.json().await.expect("json");
    let auth_time = jwt_claims(tokens["id_token"].as_str().expect("id_token"))["auth_time"].clone();
    assert!(auth_time.as_i64() > first_auth_time.as_i64(), "a fresh auth_time: {auth_time} after {first_auth_time}");
    let invalid = browser.get(app.auth_url(&[("max_age", "soon")])).send().await.expect("auth");
    assert_eq!(query_of(&location(&invalid)).get("error").map(String::as_str), Some("invalid_request"));
});

both_backends!(over_long_authorization_parameters_are_refused_and_nothing_is_stored, |backend| async move {
    // Arrange
    let app = spawn_app(backend).await;
    let long = |n: usize| "x".repeat(n);
    let cases = [
        ("state", long(1025), "a state too long to send back: a page"),
        ("nonce", long(513), "nonce"),
        ("login_hint", long(321), "login_hint"),
        ("scope", format!("openid {}", long(506)), "scope"),
        ("prompt", long(65), "prompt"),
        ("kc_idp_hint", long(129), "kc_idp_hint"),
    ];

    for (name, value, why) in cases {
        // Act
        let response = browser_client().get(app.auth_url(&[(name, &value)])).send().await.expect("auth");

        // Assert
        if name == "state" {
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
        } else {
            assert_eq!(response.status(), StatusCode::FOUND, "{why}");
            let answer = query_of(&location(&response));
            assert_eq!(answer.get("error").map(String::as_str), Some("invalid_request"), "{why}: {answer:?}");
            assert!(answer["error_description"].contains(name), "{why}: {answer:?}");
        }
    }
    assert_eq!(app.count(Table::AuthRequests).await, 0, "nothing stored");
    let at_the_limits = [("state", long(1024)), ("nonce", long(512)), ("login_hint", long(320))];
    let pairs: Vec<(&str, &str)> = at_the_limits.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let response = browser_client().get(app.auth_url(&pairs)).send().await.expect("auth");
    assert_eq!(response.status(), StatusCode::FOUND, "values at the limits are taken");
    assert_eq!(app.count(Table::AuthRequests).await, 1);
});
