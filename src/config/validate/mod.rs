//! Validation: turns the raw tree into `Settings` with defaults, or lists every problem with its key and the fix.

mod providers;
mod smtp;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::environment::env_name;
use super::raw::{RawAdmin, RawClient, RawDatabase, RawHttp, RawRealm, RawServiceAccount, RawSettings, RawVault};
use super::{
    AdminRole, AdminSettings, ClientCredential, ClientSettings, ConfigError, ConfigProblem, DEV_DATABASE_URL,
    DatabaseSettings, HttpSettings, LogFormat, Mode, ProviderSettings, RealmSettings, ServiceAccountSettings, Settings,
    VaultKey, VaultSettings, is_role_name, parse_vault_key,
};
use crate::crypto::{CtSecret, JwsAlgorithm};
use crate::urls::MASTER_REALM;

/// Collects problems instead of stopping at the first, so an operator fixes them in one go.
#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem { key: key.into(), message: message.into() });
    }

    /// Taking `self` means no check can run after the verdict and go unreported.
    fn into_result(self, settings: Settings) -> Result<Settings, ConfigError> {
        if self.0.is_empty() { Ok(settings) } else { Err(ConfigError { problems: self.0 }) }
    }
}

pub(super) fn validate(mode: Mode, raw: RawSettings) -> Result<Settings, ConfigError> {
    let mut problems = Problems::default();
    let dev = mode == Mode::Development;
    let http = validate_http(&mut problems, dev, raw.http);
    let database = validate_database(&mut problems, dev, raw.database);
    let realm = validate_realm(&mut problems, raw.realm);
    let clients = validate_clients(&mut problems, raw.clients);
    let providers = providers::validate_providers(&mut problems, dev, raw.providers);
    let service_accounts = validate_service_accounts(&mut problems, raw.service_accounts, &providers);
    check_client_ids_are_unique(&mut problems, &clients, &service_accounts);
    let vault = validate_vault(&mut problems, dev, raw.vault, http.request_timeout_seconds);
    let log_format = validate_log_format(&mut problems, dev, raw.log.format.as_deref());
    let audit_retention_days = validate_audit_retention_days(&mut problems, raw.audit.retention_days);
    let development_provider = validate_development_provider(&mut problems, dev, raw.development.provider);
    let smtp = raw.smtp.and_then(|smtp| smtp::validate_smtp(&mut problems, smtp));
    let admin = validate_admin(&mut problems, raw.admin);
    problems.into_result(Settings {
        mode,
        http,
        database,
        realm,
        clients,
        service_accounts,
        providers,
        vault,
        admin,
        log_format,
        audit_retention_days,
        development_provider,
        smtp,
    })
}

/// The development provider signs anyone in as anyone: `start-dev` only, and off whenever a
/// real provider is configured (the application decides that, once it knows the providers).
fn validate_development_provider(problems: &mut Problems, dev: bool, value: Option<bool>) -> bool {
    if !dev && value == Some(true) {
        problems.add(
            "development.provider",
            "the built-in development provider lets anyone sign in as anyone: it runs only with `start-dev`; \
             remove the key and configure a real provider",
        );
    }
    dev && value != Some(false)
}

