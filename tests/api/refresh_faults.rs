//! Refresh faults injected for real: an upstream token endpoint that takes requests in and
//! does not answer, a broker process killed with SIGKILL in the middle of a refresh, and one
//! stopped with SIGTERM there. Reads answer within the refresh deadline, late answers are
//! kept, and no identity stays blocked behind a dead process.

use identity_broker::store::IdentityKey;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::replicas::{HOSTNAME, start_process};
use crate::support::process::BrokerProcess;

const ALIAS: &str = "azure_devops";
/// The refresh deadline of the tests that set one: short, so that they run fast.
const SHORT_DEADLINE: Duration = Duration::from_secs(3);
/// The contract's default, `vault.refresh_timeout_seconds = 10`.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// What a read may take beyond its deadline: its own round trips on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);
/// A dead process's lease lapses within six seconds of the kill (five, plus the column's
/// one-second resolution); the rest is the next process's start, polling and refresh. Before,
/// the lease held the identity for a minute and readers gave up after twenty seconds.
const TAKEOVER_BOUND: Duration = Duration::from_secs(10);
/// A replica restarted after the kill serves the identity within this of its readiness: the
/// lease (3 s, renewed every 750 ms) has lapsed by then or soon after (it was 5.4 s with a 5 s lease).
const SERVED_AFTER_READY: Duration = Duration::from_secs(5);

fn short_deadline() -> ProviderSetup {
    ProviderSetup { refresh_timeout_seconds: Some(SHORT_DEADLINE.as_secs()), ..ProviderSetup::default() }
}

/// Signs a user in with an upstream access token living `lifetime` seconds, and makes later
/// refreshes issue hour-long ones. Returns the user id and the broker's token response.
async fn signed_in_with_lifetime(app: &TestApp, lifetime: i64) -> (String, Value) {
    app.entra.set_access_token_lifetime(lifetime);
    let tokens = app.tokens().await;
    app.entra.set_access_token_lifetime(3600);
    (user_id_of(&tokens), tokens)
}

/// The upstream refresh tokens (`refresh`) or access tokens the fake has issued, oldest first.
fn upstream_tokens(app: &TestApp, refresh: bool) -> Vec<String> {
    use base64::Engine as _;
    let access_header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256"}"#);
    let prefix = if refresh { "1.A".to_owned() } else { format!("{access_header}.") };
    app.entra.issued_tokens().into_iter().filter(|t| t.starts_with(&prefix)).collect()
}

/// The upstream access token stored at sign-in: the first the fake issued.
fn first_access_token(app: &TestApp) -> String {
    upstream_tokens(app, false).first().expect("an access token was issued").clone()
}

/// Waits until the fake Entra has seen `count` refresh requests.
async fn refresh_requests_reach(app: &TestApp, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.entra.refresh_requests() < count {
        assert!(Instant::now() < deadline, "the broker never asked the provider for a refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lease_of(app: &TestApp, user_id: &str) -> Option<(String, i64)> {
    app.store.find_refresh_lease(IdentityKey { user_id, alias: ALIAS }).await.expect("lease")
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("json")
}

/// Asserts a `503` that tells the caller, in OAuth's shape, to come back later.
async fn assert_retry_later(response: reqwest::Response, surface: &str) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{surface}");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let seconds: u64 = retry_after.expect("Retry-After").parse().expect("Retry-After in seconds");
    assert!(seconds >= 1, "{surface}: Retry-After {seconds}");
    let body = json(response).await;
    assert_eq!(body["error"], "temporarily_unavailable", "{surface}: {body}");
    let description = body["error_description"].as_str().expect("error_description");
    assert!(description.contains("try again in"), "{surface}: {description}");
}

both_backends!(a_hanging_provider_gets_the_still_valid_stored_token_within_the_deadline, |backend| async move {
    let app = TestApp::builder(backend).provider(short_deadline()).spawn().await;
    // Inside the 300-second refresh window, but still valid for two minutes.
    let (user_id, tokens) = signed_in_with_lifetime(&app, 120).await;
    let stored = first_access_token(&app);
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    app.entra.hold_token_requests();

    let started = Instant::now();
    let response = app.read_token(&service, &user_id, ALIAS, "").await;
    let took = started.elapsed();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["access_token"], stored.as_str(), "the stored token, still valid");
    assert!(took < SHORT_DEADLINE + SLACK, "answered in {took:?}, past the deadline");
    assert_eq!(app.entra.refresh_requests(), 1, "the refresh was tried, once");
    // Keycloak's endpoint, while that refresh is still held upstream, answers at once alike.
    let started = Instant::now();
    let response = app.broker_token(access_token(&tokens), ALIAS).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["access_token"], stored.as_str());
    assert!(started.elapsed() < SLACK, "no second wait behind a refresh already past its deadline");
    assert_eq!(app.entra.refresh_requests(), 1, "no second refresh while the first is in flight");
});

