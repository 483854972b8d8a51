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

internal!(
    app, audit, clock, crypto, demo, directory, doctor, http, oidc, serve, signin, store, telemetry, upstream, vault
);
