//! Moving users between Keycloak and the broker: reading a realm export into the store, the
//! tokens Keycloak kept into the vault, and writing the broker's users back out in the same format.

pub mod export;
pub mod files;
pub mod import;
pub mod progress;
pub mod representation;
pub mod tokens;