both_backends!(a_hanging_provider_and_an_expired_token_get_503_within_the_default_deadline, |backend| async move {
    let app = spawn_app(backend).await;
    let (user_id, tokens) = signed_in_with_lifetime(&app, 0).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    app.entra.hold_token_requests();

    let started = Instant::now();
    let response = app.read_token(&service, &user_id, ALIAS, "").await;
    let took = started.elapsed();

    assert!(took < DEFAULT_DEADLINE + SLACK, "answered in {took:?}: not within the 10-second deadline");
    assert_retry_later(response, "internal API").await;
    let started = Instant::now();
    assert_retry_later(app.broker_token(access_token(&tokens), ALIAS).await, "broker endpoint").await;
    assert!(started.elapsed() < DEFAULT_DEADLINE + SLACK);
    assert_eq!(app.count(identity_broker::store::Table::VaultTokens).await, 1, "nothing deleted");
    let identity = app.identity(&user_id, ALIAS).await;
    assert!(!identity.needs_reauth, "a hanging provider is not the user's fault");
});

both_backends!(a_late_answer_is_stored_and_served_without_another_refresh, |backend| async move {
    let app = TestApp::builder(backend).provider(short_deadline()).spawn().await;
    let (user_id, _) = signed_in_with_lifetime(&app, 0).await;
    let before =
        app.store.find_vault_row(IdentityKey { user_id: &user_id, alias: ALIAS }).await.expect("row").expect("stored");
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    app.entra.hold_token_requests();
    assert_retry_later(app.read_token(&service, &user_id, ALIAS, "").await, "while the provider hangs").await;
    let started = Instant::now();
    assert_retry_later(app.read_token(&service, &user_id, ALIAS, "").await, "a second read meanwhile").await;
    assert!(started.elapsed() < SLACK, "the second read does not wait a deadline of its own");
    assert_eq!(app.entra.refresh_requests(), 1, "one request in flight upstream");

    // The provider answers, long after the readers gave up.
    app.entra.release_token_requests();
    let stored_at = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let row = app
            .store
            .find_vault_row(IdentityKey { user_id: &user_id, alias: ALIAS })
            .await
            .expect("row")
            .expect("stored");
        if row.expires_at != before.expires_at {
            break row;
        }
        assert!(Instant::now() < stored_at, "the late answer was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(after.expires_at > before.expires_at + 3000, "the hour-long token of the late answer");

    let response = app.read_token(&service, &user_id, ALIAS, "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let served = json(response).await["access_token"].as_str().expect("access_token").to_owned();
    let late_access = upstream_tokens(&app, false).last().expect("the late access token").clone();
    assert_eq!(served, late_access, "the late answer's token is served");
    assert_eq!(app.entra.refresh_requests(), 1, "served from the vault, no second refresh");
    // The refresh token the late answer rotated is the one the next refresh spends.
    let rotated = upstream_tokens(&app, true).last().expect("the rotated refresh token").clone();
    let forced = app.read_token(&service, &user_id, ALIAS, "?min_validity=7200").await;
    assert_eq!(forced.status(), StatusCode::OK);
    assert_eq!(app.entra.refresh_requests(), 2);
    assert_eq!(app.entra.last_token_form().expect("form")["refresh_token"], rotated, "the rotated token was kept");
});

/// An application to sign in through and a broker process on the same database, with an
/// expired stored token and the upstream holding every token request: the process's read
/// starts a refresh that hangs. Returns the app, the process, the user id, the service token,
/// and the read's task.
async fn process_refreshing_against_a_hanging_provider(
    backend: Backend,
    setup: ProviderSetup,
) -> (TestApp, BrokerProcess, String, String, tokio::task::JoinHandle<Option<reqwest::Response>>) {
    let app = TestApp::builder(backend).provider(setup.clone()).spawn().await;
    let (user_id, _) = signed_in_with_lifetime(&app, 0).await;
    let process = start_process(&settings_toml(&app.entra, &setup), &app.db.url, HOSTNAME).await;
    let service = app.service_token_at(&process.internal, SERVICE_ID, SERVICE_SECRET).await;
    app.entra.hold_token_requests();
    let url = format!("{}{}", process.internal, user_token_path(&user_id, ALIAS));
    let request = reqwest::Client::new().get(url).bearer_auth(&service);
    let read = tokio::spawn(async move { request.send().await.ok() });
    refresh_requests_reach(&app, 1).await;
    assert!(lease_of(&app, &user_id).await.is_some(), "the process holds the identity's lease");
    (app, process, user_id, service, read)
}

both_backends!(a_process_killed_mid_refresh_blocks_its_identity_for_seconds_only, |backend| async move {
    let (app, mut first, user_id, service, read) =
        process_refreshing_against_a_hanging_provider(backend, ProviderSetup::default()).await;
    let expired = first_access_token(&app);

    first.kill();
    let killed_at = Instant::now();
    drop(read);
    // The provider is back; the killed process's request is gone with its connection.
    app.entra.release_token_requests();
    let second = start_process(&settings_toml(&app.entra, &ProviderSetup::default()), &app.db.url, HOSTNAME).await;
    let ready_at = Instant::now();
    let response = app.read_token_at(&second.internal, &service, &user_id, ALIAS, "").await;
    let took = killed_at.elapsed();
    let after_ready = ready_at.elapsed();

    assert_eq!(response.status(), StatusCode::OK, "{}", second.log());
    let served = json(response).await["access_token"].as_str().expect("access_token").to_owned();
    assert_ne!(served, expired, "a refreshed token, not the expired one");
    assert!(app.entra.issued_tokens().contains(&served), "one the provider issued");
    assert!(app.entra.refresh_requests() >= 2, "the second process refreshed");
    assert!(took < TAKEOVER_BOUND, "the identity was blocked for {took:?} after the kill");
    assert!(after_ready < SERVED_AFTER_READY, "served {after_ready:?} after the restarted process was ready");
    assert_eq!(lease_of(&app, &user_id).await, None, "the second process gave its lease back");
});

both_backends!(sigterm_mid_refresh_answers_the_reader_and_gives_the_lease_back, |backend| async move {
    let (app, mut process, user_id, _, read) =
        process_refreshing_against_a_hanging_provider(backend, short_deadline()).await;

    let status = process.terminate_within(SHORT_DEADLINE + Duration::from_secs(10)).await;

    let status = status.unwrap_or_else(|| panic!("still running after SIGTERM:\n{}", process.log()));
    assert!(status.success(), "graceful shutdown exits 0: {status}\n{}", process.log());
    let response = read.await.expect("read task").expect("the read in flight was answered before the exit");
    assert_retry_later(response, "the read in flight at SIGTERM").await;
    assert_eq!(lease_of(&app, &user_id).await, None, "shutdown gave the lease back");
    // So another process refreshes at once, without waiting for a lease to lapse.
    app.entra.release_token_requests();
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let started = Instant::now();
    let response = app.read_token(&service, &user_id, ALIAS, "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() < SLACK, "waited {:?} for a lease", started.elapsed());
});
