//! What the benchmarks share: the release server against a fresh Postgres database and the
//! fake Entra, a fixed-concurrency load generator, and the figures they report.

// Each benchmark binary compiles this module, with the support module it shares with the
// integration tests, and uses only part of them.
#![allow(dead_code, unused_imports)]

#[path = "../../tests/support/mod.rs"]
pub mod support;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use support::database::{Backend, TestDb};
use support::fake_entra::{FakeEntra, HOME_TENANT};
pub use support::http::browser_client;
use support::http::{install_crypto_provider, location, paths, query_of, realm_path};
pub use support::process::BrokerProcess;
use support::process::{Ports, Stderr};

pub const CLIENT_SECRET: &str = "bench-client-secret";
pub const REDIRECT_URI: &str = "http://app.bench/callback";
pub const UPSTREAM_CLIENT: &str = "bench-upstream-client";
pub const UPSTREAM_SECRET: &str = "bench-upstream-secret";
/// The server's vault key, so that a benchmark can seal tokens the server opens.
pub const VAULT_KEY: &str = "b1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// How many failure messages a load run keeps to show.
const FAILURES_KEPT: usize = 5;

/// A benchmark's world: a fresh database, the fake Entra and the release server using both.
pub struct Bench {
    pub database: Database,
    pub entra: FakeEntra,
    pub server: BrokerProcess,
}

impl Bench {
    /// Starts the world for the benchmark `name`, with `extra` TOML in the server's configuration.
    /// `cargo test --all-targets` runs bench binaries without `--bench`: they only need to build,
    /// so then this says how to run the benchmark and returns `None`.
    pub async fn start(name: &str, extra: &str) -> Option<Bench> {
        Bench::start_with(name, extra, PostgresTls::Prefer).await
    }

    /// As [`Bench::start`], with the server reaching Postgres as `tls` says.
    pub async fn start_with(name: &str, extra: &str, tls: PostgresTls) -> Option<Bench> {
        if !std::env::args().any(|arg| arg == "--bench") {
            println!("{name} benchmark: run it with `cargo bench --bench {name}`");
            return None;
        }
        install_crypto_provider();
        let database = Database::create(tls).await;
        let entra = FakeEntra::start(UPSTREAM_CLIENT, UPSTREAM_SECRET).await;
        let server = start_server(&entra, &database.url, extra).await;
        Some(Bench { database, entra, server })
    }

    /// Stops the fake Entra and drops the database, once the server has been terminated.
    pub fn clean_up(self) {
        drop(self.entra);
        drop(self.database);
    }
}

/// A `/proc/{pid}/status` figure in KiB, e.g. `VmRSS:`; 0 when it cannot be read.
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Clock ticks per second of the CPU times in `/proc` (`USER_HZ`, 100 on Linux).
pub const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// A process's CPU time so far, user plus system, in clock ticks; 0 when it cannot be read.
pub fn process_cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces; after it come `state` (field 3), ...,
    // `utime` (field 14) and `stime` (field 15).
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<u64> = after_name.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    fields.iter().sum()
}

/// Busy clock ticks of every CPU of the machine so far: neither idle nor waiting for I/O.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let times: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| l.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal; guest time is counted in user already.
    times.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum()
}

/// CPU time used so far, in clock ticks, by each party to a benchmark run; `since` turns two
/// samples into what a phase cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTicks {
    pub server: u64,
    /// This process: the load generator.
    pub bench: u64,
    /// The Postgres backends connected to the benchmark's database.
    pub postgres: u64,
    /// Every CPU of the machine: the above, Postgres' shared processes and anything else running.
    pub machine: u64,
}

impl CpuTicks {
    pub fn sample(server: &BrokerProcess, database: &Database) -> CpuTicks {
        let postgres = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && database.is_backend(pid))
            .map(|pid| process_cpu_ticks(&pid))
            .sum();
        CpuTicks {
            server: process_cpu_ticks(&server.pid().to_string()),
            bench: process_cpu_ticks("self"),
            postgres,
            machine: machine_busy_ticks(),
        }
    }

    pub fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            server: self.server.saturating_sub(earlier.server),
            bench: self.bench.saturating_sub(earlier.bench),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            machine: self.machine.saturating_sub(earlier.machine),
        }
    }

    /// What none of the three parties used: Postgres' shared processes and other work on the machine.
    pub fn others(&self) -> u64 {
        self.machine.saturating_sub(self.server + self.bench + self.postgres)
    }
}

