//! The token endpoint against its physical bound and its peer, in one run: the release server
//! (Postgres over plain TCP) and node `oidc-provider` 9 (RS256 JWT access tokens, one client,
//! memory adapter, refresh tokens not rotated) driven by the same load generator, through
//! `refresh_token` and `client_credentials` grants.
//!
//! Run with `cargo bench --bench refresh`. Users sign in through the fake Entra, one session
//! and refresh token per connection; each connection then refreshes with its own token over and
//! over, never rotating it, as OpenHands does; the peer mints as many refresh tokens for its
//! client. Reports, as ratios from this one run:
//! - grants per second, broker : peer, for each grant type (target at least 1.5);
//! - the server's CPU per grant (from `/proc`) against the signing floor: public-key signatures
//!   per grant (from a decoded response) × one signature's CPU time, measured here by signing
//!   with a pre-parsed aws-lc-rs key of the server's algorithm (target at most 1.5);
//! - `/health/live` latency from a prober of its own thread while grants saturate the server
//!   (target p99 under 10 ms);
//! - how loaded the machine was (load average, CPU of everything else).
//!
//! Any failed grant makes the run fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;
#[path = "common/peer.rs"]
mod peer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::support::fake_entra::{FakeEntra, FakeUser};
use common::support::http::{paths, realm_path};
use common::{
    Bench, BrokerProcess, CLIENT_SECRET, CpuTicks, Load, PeakRss, PostgresTls, Stop, Turn, browser_client, expect_ok,
    health_rate, memory_kib, mib, ms, percentile, process_cpu_ticks, run_load, sign_in, ticks_ms,
};
use peer::Peer;
use serde_json::{Value, json};

const CONNECTIONS: usize = 64;
const TLS: PostgresTls = PostgresTls::Disable;
const HEALTH_PHASE: Duration = Duration::from_secs(5);
const GRANT_PHASE: Duration = Duration::from_secs(10);
const WARM_UP_GRANTS: usize = 256;
/// How long one thread signs to measure a signature's CPU time.
const SIGNER_PHASE: Duration = Duration::from_secs(2);
/// How often the `/health/live` prober asks while grants run.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// The JWTs a token response can carry.
const TOKEN_FIELDS: [&str; 3] = ["access_token", "refresh_token", "id_token"];
const SERVICE_ID: &str = "bench-service";
const SERVICE_SECRET: &str = "bench-service-secret";
/// The targets.
const TARGET_PEER_RATIO: f64 = 1.5;
const TARGET_FLOOR_RATIO: f64 = 1.5;
const TARGET_HEALTH_P99: Duration = Duration::from_millis(10);

/// Signs in `count` distinct users, each from a browser of its own; their refresh tokens.
async fn refresh_tokens(entra: &FakeEntra, server: &BrokerProcess, count: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(count);
    for i in 0..count {
        let username = format!("refresh-{i}@contoso.com");
        entra.set_user(FakeUser {
            subject: format!("refresh-bench-subject-{i}"),
            object_id: uuid::Uuid::new_v4().to_string(),
            preferred_username: username.clone(),
            email: Some(username),
            ..FakeUser::bob()
        });
        let signed_in = sign_in(&browser_client(), &server.public).await;
        tokens.push(signed_in.tokens["refresh_token"].as_str().expect("a refresh token").to_owned());
    }
    tokens
}

/// A token endpoint with one client, and the grant forms to send it, one per connection.
#[derive(Clone)]
struct Endpoint {
    url: String,
    refresh_forms: Arc<Vec<String>>,
    client_credentials_form: String,
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        form.append_pair(key, value);
    }
    form.finish()
}

impl Endpoint {
    fn new(url: String, client: (&str, &str), tokens: &[String], service: (&str, &str)) -> Endpoint {
        let (client_id, secret) = client;
        let refresh_forms = tokens
            .iter()
            .map(|token| {
                form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token),
                    ("client_id", client_id),
                    ("client_secret", secret),
                ])
            })
            .collect();
        let (service_id, service_secret) = service;
        let client_credentials_form =
            form(&[("grant_type", "client_credentials"), ("client_id", service_id), ("client_secret", service_secret)]);
        Endpoint { url, refresh_forms: Arc::new(refresh_forms), client_credentials_form }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrantType {
    Refresh,
    ClientCredentials,
}

