//! The typed settings tree: TOML file, environment overlay, defaults, and validation that names each key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;
use url::Url;
use uuid::Uuid;

use crate::crypto::CtSecret;
pub use crate::crypto::VaultKey;

/// Which command started the process; it decides defaults and how strict validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `start-dev`: SQLite, loopback listeners, `http://` allowed, keys generated.
    Development,
    /// `start` and `migrate`: everything must be configured explicitly.
    Production,
}

pub const DEV_DATABASE_URL: &str = "sqlite://./data/identity-broker.db?mode=rwc";
pub const DEFAULT_SCOPES: &str = "openid profile email offline_access https://app.vssps.visualstudio.com/.default";
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

#[derive(Debug)]
pub struct Settings {
    pub mode: Mode,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub realm: RealmSettings,
    pub clients: Vec<ClientSettings>,
    pub service_accounts: Vec<ServiceAccountSettings>,
    pub providers: Vec<ProviderSettings>,
    pub vault: VaultSettings,
    pub log_format: LogFormat,
    /// Audit events older than this are deleted by housekeeping.
    pub audit_retention_days: i64,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Public base URL without a trailing slash; `None` only in development, where the
    /// bound public address is used.
    pub hostname: Option<Url>,
    pub bind: SocketAddr,
    pub management_bind: SocketAddr,
    pub internal_bind: SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout_seconds: u64,
}

#[derive(Debug)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub migrate: bool,
}

#[derive(Debug, Clone)]
pub struct RealmSettings {
    pub name: String,
    pub access_token_lifespan_seconds: i64,
    pub sso_session_idle_seconds: i64,
    pub sso_session_max_seconds: i64,
    pub offline_session_idle_seconds: i64,
    pub authorization_code_lifespan_seconds: i64,
    pub login_timeout_seconds: i64,
}

#[derive(Debug, Clone)]
pub enum ClientCredential {
    Confidential(CtSecret),
    /// A public client has no secret at all; it must use PKCE.
    Public,
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub client_id: String,
    pub credential: ClientCredential,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Keycloak's `broker.read-token` role in the client's access tokens: whether the
    /// application may read the user's upstream tokens at `/broker/{alias}/token`.
    pub read_token: bool,
    /// Keycloak's "revoke refresh token": each refresh returns a new refresh token, and a
    /// reused one ends the session. Off by default: OpenHands reuses refresh tokens.
    pub rotate_refresh_tokens: bool,
}

#[derive(Debug, Clone)]
pub struct ServiceAccountSettings {
    pub client_id: String,
    pub client_secret: CtSecret,
    pub allowed_providers: Vec<String>,
}

/// The Entra tenant a provider signs users in from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenant {
    Single(Uuid),
    /// `organizations` or `common`: the issuer carries the token's own `tid`.
    Multi(String),
}