/// Milliseconds of CPU time in `ticks` clock ticks.
pub fn ticks_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / CLOCK_TICKS_PER_SECOND as f64
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Mean milliseconds of one upstream operation (`token_code`, `token_refresh`) from `/metrics`.
pub fn upstream_mean_ms(metrics: &str, operation: &str) -> f64 {
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

/// How the server's connections reach the loopback Postgres, which offers TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostgresTls {
    /// sqlx's default, `sslmode=prefer`: TLS, since the server offers it.
    Prefer,
    /// `sslmode=disable`: plain TCP, as a broker beside its database would be set up.
    Disable,
}

impl PostgresTls {
    fn url_query(self) -> &'static str {
        match self {
            PostgresTls::Prefer => "",
            PostgresTls::Disable => "?sslmode=disable",
        }
    }

    /// What a report says about it.
    pub fn describe(self) -> &'static str {
        match self {
            PostgresTls::Prefer => "TLS to loopback Postgres (sslmode=prefer)",
            PostgresTls::Disable => "plain TCP to loopback Postgres (sslmode=disable)",
        }
    }
}

/// The benchmark's Postgres database, created empty and dropped with this, and the URL the
/// server reaches it by.
pub struct Database {
    pub url: String,
    db: TestDb,
}

impl Database {
    pub async fn create(tls: PostgresTls) -> Database {
        let db = TestDb::new(Backend::Postgres).await;
        Database { url: format!("{}{}", db.url, tls.url_query()), db }
    }

    /// Whether a process is a Postgres backend serving this database: Postgres titles its
    /// backends `postgres: <cluster>: <user> <database> <client> <state>`.
    fn is_backend(&self, pid: &str) -> bool {
        let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let title = String::from_utf8_lossy(&title);
        title.starts_with("postgres: ") && title.split_whitespace().any(|word| word == self.db.name())
    }
}

/// Starts the release binary with the `allhands` client and the `azure_devops` provider at
/// `entra`, plus `extra` TOML, and waits until it is ready. A benchmark starts a second one on
/// the same database as a replica of the first.
pub async fn start_server(entra: &FakeEntra, database_url: &str, extra: &str) -> BrokerProcess {
    let ports = Ports::free();
    let config = format!(
        r#"
[http]
bind = "127.0.0.1:{public}"
internal_bind = "127.0.0.1:{internal}"
management_bind = "127.0.0.1:{management}"
[database]
url = "{database_url}"
max_connections = 20
[vault]
encryption_keys = ["{VAULT_KEY}"]
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
{extra}
"#,
        public = ports.public,
        internal = ports.internal,
        management = ports.management,
        authority = entra.authority()
    );
    BrokerProcess::start(&config, ports, &[], Stderr::Inherit).await
}

// What only the benchmarks ask of the server process.
impl BrokerProcess {
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}{}", self.management, paths::METRICS)).await.unwrap().text().await.unwrap()
    }
}

/// What one complete sign-in gave the application, and the time spent in the broker's own endpoints.
pub struct SignIn {
    pub broker_time: Duration,
    pub tokens: serde_json::Value,
}

/// One complete sign-in of the fake Entra's user, through to the code exchange.
pub async fn sign_in(browser: &reqwest::Client, public: &str) -> SignIn {
    let auth = format!(
        "{public}{}?client_id=allhands&response_type=code&redirect_uri={REDIRECT_URI}&scope=openid%20email%20profile&state=bench&kc_idp_hint=azure_devops",
        realm_path(paths::AUTH)
    );
    let mut broker_time = Duration::ZERO;
    let timed = Instant::now();
    let first = browser.get(&auth).send().await.unwrap();
    let login = format!("{public}{}", location(&first));
    let second = browser.get(&login).send().await.unwrap();
    broker_time += timed.elapsed();
    let upstream = browser.get(location(&second)).send().await.unwrap();
    let callback = location(&upstream);
    let timed = Instant::now();
    let back = browser.get(&callback).send().await.unwrap();
    assert_eq!(back.status(), 302, "sign-in completes");
    let code = query_of(&location(&back)).remove("code").expect("a code");
    let token = browser
        .post(format!("{public}{}", realm_path(paths::TOKEN)))
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
    let body = token.bytes().await.unwrap();
    let broker_time = broker_time + timed.elapsed();
    SignIn { broker_time, tokens: serde_json::from_slice(&body).expect("a JSON token response") }
}