impl GrantType {
    fn name(self) -> &'static str {
        match self {
            GrantType::Refresh => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }
}

/// The token response of one grant; anything but a 200 with an access token is an error.
async fn grant(client: &reqwest::Client, url: &str, form: String) -> Result<(Duration, Value), String> {
    let request = client.post(url).header("content-type", "application/x-www-form-urlencoded").body(form);
    let (latency, body) = expect_ok(request).await?;
    let body: Value = serde_json::from_str(&body).map_err(|err| format!("200 but not JSON: {err}"))?;
    if body["access_token"].as_str().is_none() {
        return Err(format!("200 without an access token: {body}"));
    }
    Ok((latency, body))
}

fn grant_form(endpoint: &Endpoint, kind: GrantType, worker: usize) -> String {
    match kind {
        GrantType::Refresh => endpoint.refresh_forms[worker % endpoint.refresh_forms.len()].clone(),
        GrantType::ClientCredentials => endpoint.client_credentials_form.clone(),
    }
}

/// Grants of `kind` from `CONNECTIONS` at a time until `stop`, each connection with its own token.
async fn grants(endpoint: &Endpoint, kind: GrantType, stop: Stop) -> Load {
    let client = reqwest::Client::new();
    let endpoint = endpoint.clone();
    run_load(CONNECTIONS, stop, move |turn: Turn| {
        let (client, url, form) = (client.clone(), endpoint.url.clone(), grant_form(&endpoint, kind, turn.worker));
        async move { grant(&client, &url, form).await.map(|(latency, _)| latency) }
    })
    .await
}

/// The public-key signatures in a token response (HMAC ones cost next to nothing): their names.
fn signed_tokens(response: &Value) -> Vec<String> {
    let signature_alg = |jwt: &str| {
        let mut parts = jwt.split('.');
        let header = parts.next().and_then(|h| URL_SAFE_NO_PAD.decode(h).ok());
        let header: Option<Value> = header.and_then(|h| serde_json::from_slice(&h).ok());
        let signed = parts.nth(1).is_some_and(|signature| !signature.is_empty());
        header.and_then(|h| h["alg"].as_str().map(str::to_owned)).filter(|_| signed)
    };
    TOKEN_FIELDS
        .into_iter()
        .filter_map(|field| {
            let alg = signature_alg(response[field].as_str()?)?;
            Some(format!("{field} {alg}"))
        })
        .collect()
}

fn public_signatures(signed: &[String]) -> usize {
    signed.iter().filter(|s| !s.ends_with("HS512")).count()
}

/// CPU milliseconds of the calling thread so far, from `/proc/thread-self/stat`.
fn thread_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks_ms(ticks)
}

/// One RS256 signature's CPU time in ms, as the server signs (a key parsed once, claims to
/// compact JWS), from one thread signing for `SIGNER_PHASE`: CPU time, so other work on the
/// machine does not inflate it.
fn signature_cpu_ms(pair: &RsaKeyPair) -> f64 {
    let claims = access_like_claims();
    let header = serde_json::to_vec(&json!({"alg": "RS256", "typ": "JWT", "kid": "bench"})).unwrap();
    let rng = SystemRandom::new();
    let (started, cpu_before) = (Instant::now(), thread_cpu_ms());
    let mut signed = 0_u64;
    while started.elapsed() < SIGNER_PHASE {
        let claims_json = serde_json::to_vec(&claims).unwrap();
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(&header), URL_SAFE_NO_PAD.encode(claims_json));
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature).unwrap();
        let _jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        signed += 1;
    }
    (thread_cpu_ms() - cpu_before) / signed as f64
}

