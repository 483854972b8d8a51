//! Drives the real release server (Postgres) through users' upstream token reads, by the
//! internal API and by Keycloak's `/broker/{alias}/token`, with `/health/live` measured in the
//! same run as the baseline, then refresh storms over identities whose tokens have expired: 1,000
//! through the one server, then 10,000 through it and a second server process on the same
//! database (a replica), reads alternating between them.
//!
//! Run with `cargo bench --bench tokens`. Identities are seeded through the library (the same
//! vault key as the server's), after the server has run its migrations. Reports seeding time,
//! requests per second with p50/p99 and the ratio to `/health/live`, resident memory idle and
//! under load, and for the storm the refreshes that reached the fake Entra and the time until
//! every read was answered with a fresh token. Any failed request makes the run fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::support::fake_entra::{FakeEntra, FakeUser};
use common::support::http::{paths, provider_path, realm_path, user_token_path};
use common::{
    Bench, BrokerProcess, CpuTicks, Load, PeakRss, PostgresTls, Stop, Turn, VAULT_KEY, browser_client, expect_ok,
    health_rate, memory_kib, mib, ms, run_load, run_paced, sign_in, start_server, ticks_ms, upstream_mean_ms,
};
use identity_broker::config::parse_vault_key;
use identity_broker::crypto::Cipher;
use identity_broker::store::{IdentityKey, ProfileUpdate, Store};
use identity_broker::vault::{UpstreamTokens, seal_tokens};
use secrecy::SecretString;
use serde_json::Value;

const CONNECTIONS: usize = 64;
const PHASE: Duration = Duration::from_secs(5);
const FRESH_IDENTITIES: usize = 10_000;
const STORM_IDENTITIES: usize = 1_000;
/// The storm read through two replicas on one database.
const REPLICA_STORM_IDENTITIES: usize = 10_000;
/// Concurrent `save_sign_in` transactions while seeding.
const SEED_TASKS: usize = 16;
const ALIAS: &str = "azure_devops";
const SERVICE_ID: &str = "bench-service";
const SERVICE_SECRET: &str = "bench-service-secret";
/// The broker refreshes a token that expires within this many seconds before serving it.
const REFRESH_BEFORE_EXPIRY: i64 = 300;
/// The issue's targets for token reads.
const TARGET_RATIO: f64 = 0.25;
const TARGET_P99: Duration = Duration::from_millis(5);
/// A broker beside its database reaches it without TLS.
const TLS: PostgresTls = PostgresTls::Disable;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An identity to seed, and the access token stored for it.
struct Identity {
    user_id: String,
    subject: String,
    access_token: String,
    refresh_token: String,
}

impl Identity {
    /// A new identity with an access token about as long as Azure DevOps' (~1.2 KB).
    fn new(refresh_token: String) -> Identity {
        let user_id = uuid::Uuid::new_v4().to_string();
        let access_token = format!("seeded.{}", uuid::Uuid::new_v4().simple().to_string().repeat(36));
        Identity { subject: format!("sub-{}", uuid::Uuid::new_v4().simple()), user_id, access_token, refresh_token }
    }

    fn profile(&self) -> ProfileUpdate {
        ProfileUpdate {
            user_id: self.user_id.clone(),
            username: format!("{}@contoso.com", self.subject),
            email: None,
            email_verified: false,
            first_name: None,
            last_name: None,
            full_name: None,
            alias: ALIAS.into(),
            subject: self.subject.clone(),
            identity_username: None,
            tenant_id: None,
            object_id: None,
            attributes: Vec::new(),
            roles: Vec::new(),
        }
    }

    fn tokens(&self, expires_at: i64) -> UpstreamTokens {
        UpstreamTokens {
            access_token: SecretString::from(self.access_token.clone()),
            refresh_token: Some(SecretString::from(self.refresh_token.clone())),
            id_token: None,
            token_type: "Bearer".into(),
            scope: "https://app.vssps.visualstudio.com/user_impersonation".into(),
            expires_at,
            refresh_expires_at: None,
        }
    }
}

/// `count` identities of upstream accounts `{prefix}-{i}`, each with a refresh token the fake
/// Entra redeems.
fn upstream_accounts(entra: &FakeEntra, prefix: &str, count: usize) -> Arc<Vec<Identity>> {
    Arc::new(
        (0..count)
            .map(|i| {
                let user = FakeUser { subject: format!("{prefix}-{i}"), ..FakeUser::bob() };
                Identity::new(entra.issue_refresh_token(&user))
            })
            .collect(),
    )
}

