//! Drives the real release server (Postgres) through complete sign-ins against the fake
//! Entra, with `/health/live` measured in the same run as the baseline.
//!
//! Run with `cargo bench --bench signin`. Reports sign-ins per second, the ratio to
//! `/health/live` requests per second, p50/p99 of the broker's own time per sign-in,
//! resident memory idle and under load, and the time from process start to ready.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, dead_code)]

#[path = "../tests/api/fake_entra.rs"]
mod fake_entra;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fake_entra::{FakeEntra, HOME_TENANT};
use sqlx::Connection as _;
use url::Url;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const CLIENT_SECRET: &str = "bench-client-secret";
const REDIRECT_URI: &str = "http://app.bench/callback";
const UPSTREAM_CLIENT: &str = "bench-upstream-client";
const UPSTREAM_SECRET: &str = "bench-upstream-secret";
const WORKERS: usize = 16;
const HEALTH_SECONDS: u64 = 4;
const SIGN_IN_SECONDS: u64 = 10;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Server {
    child: Child,
    public: String,
    management: String,
}

async fn start_server(entra: &FakeEntra, database_url: &str) -> (Server, Duration) {
    let (public_port, internal_port, management_port) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
[http]
bind = "127.0.0.1:{public_port}"
internal_bind = "127.0.0.1:{internal_port}"
management_bind = "127.0.0.1:{management_port}"
[database]
url = "{database_url}"
max_connections = 20
[vault]
encryption_keys = ["b1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]
[log]
format = "json"
[[clients]]
client_id = "allhands"
client_secret = "{CLIENT_SECRET}"
redirect_uris = ["{REDIRECT_URI}"]
[providers.azure_devops]
tenant_id = "{HOME_TENANT}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
authority = "{authority}"
"#,
        authority = entra.authority()
    );
    let path = std::env::temp_dir().join(format!("ib-bench-{public_port}.toml"));
    std::fs::write(&path, config).unwrap();
    let management = format!("http://127.0.0.1:{management_port}");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_identity-broker"))
        .args(["start-dev", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the broker starts");
    let probe = reqwest::Client::new();
    loop {
        if let Ok(response) = probe.get(format!("{management}/health/ready")).send().await
            && response.status() == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the broker did not become ready");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ready_after = started.elapsed();
    (Server { child, public: format!("http://127.0.0.1:{public_port}"), management }, ready_after)
}

/// Requests per second of `/health/live` with `WORKERS` concurrent keep-alive clients.
async fn health_rate(server: &Server) -> f64 {
    let client = reqwest::Client::new();
    let url = format!("{}/health/live", server.management);
    let deadline = Instant::now() + Duration::from_secs(HEALTH_SECONDS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            while Instant::now() < deadline {
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                count += 1;
            }
            count
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// One complete sign-in; returns the time spent in the broker's own endpoints.
async fn sign_in(client: &reqwest::Client, public: &str) -> Duration {
    let auth = format!(
        "{public}/realms/allhands/protocol/openid-connect/auth?client_id=allhands&response_type=code&redirect_uri={REDIRECT_URI}&scope=openid%20email%20profile&state=bench&kc_idp_hint=azure_devops"
    );
    let mut broker_time = Duration::ZERO;
    let timed = Instant::now();
    let first = client.get(&auth).send().await.unwrap();
    let login = format!("{public}{}", location(&first));
    let second = client.get(&login).send().await.unwrap();
    broker_time += timed.elapsed();
    let upstream = client.get(location(&second)).send().await.unwrap();
    let callback = location(&upstream);
    let timed = Instant::now();
    let back = client.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 302, "sign-in completes");
    let target = Url::parse(&location(&back)).unwrap();
    let code = target.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).expect("a code");
    let token = client
        .post(format!("{public}/realms/allhands/protocol/openid-connect/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", "allhands"),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200, "code exchange succeeds");
    token.bytes().await.unwrap();
    broker_time + timed.elapsed()
}

async fn sign_in_load(server: &Server) -> (f64, Vec<Duration>, u64) {
    let deadline = Instant::now() + Duration::from_secs(SIGN_IN_SECONDS);
    let started = Instant::now();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, running, pid) = (peak.clone(), running.clone(), server.child.id());
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(memory_kib(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let public = server.public.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut times = Vec::new();
            while Instant::now() < deadline {
                times.push(sign_in(&client, &public).await);
            }
            times
        }));
    }
    let mut times = Vec::new();
    for task in tasks {
        times.extend(task.await.unwrap());
    }
    let rate = times.len() as f64 / started.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    times.sort();
    (rate, times, peak.load(Ordering::Relaxed))
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: only check they build.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("signin benchmark: run it with `cargo bench --bench signin`");
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let name = format!("ib_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("Postgres at 127.0.0.1:5432");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let entra = FakeEntra::start(UPSTREAM_CLIENT, UPSTREAM_SECRET).await;

    let (mut server, ready_after) = start_server(&entra, &format!("postgres://postgres@127.0.0.1:5432/{name}")).await;
    let pid = server.child.id();
    // Warm up: discovery, JWKS and connection pools.
    let warm =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for _ in 0..5 {
        sign_in(&warm, &server.public).await;
    }
    let idle_kib = memory_kib(pid, "VmRSS:");
    let health = health_rate(&server).await;
    let (rate, times, peak_kib) = sign_in_load(&server).await;
    let health_after = health_rate(&server).await;
    let baseline = (health + health_after) / 2.0;

    let metrics = reqwest::get(format!("{}/metrics", server.management)).await.unwrap().text().await.unwrap();
    let upstream_mean = upstream_mean_ms(&metrics, "token_code");

    // Graceful shutdown must end the process with status 0.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let exit = server.child.wait().unwrap();

    println!("identity-broker sign-in benchmark ({WORKERS} concurrent clients, release build, Postgres)");
    println!("  ready after start          {:>8.1} ms", ready_after.as_secs_f64() * 1000.0);
    println!("  /health/live               {:>8.0} req/s (before {:.0}, after {:.0})", baseline, health, health_after);
    println!("  complete sign-ins          {:>8.1} /s over {} sign-ins", rate, times.len());
    println!("  ratio sign-ins : health    {:>8.4}", rate / baseline);
    println!(
        "  broker time per sign-in    p50 {:.2} ms, p99 {:.2} ms (4 broker requests, incl. the upstream code exchange)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    println!("  upstream code exchange     mean {upstream_mean:.2} ms (from /metrics)");
    println!(
        "  resident memory            idle {:.1} MiB, peak under load {:.1} MiB",
        idle_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0
    );
    println!("  SIGTERM exit status        {exit}");

    drop(entra);
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    assert!(exit.success(), "graceful shutdown exits 0");
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn upstream_mean_ms(metrics: &str, operation: &str) -> f64 {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "identity_broker_upstream_request_duration_seconds_{suffix}{{operation=\"{operation}\"}}"
                ))
            })
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = value("count");
    if count == 0.0 { 0.0 } else { value("sum") / count * 1000.0 }
}