/// Claims shaped and sized as an access token of the broker's.
fn access_like_claims() -> Value {
    json!({
        "exp": 1_900_000_300, "iat": 1_900_000_000, "jti": uuid::Uuid::new_v4().simple().to_string(),
        "iss": format!("http://127.0.0.1:8080{}", realm_path(paths::REALM)), "aud": ["broker", "account"],
        "sub": uuid::Uuid::new_v4().to_string(), "typ": "Bearer", "azp": "allhands",
        "sid": uuid::Uuid::new_v4().to_string(), "scope": "openid email profile", "resource_access": {},
        "email": "refresh-0@contoso.com", "email_verified": true, "preferred_username": "refresh-0@contoso.com",
        "name": "Bob Jones", "given_name": "Bob", "family_name": "Jones", "identity_provider": "azure_devops",
    })
}

/// Asks `/health/live` every `PROBE_INTERVAL` from a thread and runtime of its own (as a
/// Kubernetes probe is another process) until `stop`; the latencies, sorted.
fn probe_health(url: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<Vec<Duration>> {
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = client.get(&url).send().await.unwrap();
                assert!(response.status().is_success(), "/health/live answered {}", response.status());
                response.bytes().await.unwrap();
                latencies.push(started.elapsed());
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            latencies.sort();
            latencies
        })
    })
}

/// One phase of grants against one server: the load, the server's CPU ticks, and the machine's.
struct Phase {
    load: Load,
    server_ticks: u64,
    /// The broker's Postgres backends (none for the peer, which keeps everything in memory).
    postgres_ticks: u64,
    /// This process: the load generator.
    bench_ticks: u64,
    machine_ticks: u64,
    others_ticks: u64,
    health: Vec<Duration>,
}

impl Phase {
    fn cpu_per_grant_ms(&self) -> f64 {
        self.per_grant_ms(self.server_ticks)
    }

    fn per_grant_ms(&self, ticks: u64) -> f64 {
        let granted = self.load.latencies.len();
        if granted == 0 { 0.0 } else { ticks_ms(ticks) / granted as f64 }
    }

    fn others_percent(&self) -> f64 {
        100.0 * self.others_ticks as f64 / self.machine_ticks.max(1) as f64
    }
}

/// The broker's phase: its CPU from `/proc`, with the `/health/live` prober running throughout.
async fn broker_phase(bench: &Bench, endpoint: &Endpoint, kind: GrantType) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe_health(format!("{}{}", bench.server.management, paths::HEALTH_LIVE), Arc::clone(&stop));
    let before = CpuTicks::sample(&bench.server, &bench.database);
    let load = grants(endpoint, kind, Stop::After(GRANT_PHASE)).await;
    let cpu = CpuTicks::sample(&bench.server, &bench.database).since(before);
    stop.store(true, Ordering::Relaxed);
    let health = prober.join().unwrap();
    Phase {
        load,
        server_ticks: cpu.server,
        postgres_ticks: cpu.postgres,
        bench_ticks: cpu.bench,
        machine_ticks: cpu.machine,
        others_ticks: cpu.others(),
        health,
    }
}