/// Writes the identities as sign-ins would, `SEED_TASKS` transactions at a time, with tokens
/// that expire at `expires_at`; returns how long it took.
async fn seed(store: &Store, cipher: &Arc<Cipher>, identities: &Arc<Vec<Identity>>, expires_at: i64) -> Duration {
    let started = Instant::now();
    let now = unix_now();
    let mut tasks = Vec::with_capacity(SEED_TASKS);
    for task in 0..SEED_TASKS {
        let (store, cipher, identities) = (store.clone(), Arc::clone(cipher), Arc::clone(identities));
        tasks.push(tokio::spawn(async move {
            for identity in identities.iter().skip(task).step_by(SEED_TASKS) {
                let sealed = seal_tokens(
                    &cipher,
                    IdentityKey { user_id: &identity.user_id, alias: ALIAS },
                    &identity.tokens(expires_at),
                    now,
                );
                store.save_sign_in(&identity.profile(), Some(&sealed), now).await.expect("seeding a sign-in");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// A `client_credentials` token of the benchmark's service account.
async fn service_token(server: &BrokerProcess) -> String {
    let form = [("grant_type", "client_credentials"), ("client_id", SERVICE_ID), ("client_secret", SERVICE_SECRET)];
    let url = format!("{}{}", server.internal, realm_path(paths::TOKEN));
    let (_, body) = expect_ok(reqwest::Client::new().post(url).form(&form)).await.expect("a service account token");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["access_token"].as_str().expect("access_token").to_owned()
}

/// What a read must serve.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The token seeded for the identity, still fresh.
    StoredToken,
    /// Another token than the seeded one, which had expired.
    RefreshedToken,
}

/// The access token of a 200 answer, which must stay valid beyond the refresh window.
fn served_token(body: &str) -> Result<String, String> {
    let body: Value = serde_json::from_str(body).map_err(|err| format!("200 but not JSON: {err}"))?;
    let expires_in = body["expires_in"].as_i64().ok_or("200 without expires_in")?;
    if expires_in <= REFRESH_BEFORE_EXPIRY {
        return Err(format!("200 with a token that expires in {expires_in} s"));
    }
    body["access_token"].as_str().map(str::to_owned).ok_or_else(|| "200 without access_token".to_owned())
}

/// How a phase loads the server.
#[derive(Clone, Copy)]
enum Drive {
    /// Each connection sends its next request as soon as the last is answered: throughput.
    Saturate(Stop),
    /// Requests are offered at this many per second for a phase: latency at that rate.
    Pace(f64),
}

async fn drive<F, Fut>(how: Drive, request: F) -> Load
where
    F: Fn(Turn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Duration, String>> + Send + 'static,
{
    match how {
        Drive::Saturate(stop) => run_load(CONNECTIONS, stop, request).await,
        Drive::Pace(rate) => run_paced(CONNECTIONS, rate, PHASE, request).await,
    }
}

/// `/health/live`, the baseline, driven as `how` says.
async fn health_reads(server: &BrokerProcess, how: Drive) -> Load {
    let client = reqwest::Client::new();
    let url = format!("{}{}", server.management, paths::HEALTH_LIVE);
    drive(how, move |_| {
        let request = client.get(&url);
        async move { expect_ok(request).await.map(|(latency, _)| latency) }
    })
    .await
}

/// Reads through the internal API, turn `n` for identity `pick(n)`.
async fn internal_reads(server: &BrokerProcess, identities: &Arc<Vec<Identity>>, how: Drive, expect: Expect) -> Load {
    internal_reads_across(&[server], identities, how, expect).await
}

/// Reads through the internal API of several replicas in turn (turn `n` at replica `n % len`),
/// each with a service account token of its own.
async fn internal_reads_across(
    servers: &[&BrokerProcess],
    identities: &Arc<Vec<Identity>>,
    how: Drive,
    expect: Expect,
) -> Load {
    let client = reqwest::Client::new();
    let mut replicas = Vec::with_capacity(servers.len());
    for server in servers {
        replicas.push((server.internal.clone(), service_token(server).await));
    }
    let identities = Arc::clone(identities);
    drive(how, move |turn: Turn| {
        let identity = &identities[pick(turn.seq, identities.len())];
        let (internal, token) = &replicas[turn.seq % replicas.len()];
        let url = format!("{internal}{}", user_token_path(&identity.user_id, ALIAS));
        let request = client.get(url).bearer_auth(token);
        let seeded = identity.access_token.clone();
        async move {
            let (latency, body) = expect_ok(request).await?;
            let served = served_token(&body)?;
            match expect {
                Expect::StoredToken if served != seeded => Err("200 with another token than the stored one".into()),
                Expect::RefreshedToken if served == seeded => Err("200 with the expired token".into()),
                _ => Ok(latency),
            }
        }
    })
    .await
}

/// Spreads turns over `count` identities in a random-looking order that still visits each one
/// exactly once in `count` turns: the multiplier is odd and not a multiple of 5, so it has no
/// factor in common with the round counts used here.
fn pick(seq: usize, count: usize) -> usize {
    seq.wrapping_mul(2_654_435_761) % count
}

/// Reads through Keycloak's endpoint, all with one signed-in user's own access token.
async fn broker_reads(server: &BrokerProcess, how: Drive) -> Load {
    let client = reqwest::Client::new();
    let signed_in = sign_in(&browser_client(), &server.public).await;
    let token = signed_in.tokens["access_token"].as_str().expect("access_token").to_owned();
    let url = format!("{}{}", server.public, provider_path(paths::BROKER_TOKEN, ALIAS));
    drive(how, move |_| {
        let request = client.get(&url).bearer_auth(&token);
        async move {
            let (latency, body) = expect_ok(request).await?;
            served_token(&body).map(|_| latency)
        }
    })
    .await
}

/// One row of the throughput table: every connection busy. With 64 requests always in
/// flight, latency here is queueing (Little's law: 64 / rate), so the target's p99 is read
/// off the paced table.
fn throughput_row(name: &str, load: &Load, baseline: f64) -> bool {
    let ratio = load.rate() / baseline;
    let met = ratio >= TARGET_RATIO && load.failures == 0;
    println!(
        "  {name:<28}{:>9.0}{:>8.3}{:>9.2}{:>9.2}{:>10}  {}",
        load.rate(),
        ratio,
        ms(load.p50()),
        ms(load.p99()),
        load.failures,
        if met { "met" } else { "MISSED" }
    );
    met
}

/// One row of the latency table: requests offered at the target's rate.
fn paced_row(name: &str, load: &Load, target: bool) -> bool {
    let met = load.p99() < TARGET_P99 && load.failures == 0;
    println!(
        "  {name:<28}{:>9.0}{:>9.2}{:>9.2}{:>10}  {}",
        load.rate(),
        ms(load.p50()),
        ms(load.p99()),
        load.failures,
        match (target, met) {
            (false, _) => "(baseline)",
            (true, true) => "met",
            (true, false) => "MISSED",
        }
    );
    met
}

#[tokio::main]
async fn main() {
    let service_account = format!(
        "[[service_accounts]]\nclient_id = \"{SERVICE_ID}\"\nclient_secret = \"{SERVICE_SECRET}\"\n\
         allowed_providers = [\"{ALIAS}\"]\n"
    );
    let Some(mut bench) = Bench::start_with("tokens", &service_account, TLS).await else {
        return;
    };
    let (server, entra) = (&mut bench.server, &bench.entra);

    // The server has migrated the database; seed through the library with the server's key.
    let store = Store::connect(&SecretString::from(bench.database.url.clone()), SEED_TASKS as u32).await.unwrap();
    let cipher = Arc::new(Cipher::new(&[parse_vault_key(VAULT_KEY).unwrap()]).unwrap());
    let fresh: Arc<Vec<Identity>> =
        Arc::new((0..FRESH_IDENTITIES).map(|i| Identity::new(format!("seeded-{i}"))).collect());
    let seeding = seed(&store, &cipher, &fresh, unix_now() + 3600).await;

    // Warm up: JWKS, connection pools, the service account token path.
    for _ in 0..3 {
        sign_in(&browser_client(), &server.public).await;
    }
    internal_reads(server, &fresh, Drive::Saturate(Stop::Requests(200)), Expect::StoredToken).await;
    let idle_kib = memory_kib(server.pid(), "VmRSS:");

    // Throughput: every connection busy.
    let rss = PeakRss::start(server.pid());
    let saturate = Drive::Saturate(Stop::After(PHASE));
    let cpu = CpuTicks::sample(server, &bench.database);
    let health = health_rate(server, CONNECTIONS, PHASE).await;
    let cpu_health = CpuTicks::sample(server, &bench.database);
    let internal = internal_reads(server, &fresh, saturate, Expect::StoredToken).await;
    let cpu_internal = CpuTicks::sample(server, &bench.database);
    let broker = broker_reads(server, saturate).await;
    let cpu_broker = CpuTicks::sample(server, &bench.database);
    let health_after = health_rate(server, CONNECTIONS, PHASE).await;
    let costs = [
        ("/health/live (before)", cpu_health.since(cpu), health * PHASE.as_secs_f64()),
        ("internal API token read", cpu_internal.since(cpu_health), internal.latencies.len() as f64),
        ("/broker/azure_devops/token", cpu_broker.since(cpu_internal), broker.latencies.len() as f64),
    ];
    let baseline = (health + health_after) / 2.0;

    // Latency: reads offered at the target's rate, a quarter of what /health/live serves.
    let offered = TARGET_RATIO * baseline;
    let paced_health = health_reads(server, Drive::Pace(offered)).await;
    let paced_internal = internal_reads(server, &fresh, Drive::Pace(offered), Expect::StoredToken).await;
    let paced_broker = broker_reads(server, Drive::Pace(offered)).await;
    let peak_kib = rss.stop().await;

    // The storm: every stored token has expired; each identity must be refreshed exactly once.
    let expired = upstream_accounts(entra, "storm", STORM_IDENTITIES);
    let storm_seeding = seed(&store, &cipher, &expired, unix_now() - 10).await;
    let refreshes_before = entra.refresh_requests();
    let rss = PeakRss::start(server.pid());
    let storm =
        internal_reads(server, &expired, Drive::Saturate(Stop::Requests(STORM_IDENTITIES)), Expect::RefreshedToken)
            .await;
    let storm_peak_kib = rss.stop().await;
    let refreshes = entra.refresh_requests() - refreshes_before;
    let refresh_mean = upstream_mean_ms(&server.metrics().await, "token_refresh");

    // The storm again, ten times larger, each identity read through either of two replicas.
    let expired = upstream_accounts(entra, "replica-storm", REPLICA_STORM_IDENTITIES);
    let replica_seeding = seed(&store, &cipher, &expired, unix_now() - 10).await;
    store.close().await;
    let mut replica = start_server(entra, &bench.database.url, &service_account).await;
    let refreshes_before = entra.refresh_requests();
    let replica_storm = internal_reads_across(
        &[&*server, &replica],
        &expired,
        Drive::Saturate(Stop::Requests(REPLICA_STORM_IDENTITIES)),
        Expect::RefreshedToken,
    )
    .await;
    let replica_refreshes = entra.refresh_requests() - refreshes_before;
    let replica_exit = replica.terminate();
    let exit = server.terminate();

    let storm_passed = refreshes == STORM_IDENTITIES
        && storm.failures == 0
        && replica_refreshes == REPLICA_STORM_IDENTITIES
        && replica_storm.failures == 0;
    println!();
    println!(
        "identity-broker token benchmark ({CONNECTIONS} connections, {} s a phase, release build, Postgres, \
         server and load generator on one 2-core machine)",
        PHASE.as_secs()
    );
    println!("  ready after start               {:>8.1} ms", ms(bench.server.ready_after));
    println!(
        "  seeding {FRESH_IDENTITIES} fresh identities    {:>8.2} s ({:.0} sign-ins/s through the library)",
        seeding.as_secs_f64(),
        FRESH_IDENTITIES as f64 / seeding.as_secs_f64()
    );
    println!();
    println!("  {:<28}{:>9}{:>8}{:>9}{:>9}{:>10}  target", "phase", "req/s", "ratio", "p50 ms", "p99 ms", "failures");
    println!("  {:<28}{baseline:>9.0}{:>8.3}  (before {health:.0}, after {health_after:.0})", "/health/live", 1.0);
    let mut met = throughput_row("internal API token read", &internal, baseline);
    met &= throughput_row("/broker/azure_devops/token", &broker, baseline);
    println!("  target: ratio >= {TARGET_RATIO:.2} of /health/live, no failures");
    println!();
    println!(
        "  latency at the target's rate: {offered:.0} req/s offered ({TARGET_RATIO:.2} of /health/live) over \
         {CONNECTIONS} connections, open loop, timed from when each request was due"
    );
    println!("  {:<28}{:>9}{:>9}{:>9}{:>10}  target", "phase", "req/s", "p50 ms", "p99 ms", "failures");
    paced_row("/health/live", &paced_health, false);
    met &= paced_row("internal API token read", &paced_internal, true);
    met &= paced_row("/broker/azure_devops/token", &paced_broker, true);
    println!("  target: p99 < {:.0} ms, no failures", ms(TARGET_P99));
    println!();
    println!("  CPU per request, microseconds   {:>9}{:>10}{:>10}{:>10}", "server", "postgres", "loadgen", "other");
    for (name, ticks, requests) in costs {
        let per = |t: u64| ticks_ms(t) * 1000.0 / requests.max(1.0);
        println!(
            "    {name:<30}{:>9.0}{:>10.0}{:>10.0}{:>10.0}",
            per(ticks.server),
            per(ticks.postgres),
            per(ticks.bench),
            per(ticks.others())
        );
    }
    println!("  Postgres reached by            {}", TLS.describe());
    println!();
    println!(
        "  resident memory                 idle after seeding {:.1} MiB, peak under read load {:.1} MiB, \
         peak in the storm {:.1} MiB",
        mib(idle_kib),
        mib(peak_kib),
        mib(storm_peak_kib)
    );
    println!();
    println!(
        "  refresh storm: {STORM_IDENTITIES} identities with expired tokens (seeded in {:.2} s), one read each",
        storm_seeding.as_secs_f64()
    );
    println!(
        "    refreshes at the fake Entra   {refreshes} (expected {STORM_IDENTITIES}): {}",
        if refreshes == STORM_IDENTITIES { "PASS" } else { "FAIL" }
    );
    println!(
        "    all reads answered after      {:.0} ms ({:.0} reads/s, p50 {:.1} ms, p99 {:.1} ms)",
        ms(storm.elapsed),
        storm.rate(),
        ms(storm.p50()),
        ms(storm.p99())
    );
    println!(
        "    fresh tokens served           {} of {STORM_IDENTITIES}, failures {}",
        storm.latencies.len(),
        storm.failures
    );
    println!("    upstream refresh mean         {refresh_mean:.2} ms (from /metrics)");
    println!();
    println!(
        "  refresh storm through two replicas on one database: {REPLICA_STORM_IDENTITIES} identities with \
         expired tokens (seeded in {:.2} s), one read each, alternating between the replicas",
        replica_seeding.as_secs_f64()
    );
    println!(
        "    refreshes at the fake Entra   {replica_refreshes} (expected {REPLICA_STORM_IDENTITIES}): {}",
        if replica_refreshes == REPLICA_STORM_IDENTITIES { "PASS" } else { "FAIL" }
    );
    println!(
        "    all reads answered after      {:.0} ms ({:.0} reads/s, p50 {:.1} ms, p99 {:.1} ms), failures {}",
        ms(replica_storm.elapsed),
        replica_storm.rate(),
        ms(replica_storm.p50()),
        ms(replica_storm.p99()),
        replica_storm.failures
    );
    println!("  SIGTERM exit status             {exit} (replica {replica_exit})");
    internal.print_failures("internal API token read");
    broker.print_failures("/broker/azure_devops/token");
    paced_internal.print_failures("internal API token read, paced");
    paced_broker.print_failures("/broker/azure_devops/token, paced");
    storm.print_failures("refresh storm");
    replica_storm.print_failures("refresh storm through two replicas");
    if !storm_passed {
        println!(
            "!!! refresh storm FAILED: {refreshes} refreshes for {STORM_IDENTITIES} identities, \
             {replica_refreshes} for {REPLICA_STORM_IDENTITIES} through two replicas"
        );
    }
    if !met {
        println!("!!! a token read missed its target (see the tables)");
    }

    bench.clean_up();
    let failures =
        [&internal, &broker, &paced_health, &paced_internal, &paced_broker, &storm, &replica_storm].map(|l| l.failures);
    assert!(failures.iter().sum::<usize>() == 0, "requests failed");
    assert!(storm_passed, "the storm refreshed each identity exactly once");
    assert!(exit.success() && replica_exit.success(), "graceful shutdown exits 0");
}