impl Tenant {
    pub fn path_segment(&self) -> String {
        match self {
            Tenant::Single(id) => id.to_string(),
            Tenant::Multi(name) => name.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamClientAuth {
    ClientSecretPost,
    ClientSecretBasic,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub alias: String,
    pub display_name: String,
    pub tenant: Tenant,
    pub organization: Option<String>,
    pub client_id: String,
    pub client_secret: SecretString,
    pub client_auth: UpstreamClientAuth,
    pub scopes: String,
    pub authority: Url,
    pub allowed_tenants: Vec<Uuid>,
    pub trust_email: bool,
    /// Keycloak's `storeToken`: keep the upstream tokens so services can read them.
    pub store_token: bool,
}

#[derive(Debug)]
pub struct VaultSettings {
    /// The first key encrypts, all decrypt. Empty in development until generated.
    pub encryption_keys: Vec<VaultKey>,
    pub refresh_before_expiry_seconds: i64,
    /// A refresh token unused this long is refreshed by the keep-alive task, because Entra's
    /// die after 90 days without use.
    pub keepalive_after_seconds: i64,
    /// How often the keep-alive task looks for stale identities, and how many it takes a time.
    pub keepalive_interval_seconds: u64,
    pub keepalive_batch_size: i64,
    /// How long a reader waits for a refresh that another process is running.
    pub refresh_wait_seconds: u64,
    /// Memory for identities' sealed tokens kept between reads (Postgres only); 0 turns it off.
    pub cache_megabytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Every problem found in the configuration, each naming its key and the fix.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.problems {
            writeln!(f, "  {}: {}", problem.key, problem.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn single(key: &str, message: impl Into<String>) -> Self {
        ConfigError { problems: vec![ConfigProblem { key: key.into(), message: message.into() }] }
    }

    /// True when some problem names `key`; tests and callers use it to find a cause.
    pub fn mentions(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
}

// ---- the file as written ---------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSettings {
    http: RawHttp,
    database: RawDatabase,
    realm: RawRealm,
    clients: Vec<RawClient>,
    service_accounts: Vec<RawServiceAccount>,
    providers: BTreeMap<String, RawProvider>,
    vault: RawVault,
    log: RawLog,
    audit: RawAudit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    hostname: Option<String>,
    bind: Option<String>,
    management_bind: Option<String>,
    internal_bind: Option<String>,
    max_body_bytes: Option<usize>,
    request_timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawDatabase {
    url: Option<SecretString>,
    max_connections: Option<u32>,
    migrate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRealm {
    name: Option<String>,
    access_token_lifespan_seconds: Option<i64>,
    sso_session_idle_seconds: Option<i64>,
    sso_session_max_seconds: Option<i64>,
    offline_session_idle_seconds: Option<i64>,
    authorization_code_lifespan_seconds: Option<i64>,
    login_timeout_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawClient {
    client_id: String,
    client_secret: Option<SecretString>,
    public_client: bool,
    redirect_uris: Vec<String>,
    post_logout_redirect_uris: Vec<String>,
    read_token: Option<bool>,
    rotate_refresh_tokens: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServiceAccount {
    client_id: String,
    client_secret: Option<SecretString>,
    allowed_providers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawProvider {
    enabled: Option<bool>,
    display_name: Option<String>,
    tenant_id: Option<String>,
    organization: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    client_auth_method: Option<String>,
    scopes: Option<String>,
    authority: Option<String>,
    allowed_tenants: Vec<String>,
    allow_insecure_http: bool,
    trust_email: Option<bool>,
    store_token: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawVault {
    encryption_keys: Vec<SecretString>,
    refresh_before_expiry_seconds: Option<i64>,
    keepalive_after_seconds: Option<i64>,
    keepalive_interval_seconds: Option<u64>,
    keepalive_batch_size: Option<i64>,
    refresh_wait_seconds: Option<u64>,
    cache_megabytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAudit {
    retention_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
}

impl Settings {
    /// Reads `path` (if any), overlays the process environment, and validates.
    pub fn load(mode: Mode, path: Option<&Path>) -> Result<Settings, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|err| ConfigError::single("--config", format!("cannot read {}: {err}", path.display())))?,
            None => String::new(),
        };
        Settings::from_toml(mode, &text, |name| std::env::var(name).ok())
    }

    /// The single way in for tests and `load`: TOML text plus an environment lookup.
    pub fn from_toml(mode: Mode, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let mut raw: RawSettings =
            toml::from_str(text).map_err(|err| ConfigError::single("--config", format!("not valid TOML: {err}")))?;
        overlay_environment(&mut raw, &env);
        validate(mode, raw)
    }
}

fn env_name(prefix: &str, id: &str, suffix: &str) -> String {
    let id: String = id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{prefix}{id}{suffix}")
}

fn overlay_environment(raw: &mut RawSettings, env: &impl Fn(&str) -> Option<String>) {
    let secret = |name: &str| env(name).map(SecretString::from);
    if let Some(url) = secret("DATABASE_URL") {
        raw.database.url = Some(url);
    }
    if let Some(hostname) = env("BROKER_HOSTNAME") {
        raw.http.hostname = Some(hostname);
    }
    if let Some(bind) = env("BROKER_HTTP_BIND") {
        raw.http.bind = Some(bind);
    }
    if let Some(bind) = env("BROKER_MANAGEMENT_BIND") {
        raw.http.management_bind = Some(bind);
    }
    if let Some(bind) = env("BROKER_INTERNAL_BIND") {
        raw.http.internal_bind = Some(bind);
    }
    if let Some(format) = env("BROKER_LOG_FORMAT") {
        raw.log.format = Some(format);
    }
    if let Some(keys) = env("BROKER_ENCRYPTION_KEYS") {
        raw.vault.encryption_keys = keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| SecretString::from(k.to_owned()))
            .collect();
    }
    for client in &mut raw.clients {
        if let Some(value) = secret(&env_name("BROKER_CLIENT_", &client.client_id, "_SECRET")) {
            client.client_secret = Some(value);
        }
    }
    for account in &mut raw.service_accounts {
        if let Some(value) = secret(&env_name("BROKER_CLIENT_", &account.client_id, "_SECRET")) {
            account.client_secret = Some(value);
        }
    }
    // The Azure DevOps provider may be configured from the environment alone.
    let azure_prefix = "AZURE_DEVOPS_";
    let azure_set = ["ENABLED", "TENANT_ID", "CLIENT_ID", "CLIENT_SECRET", "ORGANIZATION", "SCOPE"]
        .iter()
        .any(|suffix| env(&format!("{azure_prefix}{suffix}")).is_some());
    if azure_set {
        raw.providers.entry("azure_devops".to_owned()).or_default();
    }
    for (alias, provider) in &mut raw.providers {
        let var = |suffix: &str| env(&env_name("", alias, suffix));
        if let Some(enabled) = var("_ENABLED") {
            provider.enabled = Some(matches!(enabled.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        }
        if let Some(value) = var("_TENANT_ID") {
            provider.tenant_id = Some(value);
        }
        if let Some(value) = var("_ORGANIZATION") {
            provider.organization = Some(value);
        }
        if let Some(value) = var("_CLIENT_ID") {
            provider.client_id = Some(value);
        }
        if let Some(value) = var("_CLIENT_SECRET") {
            provider.client_secret = Some(SecretString::from(value));
        }
        if let Some(value) = var("_SCOPE") {
            provider.scopes = Some(value);
        }
        if let Some(value) = var("_AUTHORITY") {
            provider.authority = Some(value);
        }
    }
}

/// Collects problems instead of stopping at the first, so an operator fixes them in one go.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem { key: key.into(), message: message.into() });
    }
}

fn parse_bind(problems: &mut Problems, key: &str, value: Option<String>, default: &str) -> SocketAddr {
    let text = value.unwrap_or_else(|| default.to_owned());
    text.parse().unwrap_or_else(|_| {
        problems.add(key, format!("`{text}` is not a socket address; write it as `0.0.0.0:8080`"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn validate(mode: Mode, raw: RawSettings) -> Result<Settings, ConfigError> {
    let mut problems = Problems::default();
    let dev = mode == Mode::Development;
    let listen_host = if dev { "127.0.0.1" } else { "0.0.0.0" };

    let hostname = match raw.http.hostname.as_deref() {
        Some(text) => parse_hostname(&mut problems, dev, text),
        None if dev => None,
        None => {
            problems.add(
                "http.hostname",
                "required by `start`: the public base URL, e.g. `https://auth.app.example.com` (env BROKER_HOSTNAME)",
            );
            None
        }
    };
    let http = HttpSettings {
        hostname,
        bind: parse_bind(&mut problems, "http.bind", raw.http.bind, &format!("{listen_host}:8080")),
        management_bind: parse_bind(
            &mut problems,
            "http.management_bind",
            raw.http.management_bind,
            &format!("{listen_host}:9000"),
        ),
        internal_bind: parse_bind(
            &mut problems,
            "http.internal_bind",
            raw.http.internal_bind,
            &format!("{listen_host}:8081"),
        ),
        max_body_bytes: max_body_bytes(&mut problems, raw.http.max_body_bytes),
        request_timeout_seconds: request_timeout_seconds(&mut problems, raw.http.request_timeout_seconds),
    };

    let database_url = match raw.database.url {
        Some(url) => url,
        None if dev => SecretString::from(DEV_DATABASE_URL.to_owned()),
        None => {
            problems.add("database.url", "required by `start`: a `postgres://` URL (env DATABASE_URL)");
            SecretString::from(String::new())
        }
    };
    let url_text = database_url.expose_secret();
    let known_scheme = ["postgres://", "postgresql://", "sqlite:"].iter().any(|scheme| url_text.starts_with(scheme));
    if !url_text.is_empty() && !known_scheme {
        problems.add("database.url", "must start with `postgres://` or `sqlite:`");
    }
    let database = DatabaseSettings {
        url: database_url,
        max_connections: raw.database.max_connections.unwrap_or(20).max(1),
        migrate: raw.database.migrate.unwrap_or(true),
    };

    let realm = validate_realm(&mut problems, raw.realm);
    let clients = validate_clients(&mut problems, raw.clients);
    let providers = validate_providers(&mut problems, dev, raw.providers);
    let service_accounts = validate_service_accounts(&mut problems, raw.service_accounts, &providers);
    // One id names one caller: a service account must not answer to an application's id.
    let mut seen = std::collections::BTreeSet::new();
    let ids = clients.iter().map(|c| &c.client_id).chain(service_accounts.iter().map(|a| &a.client_id));
    for id in ids {
        if !seen.insert(id) {
            problems.add(
                "service_accounts",
                format!("client id `{id}` is used twice among [[clients]] and [[service_accounts]]"),
            );
        }
    }
    let vault = validate_vault(&mut problems, dev, raw.vault);

    let log_format = match raw.log.format.as_deref() {
        None => {
            if dev {
                LogFormat::Pretty
            } else {
                LogFormat::Json
            }
        }
        Some("json") => LogFormat::Json,
        Some("pretty") | Some("text") => LogFormat::Pretty,
        Some(other) => {
            problems.add("log.format", format!("`{other}` is not `json` or `pretty`"));
            LogFormat::Json
        }
    };

    let audit_retention_days = audit_retention_days(&mut problems, raw.audit.retention_days);

    if !problems.0.is_empty() {
        return Err(ConfigError { problems: problems.0 });
    }
    Ok(Settings {
        mode,
        http,
        database,
        realm,
        clients,
        service_accounts,
        providers,
        vault,
        log_format,
        audit_retention_days,
    })
}

/// Below this a token request carrying a refresh token, or Entra's callback with its long
/// code, may not fit, and every such POST would be refused with 413.
const MIN_BODY_BYTES: usize = 8 * 1024;

fn max_body_bytes(problems: &mut Problems, value: Option<usize>) -> usize {
    let bytes = value.unwrap_or(64 * 1024);
    if bytes < MIN_BODY_BYTES {
        problems.add(
            "http.max_body_bytes",
            format!(
                "`{bytes}` is too small for a token request or a sign-in callback: write at least {MIN_BODY_BYTES} (the default is 65536)"
            ),
        );
    }
    bytes
}

fn request_timeout_seconds(problems: &mut Problems, value: Option<u64>) -> u64 {
    let seconds = value.unwrap_or(30);
    if seconds < 1 {
        problems.add(
            "http.request_timeout_seconds",
            "`0` would answer every request with 408: write at least 1 (the default is 30)",
        );
    }
    seconds
}

/// A century is more than any retention policy asks for; far larger values overflow the
/// cut-off in seconds, which would put it in the future and delete every audit event.
const MAX_AUDIT_RETENTION_DAYS: i64 = 36_500;

fn audit_retention_days(problems: &mut Problems, value: Option<i64>) -> i64 {
    let days = value.unwrap_or(90);
    if days < 1 {
        problems.add(
            "audit.retention_days",
            format!(
                "`{days}` would delete every audit event at the next housekeeping: write at least 1 (days; the default is 90)"
            ),
        );
    } else if days > MAX_AUDIT_RETENTION_DAYS {
        problems.add(
            "audit.retention_days",
            format!(
                "`{days}` is more than a century: write at most {MAX_AUDIT_RETENTION_DAYS} (days; the default is 90)"
            ),
        );
    }
    days
}

fn parse_hostname(problems: &mut Problems, dev: bool, text: &str) -> Option<Url> {
    match Url::parse(text.trim_end_matches('/')) {
        Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && dev) => Some(url),
        Ok(url) if url.scheme() == "http" => {
            problems.add("http.hostname", "must be `https://` in production; `http://` is allowed only by `start-dev`");
            Some(url)
        }
        _ => {
            problems.add("http.hostname", format!("`{text}` is not an absolute https URL"));
            None
        }
    }
}

fn validate_realm(problems: &mut Problems, raw: RawRealm) -> RealmSettings {
    let name = raw.name.unwrap_or_else(|| "allhands".to_owned());
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        problems.add("realm.name", "use letters, digits, `-` and `_` only");
    }
    let mut positive = |key: &str, value: Option<i64>, default: i64| {
        let value = value.unwrap_or(default);
        if value <= 0 {
            problems.add(format!("realm.{key}"), "must be a positive number of seconds");
        }
        value
    };
    RealmSettings {
        name,
        access_token_lifespan_seconds: positive(
            "access_token_lifespan_seconds",
            raw.access_token_lifespan_seconds,
            300,
        ),
        sso_session_idle_seconds: positive("sso_session_idle_seconds", raw.sso_session_idle_seconds, 259_200),
        sso_session_max_seconds: positive("sso_session_max_seconds", raw.sso_session_max_seconds, 604_800),
        offline_session_idle_seconds: positive(
            "offline_session_idle_seconds",
            raw.offline_session_idle_seconds,
            2_592_000,
        ),
        authorization_code_lifespan_seconds: positive(
            "authorization_code_lifespan_seconds",
            raw.authorization_code_lifespan_seconds,
            60,
        ),
        login_timeout_seconds: positive("login_timeout_seconds", raw.login_timeout_seconds, 600),
    }
}

fn validate_clients(problems: &mut Problems, raw: Vec<RawClient>) -> Vec<ClientSettings> {
    let mut clients = Vec::new();
    for (index, client) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("clients[{index}].{field}");
        if client.client_id.is_empty() {
            problems.add(key("client_id"), "must not be empty");
            continue;
        }
        let credential = match (client.public_client, client.client_secret) {
            (true, _) => ClientCredential::Public,
            (false, Some(secret)) if !secret.expose_secret().is_empty() => {
                ClientCredential::Confidential(CtSecret::new(secret))
            }
            (false, _) => {
                problems.add(
                    key("client_secret"),
                    format!(
                        "missing for client `{}`: set it, or env {}, or `public_client = true`",
                        client.client_id,
                        env_name("BROKER_CLIENT_", &client.client_id, "_SECRET")
                    ),
                );
                continue;
            }
        };
        if client.redirect_uris.is_empty() {
            problems.add(key("redirect_uris"), "must list at least one exact redirect URI");
        }
        for uri in client.redirect_uris.iter().chain(&client.post_logout_redirect_uris) {
            if Url::parse(uri).is_err() || uri.contains('*') {
                problems
                    .add(key("redirect_uris"), format!("`{uri}` is not an absolute URL (wildcards are not supported)"));
            }
        }
        clients.push(ClientSettings {
            client_id: client.client_id,
            credential,
            redirect_uris: client.redirect_uris,
            post_logout_redirect_uris: client.post_logout_redirect_uris,
            read_token: client.read_token.unwrap_or(true),
            rotate_refresh_tokens: client.rotate_refresh_tokens,
        });
    }
    clients
}

fn validate_service_accounts(
    problems: &mut Problems,
    raw: Vec<RawServiceAccount>,
    providers: &[ProviderSettings],
) -> Vec<ServiceAccountSettings> {
    let mut accounts = Vec::new();
    for (index, account) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("service_accounts[{index}].{field}");
        let Some(secret) = account.client_secret.filter(|s| !s.expose_secret().is_empty()) else {
            problems.add(
                key("client_secret"),
                format!(
                    "missing for service account `{}`: set it or env {}",
                    account.client_id,
                    env_name("BROKER_CLIENT_", &account.client_id, "_SECRET")
                ),
            );
            continue;
        };
        for alias in &account.allowed_providers {
            if !providers.iter().any(|p| &p.alias == alias) {
                problems.add(key("allowed_providers"), format!("`{alias}` is not an enabled provider"));
            }
        }
        accounts.push(ServiceAccountSettings {
            client_id: account.client_id,
            client_secret: CtSecret::new(secret),
            allowed_providers: account.allowed_providers,
        });
    }
    accounts
}

fn validate_providers(problems: &mut Problems, dev: bool, raw: BTreeMap<String, RawProvider>) -> Vec<ProviderSettings> {
    let mut providers = Vec::new();
    for (alias, provider) in raw {
        if !provider.enabled.unwrap_or(true) {
            continue;
        }
        let key = |field: &str| format!("providers.{alias}.{field}");
        let env_hint = |suffix: &str| env_name("", &alias, suffix);
        if alias.is_empty() || !alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            problems.add(format!("providers.{alias}"), "the alias may hold letters, digits, `-` and `_` only");
            continue;
        }
        let tenant = match provider.tenant_id.as_deref() {
            Some(name @ ("organizations" | "common")) => Tenant::Multi(name.to_owned()),
            Some(text) => match Uuid::parse_str(text) {
                Ok(id) => Tenant::Single(id),
                Err(_) => {
                    problems.add(
                        key("tenant_id"),
                        format!("`{text}` is not a tenant GUID nor `organizations`/`common`; copy the Directory (tenant) ID from the app registration"),
                    );
                    continue;
                }
            },
            None => {
                problems.add(
                    key("tenant_id"),
                    format!("missing: the Entra tenant GUID or `organizations` (env {})", env_hint("_TENANT_ID")),
                );
                continue;
            }
        };
        let organization = match provider.organization {
            Some(org) if org.contains("://") || org.contains('/') || org.contains('.') => {
                let name = org.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
                problems.add(
                    key("organization"),
                    format!("give the organization name only, not a URL: write `{name}` instead of `{org}`"),
                );
                None
            }
            Some(org) if org.is_empty() => None,
            other => other,
        };
        let client_id = match provider.client_id {
            Some(id) if !id.is_empty() => id,
            _ => {
                problems.add(
                    key("client_id"),
                    format!(
                        "missing: the Application (client) ID of the Entra app registration (env {})",
                        env_hint("_CLIENT_ID")
                    ),
                );
                continue;
            }
        };
        let Some(client_secret) = provider.client_secret.filter(|s| !s.expose_secret().is_empty()) else {
            problems.add(
                key("client_secret"),
                format!(
                    "missing: create one under Certificates & secrets in the app registration (env {})",
                    env_hint("_CLIENT_SECRET")
                ),
            );
            continue;
        };
        let client_auth = match provider.client_auth_method.as_deref() {
            None | Some("client_secret_post") => UpstreamClientAuth::ClientSecretPost,
            Some("client_secret_basic") => UpstreamClientAuth::ClientSecretBasic,
            Some(other) => {
                problems.add(
                    key("client_auth_method"),
                    format!("`{other}` is not `client_secret_post` or `client_secret_basic`"),
                );
                UpstreamClientAuth::ClientSecretPost
            }
        };
        let authority_text = provider.authority.unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
        let authority = match Url::parse(authority_text.trim_end_matches('/')) {
            Ok(url) if url.scheme() == "https" => url,
            Ok(url) if url.scheme() == "http" && (dev || provider.allow_insecure_http) => url,
            Ok(_) => {
                problems.add(
                    key("authority"),
                    format!("`{authority_text}` is not https; set providers.{alias}.allow_insecure_http = true only for testing"),
                );
                continue;
            }
            Err(_) => {
                problems.add(key("authority"), format!("`{authority_text}` is not an absolute URL"));
                continue;
            }
        };
        let mut allowed_tenants = Vec::new();
        for tid in &provider.allowed_tenants {
            match Uuid::parse_str(tid) {
                Ok(id) => allowed_tenants.push(id),
                Err(_) => problems.add(key("allowed_tenants"), format!("`{tid}` is not a tenant GUID")),
            }
        }
        let scopes = provider.scopes.unwrap_or_else(|| DEFAULT_SCOPES.to_owned());
        if !scopes.split_whitespace().any(|s| s == "openid") {
            problems.add(key("scopes"), "must include `openid`");
        }
        providers.push(ProviderSettings {
            display_name: provider.display_name.unwrap_or_else(|| alias.replace('_', " ")),
            alias,
            tenant,
            organization,
            client_id,
            client_secret,
            client_auth,
            scopes,
            authority,
            allowed_tenants,
            trust_email: provider.trust_email.unwrap_or(true),
            store_token: provider.store_token.unwrap_or(true),
        });
    }
    providers
}

fn validate_vault(problems: &mut Problems, dev: bool, raw: RawVault) -> VaultSettings {
    let mut keys: Vec<VaultKey> = Vec::new();
    for (index, entry) in raw.encryption_keys.iter().enumerate() {
        let key_name = format!("vault.encryption_keys[{index}]");
        match parse_vault_key(entry.expose_secret()) {
            Ok(key) if keys.iter().any(|k| k.id == key.id) => {
                problems.add(key_name, format!("key id `{}` appears twice", key.id));
            }
            Ok(key) => keys.push(key),
            Err(message) => problems.add(key_name, message),
        }
    }
    if keys.is_empty() && !dev {
        problems.add(
            "vault.encryption_keys",
            "`start` needs at least one key `id:<base64 of 32 random bytes>` (env BROKER_ENCRYPTION_KEYS); make one with `openssl rand -base64 32`",
        );
    }
    VaultSettings {
        encryption_keys: keys,
        refresh_before_expiry_seconds: raw.refresh_before_expiry_seconds.unwrap_or(300).max(0),
        keepalive_after_seconds: raw.keepalive_after_seconds.unwrap_or(14 * 24 * 3600).max(3600),
        keepalive_interval_seconds: raw.keepalive_interval_seconds.unwrap_or(300).max(1),
        keepalive_batch_size: raw.keepalive_batch_size.unwrap_or(5).clamp(1, 1000),
        refresh_wait_seconds: raw.refresh_wait_seconds.unwrap_or(20).clamp(1, 120),
        cache_megabytes: raw.cache_megabytes.unwrap_or(32).min(64 * 1024),
    }
}

/// Parses `id:<base64 32 bytes>`; the message never repeats the key material.
pub fn parse_vault_key(text: &str) -> Result<VaultKey, String> {
    let Some((id, material)) = text.split_once(':') else {
        return Err("write each key as `id:<base64 of 32 bytes>`".to_owned());
    };
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err("the key id before `:` may hold letters, digits, `-` and `_` only".to_owned());
    }
    let bytes = BASE64.decode(material.trim()).map_err(|_| format!("key `{id}` is not valid base64"))?;
    let key: [u8; 32] =
        bytes.try_into().map_err(|b: Vec<u8>| format!("key `{id}` is {} bytes; AES-256 needs exactly 32", b.len()))?;
    Ok(VaultKey { id: id.to_owned(), key: SecretBox::new(Box::new(key)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn production(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_toml(Mode::Production, text, |name| {
            env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        })
    }

    fn minimal(extra: &str) -> String {
        format!(
            r#"
[http]
hostname = "https://auth.example.com"
[database]
url = "postgres://broker@db/broker"
[vault]
encryption_keys = ["{KEY}"]
[[clients]]
client_id = "allhands"
client_secret = "s3cret"
redirect_uris = ["https://app.example.com/cb"]
{extra}"#
        )
    }

    const PROVIDER: &str = r#"
[providers.azure_devops]
tenant_id = "organizations"
organization = "contoso"
client_id = "abc"
client_secret = "xyz"
"#;

    #[test]
    fn minimal_production_configuration_loads() {
        let settings = production(&minimal(PROVIDER), &[]).expect("valid");
        assert_eq!(settings.realm.name, "allhands");
        assert_eq!(settings.providers[0].tenant, Tenant::Multi("organizations".into()));
        assert_eq!(settings.providers[0].scopes, DEFAULT_SCOPES);
        assert_eq!(settings.vault.encryption_keys[0].id, "k1");
    }

    #[test]
    fn a_service_account_may_not_reuse_an_application_client_id() {
        let account = "[[service_accounts]]\nclient_id = \"allhands\"\nclient_secret = \"x\"\nallowed_providers = []\n";
        let err = production(&minimal(&format!("{PROVIDER}{account}")), &[]).expect_err("duplicate id");
        assert!(err.mentions("service_accounts"), "{err}");
        assert!(err.to_string().contains("`allhands` is used twice"), "{err}");
    }

    #[test]
    fn start_refuses_missing_essentials_naming_each_key() {
        let err = production("", &[]).expect_err("nothing configured");
        for key in ["http.hostname", "database.url", "vault.encryption_keys"] {
            assert!(err.mentions(key), "expected a problem for {key}: {err}");
        }
    }

    const HOSTNAME: &str = "hostname = \"https://auth.example.com\"";

    /// Edits of `minimal(PROVIDER)` that make one key wrong: why, the text replaced, its
    /// replacement, the key that must be named and a word of the fix.
    const BAD_VALUES: &[(&str, &str, &str, &str, &str)] = &[
        (
            "an organization given as its URL",
            "organization = \"contoso\"",
            "organization = \"https://dev.azure.com/contoso\"",
            "providers.azure_devops.organization",
            "write `contoso`",
        ),
        (
            "a tenant id that is neither a GUID nor a multi-tenant name",
            "tenant_id = \"organizations\"",
            "tenant_id = \"not-a-guid\"",
            "providers.azure_devops.tenant_id",
            "tenant GUID",
        ),
        (
            "an http:// authority without allow_insecure_http",
            "client_id = \"abc\"",
            "client_id = \"abc\"\nauthority = \"http://login.example\"",
            "providers.azure_devops.authority",
            "allow_insecure_http",
        ),
        (
            "a provider without its client secret",
            "client_secret = \"xyz\"",
            "",
            "providers.azure_devops.client_secret",
            "AZURE_DEVOPS_CLIENT_SECRET",
        ),
        (
            "a body limit of 0 refuses every form POST",
            HOSTNAME,
            "hostname = \"https://auth.example.com\"\nmax_body_bytes = 0",
            "http.max_body_bytes",
            "at least 8192",
        ),
        (
            "a body limit of 1 KiB refuses a token request carrying a refresh token",
            HOSTNAME,
            "hostname = \"https://auth.example.com\"\nmax_body_bytes = 1024",
            "http.max_body_bytes",
            "at least 8192",
        ),
        (
            "a request timeout of 0 answers 408 forever",
            HOSTNAME,
            "hostname = \"https://auth.example.com\"\nrequest_timeout_seconds = 0",
            "http.request_timeout_seconds",
            "at least 1",
        ),
        (
            "an audit retention of 0 days deletes every audit event",
            "[vault]",
            "[audit]\nretention_days = 0\n[vault]",
            "audit.retention_days",
            "at least 1",
        ),
        (
            "a negative audit retention deletes every audit event",
            "[vault]",
            "[audit]\nretention_days = -30\n[vault]",
            "audit.retention_days",
            "at least 1",
        ),
        (
            "an audit retention so long that its seconds overflow",
            "[vault]",
            "[audit]\nretention_days = 200000000000000\n[vault]",
            "audit.retention_days",
            "at most 36500",
        ),
    ];

    fn with_edit(from: &str, to: &str) -> String {
        let text = minimal(PROVIDER);
        assert!(text.contains(from), "`{from}` is not in the minimal configuration");
        text.replacen(from, to, 1)
    }

    #[test]
    fn bad_values_are_refused_with_the_key_and_the_fix() {
        for (why, from, to, key, hint) in BAD_VALUES {
            let err = production(&with_edit(from, to), &[]).expect_err(why);
            let problem = err
                .problems
                .iter()
                .find(|p| p.key == *key)
                .unwrap_or_else(|| panic!("{why}: no problem for {key}: {err}"));
            assert!(problem.message.contains(hint), "{why}: message `{}` lacks `{hint}`", problem.message);
        }
    }

    #[test]
    fn each_bad_value_is_reported_beside_another_wrong_key() {
        for (why, from, to, key, _) in BAD_VALUES {
            let text = format!("{}\n[log]\nformat = \"xml\"\n", with_edit(from, to));
            let err = production(&text, &[]).expect_err(why);
            assert!(err.mentions(key), "{why}: {key} must be reported beside log.format: {err}");
            assert!(err.mentions("log.format"), "{why}: log.format must be reported too: {err}");
        }
    }

    #[test]
    fn the_bounds_themselves_are_accepted() {
        let cases = [
            ("the smallest body limit", HOSTNAME, "hostname = \"https://auth.example.com\"\nmax_body_bytes = 8192"),
            ("a one-second timeout", HOSTNAME, "hostname = \"https://auth.example.com\"\nrequest_timeout_seconds = 1"),
            ("one day of audit events", "[vault]", "[audit]\nretention_days = 1\n[vault]"),
            ("a century of audit events", "[vault]", "[audit]\nretention_days = 36500\n[vault]"),
        ];
        for (why, from, to) in cases {
            if let Err(err) = production(&with_edit(from, to), &[]) {
                panic!("{why} must load: {err}");
            }
        }
    }

    #[test]
    fn missing_client_secret_empty_redirects_and_short_keys_are_refused() {
        let text = r#"
[http]
hostname = "https://auth.example.com"
[database]
url = "postgres://x@y/z"
[vault]
encryption_keys = ["k1:AAEC"]
[[clients]]
client_id = "allhands"
redirect_uris = []
[[clients]]
client_id = "other"
client_secret = "x"
redirect_uris = []
"#;
        let err = production(text, &[]).expect_err("invalid");
        assert!(err.mentions("clients[0].client_secret"), "{err}");
        assert!(err.mentions("clients[1].redirect_uris"), "{err}");
        let key_problem = err.problems.iter().find(|p| p.key == "vault.encryption_keys[0]").expect("key problem");
        assert!(key_problem.message.contains("32"), "{}", key_problem.message);
        assert!(!err.to_string().contains("AAEC"), "key material must not be echoed");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = [
            ("AZURE_DEVOPS_TENANT_ID", "3f0e1b0c-1111-2222-3333-444455556666"),
            ("AZURE_DEVOPS_CLIENT_ID", "from-env"),
            ("AZURE_DEVOPS_CLIENT_SECRET", "env-secret"),
            ("BROKER_CLIENT_ALLHANDS_SECRET", "env-client-secret"),
            ("DATABASE_URL", "postgres://env@db/env"),
        ];
        let settings = production(&minimal(""), &env).expect("valid from env");
        let provider = &settings.providers[0];
        assert_eq!(provider.alias, "azure_devops");
        assert_eq!(provider.client_id, "from-env");
        assert!(matches!(provider.tenant, Tenant::Single(_)));
        assert_eq!(settings.database.url.expose_secret(), "postgres://env@db/env");
        let ClientCredential::Confidential(secret) = &settings.clients[0].credential else { panic!("confidential") };
        assert!(secret.matches("env-client-secret"));
    }

    #[test]
    fn development_needs_nothing() {
        let settings = Settings::from_toml(Mode::Development, "", |_| None).expect("defaults");
        assert_eq!(settings.database.url.expose_secret(), DEV_DATABASE_URL);
        assert_eq!(settings.http.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.log_format, LogFormat::Pretty);
    }

    #[test]
    fn the_shipped_example_files_load() {
        let example = include_str!("../config/production.example.toml");
        let env = [
            ("BROKER_ENCRYPTION_KEYS", KEY),
            ("BROKER_CLIENT_ALLHANDS_SECRET", "a"),
            ("BROKER_CLIENT_OPENHANDS_RUNTIME_SECRET", "b"),
            ("AZURE_DEVOPS_CLIENT_SECRET", "c"),
        ];
        let settings = production(example, &env).unwrap_or_else(|err| panic!("production example: {err}"));
        assert_eq!(settings.service_accounts[0].allowed_providers, ["azure_devops"]);
        let dev = Settings::from_toml(Mode::Development, include_str!("../config/dev.toml"), |_| None);
        assert!(dev.is_ok_and(|s| s.providers.is_empty()), "dev.toml loads with the provider disabled");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let settings = production(&minimal(PROVIDER), &[]).expect("valid");
        let debug = format!("{settings:?}");
        for secret in ["s3cret", "xyz", "AAECAwQF", "postgres://broker@db"] {
            assert!(!debug.contains(secret), "Debug leaks `{secret}`");
        }
    }
}
