//! `Application::build`: state, listeners, routers and graceful shutdown — the one way in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderName, HeaderValue, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use secrecy::SecretBox;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::{HttpSettings, Mode, Settings};
use crate::crypto::{Cipher, CipherError, JwsAlgorithm, JwsKeyError, VaultKey, generate_key, random_bytes};
use crate::demo::{DEMO_CLIENT_ID, DemoClient};
use crate::directory::Directory;
use crate::http::client_address::ClientAddresses;
use crate::http::{self, About, AppState, Cookies, ErrorDetail, Health, Services, paths};
use crate::mail::{MailError, Mailer};
use crate::oidc::admin::AdminSignIn;
use crate::oidc::clients::{ClientRegistry, ServiceAccountRegistry};
use crate::oidc::keys::{KeyError, KeySet};
use crate::oidc::sessions::Sessions;
use crate::oidc::tokens::TokenService;
use crate::serve::{ConnectionLimits, serve};
use crate::signin::{PendingBudget, SignInService};
use crate::store::{Store, StoreError};
use crate::telemetry::{Chain, HttpLabels, Metrics};
use crate::upstream::Upstream;
use crate::upstream::development::{self, DevelopmentProvider};
use crate::urls::Urls;
use crate::vault::{RefreshPolicy, TokenVault};
use crate::verification::EmailVerification;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot use the vault keys")]
    Cipher(#[from] CipherError),
    #[error("cannot load the signing keys")]
    Keys(#[from] KeyError),
    #[error("cannot listen on {addr} ({key})")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client for upstream providers")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot load the development provider's signing key")]
    DevelopmentKey(#[from] JwsKeyError),
    #[error("cannot set up sending e-mail ([smtp])")]
    Mail(#[from] MailError),
}

/// A built application: listeners bound, ready to serve.
#[derive(Debug)]
pub struct Application {
    /// What the routers share (as `AppState`) and what the background tasks use.
    services: Arc<Services>,
    listeners: Listeners,
    pub public_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    pub management_addr: SocketAddr,
    max_body_bytes: usize,
    request_timeout: Duration,
    audit_retention_days: i64,
    limits: ConnectionLimits,
    security_headers: SecurityHeaders,
}

/// The three listeners, bound.
#[derive(Debug)]
struct Listeners {
    public: TcpListener,
    internal: TcpListener,
    management: TcpListener,
}

impl Listeners {
    async fn bind(http: &HttpSettings) -> Result<Listeners, BuildError> {
        Ok(Listeners {
            public: bind(http.bind, "http.bind").await?,
            internal: bind(http.internal_bind, "http.internal_bind").await?,
            management: bind(http.management_bind, "http.management_bind").await?,
        })
    }
}

async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, BuildError> {
    TcpListener::bind(addr).await.map_err(|source| BuildError::Bind { addr, key, source })
}

fn local_addr(listener: &TcpListener, key: &'static str) -> Result<SocketAddr, BuildError> {
    listener.local_addr().map_err(|source| BuildError::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), key, source })
}

/// The database, migrated when configured so, with its cache of rows for token reads.
async fn open_store(settings: &Settings, clock: &Clock) -> Result<Store, BuildError> {
    let acquire_timeout = Duration::from_secs(settings.database.acquire_timeout_seconds);
    let store = Store::connect_with(&settings.database.url, settings.database.max_connections, acquire_timeout).await?;
    if settings.database.migrate {
        store.migrate().await?;
    }
    Ok(store.with_cache(&settings.database.url, settings.vault.cache_megabytes, clock.clone()))
}

/// The instance secret holding `start-dev`'s generated vault key, and that key's id.
const DEVELOPMENT_VAULT_KEY: &str = "dev_vault_key";
pub(crate) const DEVELOPMENT_VAULT_KEY_ID: &str = "dev";

/// The configured vault keys; in development without any, one generated once and kept in the
/// database (production always brings its own: validation insists on one).
async fn vault_cipher(settings: &Settings, store: &Store, now: i64) -> Result<Cipher, BuildError> {
    if !settings.vault.encryption_keys.is_empty() || settings.mode != Mode::Development {
        return Ok(Cipher::new(&settings.vault.encryption_keys)?);
    }
    development_vault_cipher(store, now).await
}

/// `start-dev`'s generated vault key, `dev`, made and kept in the database on first use.
pub(crate) async fn development_vault_cipher(store: &Store, now: i64) -> Result<Cipher, BuildError> {
    let stored = store.instance_secret_or_insert(DEVELOPMENT_VAULT_KEY, &random_bytes::<32>(), now).await?;
    let key: [u8; 32] = stored.try_into().map_err(|_| BuildError::Cipher(CipherError::NoKeys))?;
    Ok(Cipher::new(&[VaultKey { id: DEVELOPMENT_VAULT_KEY_ID.to_owned(), key: SecretBox::new(Box::new(key)) }])?)
}

/// The development provider, when `start-dev` wants it, no real provider is configured and
/// the public listener is on loopback. Its signing key is kept in the database, so that the
/// refresh tokens it issued survive a restart.
async fn development_provider(
    settings: &Settings,
    store: &Store,
    urls: &Urls,
    now: i64,
) -> Result<Option<Arc<DevelopmentProvider>>, BuildError> {
    if !settings.development_provider {
        return Ok(None);
    }
    if !settings.providers.is_empty() {
        tracing::info!("the development provider is off: a real identity provider is configured");
        return Ok(None);
    }
    if !settings.http.bind.ip().is_loopback() {
        tracing::warn!(bind = %settings.http.bind, "the development provider is off: the public listener is not on a loopback address");
        return Ok(None);
    }
    let key = match store.instance_secret(development::KEY_SECRET_NAME).await? {
        Some(key) => key,
        None => {
            store
                .instance_secret_or_insert(
                    development::KEY_SECRET_NAME,
                    &generate_key(JwsAlgorithm::Rs256)?.private,
                    now,
                )
                .await?
        }
    };
    let authority = urls.public(development::AUTHORITY_PATH);
    let provider = DevelopmentProvider::new(&authority, urls.broker_endpoint(development::ALIAS), &key)?;
    tracing::warn!(
        alias = development::ALIAS,
        authority = %authority,
        "DEVELOPMENT PROVIDER ON: anyone can sign in as anyone; configure a real provider (AZURE_DEVOPS_*) to turn it off"
    );
    Ok(Some(Arc::new(provider)))
}

/// The start page's demonstration client, in development only, unless a configured client or
/// service account already uses its id.
fn demo_client(settings: &Settings, urls: &Urls) -> Option<DemoClient> {
    if settings.mode != Mode::Development {
        return None;
    }
    let mut ids = settings.clients.iter().map(|c| &c.client_id);
    let mut accounts = settings.service_accounts.iter().map(|a| &a.client_id);
    if ids.any(|id| id == DEMO_CLIENT_ID) || accounts.any(|id| id == DEMO_CLIENT_ID) {
        tracing::warn!(
            client_id = DEMO_CLIENT_ID,
            "a configured client has the demonstration client's id; the start page's demonstration is off"
        );
        return None;
    }
    Some(DemoClient::new(urls.public(paths::DEMO_CALLBACK), urls.endpoint(paths::AUTH)))
}

/// The SMTP client of `[smtp]`, introducing itself by the public hostname's host; none without
/// the table, and a start-up line says what that means.
fn mailer(settings: &Settings, urls: &Urls) -> Result<Option<Mailer>, BuildError> {
    let Some(smtp) = &settings.smtp else {
        tracing::info!("no [smtp] configured: send-verify-email requests are refused until it is");
        return Ok(None);
    };
    let host = url::Url::parse(urls.public_url()).ok().and_then(|url| url.host_str().map(str::to_owned));
    Ok(Some(Mailer::new(smtp, host.as_deref().unwrap_or("localhost"))?))
}

/// Every service the handlers share, wired together.
fn services(
    settings: &Settings,
    store: Store,
    cipher: Arc<Cipher>,
    keys: KeySet,
    about: About,
    clock: Clock,
    development: Option<Arc<DevelopmentProvider>>,
) -> Result<Services, BuildError> {
    let realm = settings.realm.clone();
    let urls = &about.urls;
    let demo = demo_client(settings, urls);
    let clients = ClientRegistry::new(
        settings.clients.iter().cloned().chain(demo.as_ref().map(DemoClient::registration)).collect(),
    );
    let providers: Vec<_> =
        settings.providers.iter().cloned().chain(development.as_ref().map(|d| d.settings())).collect();
    let metrics = Arc::new(Metrics::for_providers(providers.iter().map(|p| p.alias.as_str())));
    let audit = AuditLog::start(store.clone(), metrics.clone());
    let upstream = Upstream::new(providers, metrics.clone(), clock.clone())?;
    let sessions = Sessions::new(store.clone(), audit.clone(), &realm);
    let admin = AdminSignIn::new(&settings.admin, audit.clone()).map(Arc::new);
    if admin.is_none() {
        tracing::info!(
            "the admin REST API is off: set admin.password (env BROKER_ADMIN_PASSWORD or KEYCLOAK_ADMIN_PASSWORD) to turn it on"
        );
    }
    let tokens = Arc::new(TokenService::new(
        urls,
        Arc::new(keys),
        realm.access_token_lifespan_seconds,
        realm.sso_session_idle_seconds,
        realm.offline_session_idle_seconds,
    ));
    let cookies = Arc::new(Cookies {
        secure: urls.is_https(),
        path: urls.cookie_path(),
        login_max_age: realm.login_timeout_seconds,
        session_max_age: realm.sso_session_max_seconds,
    });
    let vault = TokenVault::new(
        store.clone(),
        audit.clone(),
        cipher.clone(),
        upstream.clone(),
        metrics.clone(),
        clock.clone(),
        RefreshPolicy::from_settings(&settings.vault),
    );
    let email_verification = Arc::new(EmailVerification::new(
        store.clone(),
        audit.clone(),
        clients.clone(),
        mailer(settings, urls)?,
        clock.clone(),
        realm.name.clone(),
        urls.action_token(),
    ));
    let sign_in = Arc::new(SignInService {
        store: store.clone(),
        sessions: sessions.clone(),
        audit: audit.clone(),
        cipher,
        upstream,
        realm: realm.clone(),
        metrics: metrics.clone(),
        urls: urls.clone(),
        budget: Arc::new(PendingBudget::new(
            settings.http.pending_sign_ins_per_address,
            settings.http.max_pending_sign_ins,
        )),
    });
    Ok(Services {
        directory: Directory::new(store.clone()),
        store,
        sessions,
        audit,
        sign_in,
        tokens,
        clients,
        service_accounts: ServiceAccountRegistry::new(settings.service_accounts.clone()),
        vault,
        email_verification,
        realm: Arc::new(realm),
        cookies,
        metrics,
        // The database answered a moment ago (the keys were read from it).
        health: Arc::new(Health { database: AtomicBool::new(true), ..Health::default() }),
        clock,
        about: Arc::new(about),
        demo: demo.map(Arc::new),
        development,
        admin,
        client_addresses: ClientAddresses::new(settings.http.trusted_proxies.clone()),
    })
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, BuildError> {
        let clock = Clock::default();
        let now = clock.now();
        let store = open_store(&settings, &clock).await?;
        let cipher = Arc::new(vault_cipher(&settings, &store, now).await?);
        let keys = KeySet::load_or_create(&store, &cipher, settings.realm.signature_algorithm, now).await?;
        let listeners = Listeners::bind(&settings.http).await?;
        let public_addr = local_addr(&listeners.public, "http.bind")?;
        let urls = Urls::for_listener(settings.http.hostname.as_ref(), public_addr, &settings.realm.name);
        let management_addr = local_addr(&listeners.management, "http.management_bind")?;
        let development = development_provider(&settings, &store, &urls, now).await?;
        let security_headers = SecurityHeaders { hsts: urls.is_https() };
        let about = About { mode: settings.mode, urls, management_addr };
        let services = Arc::new(services(&settings, store, cipher, keys, about, clock, development)?);
        Ok(Application {
            services,
            public_addr,
            internal_addr: local_addr(&listeners.internal, "http.internal_bind")?,
            management_addr,
            listeners,
            max_body_bytes: settings.http.max_body_bytes,
            request_timeout: Duration::from_secs(settings.http.request_timeout_seconds),
            audit_retention_days: settings.audit_retention_days,
            limits: ConnectionLimits::from_settings(&settings.http),
            security_headers,
        })
    }

    /// The running broker's addresses.
    pub(crate) fn urls(&self) -> &Urls {
        &self.services.about.urls
    }

    /// Whether the built-in development provider signs users in.
    pub(crate) fn runs_development_provider(&self) -> bool {
        self.services.development.is_some()
    }

    /// The running state, for tests that drive the parts directly.
    #[cfg(feature = "testing")]
    pub fn state(&self) -> AppState {
        AppState::new(self.services.clone())
    }

    fn layered(&self, router: Router<AppState>, listener: &'static str) -> Router {
        let request_id = HeaderName::from_static("x-request-id");
        let router = router
            .layer(middleware::from_fn_with_state(self.max_body_bytes, http::refuse_non_text))
            .layer(middleware::from_fn_with_state((self.services.metrics.clone(), listener), observe))
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
            .with_state(AppState::new(self.services.clone()))
            .layer(middleware::map_response(close_after_unread_body));
        self.security_headers.apply(router)
    }

    /// Serves all three listeners until `shutdown` resolves, then drains and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let public = self
            .layered(http::public_router(self.services.development.is_some(), self.services.admin.is_some()), "public");
        let internal = self.layered(http::internal_router(), "internal");
        let management = self.layered(http::management::router(), "management");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        self.services.health.started.store(true, Ordering::SeqCst);
        let store = self.services.store.clone();
        let audit_retention = self.audit_retention_days * 24 * 3600;
        let housekeeping = tokio::spawn(housekeeping(
            store.clone(),
            self.services.clock.clone(),
            audit_retention,
            self.services.tokens.clone(),
            self.services.sign_in.cipher.clone(),
        ));
        let keep_alive = tokio::spawn(self.services.vault.clone().run_keep_alive());
        let database_check = tokio::spawn(check_database(store.clone(), self.services.health.clone()));
        let Listeners { public: public_listener, internal: internal_listener, management: management_listener } =
            self.listeners;
        let limits = self.limits;
        let servers = tokio::spawn(async move {
            tokio::try_join!(
                serve(public_listener, public, limits, "public", stop_rx.clone()),
                serve(internal_listener, internal, limits, "internal", stop_rx.clone()),
                serve(management_listener, management, limits, "management", stop_rx),
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
        self.services.vault.shutdown().await;
        database_check.abort();
        if tokio::time::timeout(AUDIT_FLUSH_AT_EXIT, self.services.audit.flush()).await.is_err() {
            tracing::error!("the database did not take the last audit events within 5 s; they are lost");
        }
        store.close().await;
        result
    }
}

/// How long shutdown waits for the audit events still in memory to be written.
const AUDIT_FLUSH_AT_EXIT: Duration = Duration::from_secs(5);
/// How often readiness asks the database, and how long it waits for the answer: a probe reads
/// the last verdict, so it answers at once, and turns 503 within a second of the database
/// going away (a check at most 250 ms away, failing at once on a closed connection or after
/// 700 ms on a silent one). A `SELECT 1` four times a second costs the database nothing.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_millis(700);

/// Keeps `health.database` current, logging each change.
async fn check_database(store: Store, health: Arc<Health>) {
    let mut interval = tokio::time::interval(DATABASE_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let up = store.reachable(DATABASE_CHECK_TIMEOUT).await;
        let was_up = health.database.swap(up, Ordering::SeqCst);
        if was_up && !up {
            tracing::error!("the database cannot be reached: not ready; requests that need it are answered 503");
        } else if up && !was_up {
            tracing::info!("the database answers again: ready");
        }
    }
}

/// Keycloak's default security headers, on every response of every listener: no page may be
/// framed by another site, no content sniffed, no URL (they carry codes and states) sent on as
/// a referrer, nothing indexed; HSTS when the public URL is https.
#[derive(Debug, Clone, Copy)]
struct SecurityHeaders {
    hsts: bool,
}

impl SecurityHeaders {
    /// The pages need nothing beyond Keycloak's policy: their styles are inline (which
    /// `frame-src`/`object-src` leave alone) and they load no script, frame or plugin.
    const CONTENT_SECURITY_POLICY: &'static str = "frame-src 'self'; frame-ancestors 'self'; object-src 'none'";
    const STRICT_TRANSPORT_SECURITY: &'static str = "max-age=31536000; includeSubDomains";

    fn apply(self, router: Router) -> Router {
        use axum::http::header;
        let set = |name: HeaderName, value: &'static str| {
            SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
        };
        let router = router
            .layer(set(header::X_FRAME_OPTIONS, "SAMEORIGIN"))
            .layer(set(header::CONTENT_SECURITY_POLICY, Self::CONTENT_SECURITY_POLICY))
            .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .layer(set(header::REFERRER_POLICY, "no-referrer"))
            .layer(set(HeaderName::from_static("x-robots-tag"), "none"));
        if self.hsts {
            router.layer(set(header::STRICT_TRANSPORT_SECURITY, Self::STRICT_TRANSPORT_SECURITY))
        } else {
            router
        }
    }
}

/// Every minute: deletes expired pending sign-ins, codes and revocations, and audit
/// events older than the retention period; picks up signing keys rotated by
/// `identity-broker keys rotate` in another process.
async fn housekeeping(
    store: Store,
    clock: Clock,
    audit_retention_seconds: i64,
    tokens: Arc<TokenService>,
    cipher: Arc<Cipher>,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(60));
    loop {
        interval.tick().await;
        let now = clock.now();
        match tokens.keys().reload(&store, &cipher, now).await {
            Ok(true) => tracing::info!(active_kid = %tokens.keys().current().active_kid(), "signing keys reloaded"),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %Chain(&err), "signing key reload failed; keeping the keys in use"),
        }
        if let Err(err) = store.delete_expired(now).await {
            tracing::warn!(error = %Chain(&err), "housekeeping failed");
        }
        if let Err(err) = store.delete_audit_before(now - audit_retention_seconds).await {
            tracing::warn!(error = %Chain(&err), "audit retention failed");
        }
    }
}

/// A refusal sent before the request's body was read to its end (too large, too slow) ends
/// the connection, since what is left of the body cannot be told from a next request. Say so
/// (RFC 9112 section 9.6): without `Connection: close`, a client's pool sends its next request
/// down a socket that is about to close, and that request fails.
async fn close_after_unread_body(mut response: Response) -> Response {
    let status = response.status();
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE || status == axum::http::StatusCode::REQUEST_TIMEOUT {
        response.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Counts and times every request by its route template, and logs server errors once.
async fn observe(
    State((metrics, listener)): State<(Arc<Metrics>, &'static str)>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| paths::route_label(p.as_str()));
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::error!(route = %route, status, error = %detail, "request failed");
    }
    metrics.observe_http(HttpLabels { listener, method, route, status }, started.elapsed());
    response
}

/// A request method as a metrics label, without allocating.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}
