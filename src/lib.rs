//! identity-broker: a Keycloak-compatible identity broker for Azure DevOps sign-in via Entra ID.

pub mod app;
pub mod audit;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod directory;
pub mod doctor;
pub mod http;
pub mod oidc;
pub mod signin;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod vault;
