//! Faults that must not hurt, injected for real: a Postgres of the test's own stopped at once
//! (`pg_ctl stop -m immediate`) and started again under a running broker; a vault row sealed
//! under a key the configuration no longer lists.

use std::sync::Arc;
use std::time::{Duration, Instant};

use identity_broker::audit::AuditLog;
use identity_broker::store::AuditEvent;
use identity_broker::telemetry::Metrics;
use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::private_postgres::PrivatePostgres;

/// A request that needs the database must be answered within this while it is down: the
/// acquire timeout (2 s by default) and some slack for a loaded machine, far below the 30 s
/// request timeout.
const ANSWER_BOUND: Duration = Duration::from_secs(6);

/// Readiness is answered from the last background check: well within Kubernetes' 1 s probe
/// timeout, even while the database does not answer.
const PROBE_BOUND: Duration = Duration::from_secs(1);

/// How soon after the database goes away readiness says so: the goal is a second; a check
/// every 250 ms turns it in about 0.1 s here, where the former check every second took 0.84 s.
const READY_TURNS_WITHIN: Duration = Duration::from_millis(500);

async fn timed(request: impl std::future::Future<Output = reqwest::Response>) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let response = request.await;
    (response, started.elapsed())
}

async fn ready(app: &TestApp) -> (StatusCode, Duration) {
    let url = format!("{}{}", app.management, paths::HEALTH_READY);
    let (response, elapsed) = timed(async { app.api.get(&url).send().await.expect("ready") }).await;
    (response.status(), elapsed)
}

/// Polls `check` every 200 ms until it is true or `within` has passed.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn probe_event(n: usize) -> AuditEvent {
    AuditEvent {
        at: 1,
        kind: "outage_probe".to_owned(),
        outcome: "recorded".to_owned(),
        detail: format!("{{\"n\":{n}}}"),
        ..AuditEvent::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_503_fast_and_the_broker_recovers_with_its_audit_trail_whole() {
    // Arrange: a broker on a Postgres of this test's own, a signed-in user, a service.
    let postgres = PrivatePostgres::start();
    let app = TestApp::builder(Backend::Postgres).on(&postgres.url()).spawn().await;
    let tokens = app.tokens().await;
    let user_id = user_id_of(&tokens);
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let mut reads = 0;
    let read = || async { timed(async { app.read_token(&service, &user_id, "azure_devops", "").await }).await };
    let (before, _) = read().await;
    reads += 1;
    assert_eq!(before.status(), StatusCode::OK, "reads work before the outage");
    assert_eq!(ready(&app).await.0, StatusCode::OK);
    // A second writer, bounded to 3 events, shows what happens when the bound is met.
    let metrics = Arc::new(Metrics::new());
    let bounded = AuditLog::start_bounded(app.store.clone(), metrics.clone(), 3);

    // Act: Postgres goes away at once.
    postgres.stop_immediately();
    let stopped_at = Instant::now();

    // Readiness turns 503 within a second (it answered 200 to three probes before).
    let mut turned = None;
    while stopped_at.elapsed() < Duration::from_secs(5) {
        if ready(&app).await.0 == StatusCode::SERVICE_UNAVAILABLE {
            turned = Some(stopped_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let turned = turned.expect("/health/ready turns 503 while Postgres is down");
    assert!(turned < READY_TURNS_WITHIN, "/health/ready said 200 for {turned:?} after Postgres stopped");

    // Token reads: 503 with Retry-After and an OAuth body, each within the bound (the first
    // ones may still come from the in-memory cache until it learns of the lost connection).
    let mut unavailable = None;
    for _ in 0..20 {
        let (response, elapsed) = read().await;
        reads += 1;
        assert!(elapsed < ANSWER_BOUND, "a read during the outage took {elapsed:?}");
        assert_ne!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "an outage is not a 500");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            unavailable = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = unavailable.expect("reads answer 503 while Postgres is down");
    let retry_after = response.headers().get("retry-after").expect("Retry-After").to_str().unwrap().to_owned();
    assert!(retry_after.parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After in seconds: {retry_after}");
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    for _ in 0..3 {
        let (response, elapsed) = read().await;
        reads += 1;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(elapsed < ANSWER_BOUND, "a read during the outage took {elapsed:?}");
    }

    // Readiness: every probe answered within 1 s, and it turns 503.
    let mut not_ready = false;
    for _ in 0..25 {
        let (status, elapsed) = ready(&app).await;
        assert!(elapsed < PROBE_BOUND, "/health/ready took {elapsed:?} during the outage");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(not_ready, "/health/ready says 503 while Postgres is down");
    let (status, elapsed) = ready(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(elapsed < PROBE_BOUND, "/health/ready took {elapsed:?}");

    // Audit events made now wait in memory; beyond the bound they are dropped and counted.
    for n in 0..5 {
        bounded.record(probe_event(n)).await;
    }
    let counted = eventually(Duration::from_secs(15), || async {
        metrics.render().contains("identity_broker_audit_events_dropped_total 2")
    })
    .await;
    assert!(counted, "two events beyond the bound of 3 are counted as dropped:\n{}", metrics.render());

    // Postgres comes back; the broker is not restarted.
    postgres.start_again();

    let recovered = eventually(Duration::from_secs(20), || async {
        let (response, _) = read().await;
        response.status() == StatusCode::OK
    })
    .await;
    assert!(recovered, "token reads recover by themselves once Postgres is back");
    let ready_again = eventually(Duration::from_secs(10), || async { ready(&app).await.0 == StatusCode::OK }).await;
    assert!(ready_again, "/health/ready says 200 again");

    // Assert: every read, the outage's included, is in the audit trail; the bounded writer
    // kept its three.
    tokio::time::timeout(Duration::from_secs(30), app.state.audit.flush()).await.expect("audit flushed");
    tokio::time::timeout(Duration::from_secs(30), bounded.flush()).await.expect("bounded audit flushed");
    let recorded = app.store.list_audit(Some("token_read")).await.expect("audit");
    let outage_reads = recorded.iter().filter(|e| e.outcome != "ok").count();
    assert!(recorded.len() > reads, "every read during the outage was kept: {} of at least {reads}", recorded.len());
    assert!(outage_reads >= 4, "the failed reads of the outage are in the trail: {outage_reads}");
    let probes = app.store.list_audit(Some("outage_probe")).await.expect("audit");
    assert_eq!(probes.len(), 3, "the events within the bound are written: {probes:?}");
}

both_backends!(a_row_sealed_under_a_removed_vault_key_names_vault_encryption_keys, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = app.tokens().await;
    let user_id = user_id_of(&tokens);
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    // The row now names a key that is not configured, as after removing a key too early.
    let pool = sqlx::AnyPool::connect(&app.db.url).await.expect("connect");
    sqlx::query("UPDATE vault_tokens SET vault_key_id = 'retired'").execute(&pool).await.expect("update");
    pool.close().await;
    // The cache (Postgres) forgets the row on the change's notification.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let internal = app.read_token(&service, &user_id, "azure_devops", "").await;
    let broker = app.broker_token(access_token(&tokens), "azure_devops").await;

    for (surface, response) in [("internal API", internal), ("broker endpoint", broker)] {
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR, "{surface}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["error"], "server_error", "{surface}: {body}");
        let description = body["error_description"].as_str().unwrap_or_default();
        assert!(description.contains("vault.encryption_keys"), "{surface} names the key to fix: {description}");
        assert!(description.contains("`retired`"), "{surface} names the missing key id: {description}");
    }
});
