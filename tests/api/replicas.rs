//! Replicas: two real broker processes on one Postgres must refresh an identity once.

use std::time::Duration;

use reqwest::StatusCode;
use sqlx::Connection as _;

use crate::helpers::*;
use crate::support::database::ADMIN_URL;
use crate::support::process::{BrokerProcess, Ports, Stderr};

/// The public hostname of processes whose own tokens do not matter.
pub(crate) const HOSTNAME: &str = "http://broker.test";

/// Starts the built binary with `config` (whose listeners bind port 0) on free ports, the
/// shared database and the public `hostname` (the issuer of its tokens), and waits until it is
/// ready.
pub(crate) async fn start_process(config: &str, database_url: &str, hostname: &str) -> BrokerProcess {
    // A port found free may be taken by another test before the process binds it: try others.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match start_process_on(Ports::free(), config, database_url, hostname).await {
            Ok(process) => return process,
            Err(why) if attempts < 5 && why.contains("Address already in use") => continue,
            Err(why) => panic!("{why}"),
        }
    }
}

async fn start_process_on(
    ports: Ports,
    config: &str,
    database_url: &str,
    hostname: &str,
) -> Result<BrokerProcess, String> {
    let config = config
        .replace("internal_bind = \"127.0.0.1:0\"", &format!("internal_bind = \"127.0.0.1:{}\"", ports.internal))
        .replace("management_bind = \"127.0.0.1:0\"", &format!("management_bind = \"127.0.0.1:{}\"", ports.management))
        .replace(
            "bind = \"127.0.0.1:0\"",
            &format!("bind = \"127.0.0.1:{}\"\nhostname = \"{hostname}\"", ports.public),
        );
    BrokerProcess::try_start(&config, ports, &[("DATABASE_URL", database_url)], Stderr::LogFile).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_refresh_an_expiring_identity_once_for_a_hundred_readers() {
    // The user signs in through a third instance; the two processes only serve reads.
    let app = spawn_app(Backend::Postgres).await;
    app.entra.set_access_token_lifetime(60);
    let user_id = user_id_of(&app.tokens().await);
    app.entra.set_access_token_lifetime(3600);
    app.entra.set_token_delay(Duration::from_millis(300));
    let config = settings_toml(&app.entra, &ProviderSetup::default());
    let (first, second) =
        tokio::join!(start_process(&config, &app.db.url, HOSTNAME), start_process(&config, &app.db.url, HOSTNAME));
    let service = app.service_token_at(&first.internal, SERVICE_ID, SERVICE_SECRET).await;

    let reads = (0..100).map(|i| {
        let process = if i % 2 == 0 { &first } else { &second };
        let url = format!("{}{}", process.internal, user_token_path(&user_id, "azure_devops"));
        let request = reqwest::Client::new().get(url).bearer_auth(&service);
        async move { request.send().await.expect("read") }
    });
    let responses = futures_util::future::join_all(reads).await;

    let mut served = std::collections::HashSet::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = response.json().await.expect("json");
        served.insert(body["access_token"].as_str().expect("access_token").to_owned());
    }
    assert_eq!(app.entra.refresh_requests(), 1, "exactly one refresh reached the upstream");
    assert_eq!(served.len(), 1, "every reader got the same token");
    let issued = app.entra.issued_tokens();
    assert!(served.iter().all(|t| issued.contains(t)), "the token served is one the upstream issued");
    assert!(!served.contains(&issued[0]), "not the expiring token from the sign-in");
}

