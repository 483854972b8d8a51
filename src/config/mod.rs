//! The typed settings tree every other module reads, and the one way to build it: file, environment, validation.

mod environment;
mod raw;
#[cfg(test)]
mod tests;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{SecretBox, SecretString};
use url::Url;
use uuid::Uuid;

pub(crate) use crate::crypto::VaultKey;
use crate::crypto::{CtSecret, JwsAlgorithm};
pub(crate) use environment::env_name;
use raw::RawSettings;

/// Which command started the process; it decides defaults and how strict validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `start-dev`: SQLite, loopback listeners, `http://` allowed, keys generated.
    Development,
    /// `start` and `migrate`: everything must be configured explicitly.
    Production,
}

pub(crate) const DEV_DATABASE_URL: &str = "sqlite://./data/identity-broker.db?mode=rwc";
pub(crate) const DEFAULT_SCOPES: &str =
    "openid profile email offline_access https://app.vssps.visualstudio.com/.default";
pub(crate) const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub(crate) const DEFAULT_DEVOPS_URL: &str = "https://dev.azure.com";

#[derive(Debug)]
pub struct Settings {
    pub(crate) mode: Mode,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub(crate) realm: RealmSettings,
    pub(crate) clients: Vec<ClientSettings>,
    pub(crate) service_accounts: Vec<ServiceAccountSettings>,
    pub(crate) providers: Vec<ProviderSettings>,
    pub(crate) vault: VaultSettings,
    pub(crate) admin: AdminSettings,
    pub(crate) log_format: LogFormat,
    /// Audit events older than this are deleted by housekeeping.
    pub(crate) audit_retention_days: i64,
    /// `start-dev` only: sign in through the built-in development provider when no real
    /// provider is configured (`development.provider`, default true there; never in `start`).
    pub(crate) development_provider: bool,
    /// `[smtp]`: how send-verify-email's messages leave; `None` refuses such requests.
    pub(crate) smtp: Option<SmtpSettings>,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Public base URL without a trailing slash; `None` only in development, where the
    /// bound public address is used.
    pub(crate) hostname: Option<Url>,
    pub bind: SocketAddr,
    pub management_bind: SocketAddr,
    pub internal_bind: SocketAddr,
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout_seconds: u64,
    /// How long a connection may take to send a request's headers, from its opening or from
    /// the first byte of a later request; then it is closed.
    pub(crate) header_read_timeout_seconds: u64,
    /// How long a connection may stay open between requests.
    pub(crate) idle_timeout_seconds: u64,
    /// Connections each listener serves at once; more wait in the kernel's queue.
    pub(crate) max_connections: usize,
    /// Peers whose `X-Forwarded-For` is believed (the ingress controller's addresses); empty:
    /// the peer address is the client's.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    /// Sign-ins started and not finished that one client address may hold at once.
    pub(crate) pending_sign_ins_per_address: u32,
    /// Sign-ins started and not finished, from everyone: beyond it new ones are answered 503.
    pub(crate) max_pending_sign_ins: u32,
}

