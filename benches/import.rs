//! `identity-broker import keycloak` of 100,000 users into Postgres, while the server runs on
//! the same database: users per second and the import process's peak memory.
//!
//! Run with `cargo bench --bench import` (`-- --users 1000000` for another number of users; the
//! export of a million takes about a GiB of the temporary directory while it runs). The export is generated in Keycloak's
//! `different_files` layout (`allhands-realm.json` plus `allhands-users-N.json` of 50 users
//! each, `kc.sh export`'s default), each user with four attributes and an `azure_devops`
//! linked identity. The release binary imports it as a child process; its peak resident memory
//! is the kernel's high-water mark (`VmHWM` of /proc/<pid>/status, sampled until it exits).
//! A second import of the same export (every user unchanged) is timed too, then the database's
//! size is read, and the import process's CPU time is its last `/proc/<pid>/stat` sample before it
//! exits. Baselines measured
//! in the same run: `/health/live` requests per second, and one connection's `SELECT 1` round
//! trips per second to the same Postgres (an import is one connection's sequence of round
//! trips, so that ratio reads as "round trips' worth of time per user").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::support::fake_entra::HOME_TENANT;
use common::support::process::{BINARY, ConfigFile};
use common::{
    Bench, CLOCK_TICKS_PER_SECOND, PostgresTls, UPSTREAM_CLIENT, UPSTREAM_SECRET, VAULT_KEY, health_rate, memory_kib,
    mib, process_cpu_ticks,
};
use serde_json::json;
use sqlx::Connection as _;

/// Users generated unless `--users N` says otherwise.
const USERS: usize = 100_000;
/// `kc.sh export --users different_files`' default `--users-per-file`.
const USERS_PER_FILE: usize = 50;
const HEALTH_WORKERS: usize = 16;
const HEALTH_PHASE: Duration = Duration::from_secs(3);
const ROUND_TRIP_PHASE: Duration = Duration::from_secs(3);

/// `--users N` of the command line, else [`USERS`].
fn users_wanted() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == "--users")
        .and_then(|at| args.get(at + 1))
        .map_or(USERS, |n| n.parse().expect("--users takes a number"))
}

/// Writes an export of `count` users into a new directory and returns it.
fn generate_export(count: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ib_bench_import_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let realm = json!({"id": "allhands", "realm": "allhands", "enabled": true, "identityProviders": [
        {"alias": "azure_devops", "providerId": "oidc", "enabled": true, "storeToken": true}]});
    std::fs::write(dir.join("allhands-realm.json"), realm.to_string()).unwrap();
    for file in 0..count.div_ceil(USERS_PER_FILE) {
        let users: Vec<_> = (file * USERS_PER_FILE..((file + 1) * USERS_PER_FILE).min(count))
            .map(|i| {
                let subject = format!("bench-subject-{i:08}-AAAAAAAAAAAAAAAAAAAA");
                json!({
                    "id": format!("00000000-0000-4000-8000-{i:012}"),
                    "createdTimestamp": 1_700_000_000_000_i64 + i as i64,
                    "username": format!("user{i}@contoso.com"),
                    "enabled": true,
                    "totp": false,
                    "emailVerified": true,
                    "firstName": "User",
                    "lastName": format!("Number {i}"),
                    "email": format!("user{i}@contoso.com"),
                    "attributes": {
                        "identity_provider": ["azure_devops"],
                        "azure_devops_id": [subject],
                        "tid": [HOME_TENANT],
                        "teams": ["red", "blue"],
                    },
                    "credentials": [],
                    "disableableCredentialTypes": [],
                    "requiredActions": [],
                    "federatedIdentities": [
                        {"identityProvider": "azure_devops", "userId": subject, "userName": format!("user{i}@contoso.com")}
                    ],
                    "realmRoles": ["default-roles-allhands"],
                    "notBefore": 0,
                    "groups": []
                })
            })
            .collect();
        let text = json!({"realm": "allhands", "users": users}).to_string();
        std::fs::write(dir.join(format!("allhands-users-{file}.json")), text).unwrap();
    }
    dir
}

/// One import run of the release binary: seconds taken, peak memory in KiB, CPU time in clock
/// ticks, its summary.
struct Run {
    elapsed: Duration,
    peak_kib: u64,
    cpu_ticks: u64,
    summary: String,
}

