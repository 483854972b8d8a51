//! Drives the real release server (Postgres over plain TCP) through `refresh_token` grants,
//! with `/health/live` measured in the same run as the baseline and the RS256 signer's rate
//! measured in this process, before and after the grants, as the bound they are held to.
//!
//! Run with `cargo bench --bench refresh`. Users sign in through the fake Entra, one session
//! and refresh token per connection; each connection then refreshes with its own token over and
//! over, never rotating it, as OpenHands does. Reports grants per second with p50/p99 and the
//! ratio to `/health/live`, the CPU time per grant of the server, of its Postgres backends and
//! of the load generator (from `/proc`), the signatures one grant makes (from a decoded
//! response), the signer's rate through jsonwebtoken (which parses the key's DER on every
//! signature, as the server signs) and with a pre-parsed aws-lc-rs key, grants as a share of
//! what the signer allows, grants per CPU-second against Keycloak's sizing, and resident
//! memory. Any failed grant makes the run fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::support::fake_entra::{FakeEntra, FakeUser};
use common::support::http::{paths, realm_path};
use common::{
    Bench, BrokerProcess, CLIENT_SECRET, CpuTicks, Load, PeakRss, PostgresTls, Stop, Turn, browser_client, expect_ok,
    health_rate, memory_kib, mib, ms, run_load, sign_in, ticks_ms,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const CONNECTIONS: usize = 64;
const TLS: PostgresTls = PostgresTls::Disable;
const HEALTH_PHASE: Duration = Duration::from_secs(5);
const GRANT_PHASE: Duration = Duration::from_secs(10);
const WARM_UP_GRANTS: usize = 256;
/// How long the signer signs on each of its threads, per measurement.
const SIGNER_PHASE: Duration = Duration::from_secs(3);
/// The JWTs a token response can carry, each one signature.
const TOKEN_FIELDS: [&str; 3] = ["access_token", "refresh_token", "id_token"];
/// The target: grants per second, as a share of what the signer allows.
const TARGET_SHARE_OF_SIGNER: f64 = 0.60;
/// Keycloak's published sizing: refresh grants per second per vCPU.
const KEYCLOAK_GRANTS_PER_VCPU: f64 = 120.0;

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

/// The form of a `refresh_token` grant for each token, encoded once.
fn grant_forms(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .map(|token| {
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", token)
                .append_pair("client_id", "allhands")
                .append_pair("client_secret", CLIENT_SECRET)
                .finish()
        })
        .collect()
}

fn token_url(server: &BrokerProcess) -> String {
    format!("{}{}", server.public, realm_path(paths::TOKEN))
}

/// The token response of one grant; anything but a 200 with tokens is an error.
async fn grant(client: &reqwest::Client, url: &str, form: String) -> Result<(Duration, Value), String> {
    let request = client.post(url).header("content-type", "application/x-www-form-urlencoded").body(form);
    let (latency, body) = expect_ok(request).await?;
    let body: Value = serde_json::from_str(&body).map_err(|err| format!("200 but not JSON: {err}"))?;
    if body["access_token"].as_str().is_none() || body["refresh_token"].as_str().is_none() {
        return Err(format!("200 without tokens: {body}"));
    }
    Ok((latency, body))
}

/// Grants from `CONNECTIONS` at a time until `stop`, each connection always with its own token.
async fn grants(server: &BrokerProcess, forms: &Arc<Vec<String>>, stop: Stop) -> Load {
    let client = reqwest::Client::new();
    let (url, forms) = (token_url(server), Arc::clone(forms));
    run_load(CONNECTIONS, stop, move |turn: Turn| {
        let (client, url, form) = (client.clone(), url.clone(), forms[turn.worker].clone());
        async move { grant(&client, &url, form).await.map(|(latency, _)| latency) }
    })
    .await
}

/// The names of the RS256-signed JWTs in a token response: one signature each.
fn signed_tokens(response: &Value) -> Vec<&'static str> {
    let rs256 = |jwt: &str| {
        let mut parts = jwt.split('.');
        let header = parts.next().and_then(|h| URL_SAFE_NO_PAD.decode(h).ok());
        let header: Option<Value> = header.and_then(|h| serde_json::from_slice(&h).ok());
        header.is_some_and(|h| h["alg"] == "RS256") && parts.nth(1).is_some_and(|signature| !signature.is_empty())
    };
    TOKEN_FIELDS.into_iter().filter(|field| response[*field].as_str().is_some_and(rs256)).collect()
}

