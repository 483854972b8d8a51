//! Entra's refusals as production sends them, from the fake Entra's real HTTP answers:
//! throttling (429 with `Retry-After`) rests the provider on every replica and never marks an
//! identity; Conditional Access claims challenges mark the identity with the challenge, which the
//! next authorize request carries back; a policy that blocks the user is a state of its own (403,
//! not a sign-in loop); each `suberror` names its kind on the internal API's 409.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use identity_broker::config::parse_vault_key;
use identity_broker::crypto::Cipher;
use identity_broker::store::{IdentityKey, ProfileUpdate};
use identity_broker::vault::{UpstreamTokens, seal_tokens};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::{FakeUser, UpstreamFailure};

const ALIAS: &str = "azure_devops";
/// The contract's default `vault.refresh_timeout_seconds`: every read answers within it.
const READ_DEADLINE: Duration = Duration::from_secs(10);
/// What a read may take beyond its deadline: its own round trips on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);
/// A Conditional Access challenge as Entra sends it in `claims`.
const CHALLENGE: &str = r#"{"access_token":{"capolids":{"essential":true,"values":["8b1b7f4a-policy"]}}}"#;

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

fn retry_after(response: &reqwest::Response) -> u64 {
    let value = response.headers().get("retry-after").expect("Retry-After").to_str().expect("ASCII");
    value.parse().expect("Retry-After in seconds")
}

/// Signs a user in (in `browser`, which keeps the SSO session) with an upstream access token
/// that has already expired, so that the next read refreshes it. Returns the user id.
async fn signed_in_expired(app: &TestApp, browser: &reqwest::Client) -> String {
    user_id_of(&signed_in_expired_tokens(app, browser).await)
}

/// As [`signed_in_expired`], returning the broker's token response.
async fn signed_in_expired_tokens(app: &TestApp, browser: &reqwest::Client) -> Value {
    app.entra.set_access_token_lifetime(0);
    let code = app.follow(browser, &app.auth_url(&[])).await.code();
    let response = app.exchange(&code, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.entra.set_access_token_lifetime(3600);
    json(response).await
}

// ---------------------------------------------------------------------------------------
// 1. Throttling

/// How many identities expire while Entra throttles, and for how long it does.
const STORM: usize = 200;
const THROTTLE_WINDOW: Duration = Duration::from_secs(30);
const RETRY_AFTER_SECONDS: u64 = 30;
/// `vault.max_refreshes_per_second`, the contract's default.
const MAX_REFRESHES_PER_SECOND: usize = 50;

/// `count` identities linked as sign-ins link them, each with an expired access token and a
/// refresh token the fake Entra honours. Returns their user ids.
async fn expired_identities(app: &TestApp, count: usize) -> Vec<String> {
    let cipher = Cipher::new(&[parse_vault_key(VAULT_KEY).expect("key")]).expect("cipher");
    let now = now_seconds();
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        let user_id = uuid::Uuid::new_v4().to_string();
        let subject = format!("storm-subject-{i}");
        let refresh = app.entra.issue_refresh_token(&FakeUser { subject: subject.clone(), ..FakeUser::bob() });
        let profile = ProfileUpdate {
            user_id: user_id.clone(),
            username: format!("storm-{i}@contoso.com"),
            email: None,
            email_verified: false,
            first_name: None,
            last_name: None,
            full_name: None,
            alias: ALIAS.into(),
            subject,
            identity_username: None,
            tenant_id: None,
            object_id: None,
            attributes: Vec::new(),
            roles: Vec::new(),
        };
        let tokens = UpstreamTokens {
            access_token: SecretString::from(format!("expired-access-{i}")),
            refresh_token: Some(SecretString::from(refresh)),
            id_token: None,
            token_type: "Bearer".into(),
            scope: "https://app.vssps.visualstudio.com/user_impersonation".into(),
            expires_at: now - 10,
            refresh_expires_at: None,
        };
        let row = seal_tokens(&cipher, IdentityKey { user_id: &user_id, alias: ALIAS }, &tokens, now);
        app.store.save_sign_in(&profile, Some(&row), now).await.expect("seeding an identity");
        users.push(user_id);
    }
    users
}

/// A read's status, its `Retry-After` and how long it took.
struct Read {
    status: StatusCode,
    retry_after: Option<u64>,
    took: Duration,
    /// The body of an error, to say what went wrong.
    error: String,
}

