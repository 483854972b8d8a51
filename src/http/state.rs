//! What every handler shares: the application's services behind one `Arc`, and the one
//! place that knows each cookie's name and flags.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::RealmSettings;
use crate::directory::Directory;
use crate::oidc::clients::{ClientRegistry, ServiceAccountRegistry};
use crate::oidc::grants::Grants;
use crate::oidc::sessions::Sessions;
use crate::oidc::tokens::TokenService;
use crate::signin::SignInService;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::upstream::development::DevelopmentProvider;
use crate::vault::TokenVault;

/// The one place that knows each cookie's name and flags.
#[derive(Debug, Clone)]
pub struct Cookies {
    pub(crate) secure: bool,
    pub(crate) path: String,
    pub(crate) login_max_age: i64,
    pub(crate) session_max_age: i64,
}

impl Cookies {
    pub(crate) const PENDING_SIGN_IN: &'static str = "IB_AUTH_SESSION";
    pub(crate) const SSO_SESSION: &'static str = "IB_SESSION";

    pub(crate) fn build(
        &self,
        name: &'static str,
        value: String,
        max_age: i64,
    ) -> axum_extra::extract::cookie::Cookie<'static> {
        axum_extra::extract::cookie::Cookie::build((name, value))
            .path(self.path.clone())
            .http_only(true)
            .secure(self.secure)
            // Lax, not Strict: the cookie must come back on the top-level redirect from Entra.
            .same_site(axum_extra::extract::cookie::SameSite::Lax)
            .max_age(time_seconds(max_age))
            .build()
    }
}

impl Cookies {
    /// A cookie that makes the browser forget `name` (same path, expired).
    pub(crate) fn removal(&self, name: &'static str) -> axum_extra::extract::cookie::Cookie<'static> {
        self.build(name, String::new(), 0)
    }
}

fn time_seconds(seconds: i64) -> time::Duration {
    time::Duration::seconds(seconds)
}

/// Readiness facts for the management listener.
#[derive(Debug, Default)]
pub struct Health {
    pub(crate) started: AtomicBool,
}

/// What every handler shares, behind one `Arc`: cloning it for a request is one increment.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

#[derive(Debug)]
pub struct Services {
    pub store: Store,
    pub(crate) sessions: Sessions,
    pub(crate) directory: Directory,
    pub audit: AuditLog,
    pub(crate) sign_in: SignInService,
    pub tokens: TokenService,
    pub(crate) clients: ClientRegistry,
    pub(crate) service_accounts: ServiceAccountRegistry,
    pub vault: TokenVault,
    pub(crate) realm: RealmSettings,
    pub(crate) cookies: Cookies,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    pub clock: Clock,
    /// The built-in development provider, when `start-dev` runs it.
    pub(crate) development: Option<Arc<DevelopmentProvider>>,
}

impl AppState {
    pub(crate) fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }

    pub(crate) fn grants(&self) -> Grants<'_> {
        Grants { store: &self.store, sessions: &self.sessions, tokens: &self.tokens }
    }
}