/// Sends `request` and times it until the whole body has arrived; anything but 200 fails,
/// with the status and body as the message.
pub async fn expect_ok(request: reqwest::RequestBuilder) -> Result<(Duration, String), String> {
    let started = Instant::now();
    let response = request.send().await.map_err(|err| format!("no answer: {err}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|err| format!("{status}, body cut off: {err}"))?;
    let elapsed = started.elapsed();
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok((elapsed, body))
}

/// When a load run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// The first request after this long is not sent.
    After(Duration),
    /// After this many requests in all, numbered `0..n`.
    Requests(usize),
}

/// One request of a load run: which worker sends it, and its number in the whole run.
#[derive(Clone, Copy, Debug)]
pub struct Turn {
    pub worker: usize,
    pub seq: usize,
}

/// What a load run measured.
#[derive(Debug)]
pub struct Load {
    /// Latencies of the successful requests, sorted.
    pub latencies: Vec<Duration>,
    pub failures: usize,
    /// The first few failure messages.
    pub failure_samples: Vec<String>,
    pub elapsed: Duration,
}

impl Load {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn p50(&self) -> Duration {
        percentile(&self.latencies, 0.5)
    }

    pub fn p99(&self) -> Duration {
        percentile(&self.latencies, 0.99)
    }

    /// Says loudly how many requests of the phase `name` failed, with the first messages.
    pub fn print_failures(&self, name: &str) {
        if self.failures > 0 {
            println!("!!! {name}: {} FAILED requests; the first ones:", self.failures);
            for message in &self.failure_samples {
                println!("!!!   {message}");
            }
        }
    }
}

/// Runs `request` from `workers` concurrent tasks, each sending its next request as soon as
/// the previous one is answered, until `stop`. A request returns the latency to record, or why
/// it failed.
pub async fn run_load<F, Fut>(workers: usize, stop: Stop, request: F) -> Load
where
    F: Fn(Turn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Duration, String>> + Send + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (request, next) = (Arc::clone(&request), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut failures) = (Vec::new(), Vec::new());
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let done = match stop {
                    Stop::After(duration) => started.elapsed() >= duration,
                    Stop::Requests(total) => seq >= total,
                };
                if done {
                    break;
                }
                match request(Turn { worker, seq }).await {
                    Ok(latency) => latencies.push(latency),
                    Err(message) => failures.push(message),
                }
            }
            (latencies, failures)
        }));
    }
    collect(tasks, started).await
}

/// Gathers what the workers of a load run measured.
async fn collect(tasks: Vec<JoinHandle<(Vec<Duration>, Vec<String>)>>, started: Instant) -> Load {
    let mut load = Load { latencies: Vec::new(), failures: 0, failure_samples: Vec::new(), elapsed: Duration::ZERO };
    for task in tasks {
        let (latencies, failures) = task.await.unwrap();
        load.latencies.extend(latencies);
        load.failures += failures.len();
        let room = FAILURES_KEPT.saturating_sub(load.failure_samples.len());
        load.failure_samples.extend(failures.into_iter().take(room));
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    load
}

/// Offers `rate` requests per second for `duration`, spread evenly over `workers` keep-alive
/// connections (open loop, as wrk2 does): request `n` is due at `n / rate` seconds. Latency
/// runs from when a request was *due*, not when it went out, so a server that falls behind
/// is charged for the wait it causes (no coordinated omission).
pub async fn run_paced<F, Fut>(workers: usize, rate: f64, duration: Duration, request: F) -> Load
where
    F: Fn(Turn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Duration, String>> + Send + 'static,
{
    let request = Arc::new(request);
    let total = (rate * duration.as_secs_f64()) as usize;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut failures) = (Vec::new(), Vec::new());
            for seq in (worker..total).step_by(workers) {
                let due = started + Duration::from_secs_f64(seq as f64 / rate);
                tokio::time::sleep_until(due).await;
                match request(Turn { worker, seq }).await {
                    Ok(_) => latencies.push(due.elapsed()),
                    Err(message) => failures.push(message),
                }
            }
            (latencies, failures)
        }));
    }
    collect(tasks, started.into_std()).await
}

/// Requests per second of `/health/live` from `workers` concurrent keep-alive clients;
/// every answer must be 200.
pub async fn health_rate(server: &BrokerProcess, workers: usize, duration: Duration) -> f64 {
    let client = reqwest::Client::new();
    let url = format!("{}{}", server.management, paths::HEALTH_LIVE);
    let load = run_load(workers, Stop::After(duration), move |_| {
        let request = client.get(&url);
        async move { expect_ok(request).await.map(|(latency, _)| latency) }
    })
    .await;
    assert_eq!(load.failures, 0, "/health/live failed: {:?}", load.failure_samples);
    load.rate()
}

/// Samples a process's resident memory every 50 ms and keeps the peak.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    sampler: JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32) -> PeakRss {
        let (peak, running) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)));
        let sampler = {
            let (peak, running) = (Arc::clone(&peak), Arc::clone(&running));
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    peak.fetch_max(memory_kib(pid, "VmRSS:"), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        PeakRss { peak, running, sampler }
    }

    /// Stops sampling; the peak in KiB.
    pub async fn stop(self) -> u64 {
        self.running.store(false, Ordering::Relaxed);
        self.sampler.await.unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}