/// Reads every user's token at once through the internal API.
async fn read_all(app: &TestApp, service: &str, users: &[String]) -> Vec<Read> {
    let service = Arc::new(service.to_owned());
    let tasks: Vec<_> = users
        .iter()
        .map(|user_id| {
            let request = app.api.get(format!("{}{}", app.internal, user_token_path(user_id, ALIAS)));
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let started = Instant::now();
                let response = request.bearer_auth(service.as_str()).send().await.expect("read");
                let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
                let (status, took) = (response.status(), started.elapsed());
                let error = if status.is_success() { String::new() } else { response.text().await.unwrap_or_default() };
                Read { status, retry_after, took, error }
            })
        })
        .collect();
    let mut reads = Vec::with_capacity(tasks.len());
    for task in tasks {
        reads.push(task.await.expect("read task"));
    }
    reads
}

/// The most of `times` that fall in any one second (a half-open window from each of them).
fn most_in_one_second(times: &[Instant]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| sorted[i..].iter().take_while(|t| **t < sorted[i] + Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0)
}

both_backends!(
    throttling_rests_the_provider_marks_nobody_and_the_backlog_drains_at_the_bounded_rate,
    |backend| async move {
        // Arrange: 200 identities whose access tokens have expired; Entra answers every refresh
        // with 429 and `Retry-After: 30` for 30 seconds.
        let app = TestApp::builder(backend)
            .edited(|text| {
                text.replacen(
                    "[vault]\n",
                    &format!("[vault]\nmax_refreshes_per_second = {MAX_REFRESHES_PER_SECOND}\n"),
                    1,
                )
            })
            .spawn()
            .await;
        let users = expired_identities(&app, STORM).await;
        let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
        let window_ends =
            app.entra.fail_refreshes_for(THROTTLE_WINDOW, UpstreamFailure::throttled(RETRY_AFTER_SECONDS));

        // Act 1: the first read meets the throttling.
        let started = Instant::now();
        let first = app.read_token(&service, &users[0], ALIAS, "").await;
        let first_took = started.elapsed();
        let told = retry_after(&first);
        let told_at = Instant::now();

        // Assert 1: a 503 with a Retry-After at least the window's, one upstream call.
        assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(told >= RETRY_AFTER_SECONDS, "Retry-After {told} s, shorter than Entra's {RETRY_AFTER_SECONDS} s");
        assert_eq!(json(first).await["error"], "temporarily_unavailable");
        assert!(first_took < READ_DEADLINE + SLACK, "answered in {first_took:?}");
        assert_eq!(app.entra.refresh_requests(), 1, "the one call that learned of the throttling");

        // Act 2: every identity is read, and keep-alive runs, inside the window.
        let inside = read_all(&app, &service, &users).await;
        let keep_alive =
            app.state.vault.keep_alive_once(now_seconds() + 30 * 24 * 3600).await.expect("keep-alive pass");
        let reads_done = Instant::now();

        // Assert 2: nobody is marked, nothing reaches Entra, every read answered at once.
        assert!(
            reads_done < window_ends,
            "the reads ran inside the window (took until {:?} after it)",
            reads_done - window_ends
        );
        for read in &inside {
            assert_eq!(
                read.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "an expired token while throttled: {}",
                read.error
            );
            let wait = read.retry_after.expect("Retry-After");
            let left = window_ends.saturating_duration_since(Instant::now()).as_secs();
            assert!(wait >= left, "Retry-After {wait} s, shorter than the {left} s left");
            assert!(read.took < READ_DEADLINE + SLACK, "a read took {:?}", read.took);
        }
        assert_eq!((keep_alive.refreshed, keep_alive.failed), (0, 0), "keep-alive waits too");
        assert_eq!(app.entra.refresh_requests(), 1, "no upstream call inside the Retry-After window");
        for user_id in &users {
            assert!(!app.identity(user_id, ALIAS).await.needs_reauth, "throttling is no reason to sign in again");
        }

        // Act 3: after the wait the broker named, every identity is read at once again.
        tokio::time::sleep((told_at + Duration::from_secs(told)).saturating_duration_since(Instant::now())).await;
        let drain_started = Instant::now();
        let after = read_all(&app, &service, &users).await;
        let drain_took = drain_started.elapsed();

        // Assert 3: each read is answered within its deadline: served a refreshed token, or, on a
        // machine too slow to give it a refresh slot in time, told to come back (the refresh it
        // waited for still lands, so the next read is served without another call).
        let mut unserved: Vec<String> = Vec::new();
        for (read, user_id) in after.iter().zip(&users) {
            assert!(read.took < READ_DEADLINE + SLACK, "a read took {:?}", read.took);
            match read.status {
                StatusCode::OK => {}
                StatusCode::SERVICE_UNAVAILABLE => unserved.push(user_id.clone()),
                other => panic!("a read after the window answered {other}: {}", read.error),
            }
        }
        let late = unserved.len();
        for _ in 0..10 {
            if unserved.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let again = read_all(&app, &service, &unserved).await;
            unserved = again
                .iter()
                .zip(&unserved)
                .filter(|(read, _)| read.status != StatusCode::OK)
                .map(|(_, user_id)| user_id.clone())
                .collect();
        }
        assert!(unserved.is_empty(), "{} identities never served after the window", unserved.len());
        let times = app.entra.refresh_times();
        let first_call = times[0];
        let inside_window = times[1..].iter().filter(|t| **t < first_call + THROTTLE_WINDOW).count();
        let drained: Vec<Instant> = times[1..].to_vec();
        let busiest = most_in_one_second(&drained);
        let spread = drained.iter().max().zip(drained.iter().min()).map(|(last, first)| *last - *first);
        println!(
            "throttling ({backend:?}): {} upstream refresh calls in all: 1 inside the {} s window (the one answered 429), \
         {inside_window} more inside it, {} after it, spread over {spread:?}, at most {busiest} in one second \
         (limit {MAX_REFRESHES_PER_SECOND}); {STORM} reads inside the window answered 503 in at most {:?}; \
         after the window {STORM} reads answered in {drain_took:?}, the slowest in {:?}, {late} of them told to come back",
            times.len(),
            THROTTLE_WINDOW.as_secs(),
            drained.len(),
            inside.iter().map(|r| r.took).max().unwrap_or_default(),
            after.iter().map(|r| r.took).max().unwrap_or_default(),
        );
        assert_eq!(inside_window, 0, "no refresh inside the window");
        assert_eq!(drained.len(), STORM, "each identity refreshed once after the window");
        assert!(busiest <= MAX_REFRESHES_PER_SECOND, "{busiest} refreshes reached Entra in one second");
        for user_id in &users {
            assert!(!app.identity(user_id, ALIAS).await.needs_reauth);
        }
    }
);