/// The peer's phase: its CPU from `/proc`.
async fn peer_phase(bench: &Bench, peer: &Peer, endpoint: &Endpoint, kind: GrantType) -> Phase {
    let pid = peer.pid().to_string();
    let (peer_before, before) = (process_cpu_ticks(&pid), CpuTicks::sample(&bench.server, &bench.database));
    let load = grants(endpoint, kind, Stop::After(GRANT_PHASE)).await;
    let (peer_ticks, cpu) =
        (process_cpu_ticks(&pid) - peer_before, CpuTicks::sample(&bench.server, &bench.database).since(before));
    let others = cpu.machine.saturating_sub(cpu.bench + cpu.server + peer_ticks);
    Phase {
        load,
        server_ticks: peer_ticks,
        postgres_ticks: 0,
        bench_ticks: cpu.bench,
        machine_ticks: cpu.machine,
        others_ticks: others,
        health: Vec::new(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

#[tokio::main]
async fn main() {
    let service = format!(
        "[[service_accounts]]\nclient_id = \"{SERVICE_ID}\"\nclient_secret = \"{SERVICE_SECRET}\"\n\
         allowed_providers = [\"azure_devops\"]\n"
    );
    let Some(mut bench) = Bench::start_with("refresh", &service, TLS).await else {
        return;
    };
    let load_at_start = load_average();
    let vcpus = thread::available_parallelism().map_or(2, |n| n.get());

    let signing_in = Instant::now();
    let tokens = refresh_tokens(&bench.entra, &bench.server, CONNECTIONS).await;
    let signing_in = signing_in.elapsed();
    let broker = Endpoint::new(
        format!("{}{}", bench.server.public, realm_path(paths::TOKEN)),
        ("allhands", CLIENT_SECRET),
        &tokens,
        (SERVICE_ID, SERVICE_SECRET),
    );
    let peer = Peer::start(CONNECTIONS).await;
    let peer_endpoint = Endpoint::new(
        peer.token_url.clone(),
        (peer.client_id.as_str(), peer.client_secret.as_str()),
        &peer.refresh_tokens,
        (peer.client_id.as_str(), peer.client_secret.as_str()),
    );

    // Samples: what each grant signs, from decoded responses.
    let client = reqwest::Client::new();
    let mut signed = Vec::new();
    for (who, endpoint) in [("broker", &broker), ("peer", &peer_endpoint)] {
        for kind in [GrantType::Refresh, GrantType::ClientCredentials] {
            let (_, body) = grant(&client, &endpoint.url, grant_form(endpoint, kind, 0)).await.expect("a grant");
            signed.push(((who, kind), signed_tokens(&body)));
        }
    }
    let signed_by = |who: &str, kind: GrantType| {
        signed.iter().find(|((w, k), _)| *w == who && *k == kind).map(|(_, s)| s.clone()).unwrap()
    };
    let mut warm_up_failures = 0;
    for endpoint in [&broker, &peer_endpoint] {
        for kind in [GrantType::Refresh, GrantType::ClientCredentials] {
            let warm_up = grants(endpoint, kind, Stop::Requests(WARM_UP_GRANTS)).await;
            warm_up.print_failures(&format!("warm-up {} grants at {}", kind.name(), endpoint.url));
            warm_up_failures += warm_up.failures;
        }
    }
    let idle_kib = memory_kib(bench.server.pid(), "VmRSS:");

    let pkcs8: Pkcs8V1Der = KeyPair::generate(KeySize::Rsa2048).unwrap().as_der().unwrap();
    let pair = RsaKeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let signature_before = signature_cpu_ms(&pair);
    let health = health_rate(&bench.server, CONNECTIONS, HEALTH_PHASE).await;
    let rss = PeakRss::start(bench.server.pid());
    let broker_refresh = broker_phase(&bench, &broker, GrantType::Refresh).await;
    let peer_refresh = peer_phase(&bench, &peer, &peer_endpoint, GrantType::Refresh).await;
    let broker_service = broker_phase(&bench, &broker, GrantType::ClientCredentials).await;
    let peer_service = peer_phase(&bench, &peer, &peer_endpoint, GrantType::ClientCredentials).await;
    let peak_kib = rss.stop().await;
    let signature_after = signature_cpu_ms(&pair);
    let load_at_end = load_average();
    peer.stop().await;
    let exit = bench.server.terminate();
    let signature_ms = (signature_before + signature_after) / 2.0;

    println!();
    println!(
        "identity-broker token endpoint against node oidc-provider 9 ({CONNECTIONS} connections, {} s per phase, \
         release build, {}; servers, Postgres and load generator on one {vcpus}-vCPU machine)",
        GRANT_PHASE.as_secs(),
        TLS.describe()
    );
    println!(
        "  machine load                  load average {load_at_start} at start, {load_at_end} at the end \
         (other builders share the machine)"
    );
    println!(
        "  sessions                      {CONNECTIONS:>10} users signed in through the fake Entra in {:.2} s, \
         one refresh token each, reused and never rotated; the peer minted as many",
        signing_in.as_secs_f64()
    );
    println!(
        "  one RS256 signature           {signature_ms:>10.3} ms CPU (aws-lc-rs, key parsed once; before {:.3}, \
         after {:.3})",
        signature_before, signature_after
    );
    println!("  /health/live alone            {health:>10.0} req/s");
    println!();
    let mut met = true;
    for (kind, ours, theirs) in [
        (GrantType::Refresh, &broker_refresh, &peer_refresh),
        (GrantType::ClientCredentials, &broker_service, &peer_service),
    ] {
        let (our_signed, their_signed) = (signed_by("broker", kind), signed_by("peer", kind));
        let signatures = public_signatures(&our_signed);
        let floor = signatures as f64 * signature_ms;
        let peer_ratio = ours.load.rate() / theirs.load.rate().max(f64::MIN_POSITIVE);
        let floor_ratio = ours.cpu_per_grant_ms() / floor.max(f64::MIN_POSITIVE);
        let health_p99 = percentile(&ours.health, 0.99);
        println!("  {} grants", kind.name());
        println!(
            "    signs                       broker: {}; peer: {}",
            our_signed.join(", "),
            their_signed.join(", ")
        );
        println!(
            "    broker                      {:>10.1} /s, p50 {:.2} ms, p99 {:.2} ms, {:.2} ms server CPU per grant \
             ({} failed; other processes used {:.0}% of the machine)",
            ours.load.rate(),
            ms(ours.load.p50()),
            ms(ours.load.p99()),
            ours.cpu_per_grant_ms(),
            ours.load.failures,
            ours.others_percent()
        );
        println!(
            "    peer (oidc-provider)        {:>10.1} /s, p50 {:.2} ms, p99 {:.2} ms, {:.2} ms node CPU per grant \
             ({} failed; other processes used {:.0}% of the machine)",
            theirs.load.rate(),
            ms(theirs.load.p50()),
            ms(theirs.load.p99()),
            theirs.cpu_per_grant_ms(),
            theirs.load.failures,
            theirs.others_percent()
        );
        println!(
            "    CPU per grant elsewhere     broker's Postgres {:.2} ms; load generator {:.2} ms (broker), {:.2} ms (peer)",
            ours.per_grant_ms(ours.postgres_ticks),
            ours.per_grant_ms(ours.bench_ticks),
            theirs.per_grant_ms(theirs.bench_ticks)
        );
        println!(
            "    grants/s broker : peer      {peer_ratio:>10.2}   target >= {TARGET_PEER_RATIO}: {}",
            verdict(peer_ratio >= TARGET_PEER_RATIO)
        );
        println!(
            "    server CPU : signing floor  {floor_ratio:>10.2}   ({:.2} ms per grant against {signatures} \
             signature(s) x {signature_ms:.3} ms = {floor:.2} ms); target <= {TARGET_FLOOR_RATIO}: {}",
            ours.cpu_per_grant_ms(),
            verdict(floor_ratio <= TARGET_FLOOR_RATIO)
        );
        println!(
            "    /health/live during grants  p50 {:.2} ms, p99 {:.2} ms over {} probes; target p99 < {} ms: {}",
            ms(percentile(&ours.health, 0.5)),
            ms(health_p99),
            ours.health.len(),
            TARGET_HEALTH_P99.as_millis(),
            verdict(health_p99 < TARGET_HEALTH_P99)
        );
        met &= peer_ratio >= TARGET_PEER_RATIO && floor_ratio <= TARGET_FLOOR_RATIO && health_p99 < TARGET_HEALTH_P99;
        ours.load.print_failures(&format!("broker {} grants", kind.name()));
        theirs.load.print_failures(&format!("peer {} grants", kind.name()));
    }
    println!();
    println!("  every target                  {}", verdict(met));
    println!(
        "  resident memory               idle {:.1} MiB, peak under grant load {:.1} MiB",
        mib(idle_kib),
        mib(peak_kib)
    );
    println!("  SIGTERM exit status           {exit}");

    bench.clean_up();
    let failures: usize =
        [&broker_refresh, &peer_refresh, &broker_service, &peer_service].into_iter().map(|p| p.load.failures).sum();
    assert_eq!(warm_up_failures + failures, 0, "grants failed");
    assert!(exit.success(), "graceful shutdown exits 0");
}
