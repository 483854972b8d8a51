//! Drives the real release server (Postgres) through OpenHands' two admin lookups,
//! `GET /admin/realms/{realm}/users?q=azure_devops_id:…` and `?q=email:…`, with 1,000 and then
//! 100,000 users, `/health/live` measured in the same run as the baseline.
//!
//! Run with `cargo bench --bench admin`. Users are seeded in bulk through the library's
//! `Store::seed_users` (one `INSERT … SELECT` over a recursive sequence, with the attributes
//! `azure_devops_id` and `identity_provider` that sign-in writes), after the server has run its
//! migrations. Reports, at each size, requests per second with p50/p99 and the ratio to
//! `/health/live`; every answer must be exactly the one user asked for, or the run fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::support::http::paths;
use common::{Bench, BrokerProcess, Load, PostgresTls, Stop, Turn, expect_ok, health_rate, ms, run_load};
use identity_broker::store::Store;
use secrecy::SecretString;
use serde_json::Value;

const CONNECTIONS: usize = 32;
const PHASE: Duration = Duration::from_secs(5);
const ADMIN_PASSWORD: &str = "bench-admin-password";
const PREFIX: &str = "bench";
const SIZES: [i64; 2] = [1_000, 100_000];
const REALM: &str = "allhands";
/// A broker beside its database reaches it without TLS.
const TLS: PostgresTls = PostgresTls::Disable;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The id `seed_users` gives user `i`.
fn seeded_id(i: i64) -> String {
    format!("00000000-0000-4000-8000-{}", 100_000_000_000_i64 + i)
}

/// The administrator's access token, by the password grant python-keycloak sends.
async fn admin_token(server: &BrokerProcess) -> String {
    let form = [
        ("username", "admin"),
        ("password", ADMIN_PASSWORD),
        ("client_id", "admin-cli"),
        ("grant_type", "password"),
        ("code", ""),
        ("redirect_uri", ""),
        ("scope", "openid"),
    ];
    let url = format!("{}{}", server.public, paths::TOKEN.replace("{realm}", "master"));
    let (_, body) = expect_ok(reqwest::Client::new().post(url).form(&form)).await.expect("the admin signs in");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["access_token"].as_str().expect("access_token").to_owned()
}

/// Which lookup a phase makes.
#[derive(Clone, Copy)]
enum Lookup {
    ProviderId,
    Email,
}

impl Lookup {
    fn q(self, i: i64) -> String {
        match self {
            Lookup::ProviderId => format!("azure_devops_id:{PREFIX}-sub-{i}"),
            Lookup::Email => format!("email:{PREFIX}{i}@example.test"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lookup::ProviderId => "q=azure_devops_id:…",
            Lookup::Email => "q=email:…",
        }
    }
}

/// The users this lookup found must be exactly user `i`.
fn exactly(body: &str, i: i64) -> Result<(), String> {
    let users: Value = serde_json::from_str(body).map_err(|err| format!("not JSON: {err}"))?;
    let ids: Vec<&str> = users.as_array().ok_or("not a list")?.iter().filter_map(|u| u["id"].as_str()).collect();
    if ids == [seeded_id(i).as_str()] { Ok(()) } else { Err(format!("user {i}: found {ids:?}")) }
}

/// Lookups of users spread over `1..=users`, as python-keycloak's `a_get_users` sends them.
async fn lookups(server: &BrokerProcess, token: &Arc<String>, lookup: Lookup, users: i64) -> Load {
    let client = reqwest::Client::new();
    let url = format!("{}{}", server.public, paths::ADMIN_USERS.replace("{realm}", REALM));
    let token = Arc::clone(token);
    run_load(CONNECTIONS, Stop::After(PHASE), move |turn: Turn| {
        // A spread that visits the whole range, not the first rows only.
        let i = (turn.seq as i64).wrapping_mul(7919) % users + 1;
        let request = client
            .get(&url)
            .query(&[("q", lookup.q(i)), ("max", "100".into()), ("first", "0".into())])
            .bearer_auth(token.as_str())
            .header("content-type", "application/json");
        async move {
            let (latency, body) = expect_ok(request).await?;
            exactly(&body, i)?;
            Ok(latency)
        }
    })
    .await
}

struct Row {
    users: i64,
    name: &'static str,
    load: Load,
    health: f64,
}

#[tokio::main]
async fn main() {
    let admin = format!("[admin]\npassword = \"{ADMIN_PASSWORD}\"\naccess_token_lifespan_seconds = 3600\n");
    let Some(mut bench) = Bench::start_with("admin", &admin, TLS).await else {
        return;
    };
    let server = &mut bench.server;
    let store = Store::connect(&SecretString::from(bench.database.url.clone()), 2).await.unwrap();
    let token = Arc::new(admin_token(server).await);

    let mut rows = Vec::new();
    let mut seeded = 0;
    let mut seeding = Vec::new();
    for users in SIZES {
        let started = Instant::now();
        store.seed_users(seeded + 1, users, PREFIX, unix_now()).await.expect("seeding users");
        seeding.push((users - seeded, started.elapsed()));
        seeded = users;
        // Warm up: connections, prepared statements.
        for lookup in [Lookup::ProviderId, Lookup::Email] {
            let warm = lookups(server, &token, lookup, users).await;
            warm.print_failures("warm-up");
        }
        let health = health_rate(server, CONNECTIONS, PHASE).await;
        for lookup in [Lookup::ProviderId, Lookup::Email] {
            let load = lookups(server, &token, lookup, users).await;
            rows.push(Row { users, name: lookup.name(), load, health });
        }
    }
    let exit = server.terminate();

    println!(
        "\nadmin benchmark: GET /admin/realms/{REALM}/users, {CONNECTIONS} connections, {} s per phase",
        PHASE.as_secs()
    );
    for (count, took) in &seeding {
        println!(
            "  seeded {count} users in {:.2} s ({:.0} users/s)",
            took.as_secs_f64(),
            *count as f64 / took.as_secs_f64()
        );
    }
    println!(
        "  {:>8}  {:<22} {:>10} {:>9} {:>9} {:>14} {:>10}",
        "users", "lookup", "req/s", "p50 ms", "p99 ms", "/health/live", "ratio"
    );
    for row in &rows {
        println!(
            "  {:>8}  {:<22} {:>10.0} {:>9.2} {:>9.2} {:>14.0} {:>10.3}",
            row.users,
            row.name,
            row.load.rate(),
            ms(row.load.p50()),
            ms(row.load.p99()),
            row.health,
            row.load.rate() / row.health
        );
    }
    for row in &rows {
        row.load.print_failures(row.name);
    }
    println!("  SIGTERM exit status {exit}");
    bench.clean_up();
    assert!(rows.iter().all(|r| r.load.failures == 0), "lookups failed");
    assert!(exit.success(), "graceful shutdown exits 0");
}
