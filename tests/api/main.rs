//! The integration tests: one binary, a shared harness, a fresh database per test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod admin_hardening;
mod anonymous_limits;
mod audit;
mod bad_input;
mod browser_session;
mod chart;
mod connections;
mod development;
mod doctor;
mod email_proof;
mod email_verification;
mod entra_refusals;
mod fuzz;
mod hardening_misc;
mod headless;
mod helpers;
mod import;
mod keys;
mod lifecycle;
mod openapi;
mod operations;
mod outage;
mod protocol_hardening;
mod provisioning;
mod python;
mod python_keycloak;
mod refresh_faults;
mod replicas;
mod roles;
mod security_headers;
mod session;
mod sign_in;
mod start_page;
mod storage;
#[path = "../support/mod.rs"]
mod support;
mod tokens;
mod user_listing;
mod users;
