//! Drives the real release server (Postgres) through the admin API's user lookups as OpenHands
//! makes them, with 1,000 and then 100,000 users (and 1,000,000 with `-- --million`),
//! `/health/live` measured at each size as the baseline.
//!
//! Run with `cargo bench --bench admin` (add `-- --million` for the third size; seeding and
//! the walks take minutes). Users are seeded in bulk through the library's `Store::seed_users`
//! (one `INSERT … SELECT` over a recursive sequence, with the attributes `azure_devops_id` and
//! `identity_provider` that sign-in writes), after the server has run its migrations, then
//! `VACUUM ANALYZE`d as autovacuum would in time. At each size, for each lookup: requests per
//! second with p50/p99 and the ratio to `/health/live`, and the ratio to the same lookup at
//! 1,000 users. The lookups: `q=azure_devops_id:…`, `q=email:…`, `users/{id}`, `users/count`
//! (every user, and with `q=`), and pages of every user (`first`/`max=100`): walked as
//! python-keycloak walks them (each connection its own walk, started in the warm-up at its share
//! of the realm and going on), and jumped to (a page at a random depth, no walk before it). Then one connection
//! walks from the first page and reports how long page 1 and page 1,000 took, and the database's
//! size. Every answer is checked (the user asked for, a full page, a count that adds up), or the
//! run fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::support::http::paths;
use common::{Bench, BrokerProcess, Load, PostgresTls, Stop, Turn, expect_ok, health_rate, mib, ms, run_load};
use identity_broker::store::Store;
use secrecy::SecretString;
use serde_json::Value;
use sqlx::Connection as _;

const CONNECTIONS: usize = 32;
const PHASE: Duration = Duration::from_secs(5);
const ADMIN_PASSWORD: &str = "bench-admin-password";
const PREFIX: &str = "bench";
const SIZES: [i64; 2] = [1_000, 100_000];
const MILLION: i64 = 1_000_000;
/// python-keycloak's page when it walks every user.
const PAGE: i64 = 100;
/// Walks of the one-connection measurement of page 1 against page 1,000.
const TIMED_WALKS: usize = 3;
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup {
    ProviderId,
    Email,
    ById,
    CountAll,
    CountProviderId,
    /// Each connection walks pages of every user, from its share of the realm on.
    Walk,
    /// A page at a random depth, with no walk before it.
    Jump,
}

const LOOKUPS: [Lookup; 7] = [
    Lookup::ProviderId,
    Lookup::Email,
    Lookup::ById,
    Lookup::CountAll,
    Lookup::CountProviderId,
    Lookup::Walk,
    Lookup::Jump,
];

impl Lookup {
    fn name(self) -> &'static str {
        match self {
            Lookup::ProviderId => "q=azure_devops_id:…",
            Lookup::Email => "q=email:…",
            Lookup::ById => "users/{id}",
            Lookup::CountAll => "users/count",
            Lookup::CountProviderId => "users/count?q=…",
            Lookup::Walk => "pages, walked",
            Lookup::Jump => "a page, jumped to",
        }
    }
}

/// The users a lookup found must be exactly user `i`.
fn exactly(body: &str, i: i64) -> Result<(), String> {
    let users: Value = serde_json::from_str(body).map_err(|err| format!("not JSON: {err}"))?;
    let ids: Vec<&str> = users.as_array().ok_or("not a list")?.iter().filter_map(|u| u["id"].as_str()).collect();
    if ids == [seeded_id(i).as_str()] { Ok(()) } else { Err(format!("user {i}: found {ids:?}")) }
}

/// A page from `first` must hold `PAGE` users, or the rest of the realm.
fn full_page(body: &str, first: i64, users: i64) -> Result<usize, String> {
    let page: Value = serde_json::from_str(body).map_err(|err| format!("not JSON: {err}"))?;
    let served = page.as_array().ok_or("not a list")?.len();
    let expected = PAGE.min(users - first).max(0) as usize;
    if served == expected { Ok(served) } else { Err(format!("the page at {first} held {served}, not {expected}")) }
}

/// Where each connection's walk is: spread over the realm, each starting where it lands (its
/// first page read by offset), and going on from phase to phase.
type Walks = Arc<Vec<AtomicI64>>;

fn walks(users: i64) -> Walks {
    let pages = (users + PAGE - 1) / PAGE;
    Arc::new((0..CONNECTIONS as i64).map(|w| AtomicI64::new(w * pages / CONNECTIONS as i64 * PAGE)).collect())
}