both_backends!(loop_detection_rests_the_provider_on_every_replica_and_marks_nobody, |backend| async move {
    let app = spawn_app(backend).await;
    let browser = browser_client();
    let user_id = signed_in_expired(&app, &browser).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    app.entra.fail_next_token_request(UpstreamFailure::aadsts(
        400,
        "invalid_grant",
        50196,
        "The server terminated an operation because it encountered a client request loop.",
    ));

    let response = app.read_token(&service, &user_id, ALIAS, "").await;
    let told = retry_after(&response);

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(told >= 60, "no Retry-After from Entra: the provider rests a minute, told {told}");
    assert!(!app.identity(&user_id, ALIAS).await.needs_reauth, "AADSTS50196 marks nobody");
    let again = app.read_token(&service, &user_id, ALIAS, "").await;
    assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.entra.refresh_requests(), 1, "no second call while the provider rests");
    // Another replica on the same database rests alike: the deadline is the database's.
    let (replica, stop_replica, _task) =
        start_application(&settings_toml(&app.entra, &ProviderSetup::default()), &app.db.url).await;
    let replica_service = app.service_token_at(&replica.internal, SERVICE_ID, SERVICE_SECRET).await;
    let elsewhere = app.read_token_at(&replica.internal, &replica_service, &user_id, ALIAS, "").await;
    assert_eq!(elsewhere.status(), StatusCode::SERVICE_UNAVAILABLE, "the other replica waits too");
    assert!(retry_after(&elsewhere) >= 50, "told the wait left: {}", retry_after(&elsewhere));
    assert_eq!(app.entra.refresh_requests(), 1, "no call from the other replica either");
    let _ = stop_replica.send(());
    // Keycloak's endpoint waits alike.
    let tokens = app.tokens().await;
    let broker = app.broker_token(access_token(&tokens), ALIAS).await;
    assert_eq!(broker.status(), StatusCode::OK, "a valid stored token is served meanwhile");
    assert_eq!(app.entra.refresh_requests(), 1);
});

// ---------------------------------------------------------------------------------------
// 2. Conditional Access