#[derive(Debug)]
pub struct DatabaseSettings {
    pub(crate) url: SecretString,
    pub(crate) max_connections: u32,
    /// How long a request waits for a pooled connection before it is answered 503.
    pub(crate) acquire_timeout_seconds: u64,
    pub migrate: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RealmSettings {
    pub(crate) name: String,
    pub(crate) access_token_lifespan_seconds: i64,
    pub(crate) sso_session_idle_seconds: i64,
    pub(crate) sso_session_max_seconds: i64,
    pub(crate) offline_session_idle_seconds: i64,
    pub(crate) authorization_code_lifespan_seconds: i64,
    pub(crate) login_timeout_seconds: i64,
    /// Signs access and ID tokens (Keycloak's realm setting of that name); refresh and
    /// offline tokens are always HS512.
    pub(crate) signature_algorithm: JwsAlgorithm,
    /// Keycloak's `failureFactor`: wrong passwords in a row before a user's password sign-ins
    /// are locked for a while (`realm.brute_force.failures`).
    pub(crate) brute_force_failures: i64,
    /// Realm roles every user holds (Keycloak's default roles), in name order.
    pub(crate) default_roles: Vec<String>,
}

impl RealmSettings {
    /// `held` with the realm's default roles, in name order, once each: the roles a user has.
    pub(crate) fn with_default_roles(&self, mut held: Vec<String>) -> Vec<String> {
        held.extend(self.default_roles.iter().cloned());
        held.sort();
        held.dedup();
        held
    }
}

/// The longest realm role name accepted (Keycloak's column is 255 characters).
pub(crate) const MAX_ROLE_NAME_LENGTH: usize = 255;

/// A realm role's name as the realm takes it, from configuration, a provider or the admin API:
/// 1 to 255 characters, none of them a control character.
pub(crate) fn is_role_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= MAX_ROLE_NAME_LENGTH && !name.chars().any(char::is_control)
}

#[derive(Debug, Clone)]
pub(crate) enum ClientCredential {
    Confidential(CtSecret),
    /// A public client has no secret at all; it must use PKCE.
    Public,
}

#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    pub(crate) client_id: String,
    pub(crate) credential: ClientCredential,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) post_logout_redirect_uris: Vec<String>,
    /// Keycloak's `broker.read-token` role in the client's access tokens: whether the
    /// application may read the user's upstream tokens at `/broker/{alias}/token`.
    pub(crate) read_token: bool,
    /// Keycloak's "revoke refresh token": each refresh returns a new refresh token, and a
    /// reused one ends the session. Off by default: OpenHands reuses refresh tokens.
    pub(crate) rotate_refresh_tokens: bool,
    /// Whether `code_challenge_method=plain` is accepted (Keycloak's client attribute
    /// `pkce.code.challenge.method` unset); off by default, so only S256 is (RFC 9700 §2.1.1).
    pub(crate) allow_plain_pkce: bool,
    /// Keycloak's "direct access grants": the password grant; off by default, as Keycloak's.
    pub(crate) direct_access_grants: bool,
    /// A flat `roles` claim (the user's realm roles) in access tokens and userinfo, as
    /// OpenHands' role check reads it; `realm_access.roles` is always there.
    pub(crate) roles_claim: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceAccountSettings {
    pub(crate) client_id: String,
    pub(crate) client_secret: CtSecret,
    pub(crate) allowed_providers: Vec<String>,
    /// Keycloak's realm-management roles for the admin REST API; none by default.
    pub(crate) admin_roles: Vec<AdminRole>,
}

/// A realm-management role of Keycloak's that the admin REST API checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminRole {
    /// Reads users (`view-users`).
    ViewUsers,
    /// Reads and changes users (`manage-users`, which implies reading, as in Keycloak).
    ManageUsers,
}

impl AdminRole {
    pub(crate) const NAMES: [&'static str; 2] = ["view-users", "manage-users"];

    pub(crate) fn parse(name: &str) -> Option<AdminRole> {
        match name {
            "view-users" => Some(AdminRole::ViewUsers),
            "manage-users" => Some(AdminRole::ManageUsers),
            _ => None,
        }
    }
}

/// Keycloak's master-realm administrator, for the admin REST API (`[admin]`).
#[derive(Debug, Clone)]
pub(crate) struct AdminSettings {
    pub(crate) username: String,
    /// Unset: the admin REST API is off (404), and start-up says so.
    pub(crate) password: Option<CtSecret>,
    /// The admin's access tokens; Keycloak's master realm gives 60 seconds.
    pub(crate) access_token_lifespan_seconds: i64,
    /// How long the admin's refresh token stays usable; Keycloak's master realm gives 30 minutes.
    pub(crate) session_idle_seconds: i64,
    /// The longest an admin session lives however often it is refreshed; Keycloak's master realm
    /// gives 10 hours.
    pub(crate) session_max_seconds: i64,
}

/// The Entra tenant a provider signs users in from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tenant {
    Single(Uuid),
    /// `organizations` or `common`: the issuer carries the token's own `tid`.
    Multi(String),
}

