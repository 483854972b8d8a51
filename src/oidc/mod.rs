//! The broker as an OpenID provider: clients, authorization requests, grants, keys, sessions
//! and tokens.

pub mod authorize;
pub mod clients;
pub mod error;
pub mod grants;
pub mod keys;
pub mod sessions;
pub mod tokens;
