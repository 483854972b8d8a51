//! `Application::build`: state, listeners, routers and graceful shutdown — the one way in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderName, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use secrecy::SecretBox;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::{Mode, RealmSettings, Settings, VaultKey};
use crate::crypto::random_bytes;
use crate::http::{self, ErrorDetail};
use crate::oidc::clients::{ClientRegistry, ServiceAccountRegistry};
use crate::oidc::keys::{KeyError, KeySet};
use crate::oidc::tokens::TokenService;
use crate::signin::SignInService;
use crate::store::{Store, StoreError};
use crate::telemetry::{HttpLabels, Metrics};
use crate::vault::{Cipher, CipherError, RefreshPolicy, TokenVault};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("vault: {0}")]
    Cipher(#[from] CipherError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind { addr: SocketAddr, key: &'static str, source: std::io::Error },
    #[error("HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// The one place that knows each cookie's name and flags.
#[derive(Debug, Clone)]
pub struct Cookies {
    pub secure: bool,
    pub path: String,
    pub login_max_age: i64,
    pub session_max_age: i64,
}

impl Cookies {
    pub const PENDING_SIGN_IN: &'static str = "IB_AUTH_SESSION";
    pub const SSO_SESSION: &'static str = "IB_SESSION";

    pub fn build(
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
    pub fn removal(&self, name: &'static str) -> axum_extra::extract::cookie::Cookie<'static> {
        self.build(name, String::new(), 0)
    }
}

fn time_seconds(seconds: i64) -> time::Duration {
    time::Duration::seconds(seconds)
}

/// Readiness facts for the management listener.
#[derive(Debug, Default)]
pub struct Health {
    pub started: AtomicBool,
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
    pub sign_in: SignInService,
    pub tokens: TokenService,
    pub clients: ClientRegistry,
    pub service_accounts: ServiceAccountRegistry,
    pub vault: TokenVault,
    pub realm: RealmSettings,
    pub cookies: Cookies,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub clock: Clock,
}

impl AppState {
    pub fn grants(&self) -> crate::oidc::grants::Grants<'_> {
        crate::oidc::grants::Grants { store: &self.store, tokens: &self.tokens, realm: &self.realm }
    }
}

/// A built application: listeners bound, ready to serve.
#[derive(Debug)]
pub struct Application {
    state: AppState,
    public: TcpListener,
    internal: TcpListener,
    management: TcpListener,
    pub public_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    pub management_addr: SocketAddr,
    pub public_url: String,
    max_body_bytes: usize,
    request_timeout: Duration,
    audit_retention_days: i64,
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, BuildError> {
    TcpListener::bind(addr).await.map_err(|source| BuildError::Bind { addr, key, source })
}

/// In development without configured keys, the vault key is generated once and kept in the
/// database; production always brings its own keys (validation insists on one).
async fn development_vault_key(store: &Store, now: i64) -> Result<VaultKey, BuildError> {
    let stored = store.instance_secret_or_insert("dev_vault_key", &random_bytes::<32>(), now).await?;
    let key: [u8; 32] = stored.try_into().map_err(|_| BuildError::Cipher(CipherError::NoKeys))?;
    Ok(VaultKey { id: "dev".to_owned(), key: SecretBox::new(Box::new(key)) })
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, BuildError> {
        let clock = Clock::default();
        let now = clock.now();
        let store = Store::connect(&settings.database.url, settings.database.max_connections).await?;
        if settings.database.migrate {
            store.migrate().await?;
        }
        let store = store.with_cache(&settings.database.url, settings.vault.cache_megabytes, clock.clone());
        let cipher = if settings.vault.encryption_keys.is_empty() && settings.mode == Mode::Development {
            Cipher::new(&[development_vault_key(&store, now).await?])?
        } else {
            Cipher::new(&settings.vault.encryption_keys)?
        };
        let cipher = Arc::new(cipher);
        let keys = Arc::new(KeySet::load_or_create(&store, &cipher, now).await?);

        let public = bind(settings.http.bind, "http.bind").await?;
        let internal = bind(settings.http.internal_bind, "http.internal_bind").await?;
        let management = bind(settings.http.management_bind, "http.management_bind").await?;
        let public_addr = public.local_addr().map_err(|source| BuildError::Bind {
            addr: settings.http.bind,
            key: "http.bind",
            source,
        })?;
        let internal_addr = internal.local_addr().map_err(|source| BuildError::Bind {
            addr: settings.http.internal_bind,
            key: "http.internal_bind",
            source,
        })?;
        let management_addr = management.local_addr().map_err(|source| BuildError::Bind {
            addr: settings.http.management_bind,
            key: "http.management_bind",
            source,
        })?;
        let public_url = match &settings.http.hostname {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{public_addr}"),
        };
        let realm = settings.realm.clone();
        let realm_url = format!("{public_url}/realms/{}", realm.name);
        let metrics = Arc::new(Metrics::new());
        let upstream = crate::upstream::Upstream::new(settings.providers.clone(), metrics.clone(), clock.clone())?;
        let tokens = TokenService::new(
            realm_url.clone(),
            keys,
            realm.access_token_lifespan_seconds,
            realm.sso_session_idle_seconds,
            realm.offline_session_idle_seconds,
        );
        let cookies = Cookies {
            secure: public_url.starts_with("https://"),
            path: format!("/realms/{}/", realm.name),
            login_max_age: realm.login_timeout_seconds,
            session_max_age: realm.sso_session_max_seconds,
        };
        let vault = TokenVault::new(
            store.clone(),
            AuditLog::start(store.clone()),
            cipher.clone(),
            upstream.clone(),
            metrics.clone(),
            clock.clone(),
            RefreshPolicy::from_settings(&settings.vault),
        );
        let sign_in = SignInService {
            store: store.clone(),
            cipher,
            upstream,
            realm: realm.clone(),
            metrics: metrics.clone(),
            realm_url,
        };
        let state = AppState(Arc::new(Services {
            store,
            sign_in,
            tokens,
            clients: ClientRegistry::new(settings.clients.clone()),
            service_accounts: ServiceAccountRegistry::new(settings.service_accounts.clone()),
            vault,
            realm,
            cookies,
            metrics,
            health: Arc::new(Health::default()),
            clock,
        }));
        Ok(Application {
            state,
            public,
            internal,
            management,
            public_addr,
            internal_addr,
            management_addr,
            public_url,
            max_body_bytes: settings.http.max_body_bytes,
            request_timeout: Duration::from_secs(settings.http.request_timeout_seconds),
            audit_retention_days: settings.audit_retention_days,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    fn layered(&self, router: Router<AppState>, listener: &'static str) -> Router {
        let request_id = HeaderName::from_static("x-request-id");
        router
            .layer(middleware::from_fn_with_state((self.state.metrics.clone(), listener), observe))
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                    .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                        let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                        tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                    }))
                    .layer(PropagateRequestIdLayer::new(request_id))
                    .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, self.request_timeout))
                    .layer(DefaultBodyLimit::max(self.max_body_bytes)),
            )
            .with_state(self.state.clone())
    }

    /// Serves all three listeners until `shutdown` resolves, then drains and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let public = self.layered(http::public_router(), "public");
        let internal = self.layered(http::internal_router(), "internal");
        let management = self.layered(http::management::router(), "management");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        self.state.health.started.store(true, Ordering::SeqCst);
        let store = self.state.store.clone();
        let audit_retention = self.audit_retention_days * 24 * 3600;
        let housekeeping = tokio::spawn(housekeeping(
            store.clone(),
            self.state.clock.clone(),
            audit_retention,
            self.state.tokens.clone(),
            self.state.sign_in.cipher.clone(),
        ));
        let keep_alive = tokio::spawn(self.state.vault.clone().run_keep_alive());
        let servers = tokio::spawn(async move {
            tokio::try_join!(
                axum::serve(self.public, public).with_graceful_shutdown(stopped(stop_rx.clone())),
                axum::serve(self.internal, internal).with_graceful_shutdown(stopped(stop_rx.clone())),
                axum::serve(self.management, management).with_graceful_shutdown(stopped(stop_rx)),
            )
        });
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stop_tx.send(true);
        let result = match tokio::time::timeout(Duration::from_secs(25), servers).await {
            Ok(Ok(result)) => result.map(|_| ()),
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!("requests still in flight after 25 s; stopping anyway");
                Ok(())
            }
        };
        housekeeping.abort();
        keep_alive.abort();
        self.state.vault.flush_audit().await;
        store.close().await;
        result
    }
}

/// Every minute: deletes expired pending sign-ins, codes and revocations, and audit
/// events older than the retention period; picks up signing keys rotated by
/// `identity-broker keys rotate` in another process.
async fn housekeeping(
    store: Store,
    clock: Clock,
    audit_retention_seconds: i64,
    tokens: TokenService,
    cipher: Arc<Cipher>,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        interval.tick().await;
        let now = clock.now();
        match tokens.keys().reload(&store, &cipher, now).await {
            Ok(true) => tracing::info!(active_kid = %tokens.keys().active_kid(), "signing keys reloaded"),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "signing key reload failed; keeping the keys in use"),
        }
        if let Err(err) = store.delete_expired(now).await {
            tracing::warn!(error = %err, "housekeeping failed");
        }
        if let Err(err) = store.delete_audit_before(now - audit_retention_seconds).await {
            tracing::warn!(error = %err, "audit retention failed");
        }
    }
}

/// Counts and times every request by its route template, and logs server errors once.
async fn observe(
    State((metrics, listener)): State<(Arc<Metrics>, &'static str)>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::error!(route = %route, status, error = %detail, "request failed");
    }
    metrics.observe_http(HttpLabels { listener, method, route, status }, started.elapsed());
    response
}
