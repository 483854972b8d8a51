//! The management listener: Keycloak-shaped health checks and Prometheus metrics.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::paths;
use crate::app::AppState;

fn check(name: &str, up: bool) -> Value {
    json!({ "name": name, "status": if up { "UP" } else { "DOWN" } })
}

fn health_response(checks: Vec<Value>) -> Response {
    let up = checks.iter().all(|c| c["status"] == "UP");
    let status = if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if up { "UP" } else { "DOWN" }, "checks": checks }))).into_response()
}

async fn ready_checks(state: &AppState) -> Vec<Value> {
    let database = state.store.ping().await.is_ok();
    // Keys are loaded before the listeners exist, so a serving process always has them.
    let keys = !state.tokens.keys().active_kid().is_empty();
    vec![check("database", database), check("signing-keys", keys)]
}

async fn live() -> Response {
    health_response(vec![check("process", true)])
}

async fn ready(State(state): State<AppState>) -> Response {
    health_response(ready_checks(&state).await)
}

async fn started(State(state): State<AppState>) -> Response {
    health_response(vec![check("started", state.health.started.load(Ordering::SeqCst))])
}

async fn all(State(state): State<AppState>) -> Response {
    let mut checks = vec![check("process", true), check("started", state.health.started.load(Ordering::SeqCst))];
    checks.extend(ready_checks(&state).await);
    health_response(checks)
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
        .into_response()
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::HEALTH, get(all))
        .route(paths::HEALTH_LIVE, get(live))
        .route(paths::HEALTH_READY, get(ready))
        .route(paths::HEALTH_STARTED, get(started))
        .route(paths::METRICS, get(metrics))
}
