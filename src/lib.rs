//! identity-broker: a Keycloak-compatible identity broker for Azure DevOps sign-in via Entra ID.
//!
//! The crate's outside is `commands` (what `main` runs) and `config` (what it loads). Every
//! other module is the crate's own: private, so that the compiler reports what nothing uses.
//! The `testing` feature, which only the tests and benchmarks turn on, makes them public so
//! that the tests can drive the real parts directly.

/// Declares internal modules: private, or public under the `testing` feature.
macro_rules! internal {
    ($($module:ident),* $(,)?) => {
        $(
            #[cfg(feature = "testing")]
            #[doc(hidden)]
            pub mod $module;
            #[cfg(not(feature = "testing"))]
            mod $module;
        )*
    };
}

pub mod commands;
pub mod config;

internal!(app, audit, clock, crypto, demo, directory, doctor, http, oidc, signin, store, telemetry, upstream, vault);
