//! The configuration file as written: serde structs that mirror the TOML keys, before defaults and checks.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSettings {
    pub(super) http: RawHttp,
    pub(super) database: RawDatabase,
    pub(super) realm: RawRealm,
    pub(super) clients: Vec<RawClient>,
    pub(super) service_accounts: Vec<RawServiceAccount>,
    pub(super) providers: BTreeMap<String, RawProvider>,
    pub(super) vault: RawVault,
    pub(super) log: RawLog,
    pub(super) audit: RawAudit,
    pub(super) development: RawDevelopment,
    pub(super) smtp: Option<RawSmtp>,
    pub(super) admin: RawAdmin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) username: Option<String>,
    pub(super) password: Option<SecretString>,
    pub(super) access_token_lifespan_seconds: Option<i64>,
    pub(super) session_idle_seconds: Option<i64>,
    pub(super) session_max_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) hostname: Option<String>,
    pub(super) bind: Option<String>,
    pub(super) management_bind: Option<String>,
    pub(super) internal_bind: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) request_timeout_seconds: Option<u64>,
    pub(super) header_read_timeout_seconds: Option<u64>,
    pub(super) idle_timeout_seconds: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) pending_sign_ins_per_address: Option<u32>,
    pub(super) max_pending_sign_ins: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub(super) url: Option<SecretString>,
    pub(super) max_connections: Option<u32>,
    pub(super) acquire_timeout_seconds: Option<u64>,
    pub(super) migrate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRealm {
    pub(super) name: Option<String>,
    pub(super) access_token_lifespan_seconds: Option<i64>,
    pub(super) sso_session_idle_seconds: Option<i64>,
    pub(super) sso_session_max_seconds: Option<i64>,
    pub(super) offline_session_idle_seconds: Option<i64>,
    pub(super) authorization_code_lifespan_seconds: Option<i64>,
    pub(super) login_timeout_seconds: Option<i64>,
    pub(super) signature_algorithm: Option<String>,
    pub(super) default_roles: Option<Vec<String>>,
    pub(super) brute_force: RawBruteForce,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawBruteForce {
    pub(super) failures: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawClient {
    pub(super) client_id: String,
    pub(super) client_secret: Option<SecretString>,
    pub(super) public_client: bool,
    pub(super) redirect_uris: Vec<String>,
    pub(super) post_logout_redirect_uris: Vec<String>,
    pub(super) read_token: Option<bool>,
    pub(super) rotate_refresh_tokens: bool,
    pub(super) allow_plain_pkce: bool,
    pub(super) direct_access_grants: bool,
    pub(super) roles_claim: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawServiceAccount {
    pub(super) client_id: String,
    pub(super) client_secret: Option<SecretString>,
    pub(super) allowed_providers: Vec<String>,
    pub(super) admin_roles: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) enabled: Option<bool>,
    pub(super) display_name: Option<String>,
    pub(super) tenant_id: Option<String>,
    pub(super) organization: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<SecretString>,
    pub(super) client_auth_method: Option<String>,
    pub(super) scopes: Option<String>,
    pub(super) authority: Option<String>,
    pub(super) devops_url: Option<String>,
    pub(super) allowed_tenants: Vec<String>,
    pub(super) allow_insecure_http: bool,
    pub(super) trust_email: Option<bool>,
    pub(super) verified_email_domains: Vec<String>,
    pub(super) store_token: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawVault {
    pub(super) encryption_keys: Vec<SecretString>,
    pub(super) refresh_before_expiry_seconds: Option<i64>,
    pub(super) keepalive_after_seconds: Option<i64>,
    pub(super) keepalive_interval_seconds: Option<u64>,
    pub(super) keepalive_batch_size: Option<i64>,
    pub(super) refresh_timeout_seconds: Option<u64>,
    /// Replaced by `refresh_timeout_seconds`; read only to say so.
    pub(super) refresh_wait_seconds: Option<u64>,
    pub(super) cache_megabytes: Option<u64>,
    pub(super) max_refreshes_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) retention_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawDevelopment {
    pub(super) provider: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) from: Option<String>,
    pub(super) security: Option<String>,
    pub(super) username: Option<String>,
    pub(super) password: Option<SecretString>,
}
