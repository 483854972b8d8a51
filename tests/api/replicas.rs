//! Replicas: two real broker processes on one Postgres must refresh an identity once.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use sqlx::Connection as _;

use crate::helpers::*;

/// The public hostname of processes whose own tokens do not matter.
const HOSTNAME: &str = "http://broker.test";

/// A broker started from the built binary, killed when dropped.
struct BrokerProcess {
    public: String,
    internal: String,
    _child: tokio::process::Child,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts `identity-broker start-dev` with `config` (whose listeners bind port 0) on free
/// ports, the shared database and the public `hostname` (the issuer of its tokens), and waits
/// until it is ready.
async fn start_process(config: &str, database_url: &str, hostname: &str) -> BrokerProcess {
    let (public, internal, management) = (free_port(), free_port(), free_port());
    let config = config
        .replace("internal_bind = \"127.0.0.1:0\"", &format!("internal_bind = \"127.0.0.1:{internal}\""))
        .replace("management_bind = \"127.0.0.1:0\"", &format!("management_bind = \"127.0.0.1:{management}\""))
        .replace("bind = \"127.0.0.1:0\"", &format!("bind = \"127.0.0.1:{public}\"\nhostname = \"{hostname}\""));
    let dir = TempDir(std::env::temp_dir().join(format!("ib_process_{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let config_path = dir.0.join("broker.toml");
    std::fs::write(&config_path, config).expect("config");
    let log = std::fs::File::create(dir.0.join("broker.log")).expect("log file");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_identity-broker"))
        .arg("start-dev")
        .arg("--config")
        .arg(&config_path)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the broker binary starts");
    let ready = format!("http://127.0.0.1:{management}/health/ready");
    for _ in 0..300 {
        if reqwest::get(&ready).await.is_ok_and(|r| r.status() == StatusCode::OK) {
            return BrokerProcess {
                public: format!("http://127.0.0.1:{public}"),
                internal: format!("http://127.0.0.1:{internal}"),
                _child: child,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.0.join("broker.log")).unwrap_or_default();
    panic!("the broker process did not become ready:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_refresh_an_expiring_identity_once_for_a_hundred_readers() {
    // The user signs in through a third instance; the two processes only serve reads.
    let app = spawn_app(Backend::Postgres).await;
    app.entra.set_access_token_lifetime(60);
    let tokens = app.tokens().await;
    let user_id = jwt_claims(tokens["access_token"].as_str().expect("token"))["sub"].as_str().expect("sub").to_owned();
    app.entra.set_access_token_lifetime(3600);
    app.entra.set_token_delay(Duration::from_millis(300));
    let config = settings_toml(&app.entra, &ProviderSetup::default());
    let (first, second) = tokio::join!(
        start_process(&config, &app.database_url, HOSTNAME),
        start_process(&config, &app.database_url, HOSTNAME)
    );
    let token_url = format!("{}/realms/allhands/protocol/openid-connect/token", first.internal);
    let grant = [("grant_type", "client_credentials"), ("client_id", SERVICE_ID), ("client_secret", SERVICE_SECRET)];
    let service: serde_json::Value =
        app.api.post(&token_url).form(&grant).send().await.expect("grant").json().await.expect("json");
    let service = service["access_token"].as_str().expect("service token").to_owned();

    let reads = (0..100).map(|i| {
        let process = if i % 2 == 0 { &first } else { &second };
        let url = format!("{}/internal/v1/users/{user_id}/tokens/azure_devops", process.internal);
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
    let access = tokens["access_token"].as_str().expect("access token").to_owned();
    let user_id = jwt_claims(&access)["sub"].as_str().expect("sub").to_owned();
    // The same issuer as this process, so that each accepts the other's tokens.
    let config = settings_toml(&app.entra, &ProviderSetup::default());
    let other = start_process(&config, &app.database_url, &app.public).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let client = reqwest::Client::new();
    let broker_read = || async {
        let url = format!("{}/realms/allhands/broker/azure_devops/token", other.public);
        client.get(url).bearer_auth(&access).send().await.expect("broker read").status()
    };
    let internal_read = |user_id: &str| {
        let url = format!("{}/internal/v1/users/{user_id}/tokens/azure_devops", other.internal);
        let request = client.get(url).bearer_auth(&service);
        async move { request.send().await.expect("internal read").status() }
    };
    let unlink_here = |user_id: &str| {
        let url = format!("{}/internal/v1/users/{user_id}/tokens/azure_devops", app.internal);
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
    assert_eq!(app.post_form("logout", &form).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(eventually(StatusCode::BAD_REQUEST, broker_read).await, StatusCode::BAD_REQUEST);
    assert_eq!(internal_read(&user_id).await, StatusCode::OK, "logout keeps the stored tokens");

    // This process unlinks the provider: the other one no longer serves the tokens.
    assert_eq!(unlink_here(&user_id).await, StatusCode::NO_CONTENT);
    let read = || internal_read(&user_id);
    assert_eq!(eventually(StatusCode::NOT_FOUND, read).await, StatusCode::NOT_FOUND);

    // The person signs in again (a new user, as in Keycloak after an unlink), and the other
    // process keeps that identity in memory.
    let relinked = app.tokens().await;
    let user_id =
        jwt_claims(relinked["access_token"].as_str().expect("token"))["sub"].as_str().expect("sub").to_owned();
    for _ in 0..3 {
        assert_eq!(internal_read(&user_id).await, StatusCode::OK);
    }
    // Both processes lose their notifications' connection: each must connect and listen
    // again, and forget what it kept meanwhile. Then the next change must still reach it.
    let database = app.database_url.rsplit('/').next().expect("database name").to_owned();
    let mut admin = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres").await.expect("admin");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(&database)
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