/// One phase of `lookup` over users spread across `1..=users`.
async fn lookups(server: &BrokerProcess, token: &Arc<String>, lookup: Lookup, users: i64, walks: &Walks) -> Load {
    let client = reqwest::Client::new();
    let base = format!("{}{}", server.public, paths::ADMIN_USERS.replace("{realm}", REALM));
    let token = Arc::clone(token);
    let walks = Arc::clone(walks);
    run_load(CONNECTIONS, Stop::After(PHASE), move |turn: Turn| {
        // A spread that visits the whole range, not the first rows only.
        let i = (turn.seq as i64).wrapping_mul(7919) % users + 1;
        let request = match lookup {
            Lookup::ProviderId | Lookup::Email => {
                let q = match lookup {
                    Lookup::ProviderId => format!("azure_devops_id:{PREFIX}-sub-{i}"),
                    _ => format!("email:{PREFIX}{i}@example.test"),
                };
                client.get(&base).query(&[("q", q), ("max", "100".into()), ("first", "0".into())])
            }
            Lookup::ById => client.get(format!("{base}/{}", seeded_id(i))),
            Lookup::CountAll => client.get(format!("{base}/count")),
            Lookup::CountProviderId => {
                client.get(format!("{base}/count")).query(&[("q", format!("azure_devops_id:{PREFIX}-sub-{i}"))])
            }
            Lookup::Walk => {
                let first = walks[turn.worker].load(Ordering::Relaxed);
                client.get(&base).query(&[("first", first), ("max", PAGE)])
            }
            Lookup::Jump => client.get(&base).query(&[("first", (i - 1) / PAGE * PAGE), ("max", PAGE)]),
        };
        let request = request.bearer_auth(token.as_str()).header("content-type", "application/json");
        let walks = Arc::clone(&walks);
        async move {
            let (latency, body) = expect_ok(request).await?;
            match lookup {
                Lookup::ProviderId | Lookup::Email | Lookup::ById => {
                    let body = if lookup == Lookup::ById { format!("[{body}]") } else { body };
                    exactly(&body, i)?;
                }
                Lookup::CountAll if body.trim() != users.to_string() => return Err(format!("count {body}")),
                Lookup::CountProviderId if body.trim() != "1" => return Err(format!("count of user {i}: {body}")),
                Lookup::CountAll | Lookup::CountProviderId => {}
                Lookup::Walk => {
                    let walk = &walks[turn.worker];
                    let first = walk.load(Ordering::Relaxed);
                    let served = full_page(&body, first, users)?;
                    let next = if served < PAGE as usize { 0 } else { first + PAGE };
                    walk.store(if next >= users { 0 } else { next }, Ordering::Relaxed);
                }
                Lookup::Jump => {
                    full_page(&body, (i - 1) / PAGE * PAGE, users)?;
                }
            }
            Ok(latency)
        }
    })
    .await
}

/// One connection walks every page from the first, `TIMED_WALKS` times: the median time of each
/// page asked for in `marks` (1 = the first page).
async fn timed_walk(server: &BrokerProcess, token: &str, users: i64, marks: &[i64]) -> Vec<(i64, Duration)> {
    let client = reqwest::Client::new();
    let base = format!("{}{}", server.public, paths::ADMIN_USERS.replace("{realm}", REALM));
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); marks.len()];
    let last = marks.iter().copied().max().unwrap_or(1);
    for _ in 0..TIMED_WALKS {
        for number in 1..=last.min((users + PAGE - 1) / PAGE) {
            let first = (number - 1) * PAGE;
            let request = client.get(&base).query(&[("first", first), ("max", PAGE)]).bearer_auth(token);
            let (latency, body) = expect_ok(request).await.expect("a page");
            full_page(&body, first, users).expect("a full page");
            if let Some(at) = marks.iter().position(|mark| *mark == number) {
                times[at].push(latency);
            }
        }
    }
    marks
        .iter()
        .zip(times)
        .filter(|(_, taken)| !taken.is_empty())
        .map(|(mark, mut taken)| {
            taken.sort();
            (*mark, taken[taken.len() / 2])
        })
        .collect()
}