fn validate_http(problems: &mut Problems, dev: bool, raw: RawHttp) -> HttpSettings {
    let listen_host = if dev { "127.0.0.1" } else { "0.0.0.0" };
    HttpSettings {
        hostname: parse_hostname(problems, dev, raw.hostname.as_deref()),
        bind: parse_bind(problems, "http.bind", raw.bind, &format!("{listen_host}:8080")),
        management_bind: parse_bind(
            problems,
            "http.management_bind",
            raw.management_bind,
            &format!("{listen_host}:9000"),
        ),
        internal_bind: parse_bind(problems, "http.internal_bind", raw.internal_bind, &format!("{listen_host}:8081")),
        max_body_bytes: validate_max_body_bytes(problems, raw.max_body_bytes),
        request_timeout_seconds: validate_request_timeout_seconds(problems, raw.request_timeout_seconds),
        header_read_timeout_seconds: seconds_within(
            problems,
            "http.header_read_timeout_seconds",
            raw.header_read_timeout_seconds,
            DEFAULT_HEADER_READ_TIMEOUT_SECONDS,
            3600,
        ),
        idle_timeout_seconds: seconds_within(
            problems,
            "http.idle_timeout_seconds",
            raw.idle_timeout_seconds,
            DEFAULT_IDLE_TIMEOUT_SECONDS,
            24 * 3600,
        ),
        max_connections: validate_max_connections(problems, raw.max_connections),
        trusted_proxies: parse_trusted_proxies(problems, raw.trusted_proxies.unwrap_or_default()),
        pending_sign_ins_per_address: count_within(
            problems,
            "http.pending_sign_ins_per_address",
            raw.pending_sign_ins_per_address,
            DEFAULT_PENDING_SIGN_INS_PER_ADDRESS,
        ),
        max_pending_sign_ins: count_within(
            problems,
            "http.max_pending_sign_ins",
            raw.max_pending_sign_ins,
            DEFAULT_MAX_PENDING_SIGN_INS,
        ),
    }
}

/// An office behind one NAT address starts many sign-ins at once; a stranger repeating `/auth`
/// stops here. Finished sign-ins free their place at once, abandoned ones when they expire.
const DEFAULT_PENDING_SIGN_INS_PER_ADDRESS: u32 = 100;
/// About 60 MB of pending rows at their longest parameters: far below what troubles a database.
const DEFAULT_MAX_PENDING_SIGN_INS: u32 = 20_000;

/// A count from 1 to 1,000,000, `default` when unset.
fn count_within(problems: &mut Problems, key: &str, value: Option<u32>, default: u32) -> u32 {
    let count = value.unwrap_or(default);
    if !(1..=1_000_000).contains(&count) {
        problems.add(key, format!("`{count}` is out of range: write from 1 to 1000000 (the default is {default})"));
    }
    count.clamp(1, 1_000_000)
}

/// CIDRs (`10.0.0.0/8`) or single addresses (`10.1.2.3`, taken as `/32` or `/128`).
fn parse_trusted_proxies(problems: &mut Problems, entries: Vec<String>) -> Vec<ipnet::IpNet> {
    let mut networks = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry = entry.trim();
        let parsed =
            entry.parse::<ipnet::IpNet>().or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(network) => networks.push(network.trunc()),
            Err(_) => problems.add(
                "http.trusted_proxies",
                format!("`{entry}` is not an address or a CIDR block: write e.g. `10.0.0.0/8` or `10.1.2.3`"),
            ),
        }
    }
    networks
}

/// Time for a request's headers: ample for any client, short enough that a stranger who
/// opens connections and trickles bytes (or none) cannot hold them.
const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
/// Longer than ingress-nginx's upstream keep-alive (60 s), so that the proxy, not the broker,
/// closes the connections it pools and never sends a request on one the broker just closed.
const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 75;
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// A whole number of seconds from 1 to `max`, `default` when unset.
fn seconds_within(problems: &mut Problems, key: &str, value: Option<u64>, default: u64, max: u64) -> u64 {
    let seconds = value.unwrap_or(default);
    if !(1..=max).contains(&seconds) {
        problems
            .add(key, format!("`{seconds}` is out of range: write from 1 to {max} seconds (the default is {default})"));
    }
    seconds.clamp(1, max)
}

fn validate_max_connections(problems: &mut Problems, value: Option<usize>) -> usize {
    let connections = value.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=65_536).contains(&connections) {
        problems.add(
            "http.max_connections",
            format!(
                "`{connections}` is out of range: write from 1 to 65536 connections per listener (the default is {DEFAULT_MAX_CONNECTIONS})"
            ),
        );
    }
    connections.clamp(1, 65_536)
}

