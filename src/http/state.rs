//! What every handler shares: the application's services behind one `Arc`, the pieces a
//! handler may take of them, and the one place that knows each cookie's name and flags.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::extract::FromRef;

use super::client_address::ClientAddresses;
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::{Mode, RealmSettings};
use crate::demo::DemoClient;
use crate::directory::Directory;
use crate::oidc::admin::AdminSignIn;
use crate::oidc::clients::{ClientRegistry, ServiceAccountRegistry};
use crate::oidc::grants::Grants;
use crate::oidc::sessions::Sessions;
use crate::oidc::tokens::TokenService;
use crate::signin::SignInService;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::upstream::development::DevelopmentProvider;
use crate::urls::Urls;
use crate::vault::TokenVault;
use crate::verification::EmailVerification;

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
    /// The start page's demonstration sign-in: its state and PKCE verifier, on `/demo/` only.
    pub(crate) const DEMO_SIGN_IN: &'static str = "IB_DEMO";

    pub(crate) fn build(
        &self,
        name: &'static str,
        value: String,
        max_age: i64,
    ) -> axum_extra::extract::cookie::Cookie<'static> {
        self.build_at(name, value, max_age, self.path.clone())
    }

    fn build_at(
        &self,
        name: &'static str,
        value: String,
        max_age: i64,
        path: String,
    ) -> axum_extra::extract::cookie::Cookie<'static> {
        axum_extra::extract::cookie::Cookie::build((name, value))
            .path(path)
            .http_only(true)
            .secure(self.secure)
            // Lax, not Strict: the cookie must come back on the top-level redirect from Entra.
            .same_site(axum_extra::extract::cookie::SameSite::Lax)
            .max_age(time_seconds(max_age))
            .build()
    }

    /// A cookie that makes the browser forget `name` (same path, expired).
    pub(crate) fn removal(&self, name: &'static str) -> axum_extra::extract::cookie::Cookie<'static> {
        self.build(name, String::new(), 0)
    }

    /// The demonstration's cookie, living as long as a pending sign-in.
    pub(crate) fn demo(&self, value: String) -> axum_extra::extract::cookie::Cookie<'static> {
        self.build_at(Self::DEMO_SIGN_IN, value, self.login_max_age, super::paths::DEMO.to_owned())
    }

    pub(crate) fn demo_removal(&self) -> axum_extra::extract::cookie::Cookie<'static> {
        self.build_at(Self::DEMO_SIGN_IN, String::new(), 0, super::paths::DEMO.to_owned())
    }
}

fn time_seconds(seconds: i64) -> time::Duration {
    time::Duration::seconds(seconds)
}

/// What the running service is and where it is reached, fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct About {
    pub(crate) mode: Mode,
    /// The public addresses: under `http.hostname`, or in development the public listener's.
    pub(crate) urls: Urls,
    pub(crate) management_addr: SocketAddr,
}

/// Readiness facts for the management listener, kept current in the background so that a
/// probe is answered at once, whatever the database does.
#[derive(Debug, Default)]
pub struct Health {
    pub(crate) started: AtomicBool,
    /// The last background check's verdict on the database.
    pub(crate) database: AtomicBool,
}

/// What every handler shares, behind one `Arc`: cloning it for a request is one increment.
/// Handlers and extractors take the pieces they use (`State<TokenVault>`, `State<Clock>`…),
/// each cheap to clone (a handle, or an `Arc`), through the `FromRef` impls below.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

/// The whole of the services, for the tests only (`app.state.clock.advance(…)`): the broker's
/// own handlers take their pieces.
#[cfg(feature = "testing")]
impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services, wired once at start; those whose clones would copy (settings, strings) sit
/// behind an `Arc` so that every piece is cheap to hand to a request.
#[derive(Debug)]
pub struct Services {
    pub store: Store,
    pub(crate) sessions: Sessions,
    pub(crate) directory: Directory,
    pub audit: AuditLog,
    pub(crate) sign_in: Arc<SignInService>,
    pub tokens: Arc<TokenService>,
    pub(crate) clients: ClientRegistry,
    pub(crate) service_accounts: ServiceAccountRegistry,
    pub vault: TokenVault,
    /// send-verify-email's links: the admin API sends them, the public listener redeems them.
    pub email_verification: Arc<EmailVerification>,
    pub(crate) realm: Arc<RealmSettings>,
    pub(crate) cookies: Arc<Cookies>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    pub clock: Clock,
    /// The built-in development provider, when `start-dev` runs it.
    pub(crate) development: Option<Arc<DevelopmentProvider>>,
    pub(crate) about: Arc<About>,
    /// The start page's demonstration client: start-dev only.
    pub demo: Option<Arc<DemoClient>>,
    /// Keycloak's master-realm administrator; `None` turns the admin REST API off.
    pub(crate) admin: Option<Arc<AdminSignIn>>,
    /// Which peers' `X-Forwarded-For` is believed (`http.trusted_proxies`).
    pub(crate) client_addresses: ClientAddresses,
}

impl AppState {
    pub(crate) fn new(services: Arc<Services>) -> Self {
        AppState(services)
    }
}

impl FromRef<AppState> for Grants {
    fn from_ref(state: &AppState) -> Self {
        Grants {
            store: state.0.store.clone(),
            sessions: state.0.sessions.clone(),
            tokens: state.0.tokens.clone(),
            realm: state.0.realm.clone(),
        }
    }
}

/// `State<Piece>` for each service a handler or extractor takes on its own.
macro_rules! pieces {
    ($($field:ident: $piece:ty),* $(,)?) => {$(
        impl FromRef<AppState> for $piece {
            fn from_ref(state: &AppState) -> Self {
                state.0.$field.clone()
            }
        }
    )*};
}

pieces! {
    store: Store,
    sessions: Sessions,
    directory: Directory,
    audit: AuditLog,
    sign_in: Arc<SignInService>,
    tokens: Arc<TokenService>,
    clients: ClientRegistry,
    service_accounts: ServiceAccountRegistry,
    vault: TokenVault,
    email_verification: Arc<EmailVerification>,
    realm: Arc<RealmSettings>,
    cookies: Arc<Cookies>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    clock: Clock,
    development: Option<Arc<DevelopmentProvider>>,
    about: Arc<About>,
    demo: Option<Arc<DemoClient>>,
    admin: Option<Arc<AdminSignIn>>,
    client_addresses: ClientAddresses,
}
