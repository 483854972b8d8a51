//! The management listener: Keycloak-shaped health checks and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::{AppState, Health, paths};
use crate::telemetry::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Status {
    #[serde(rename = "UP")]
    Up,
    #[serde(rename = "DOWN")]
    Down,
}

impl Status {
    fn of(up: bool) -> Self {
        if up { Status::Up } else { Status::Down }
    }
}

/// One named check, as Keycloak reports it.
#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
}

/// Keycloak's `{"status", "checks"}`: up when every check is.
#[derive(Debug, Serialize)]
struct HealthReport {
    status: Status,
    checks: Vec<Check>,
}

fn check(name: &'static str, up: bool) -> Check {
    Check { name, status: Status::of(up) }
}

fn health_response(checks: Vec<Check>) -> Response {
    let up = checks.iter().all(|c| c.status == Status::Up);
    let status = if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(HealthReport { status: Status::of(up), checks })).into_response()
}

/// Signing keys are loaded before the listeners exist, so readiness is the database's, as the
/// background check last found it: a probe never waits for a database that does not answer.
fn ready_checks(health: &Health) -> Vec<Check> {
    vec![check("database", health.database.load(Ordering::SeqCst))]
}

fn started_check(health: &Health) -> Check {
    check("started", health.started.load(Ordering::SeqCst))
}

async fn live() -> Response {
    health_response(vec![check("process", true)])
}

async fn ready(State(health): State<Arc<Health>>) -> Response {
    health_response(ready_checks(&health))
}

async fn started(State(health): State<Arc<Health>>) -> Response {
    health_response(vec![started_check(&health)])
}

async fn all(State(health): State<Arc<Health>>) -> Response {
    let mut checks = vec![check("process", true), started_check(&health)];
    checks.extend(ready_checks(&health));
    health_response(checks)
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.render())
        .into_response()
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(paths::HEALTH, get(all))
        .route(paths::HEALTH_LIVE, get(live))
        .route(paths::HEALTH_READY, get(ready))
        .route(paths::HEALTH_STARTED, get(started))
        .route(paths::METRICS, get(metrics))
}
