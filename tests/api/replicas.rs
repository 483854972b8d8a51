//! Replicas: two real broker processes on one Postgres must refresh an identity once.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::*;

/// A broker started from the built binary, killed when dropped.
struct BrokerProcess {
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
/// ports and the shared database, and waits until it is ready.
async fn start_process(config: &str, database_url: &str) -> BrokerProcess {
    let (public, internal, management) = (free_port(), free_port(), free_port());
    let config = config
        .replace("internal_bind = \"127.0.0.1:0\"", &format!("internal_bind = \"127.0.0.1:{internal}\""))
        .replace("management_bind = \"127.0.0.1:0\"", &format!("management_bind = \"127.0.0.1:{management}\""))
        .replace(
            "bind = \"127.0.0.1:0\"",
            &format!("bind = \"127.0.0.1:{public}\"\nhostname = \"http://broker.test\""),
        );
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
            return BrokerProcess { internal: format!("http://127.0.0.1:{internal}"), _child: child, _dir: dir };
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
    let (first, second) =
        tokio::join!(start_process(&config, &app.database_url), start_process(&config, &app.database_url));
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