both_backends!(
    a_claims_challenge_is_kept_and_sent_on_the_next_authorize_and_cleared_by_its_answer,
    |backend| async move {
        // Arrange: a user signed in (their browser keeps the SSO session) whose token has expired;
        // Entra answers its refresh with an MFA claims challenge.
        let app = spawn_app(backend).await;
        let browser = browser_client();
        let user_id = signed_in_expired(&app, &browser).await;
        let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
        app.entra.fail_next_token_request(
            UpstreamFailure::aadsts(
                400,
                "interaction_required",
                50079,
                "Due to a configuration change made by your administrator, or because you moved to a new location, \
             you must enroll in multi-factor authentication.",
            )
            .with_claims(CHALLENGE),
        );

        // Act: two reads.
        let first = app.read_token(&service, &user_id, ALIAS, "").await;
        let second = app.read_token(&service, &user_id, ALIAS, "").await;

        // Assert: 409 with the stable kind; the identity marked; one upstream call.
        assert_eq!(first.status(), StatusCode::CONFLICT);
        let body = json(first).await;
        assert_eq!(body["error"], "reauth_required");
        assert_eq!(body["reauth_kind"], "mfa_required", "{body}");
        assert!(body["error_description"].as_str().unwrap_or_default().contains("AADSTS50079"), "{body}");
        assert_eq!(json(second).await["reauth_kind"], "mfa_required");
        assert_eq!(app.entra.refresh_requests(), 1, "a marked identity is not refreshed again");
        assert!(app.identity(&user_id, ALIAS).await.needs_reauth);

        // Act: the user signs in again in the same browser.
        let authorizes_before = app.entra.authorize_queries().len();
        let outcome = app.follow(&browser, &app.auth_url(&[])).await;

        // Assert: the live SSO session did not answer alone: Entra was asked, with the challenge.
        let queries = app.entra.authorize_queries();
        assert_eq!(queries.len(), authorizes_before + 1, "the provider was asked, not the session alone");
        assert_eq!(queries.last().and_then(|q| q.get("claims")).map(String::as_str), Some(CHALLENGE));
        let code = outcome.code();
        assert_eq!(app.exchange(&code, &[]).await.status(), StatusCode::OK);
        assert!(!app.identity(&user_id, ALIAS).await.needs_reauth, "Entra's answer satisfied the challenge");
        let served = app.read_token(&service, &user_id, ALIAS, "").await;
        assert_eq!(served.status(), StatusCode::OK);
        // Once satisfied, the next authorize carries no challenge.
        let _ = app.follow(&browser_client(), &app.auth_url(&[])).await.code();
        assert!(!app.entra.authorize_queries().last().expect("an authorize").contains_key("claims"));
    }
);

both_backends!(a_link_started_for_a_challenged_user_carries_the_claims_challenge, |backend| async move {
    let app = spawn_app(backend).await;
    let browser = browser_client();
    let user_id = signed_in_expired(&app, &browser).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    app.entra.fail_next_token_request(
        UpstreamFailure::aadsts(400, "invalid_grant", 50158, "External security challenge not satisfied.")
            .with_claims(CHALLENGE),
    );
    let read = app.read_token(&service, &user_id, ALIAS, "").await;
    assert_eq!(json(read).await["reauth_kind"], "policy");

    let outcome = app.follow(&browser, &app.auth_url(&[("kc_action", "idp_link:azure_devops")])).await;

    let query: HashMap<String, String> = app.entra.authorize_queries().last().cloned().expect("an authorize");
    assert_eq!(query.get("claims").map(String::as_str), Some(CHALLENGE), "the link carries the challenge");
    assert!(matches!(outcome, Outcome::ToClient(_)), "the link completes");
    assert!(!app.identity(&user_id, ALIAS).await.needs_reauth);
});

