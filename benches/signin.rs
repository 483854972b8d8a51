//! Drives the real release server (Postgres) through complete sign-ins against the fake
//! Entra, with `/health/live` measured in the same run as the baseline.
//!
//! Run with `cargo bench --bench signin`. Reports sign-ins per second, the ratio to
//! `/health/live` requests per second, p50/p99 of the broker's own time per sign-in,
//! resident memory idle and under load, and the time from process start to ready.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{
    Bench, BrokerProcess, Load, PeakRss, Stop, browser_client, health_rate, memory_kib, mib, ms, run_load, sign_in,
    upstream_mean_ms,
};

const WORKERS: usize = 16;
const HEALTH_SECONDS: Duration = Duration::from_secs(4);
const SIGN_IN_SECONDS: Duration = Duration::from_secs(10);

/// Sign-ins from `WORKERS` at a time for `SIGN_IN_SECONDS`; also the peak resident memory in KiB.
/// Each sign-in comes from a new browser: one that kept the broker's session cookie would be
/// signed in again without going upstream.
async fn sign_in_load(server: &BrokerProcess) -> (Load, u64) {
    let public = server.public.clone();
    let rss = PeakRss::start(server.pid());
    let load = run_load(WORKERS, Stop::After(SIGN_IN_SECONDS), move |_| {
        let public = public.clone();
        async move { Ok(sign_in(&browser_client(), &public).await.broker_time) }
    })
    .await;
    (load, rss.stop().await)
}

#[tokio::main]
async fn main() {
    let Some(mut bench) = Bench::start("signin", "").await else {
        return;
    };
    let server = &mut bench.server;
    // Warm up: discovery, JWKS and connection pools.
    for _ in 0..5 {
        sign_in(&browser_client(), &server.public).await;
    }
    let idle_kib = memory_kib(server.pid(), "VmRSS:");
    let health = health_rate(server, WORKERS, HEALTH_SECONDS).await;
    let (load, peak_kib) = sign_in_load(server).await;
    let health_after = health_rate(server, WORKERS, HEALTH_SECONDS).await;
    let baseline = (health + health_after) / 2.0;
    let upstream_mean = upstream_mean_ms(&server.metrics().await, "token_code");
    let exit = server.terminate();

    println!("identity-broker sign-in benchmark ({WORKERS} concurrent clients, release build, Postgres)");
    println!("  ready after start          {:>8.1} ms", ms(bench.server.ready_after));
    println!("  /health/live               {:>8.0} req/s (before {:.0}, after {:.0})", baseline, health, health_after);
    println!("  complete sign-ins          {:>8.1} /s over {} sign-ins", load.rate(), load.latencies.len());
    println!("  ratio sign-ins : health    {:>8.4}", load.rate() / baseline);
    println!(
        "  broker time per sign-in    p50 {:.2} ms, p99 {:.2} ms (4 broker requests, incl. the upstream code exchange)",
        ms(load.p50()),
        ms(load.p99())
    );
    println!("  upstream code exchange     mean {upstream_mean:.2} ms (from /metrics)");
    println!("  resident memory            idle {:.1} MiB, peak under load {:.1} MiB", mib(idle_kib), mib(peak_kib));
    println!("  SIGTERM exit status        {exit}");

    bench.clean_up();
    assert!(exit.success(), "graceful shutdown exits 0");
}
