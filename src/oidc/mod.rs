//! The broker as an OpenID provider: clients, authorization requests, grants (the password
//! grant among them), keys, sessions and tokens.

pub(crate) mod admin;
pub(crate) mod authorize;
pub(crate) mod clients;
pub(crate) mod error;
pub(crate) mod grants;
pub(crate) mod keys;
pub(crate) mod password_grant;
pub(crate) mod sessions;
pub mod tokens;