/// A fresh RSA-2048 key as the server holds it: a jsonwebtoken key loaded from its PKCS#8
/// PEM (which keeps the inner PKCS#1 DER and parses it again on every signature), and the
/// same key parsed once by aws-lc-rs.
fn signing_keys() -> (EncodingKey, RsaKeyPair) {
    let pkcs8: Pkcs8V1Der = KeyPair::generate(KeySize::Rsa2048).unwrap().as_der().unwrap();
    let body = STANDARD.encode(pkcs8.as_ref());
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap()).collect();
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
    (EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(), RsaKeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
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

/// Signatures per second from one thread per CPU, each calling `sign` for `SIGNER_PHASE`.
fn signing_rate(sign: impl Fn() + Sync) -> f64 {
    let threads = thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let signed: u64 = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut count = 0;
                    while started.elapsed() < SIGNER_PHASE {
                        sign();
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        workers.into_iter().map(|worker| worker.join().unwrap()).sum()
    });
    signed as f64 / started.elapsed().as_secs_f64()
}

/// Signing rates of whole JWTs (claims to compact form): through jsonwebtoken as the server
/// signs, and with the pre-parsed key.
#[derive(Clone, Copy, Debug)]
struct SignerRates {
    jsonwebtoken: f64,
    pre_parsed: f64,
}

impl SignerRates {
    fn measure(keys: &(EncodingKey, RsaKeyPair)) -> SignerRates {
        let (encoding, pair) = keys;
        let claims = access_like_claims();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("bench".to_owned());
        header.typ = Some("JWT".to_owned());
        let jsonwebtoken = signing_rate(|| {
            jsonwebtoken::encode(&header, &claims, encoding).unwrap();
        });
        let (rng, header_json) = (SystemRandom::new(), serde_json::to_vec(&header).unwrap());
        let pre_parsed = signing_rate(|| {
            let claims_json = serde_json::to_vec(&claims).unwrap();
            let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(&header_json), URL_SAFE_NO_PAD.encode(claims_json));
            let mut signature = vec![0; pair.public_modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut signature).unwrap();
            let _jwt = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        });
        SignerRates { jsonwebtoken, pre_parsed }
    }

    fn mean(self, other: SignerRates) -> SignerRates {
        SignerRates {
            jsonwebtoken: (self.jsonwebtoken + other.jsonwebtoken) / 2.0,
            pre_parsed: (self.pre_parsed + other.pre_parsed) / 2.0,
        }
    }
}