/// The database's size, and its two largest tables' with their indexes, in bytes.
async fn database_size(url: &str) -> (i64, i64, i64) {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let sizes = sqlx::query_as(
        "SELECT pg_database_size(current_database()), pg_total_relation_size('users'),
                pg_total_relation_size('user_attributes')",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
    sizes
}

/// What autovacuum would do in time after a bulk load: the planner's statistics, and the
/// visibility map index-only scans rely on.
async fn vacuum(url: &str) {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}

struct Row {
    users: i64,
    lookup: Lookup,
    load: Load,
    health: f64,
}

#[tokio::main]
async fn main() {
    let admin = format!("[admin]\npassword = \"{ADMIN_PASSWORD}\"\naccess_token_lifespan_seconds = 3600\n");
    let Some(mut bench) = Bench::start_with("admin", &admin, TLS).await else {
        return;
    };
    let mut sizes = SIZES.to_vec();
    if std::env::args().any(|arg| arg == "--million") {
        sizes.push(MILLION);
    }
    let server = &mut bench.server;
    let store = Store::connect(&SecretString::from(bench.database.url.clone()), 2).await.unwrap();
    let token = Arc::new(admin_token(server).await);

    let mut rows = Vec::new();
    let mut seeded = 0;
    let mut seeding = Vec::new();
    let mut walked = Vec::new();
    let mut sized = Vec::new();
    for &users in &sizes {
        let started = Instant::now();
        store.seed_users(seeded + 1, users, PREFIX, unix_now()).await.expect("seeding users");
        seeding.push((users - seeded, started.elapsed()));
        seeded = users;
        vacuum(&bench.database.url).await;
        sized.push((users, database_size(&bench.database.url).await));
        // Warm up: connections, prepared statements, and each walk's first page, read by offset
        // (what a page jumped to costs is measured on its own).
        let walks = walks(users);
        for lookup in LOOKUPS {
            let warm = lookups(server, &token, lookup, users, &walks).await;
            warm.print_failures("warm-up");
        }
        let health = health_rate(server, CONNECTIONS, PHASE).await;
        for lookup in LOOKUPS {
            let load = lookups(server, &token, lookup, users, &walks).await;
            rows.push(Row { users, lookup, load, health });
        }
        let marks: Vec<i64> = [1, 1_000, 10_000].into_iter().filter(|page| (page - 1) * PAGE < users).collect();
        walked.push((users, timed_walk(server, &token, users, &marks).await));
    }
    let exit = server.terminate();

    println!(
        "\nadmin benchmark: GET /admin/realms/{REALM}/users…, {CONNECTIONS} connections, {} s per phase",
        PHASE.as_secs()
    );
    for (count, took) in &seeding {
        println!(
            "  seeded {count} users in {:.2} s ({:.0} users/s)",
            took.as_secs_f64(),
            *count as f64 / took.as_secs_f64()
        );
    }
    for (users, (database, table, attributes)) in &sized {
        println!(
            "  {users} users: database {:.1} MiB (users {:.1} MiB, user_attributes {:.1} MiB, with indexes)",
            mib(*database as u64 / 1024),
            mib(*table as u64 / 1024),
            mib(*attributes as u64 / 1024)
        );
    }
    println!(
        "  {:>8}  {:<20} {:>9} {:>8} {:>8} {:>13} {:>8} {:>14}",
        "users", "lookup", "req/s", "p50 ms", "p99 ms", "/health/live", "ratio", "x at 1,000"
    );
    for row in &rows {
        let small = rows.iter().find(|r| r.users == sizes[0] && r.lookup == row.lookup).map_or(1.0, |r| r.load.rate());
        println!(
            "  {:>8}  {:<20} {:>9.0} {:>8.2} {:>8.2} {:>13.0} {:>8.3} {:>14.2}",
            row.users,
            row.lookup.name(),
            row.load.rate(),
            ms(row.load.p50()),
            ms(row.load.p99()),
            row.health,
            row.load.rate() / row.health,
            row.load.rate() / small
        );
    }
    for (users, marks) in &walked {
        let said: Vec<String> = marks.iter().map(|(page, taken)| format!("page {page} {:.2} ms", ms(*taken))).collect();
        println!("  {users} users, one connection walking (median of {TIMED_WALKS}): {}", said.join(", "));
    }
    for row in &rows {
        row.load.print_failures(row.lookup.name());
    }
    println!("  SIGTERM exit status {exit}");
    store.close().await;
    bench.clean_up();
    assert!(rows.iter().all(|r| r.load.failures == 0), "lookups failed");
    assert!(exit.success(), "graceful shutdown exits 0");
}