async fn run_import(config: &Path, database_url: &str, export: &Path) -> Run {
    let started = Instant::now();
    let mut child = Command::new(BINARY)
        .args(["import", "keycloak"])
        .arg(export)
        .arg("--config")
        .arg(config)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the import starts");
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let cpu = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, cpu, running) = (Arc::clone(&peak), Arc::clone(&cpu), Arc::clone(&running));
        tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(memory_kib(pid, "VmHWM:"), Ordering::Relaxed);
                cpu.fetch_max(process_cpu_ticks(&pid.to_string()), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let output = tokio::task::spawn_blocking(move || {
        let mut stdout = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        (child.wait().unwrap(), stdout)
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    running.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let (status, summary) = output;
    assert!(status.success(), "the import failed:\n{summary}");
    Run { elapsed, peak_kib: peak.load(Ordering::Relaxed), cpu_ticks: cpu.load(Ordering::Relaxed), summary }
}

/// `SELECT 1` round trips per second over one connection.
async fn round_trip_rate(database_url: &str) -> f64 {
    let mut connection = sqlx::PgConnection::connect(database_url).await.unwrap();
    let started = Instant::now();
    let mut count = 0_u64;
    while started.elapsed() < ROUND_TRIP_PHASE {
        sqlx::query("SELECT 1").execute(&mut connection).await.unwrap();
        count += 1;
    }
    connection.close().await.unwrap();
    count as f64 / started.elapsed().as_secs_f64()
}

/// The database's size in bytes.
async fn database_size(database_url: &str) -> i64 {
    let mut connection = sqlx::PgConnection::connect(database_url).await.unwrap();
    let size = sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&mut connection).await;
    connection.close().await.unwrap();
    size.unwrap()
}

#[tokio::main]
async fn main() {
    let Some(mut bench) = Bench::start_with("import", "", PostgresTls::Disable).await else { return };
    let users = users_wanted();
    let generating = Instant::now();
    let export = generate_export(users);
    let bytes: u64 = std::fs::read_dir(&export).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    println!(
        "export: {users} users in {} files of {USERS_PER_FILE}, {:.1} MiB, generated in {:.1} s",
        users.div_ceil(USERS_PER_FILE) + 1,
        bytes as f64 / 1_048_576.0,
        generating.elapsed().as_secs_f64()
    );
    let config = ConfigFile::write(&format!(
        r#"
[database]
url = "{url}"
[vault]
encryption_keys = ["{VAULT_KEY}"]
[providers.azure_devops]
tenant_id = "{HOME_TENANT}"
client_id = "{UPSTREAM_CLIENT}"
client_secret = "{UPSTREAM_SECRET}"
authority = "{authority}"
"#,
        url = bench.database.url,
        authority = bench.entra.authority()
    ));

    let health = health_rate(&bench.server, HEALTH_WORKERS, HEALTH_PHASE).await;
    let round_trips = round_trip_rate(&bench.database.url).await;
    let first = run_import(config.path(), &bench.database.url, &export).await;
    let second = run_import(config.path(), &bench.database.url, &export).await;
    let health_after = health_rate(&bench.server, HEALTH_WORKERS, HEALTH_PHASE).await;
    let size = database_size(&bench.database.url).await;

    let rate = |run: &Run| users as f64 / run.elapsed.as_secs_f64();
    println!("baseline: /health/live {health:.0} req/s before, {health_after:.0} after ({HEALTH_WORKERS} connections)");
    println!("baseline: one connection's SELECT 1 to the same Postgres, {round_trips:.0} round trips/s");
    for (name, run) in [("first import (all created)", &first), ("second import (all unchanged)", &second)] {
        println!(
            "{name}: {:.1} s, {:.0} users/s = {:.4} x /health/live, {:.4} x SELECT 1 round trips ({:.2} round trips' time per user); peak RSS (VmHWM) {:.1} MiB; importer CPU {:.1} s",
            run.elapsed.as_secs_f64(),
            rate(run),
            rate(run) / health,
            rate(run) / round_trips,
            round_trips / rate(run),
            mib(run.peak_kib),
            run.cpu_ticks as f64 / CLOCK_TICKS_PER_SECOND as f64
        );
    }
    println!("database after both imports: {:.1} MiB", size as f64 / 1_048_576.0);
    println!("first import's summary:\n{}", first.summary.lines().take(2).collect::<Vec<_>>().join("\n"));
    println!("second import's summary:\n{}", second.summary.lines().take(2).collect::<Vec<_>>().join("\n"));
    assert!(first.summary.contains(&format!("{users} created")), "{}", first.summary);
    assert!(second.summary.contains(&format!("{users} unchanged")), "{}", second.summary);

    std::fs::remove_dir_all(&export).unwrap();
    drop(config);
    bench.server.terminate();
    bench.clean_up();
}
