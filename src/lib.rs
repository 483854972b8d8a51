//! identity-broker: a Keycloak-compatible identity broker for Azure DevOps sign-in via Entra ID.
//!
//! The crate's outside is `commands` (what `main` runs) and `config` (what it loads). Every
//! other module is the crate's own: private, so that the compiler reports what nothing uses.
//! The `testing` feature, which only the tests and benchmarks turn on, makes them public so
//! that the tests can drive the real parts directly.

/// A `Debug` that shows only the named fields, for request types that also carry secrets,
/// codes or tokens: those never reach a log through `{:?}`.
macro_rules! debug_showing {
    ($type:ident { $($field:ident),* $(,)? }) => {
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($type))$(.field(stringify!($field), &self.$field))*.finish_non_exhaustive()
            }
        }
    };
}

pub mod commands;
pub mod config;

// The internal modules: private, so that the compiler reports what nothing uses; public under
// the `testing` feature for the tests and benchmarks. Plain `mod` lines (two `cfg`'d ones each,
// rather than a macro or a proc-macro crate), so that rustfmt formats every file.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod app;
#[cfg(not(feature = "testing"))]
mod app;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod audit;
#[cfg(not(feature = "testing"))]
mod audit;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod broker_token;
#[cfg(not(feature = "testing"))]
mod broker_token;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod clock;
#[cfg(not(feature = "testing"))]
mod clock;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod crypto;
#[cfg(not(feature = "testing"))]
mod crypto;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod demo;
#[cfg(not(feature = "testing"))]
mod demo;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod directory;
#[cfg(not(feature = "testing"))]
mod directory;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod doctor;
#[cfg(not(feature = "testing"))]
mod doctor;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod http;
#[cfg(not(feature = "testing"))]
mod http;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod keycloak;
#[cfg(not(feature = "testing"))]
mod keycloak;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod mail;
#[cfg(not(feature = "testing"))]
mod mail;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod oidc;
#[cfg(not(feature = "testing"))]
mod oidc;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod serve;
#[cfg(not(feature = "testing"))]
mod serve;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod signin;
#[cfg(not(feature = "testing"))]
mod signin;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod store;
#[cfg(not(feature = "testing"))]
mod store;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod telemetry;
#[cfg(not(feature = "testing"))]
mod telemetry;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod upstream;
#[cfg(not(feature = "testing"))]
mod upstream;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod urls;
#[cfg(not(feature = "testing"))]
mod urls;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod vault;
#[cfg(not(feature = "testing"))]
mod vault;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod verification;
#[cfg(not(feature = "testing"))]
mod verification;