fn parse_hostname(problems: &mut Problems, dev: bool, text: Option<&str>) -> Option<Url> {
    let Some(text) = text else {
        if !dev {
            problems.add(
                "http.hostname",
                "required by `start`: the public base URL, e.g. `https://auth.app.example.com` (env BROKER_HOSTNAME)",
            );
        }
        return None;
    };
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

fn parse_bind(problems: &mut Problems, key: &str, value: Option<String>, default: &str) -> SocketAddr {
    let text = value.unwrap_or_else(|| default.to_owned());
    text.parse().unwrap_or_else(|_| {
        problems.add(key, format!("`{text}` is not a socket address; write it as `0.0.0.0:8080`"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// Below this a token request carrying a refresh token, or Entra's callback with its long
/// code, may not fit, and every such POST would be refused with 413.
const MIN_BODY_BYTES: usize = 8 * 1024;

fn validate_max_body_bytes(problems: &mut Problems, value: Option<usize>) -> usize {
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

fn validate_request_timeout_seconds(problems: &mut Problems, value: Option<u64>) -> u64 {
    let seconds = value.unwrap_or(30);
    if seconds < 1 {
        problems.add(
            "http.request_timeout_seconds",
            "`0` would answer every request with 408: write at least 1 (the default is 30)",
        );
    }
    seconds
}

fn validate_database(problems: &mut Problems, dev: bool, raw: RawDatabase) -> DatabaseSettings {
    let url = match raw.url {
        Some(url) => url,
        None if dev => SecretString::from(DEV_DATABASE_URL.to_owned()),
        None => {
            problems.add("database.url", "required by `start`: a `postgres://` URL (env DATABASE_URL)");
            SecretString::from(String::new())
        }
    };
    let text = url.expose_secret();
    let known_scheme = ["postgres://", "postgresql://", "sqlite:"].iter().any(|scheme| text.starts_with(scheme));
    if !text.is_empty() && !known_scheme {
        problems.add("database.url", "must start with `postgres://` or `sqlite:`");
    }
    DatabaseSettings {
        url,
        max_connections: raw.max_connections.unwrap_or(20).max(1),
        acquire_timeout_seconds: seconds_within(
            problems,
            "database.acquire_timeout_seconds",
            raw.acquire_timeout_seconds,
            2,
            60,
        ),
        migrate: raw.migrate.unwrap_or(true),
    }
}

fn validate_realm(problems: &mut Problems, raw: RawRealm) -> RealmSettings {
    let name = raw.name.unwrap_or_else(|| "allhands".to_owned());
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        problems.add("realm.name", "use letters, digits, `-` and `_` only");
    }
    if name == MASTER_REALM {
        problems.add(
            "realm.name",
            format!(
                "`{MASTER_REALM}` is Keycloak's administrator realm (the admin API's sign-in): choose another name"
            ),
        );
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
        signature_algorithm: signature_algorithm(problems, raw.signature_algorithm.as_deref()),
        brute_force_failures: brute_force_failures(problems, raw.brute_force.failures),
        default_roles: default_roles(problems, raw.default_roles),
    }
}

/// `realm.default_roles`: Keycloak's, `offline_access` and `uma_authorization`, unless given.
fn default_roles(problems: &mut Problems, roles: Option<Vec<String>>) -> Vec<String> {
    let mut roles = roles.unwrap_or_else(|| vec!["offline_access".to_owned(), "uma_authorization".to_owned()]);
    if let Some(bad) = roles.iter().find(|role| !is_role_name(role)) {
        problems.add(
            "realm.default_roles",
            format!("`{bad}` is not a role name: 1 to 255 characters, no control characters"),
        );
    }
    roles.sort();
    roles.dedup();
    roles
}

/// `realm.brute_force.failures`: 30 by default, as OpenHands' realm sets Keycloak's
/// `failureFactor`.
fn brute_force_failures(problems: &mut Problems, failures: Option<i64>) -> i64 {
    let failures = failures.unwrap_or(30);
    if !(1..=10_000).contains(&failures) {
        problems.add("realm.brute_force.failures", "must be a number of wrong passwords from 1 to 10000");
    }
    failures
}

/// `realm.signature_algorithm`: one of the public-key algorithms, `RS256` by default.
fn signature_algorithm(problems: &mut Problems, name: Option<&str>) -> JwsAlgorithm {
    let Some(name) = name else {
        return JwsAlgorithm::Rs256;
    };
    match JwsAlgorithm::from_name(name) {
        Some(algorithm) if algorithm.is_public() => algorithm,
        Some(_) => {
            problems.add(
                "realm.signature_algorithm",
                format!("`{name}` is the refresh tokens' own algorithm; choose `RS256`, `ES256` or `EdDSA`"),
            );
            JwsAlgorithm::Rs256
        }
        None => {
            problems.add(
                "realm.signature_algorithm",
                format!("`{name}` is not supported; choose `RS256` (the default), `ES256` or `EdDSA`, spelled so"),
            );
            JwsAlgorithm::Rs256
        }
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
            allow_plain_pkce: client.allow_plain_pkce,
            direct_access_grants: client.direct_access_grants,
            roles_claim: client.roles_claim,
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
        let mut admin_roles = Vec::new();
        for name in &account.admin_roles {
            match AdminRole::parse(name) {
                Some(role) => admin_roles.push(role),
                None => problems.add(
                    key("admin_roles"),
                    format!("`{name}` is not a role the admin API knows: use {}", AdminRole::NAMES.join(" or ")),
                ),
            }
        }
        accounts.push(ServiceAccountSettings {
            client_id: account.client_id,
            client_secret: CtSecret::new(secret),
            allowed_providers: account.allowed_providers,
            admin_roles,
        });
    }
    accounts
}

/// One id names one caller: a service account must not answer to an application's id.
fn check_client_ids_are_unique(
    problems: &mut Problems,
    clients: &[ClientSettings],
    service_accounts: &[ServiceAccountSettings],
) {
    let mut seen = BTreeSet::new();
    let ids = clients.iter().map(|c| &c.client_id).chain(service_accounts.iter().map(|a| &a.client_id));
    for id in ids {
        if id == "admin-cli" {
            problems.add(
                "service_accounts",
                "client id `admin-cli` is Keycloak's administrator client (the admin API's sign-in): choose another id",
            );
        }
        if !seen.insert(id) {
            problems.add(
                "service_accounts",
                format!("client id `{id}` is used twice among [[clients]] and [[service_accounts]]"),
            );
        }
    }
}

/// The admin REST API is off without a password; an empty one is a mistake, not "off".
fn validate_admin(problems: &mut Problems, raw: RawAdmin) -> AdminSettings {
    let username = raw.username.unwrap_or_else(|| "admin".to_owned());
    if username.trim().is_empty() {
        problems.add("admin.username", "must not be empty (env BROKER_ADMIN_USERNAME; the default is `admin`)");
    }
    let password = match raw.password {
        Some(password) if password.expose_secret().is_empty() => {
            problems.add(
                "admin.password",
                "is empty: set a password (env BROKER_ADMIN_PASSWORD or KEYCLOAK_ADMIN_PASSWORD), or remove the key to turn the admin API off",
            );
            None
        }
        Some(password) => Some(CtSecret::new(password)),
        None => None,
    };
    let mut positive = |key: &str, value: Option<i64>, default: i64| {
        let value = value.unwrap_or(default);
        if value <= 0 {
            problems.add(
                format!("admin.{key}"),
                format!("must be a positive number of seconds (the default is {default})"),
            );
        }
        value
    };
    AdminSettings {
        username,
        password,
        access_token_lifespan_seconds: positive("access_token_lifespan_seconds", raw.access_token_lifespan_seconds, 60),
        session_idle_seconds: positive("session_idle_seconds", raw.session_idle_seconds, 1800),
        session_max_seconds: positive("session_max_seconds", raw.session_max_seconds, 36_000),
    }
}

fn validate_vault(problems: &mut Problems, dev: bool, raw: RawVault, request_timeout_seconds: u64) -> VaultSettings {
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
        refresh_timeout_seconds: validate_refresh_timeout_seconds(
            problems,
            raw.refresh_timeout_seconds,
            raw.refresh_wait_seconds,
            request_timeout_seconds,
        ),
        cache_megabytes: raw.cache_megabytes.unwrap_or(32).min(64 * 1024),
        max_refreshes_per_second: validate_max_refreshes(problems, raw.max_refreshes_per_second),
    }
}

/// `vault.max_refreshes_per_second`: 50 by default, 1 to 10,000.
fn validate_max_refreshes(problems: &mut Problems, value: Option<u32>) -> u32 {
    const DEFAULT: u32 = 50;
    match value {
        None => DEFAULT,
        Some(rate @ 1..=10_000) => rate,
        Some(rate) => {
            problems.add(
                "vault.max_refreshes_per_second",
                format!("{rate} is out of range: give 1 to 10000 refreshes a second per replica (default 50)"),
            );
            DEFAULT
        }
    }
}

/// The longest a read may wait for a refresh: a minute is already far beyond what a caller
/// holding a request open will wait.
const MAX_REFRESH_TIMEOUT_SECONDS: u64 = 60;
const DEFAULT_REFRESH_TIMEOUT_SECONDS: u64 = 10;

/// The refresh deadline must end before the request timeout does, or a read that waits for a
/// refresh gets a bare 408 instead of the stored token or a 503 with `Retry-After`.
fn validate_refresh_timeout_seconds(
    problems: &mut Problems,
    value: Option<u64>,
    replaced_wait: Option<u64>,
    request_timeout_seconds: u64,
) -> u64 {
    const KEY: &str = "vault.refresh_timeout_seconds";
    if replaced_wait.is_some() {
        problems.add(
            "vault.refresh_wait_seconds",
            "replaced by `vault.refresh_timeout_seconds` (default 10), one deadline for the whole refresh and every \
             read waiting on it, here or on another replica: rename the key",
        );
    }
    let Some(seconds) = value else {
        // A request timeout below the default shortens the default rather than failing it.
        return DEFAULT_REFRESH_TIMEOUT_SECONDS.min(request_timeout_seconds.saturating_sub(1)).max(1);
    };
    if !(1..=MAX_REFRESH_TIMEOUT_SECONDS).contains(&seconds) {
        problems.add(
            KEY,
            format!("`{seconds}` is out of range: write 1 to {MAX_REFRESH_TIMEOUT_SECONDS} (the default is 10)"),
        );
    } else if seconds >= request_timeout_seconds {
        problems.add(
            KEY,
            format!(
                "`{seconds}` must be below `http.request_timeout_seconds` ({request_timeout_seconds}), or a read waiting \
                 for a refresh is cut off with 408 instead of getting the stored token or 503 with Retry-After"
            ),
        );
    }
    seconds.clamp(1, MAX_REFRESH_TIMEOUT_SECONDS)
}

fn validate_log_format(problems: &mut Problems, dev: bool, format: Option<&str>) -> LogFormat {
    match format {
        None if dev => LogFormat::Pretty,
        None | Some("json") => LogFormat::Json,
        Some("pretty") | Some("text") => LogFormat::Pretty,
        Some(other) => {
            problems.add("log.format", format!("`{other}` is not `json` or `pretty`"));
            LogFormat::Json
        }
    }
}

/// A century is more than any retention policy asks for; far larger values overflow the
/// cut-off in seconds, which would put it in the future and delete every audit event.
const MAX_AUDIT_RETENTION_DAYS: i64 = 36_500;

fn validate_audit_retention_days(problems: &mut Problems, value: Option<i64>) -> i64 {
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