both_backends!(a_policy_that_blocks_the_user_is_a_state_of_its_own_not_a_sign_in_loop, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = signed_in_expired_tokens(&app, &browser_client()).await;
    let user_id = user_id_of(&tokens);
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    app.entra.fail_next_token_request(
        UpstreamFailure::aadsts(400, "invalid_grant", 53003, "Access has been blocked by Conditional Access policies.")
            .with_suberror("message_only"),
    );

    let read = app.read_token(&service, &user_id, ALIAS, "").await;

    assert_eq!(read.status(), StatusCode::FORBIDDEN);
    let body = json(read).await;
    assert_eq!(body["error"], "access_denied");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.contains("Conditional Access"), "{description}");
    assert!(description.contains("trace id"), "{description}");
    assert!(description.contains("AADSTS53003"), "{description}");
    assert!(body.get("reauth_kind").is_none(), "not a re-sign-in: {body}");
    let broker = app.broker_token(access_token(&tokens), ALIAS).await;
    assert_eq!(broker.status(), StatusCode::FORBIDDEN, "Keycloak's endpoint alike");
    assert_eq!(json(broker).await["error"], "access_denied");
    let again = app.read_token(&service, &user_id, ALIAS, "").await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN, "the state is kept");
    assert_eq!(app.entra.refresh_requests(), 1, "no refresh loop against the policy");

    // A sign-in that Entra blocks too ends on a page that says signing in again will not help.
    app.entra.fail_next_token_request(
        UpstreamFailure::aadsts(400, "invalid_grant", 53003, "Access has been blocked by Conditional Access policies.")
            .with_suberror("message_only"),
    );
    let blocked = app.follow(&browser_client(), &app.auth_url(&[])).await;
    assert_eq!(blocked.page_status(), StatusCode::FORBIDDEN);
    let Outcome::Page { body, .. } = blocked else { unreachable!() };
    assert!(body.contains("policy blocks this sign-in"), "{body}");
    assert!(body.contains("will not help"), "{body}");

    // Re-checked at the next successful sign-in.
    let _ = app.tokens().await;
    assert!(!app.identity(&user_id, ALIAS).await.needs_reauth, "a successful sign-in clears the block");
    assert_eq!(app.read_token(&service, &user_id, ALIAS, "").await.status(), StatusCode::OK);
});

both_backends!(each_suberror_and_grant_ending_code_names_its_kind_on_the_409, |backend| async move {
    let app = spawn_app(backend).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let suberror =
        |suberror: &str| UpstreamFailure::aadsts(400, "invalid_grant", 50000, "words").with_suberror(suberror);
    let code = |error: &str, code: u32| UpstreamFailure::aadsts(400, error, code, "words");
    let cases = [
        (suberror("consent_required"), "consent_required"),
        (suberror("basic_action"), "policy"),
        (suberror("additional_action"), "policy"),
        (suberror("user_password_expired"), "password_expired"),
        (suberror("bad_token"), "expired"),
        (suberror("client_mismatch"), "expired"),
        (suberror("device_authentication_failed"), "policy"),
        (code("interaction_required", 50076), "mfa_required"),
        (code("invalid_grant", 65001), "consent_required"),
        (code("invalid_grant", 70043), "expired"),
        (code("invalid_grant", 700082), "expired"),
        (code("invalid_grant", 70008), "expired"),
        (code("invalid_grant", 50173), "expired"),
        (code("invalid_grant", 54005), "expired"),
        (code("invalid_grant", 70000), "expired"),
    ];
    for (failure, kind) in cases {
        let case = format!("{:?} {:?}", failure.aadsts, failure.suberror);
        let user_id = signed_in_expired(&app, &browser_client()).await;
        app.entra.fail_next_token_request(failure);

        let response = app.read_token(&service, &user_id, ALIAS, "").await;

        assert_eq!(response.status(), StatusCode::CONFLICT, "{case}");
        let body = json(response).await;
        assert_eq!(body["error"], "reauth_required", "{case}");
        assert_eq!(body["reauth_kind"], kind, "{case}: {body}");
        assert!(body["error_description"].as_str().unwrap_or_default().contains("sign in"), "{case}: {body}");
        let identity = app.identity(&user_id, ALIAS).await;
        assert!(identity.needs_reauth, "{case}");
        let url = format!("{}{}?provider={ALIAS}&subject={}", app.internal, paths::INTERNAL_USERS, identity.subject);
        let found = json(app.api.get(url).bearer_auth(&service).send().await.expect("find")).await;
        assert_eq!(found["users"][0]["identities"][0]["reauth_kind"], kind, "{case}: the user lookup names it too");
    }
    // At sign-in, each kind has its own words for the user.
    app.entra.fail_next_token_request(suberror("user_password_expired"));
    let page = app.follow(&browser_client(), &app.auth_url(&[])).await;
    assert_eq!(page.page_status(), StatusCode::BAD_REQUEST);
    let Outcome::Page { body, .. } = page else { unreachable!() };
    assert!(body.contains("password has expired"), "{body}");
});

both_backends!(a_sign_in_entra_throttles_asks_the_browser_to_come_back_after_the_wait, |backend| async move {
    let app = spawn_app(backend).await;
    let browser = browser_client();
    let callback = app.upstream_callback(&browser, &[]).await;
    app.entra.fail_next_token_request(UpstreamFailure::throttled(30));

    let page = browser.get(&callback).send().await.expect("callback");

    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&page), 30, "Entra's wait, passed on");
    let body = page.text().await.unwrap_or_default();
    assert!(body.contains("try again in 30 seconds"), "{body}");
});