#[tokio::main]
async fn main() {
    let Some(mut bench) = Bench::start_with("refresh", "", TLS).await else {
        return;
    };
    let (server, entra) = (&mut bench.server, &bench.entra);

    let signing_in = Instant::now();
    let tokens = refresh_tokens(entra, server, CONNECTIONS).await;
    let signing_in = signing_in.elapsed();
    let forms = Arc::new(grant_forms(&tokens));
    let (_, sample) = grant(&reqwest::Client::new(), &token_url(server), forms[0].clone()).await.expect("a grant");
    let signed = signed_tokens(&sample);
    let signatures_per_grant = signed.len();
    let warm_up = grants(server, &forms, Stop::Requests(WARM_UP_GRANTS)).await;
    let idle_kib = memory_kib(server.pid(), "VmRSS:");

    let keys = signing_keys();
    let signer_before = SignerRates::measure(&keys);
    let health = health_rate(server, CONNECTIONS, HEALTH_PHASE).await;
    let rss = PeakRss::start(server.pid());
    let cpu_before = CpuTicks::sample(server, &bench.database);
    let load = grants(server, &forms, Stop::After(GRANT_PHASE)).await;
    let cpu = CpuTicks::sample(server, &bench.database).since(cpu_before);
    let peak_kib = rss.stop().await;
    let health_after = health_rate(server, CONNECTIONS, HEALTH_PHASE).await;
    let signer_after = SignerRates::measure(&keys);
    let exit = server.terminate();

    let baseline = (health + health_after) / 2.0;
    let signer = signer_before.mean(signer_after);
    let granted = load.latencies.len() as u64;
    let per_grant_ms = |ticks: u64| if granted == 0 { 0.0 } else { ticks_ms(ticks) / granted as f64 };
    let bound = |rate: f64| rate / signatures_per_grant.max(1) as f64;
    let share = load.rate() / bound(signer.jsonwebtoken);
    let vcpus = thread::available_parallelism().map_or(2, |n| n.get());
    let phase_ticks = ticks_ms(cpu.machine.max(1));
    let percent_of_machine = |ticks: u64| 100.0 * ticks_ms(ticks) / phase_ticks;

    println!();
    println!(
        "identity-broker refresh-grant benchmark ({CONNECTIONS} connections, {} s of grants, release build, {}; \
         server, Postgres and load generator on one {vcpus}-vCPU machine)",
        GRANT_PHASE.as_secs(),
        TLS.describe()
    );
    println!("  ready after start             {:>10.1} ms", ms(bench.server.ready_after));
    println!(
        "  sessions                      {CONNECTIONS:>10} users signed in through the fake Entra in {:.2} s, \
         one refresh token each (scope openid email profile), reused and never rotated",
        signing_in.as_secs_f64()
    );
    println!(
        "  signatures per grant          {signatures_per_grant:>10} ({}: RS256, from one decoded response)",
        signed.join(", ")
    );
    println!();
    println!("  /health/live                  {baseline:>10.0} req/s (before {health:.0}, after {health_after:.0})");
    println!("  refresh_token grants          {:>10.1} /s ({granted} grants, {} failed)", load.rate(), load.failures);
    println!("  ratio grants : health         {:>10.4}", load.rate() / baseline);
    println!("  grant latency p50             {:>10.2} ms (p99 {:.2} ms)", ms(load.p50()), ms(load.p99()));
    println!(
        "  CPU per grant                 {:>10.2} ms server (utime+stime), {:.2} ms its Postgres backends, \
         {:.2} ms load generator",
        per_grant_ms(cpu.server),
        per_grant_ms(cpu.postgres),
        per_grant_ms(cpu.bench)
    );
    println!(
        "  machine CPU in the phase      server {:.0}%, Postgres backends {:.0}%, load generator {:.0}%, \
         everything else {:.0}% (of {:.1} busy CPU-seconds)",
        percent_of_machine(cpu.server),
        percent_of_machine(cpu.postgres),
        percent_of_machine(cpu.bench),
        percent_of_machine(cpu.others()),
        phase_ticks / 1000.0
    );
    println!(
        "  signer, jsonwebtoken          {:>10.0} signatures/s on {vcpus} threads (before {:.0}, after {:.0}); \
         parses the key on every signature, as the server signs",
        signer.jsonwebtoken, signer_before.jsonwebtoken, signer_after.jsonwebtoken
    );
    println!(
        "  signer, pre-parsed aws-lc-rs  {:>10.0} signatures/s on {vcpus} threads (before {:.0}, after {:.0}); \
         key parsing costs jsonwebtoken {:.0}%",
        signer.pre_parsed,
        signer_before.pre_parsed,
        signer_after.pre_parsed,
        100.0 * (1.0 - signer.jsonwebtoken / signer.pre_parsed)
    );
    println!(
        "  signer bound                  {:>10.1} grants/s (jsonwebtoken rate / {signatures_per_grant}), \
         {:.1} with a pre-parsed key",
        bound(signer.jsonwebtoken),
        bound(signer.pre_parsed)
    );
    println!(
        "  grants / signer bound         {:>9.1}%  target >= {:.0}%: {}",
        100.0 * share,
        100.0 * TARGET_SHARE_OF_SIGNER,
        if share >= TARGET_SHARE_OF_SIGNER && load.failures == 0 { "met" } else { "MISSED" }
    );
    println!(
        "  grants per server CPU-second  {:>10.0} (Keycloak's sizing: {KEYCLOAK_GRANTS_PER_VCPU:.0} per vCPU); \
         {:.0} per vCPU of the whole machine",
        if granted == 0 { 0.0 } else { 1000.0 / per_grant_ms(cpu.server) },
        load.rate() / vcpus as f64
    );
    println!(
        "  resident memory               idle {:.1} MiB, peak under grant load {:.1} MiB",
        mib(idle_kib),
        mib(peak_kib)
    );
    println!("  SIGTERM exit status           {exit}");
    warm_up.print_failures("warm-up refresh grants");
    load.print_failures("refresh grants");

    bench.clean_up();
    assert_eq!(signatures_per_grant, TOKEN_FIELDS.len(), "a grant with scope openid signs three JWTs");
    assert!(warm_up.failures + load.failures == 0, "refresh grants failed");
    assert!(exit.success(), "graceful shutdown exits 0");
}