/// Polls `status` until it gives `expected`, for at most `CHANGE_DEADLINE`: far less than
/// the minute a cached row may live, so only the change notification can explain a pass.
async fn eventually<F, Fut>(expected: StatusCode, status: F) -> StatusCode
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let deadline = tokio::time::Instant::now() + CHANGE_DEADLINE;
    loop {
        let got = status().await;
        if got == expected || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CHANGE_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_stops_serving_what_another_changed_even_across_a_lost_listener() {
    let app = spawn_app(Backend::Postgres).await;
    let tokens = app.tokens().await;
    let access = access_token(&tokens).to_owned();
    let user_id = user_id_of(&tokens);
    // The same issuer as this process, so that each accepts the other's tokens.
    let config = settings_toml(&app.entra, &ProviderSetup::default());
    let other = start_process(&config, &app.db.url, &app.public).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let client = reqwest::Client::new();
    let broker_read = || async {
        let url = format!("{}{}", other.public, provider_path(paths::BROKER_TOKEN, "azure_devops"));
        client.get(url).bearer_auth(&access).send().await.expect("broker read").status()
    };
    let internal_read = |user_id: &str| {
        let url = format!("{}{}", other.internal, user_token_path(user_id, "azure_devops"));
        let request = client.get(url).bearer_auth(&service);
        async move { request.send().await.expect("internal read").status() }
    };
    let unlink_here = |user_id: &str| {
        let url = format!("{}{}", app.internal, user_token_path(user_id, "azure_devops"));
        let request = client.delete(url).bearer_auth(&service);
        async move { request.send().await.expect("unlink").status() }
    };
    // The other process has the session and the identity in memory now.
    for _ in 0..3 {
        assert_eq!(broker_read().await, StatusCode::OK);
        assert_eq!(internal_read(&user_id).await, StatusCode::OK);
    }

    // This process ends the session: the other one refuses its token from now on.
    let form = [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("refresh_token", tokens["refresh_token"].as_str().expect("refresh token")),
    ];
    assert_eq!(app.post_form(paths::LOGOUT, &form).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(eventually(StatusCode::BAD_REQUEST, broker_read).await, StatusCode::BAD_REQUEST);
    assert_eq!(internal_read(&user_id).await, StatusCode::OK, "logout keeps the stored tokens");

    // This process unlinks the provider: the other one no longer serves the tokens.
    assert_eq!(unlink_here(&user_id).await, StatusCode::NO_CONTENT);
    let read = || internal_read(&user_id);
    assert_eq!(eventually(StatusCode::NOT_FOUND, read).await, StatusCode::NOT_FOUND);

    // The person signs in again (a new user, as in Keycloak after an unlink), and the other
    // process keeps that identity in memory.
    let relinked = app.tokens().await;
    let user_id = user_id_of(&relinked);
    for _ in 0..3 {
        assert_eq!(internal_read(&user_id).await, StatusCode::OK);
    }
    // Both processes lose their notifications' connection: each must connect and listen
    // again, and forget what it kept meanwhile. Then the next change must still reach it.
    let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("admin");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(app.db.name())
    .fetch_all(&mut admin)
    .await
    .expect("terminate listeners");
    assert!(killed.len() >= 2, "both processes were listening: {killed:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        assert_eq!(internal_read(&user_id).await, StatusCode::OK);
    }
    assert_eq!(unlink_here(&user_id).await, StatusCode::NO_CONTENT);
    let read = || internal_read(&user_id);
    assert_eq!(eventually(StatusCode::NOT_FOUND, read).await, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_grant_at_another_process_sees_users_changed_and_tokens_revoked_elsewhere() {
    let app = spawn_app(Backend::Postgres).await;
    let tokens = app.tokens().await;
    let user_id = user_id_of(&tokens);
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh token").to_owned();
    let config = settings_toml(&app.entra, &ProviderSetup::default());
    let other = start_process(&config, &app.db.url, &app.public).await;
    let client = reqwest::Client::new();
    let grant = [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
    ];
    let refresh_there = || async {
        let url = format!("{}{}", other.public, realm_path(paths::TOKEN));
        let response = client.post(url).form(&grant).send().await.expect("refresh grant");
        (response.status(), response.json::<serde_json::Value>().await.expect("json"))
    };
    // The other process keeps the user, the session and the token's unrevoked state in memory.
    for _ in 0..3 {
        assert_eq!(refresh_there().await.0, StatusCode::OK);
    }
    let mut sql = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");

    // An operator (or the admin API of a third replica) renames the user: the next grants
    // there carry the new name, within moments, not the minute a cached row may live.
    sqlx::query("UPDATE users SET first_name = 'Robert' WHERE id = $1")
        .bind(&user_id)
        .execute(&mut sql)
        .await
        .expect("rename");
    let given_name = || async {
        let (status, body) = refresh_there().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        jwt_claims(body["access_token"].as_str().expect("access token"))["given_name"].clone()
    };
    let deadline = tokio::time::Instant::now() + CHANGE_DEADLINE;
    while given_name().await != "Robert" && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(given_name().await, "Robert", "the renamed user reached the other process");

    // Disabled there: refused here.
    sqlx::query("UPDATE users SET enabled = 0 WHERE id = $1").bind(&user_id).execute(&mut sql).await.expect("disable");
    let status = || async { refresh_there().await.0 };
    assert_eq!(eventually(StatusCode::BAD_REQUEST, status).await, StatusCode::BAD_REQUEST);
    assert_eq!(refresh_there().await.1["error_description"], "Account disabled");
    sqlx::query("UPDATE users SET enabled = 1 WHERE id = $1").bind(&user_id).execute(&mut sql).await.expect("enable");
    assert_eq!(eventually(StatusCode::OK, status).await, StatusCode::OK, "enabled again");

    // This process revokes the refresh token (RFC 7009): the other one refuses it.
    let revoke = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET), ("token", refresh_token.as_str())];
    assert_eq!(app.post_form(paths::REVOKE, &revoke).await.status(), StatusCode::OK);
    assert_eq!(eventually(StatusCode::BAD_REQUEST, status).await, StatusCode::BAD_REQUEST);
    let (_, body) = refresh_there().await;
    assert_eq!(body["error"], "invalid_grant", "{body}");
}