impl Tenant {
    pub(crate) fn path_segment(&self) -> String {
        match self {
            Tenant::Single(id) => id.to_string(),
            Tenant::Multi(name) => name.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamClientAuth {
    ClientSecretPost,
    ClientSecretBasic,
}

#[derive(Debug, Clone)]
pub(crate) struct ProviderSettings {
    pub(crate) alias: String,
    pub(crate) display_name: String,
    pub(crate) tenant: Tenant,
    /// The Azure DevOps organization's name (never its URL). Sign-in and token reads do not
    /// need it; `doctor` checks that `{devops_url}/{organization}` exists.
    pub(crate) organization: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) client_auth: UpstreamClientAuth,
    pub(crate) scopes: String,
    pub(crate) authority: Url,
    /// Azure DevOps' base URL, `https://dev.azure.com`; tests point it at a fake.
    pub(crate) devops_url: Url,
    pub(crate) allowed_tenants: Vec<Uuid>,
    /// Keycloak's `trustEmail`: believe any `email` claim. Off by default: Entra's `email` is not
    /// verified in general, so only proof (`xms_edov`, the verified e-mail claims,
    /// `verified_email_domains`) makes `email_verified` true.
    pub(crate) trust_email: bool,
    /// Domains whose addresses count as verified (lower case, without `@`).
    pub(crate) verified_email_domains: Vec<String>,
    /// Keycloak's `storeToken`: keep the upstream tokens so services can read them.
    pub(crate) store_token: bool,
}

#[derive(Debug)]
pub(crate) struct VaultSettings {
    /// The first key encrypts, all decrypt. Empty in development until generated.
    pub(crate) encryption_keys: Vec<VaultKey>,
    pub(crate) refresh_before_expiry_seconds: i64,
    /// A refresh token unused this long is refreshed by the keep-alive task, because Entra's
    /// die after 90 days without use.
    pub(crate) keepalive_after_seconds: i64,
    /// How often the keep-alive task looks for stale identities, and how many it takes a time.
    pub(crate) keepalive_interval_seconds: u64,
    pub(crate) keepalive_batch_size: i64,
    /// One deadline per refresh, shared by its attempts and by every reader waiting on it
    /// (here or on another replica): a read answers within it whatever the upstream does.
    pub(crate) refresh_timeout_seconds: u64,
    /// Memory for identities' sealed tokens kept between reads (Postgres only); 0 turns it off.
    pub(crate) cache_megabytes: u64,
    /// The most refreshes this replica sends upstream in a second, so that a storm of identities
    /// that waited out an outage or a throttling window reaches Entra spread out.
    pub(crate) max_refreshes_per_second: u32,
}

/// The contract's `[smtp]`: the server that carries send-verify-email's messages.
#[derive(Debug, Clone)]
pub(crate) struct SmtpSettings {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The sender, parsed at load (`OpenHands <noreply@example.com>`).
    pub(crate) from: lettre::message::Mailbox,
    pub(crate) security: SmtpSecurity,
    /// `None`: the server is not asked to authenticate us.
    pub(crate) credentials: Option<SmtpCredentials>,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: a relay on the same host or a test server only.
    None,
}

#[derive(Clone)]
pub(crate) struct SmtpCredentials {
    pub(crate) username: String,
    pub(crate) password: SecretString,
}

debug_showing!(SmtpCredentials { username });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Json,
    Pretty,
}

/// Every problem found in the configuration, each naming its key and the fix.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub(crate) problems: Vec<ConfigProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigProblem {
    pub(crate) key: String,
    pub(crate) message: String,
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
    #[cfg(test)]
    pub(crate) fn mentions(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
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
        environment::overlay_environment(&mut raw, &env);
        validate::validate(mode, raw)
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
