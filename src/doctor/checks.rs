//! The verdicts: each function turns settings and what the probes found into one row, without I/O.

use std::collections::BTreeSet;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use url::{Host, Url};

use super::facts::{
    DatabaseContents, DatabaseFacts, EntraFacts, HttpAnswer, NotSent, OrganizationFacts, Probed, TokenProbe,
};
use super::{Check, Status};
use crate::config::{ClientSettings, ConfigError, ProviderSettings, ServiceAccountSettings, Tenant, env_name};
use crate::crypto::{Cipher, CipherError, JwsAlgorithm, signing_key_aad};
use crate::oidc::keys::signing_key_at;
use crate::store::{MigrationRecords, SealedRows, SigningKeyRow};
use crate::upstream::entra::{self, EntraErrorBody, ErrorClass, ProviderMetadata};
use crate::upstream::{UpstreamError, refusal};
use crate::urls::Urls;

/// The resource the client-credentials request asks a token for: Azure DevOps.
pub(crate) const AZURE_DEVOPS_SCOPE: &str = "https://app.vssps.visualstudio.com/.default";

fn row(check: impl Into<String>, status: Status, found: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { check: check.into(), status, found: found.into(), fix: fix.into() }
}

/// `1 signing key`, `2 signing keys`.
fn count(n: impl Into<i64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// `1 s`, `0.5 s`.
fn seconds(timeout: Duration) -> String {
    if timeout.subsec_nanos() == 0 {
        format!("{} s", timeout.as_secs())
    } else {
        format!("{} s", timeout.as_secs_f64())
    }
}

/// Names one provider's checks, keys and environment variables.
struct ProviderNames<'a> {
    alias: &'a str,
}

impl<'a> ProviderNames<'a> {
    fn new(alias: &'a str) -> Self {
        ProviderNames { alias }
    }

    fn check(&self, name: &str) -> String {
        format!("providers.{}.{name}", self.alias)
    }

    /// `providers.<alias>.<field>` (env `<ALIAS><suffix>`).
    fn key(&self, field: &str, env_suffix: &str) -> String {
        format!("providers.{}.{field} (env {})", self.alias, env_name("", self.alias, env_suffix))
    }
}

// ---------------------------------------------------------------------------------------
// The configuration

/// What validation refused, one row per problem, so that doctor reports a configuration that
/// does not load instead of stopping at it; nothing else can be checked until it loads.
pub(crate) fn refused_configuration(err: &ConfigError) -> Vec<Check> {
    err.problems
        .iter()
        .map(|problem| {
            row(
                format!("configuration.{}", problem.key),
                Status::Fail,
                format!("`{}` is refused: {}", problem.key, problem.message),
                format!(
                    "correct `{}` as the message says; the other checks run once the configuration loads",
                    problem.key
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Providers

pub(crate) fn no_provider_enabled() -> Check {
    row(
        "providers.enabled",
        Status::Fail,
        "no identity provider is enabled: the Azure DevOps login option is not visible",
        "set AZURE_DEVOPS_ENABLED=true (or providers.azure_devops.enabled = true) with its tenant_id, client_id and client_secret",
    )
}

pub(crate) fn provider_enabled(provider: &ProviderSettings) -> Check {
    let names = ProviderNames::new(&provider.alias);
    row(names.check("enabled"), Status::Ok, format!("the sign-in page offers \"{}\"", provider.display_name), "")
}

/// The URI to register in Entra, exactly as the broker will send it.
pub(crate) fn redirect_uri(provider: &ProviderSettings, hostname: Option<&Url>, realm: &str) -> Check {
    let names = ProviderNames::new(&provider.alias);
    match hostname {
        Some(hostname) => row(
            names.check("redirect_uri"),
            Status::Ok,
            Urls::new(hostname.as_str(), realm).broker_endpoint(&provider.alias),
            "register exactly this URI in the Entra app registration: Authentication, platform Web, Redirect URIs",
        ),
        None => row(
            names.check("redirect_uri"),
            Status::Fail,
            "http.hostname is not set, so the redirect URI is unknown",
            "set http.hostname (env BROKER_HOSTNAME) to the public base URL, e.g. https://auth.app.example.com",
        ),
    }
}

pub(crate) fn tenant(provider: &ProviderSettings) -> Check {
    let names = ProviderNames::new(&provider.alias);
    let check = names.check("tenant");
    let allowed: Vec<String> = provider.allowed_tenants.iter().map(|t| format!("`{t}`")).collect();
    match (&provider.tenant, allowed.is_empty()) {
        (Tenant::Single(id), true) => {
            row(check, Status::Ok, format!("single tenant `{id}`: only its users sign in"), "")
        }
        (Tenant::Single(id), false) => row(
            check,
            Status::Warn,
            format!(
                "allowed_tenants lists {} but tenant_id is the single tenant `{id}`: the list is ignored and only that tenant's users sign in",
                allowed.join(", ")
            ),
            format!(
                "remove providers.{}.allowed_tenants, or set {} to `organizations` to admit the tenants it lists",
                provider.alias,
                names.key("tenant_id", "_TENANT_ID")
            ),
        ),
        (Tenant::Multi(name), true) => row(
            check,
            Status::Warn,
            format!("`{name}` with an empty allowed_tenants: users of every Microsoft Entra tenant may sign in"),
            format!(
                "list the tenant GUIDs that may sign in as providers.{}.allowed_tenants, or set {} to your tenant's GUID",
                provider.alias,
                names.key("tenant_id", "_TENANT_ID")
            ),
        ),
        (Tenant::Multi(name), false) => {
            row(check, Status::Ok, format!("`{name}`, limited to allowed_tenants {}", allowed.join(", ")), "")
        }
    }
}

/// The fix for anything that keeps this host from Entra.
fn network_fix(provider: &ProviderSettings) -> String {
    let host = provider.authority.host_str().unwrap_or("the authority");
    let scheme = provider.authority.scheme().to_ascii_uppercase();
    format!(
        "let this host reach {host} over {scheme} (firewall, egress NetworkPolicy, proxy via HTTPS_PROXY), and check providers.{}.authority (`{}`)",
        provider.alias,
        provider.authority.as_str().trim_end_matches('/')
    )
}

/// The discovery document, when the answer is one.
pub(crate) fn discovery_document(answer: &Probed<HttpAnswer>) -> Option<ProviderMetadata> {
    match answer {
        Probed::Found(HttpAnswer { status: 200, body }) => serde_json::from_str(body).ok(),
        _ => None,
    }
}

/// Entra's error body in an answer, if it carries one.
fn entra_error(body: &str) -> Option<EntraErrorBody> {
    serde_json::from_str::<EntraErrorBody>(body).ok().filter(|b| !b.error.is_empty())
}

fn tenant_not_found(provider: &ProviderSettings, summary: &str) -> (String, String) {
    let names = ProviderNames::new(&provider.alias);
    (
        format!("Entra does not know tenant `{}` ({summary})", provider.tenant.path_segment()),
        format!(
            "set {} to the Directory (tenant) ID on the app registration's Overview page",
            names.key("tenant_id", "_TENANT_ID")
        ),
    )
}

pub(crate) fn entra_reachable(provider: &ProviderSettings, facts: &EntraFacts, timeout: Duration) -> Check {
    let names = ProviderNames::new(&provider.alias);
    let check = names.check("entra_reachable");
    let fail = |found: String, fix: String| row(names.check("entra_reachable"), Status::Fail, found, fix);
    let url = &facts.discovery_url;
    let answer = match &facts.discovery {
        Probed::TimedOut => {
            return fail(format!("no answer from {url} within {}", seconds(timeout)), network_fix(provider));
        }
        Probed::Failed(why) => return fail(format!("{url}: {why}"), network_fix(provider)),
        Probed::Found(answer) => answer,
    };
    if answer.status != 200 {
        return match entra_error(&answer.body) {
            Some(body) if body.aadsts() == Some(90002) => {
                let (found, fix) = tenant_not_found(provider, body.summary());
                fail(found, fix)
            }
            Some(body) => fail(
                format!("{url} answered HTTP {}: {}", answer.status, body.summary()),
                format!("check {} and {}", names.key("authority", "_AUTHORITY"), names.key("tenant_id", "_TENANT_ID")),
            ),
            None => fail(
                format!("{url} answered HTTP {}, not a discovery document", answer.status),
                format!(
                    "set {} to Entra's sign-in host (https://login.microsoftonline.com, or your cloud's); a proxy may be answering instead",
                    names.key("authority", "_AUTHORITY")
                ),
            ),
        };
    }
    let Some(metadata) = discovery_document(&facts.discovery) else {
        return fail(
            format!("{url} answered, but not with an OpenID Connect discovery document"),
            format!(
                "set {} to Entra's sign-in host (https://login.microsoftonline.com, or your cloud's)",
                names.key("authority", "_AUTHORITY")
            ),
        );
    };
    let Some((jwks_url, jwks)) = &facts.jwks else {
        return fail(format!("{url}: the signing keys were not fetched"), network_fix(provider));
    };
    let keys_fix = || {
        format!(
            "let this host reach {} over {} (the discovery document's jwks_uri)",
            metadata.jwks_uri.host_str().unwrap_or("the jwks_uri host"),
            metadata.jwks_uri.scheme().to_ascii_uppercase()
        )
    };
    match jwks {
        Probed::TimedOut => fail(format!("no answer from {jwks_url} within {}", seconds(timeout)), keys_fix()),
        Probed::Failed(why) => fail(format!("{jwks_url}: {why}"), keys_fix()),
        Probed::Found(HttpAnswer { status: 200, body }) => match serde_json::from_str::<JwkSet>(body) {
            Ok(set) if !set.keys.is_empty() => row(
                check,
                Status::Ok,
                format!("discovery document and {} fetched from {url}", count(set.keys.len() as i64, "signing key")),
                "",
            ),
            _ => fail(format!("{jwks_url} answered, but not with a set of signing keys"), keys_fix()),
        },
        Probed::Found(answer) => fail(format!("{jwks_url} answered HTTP {}", answer.status), keys_fix()),
    }
}

/// Whether a client-credentials request is sent for this provider, and to which tenant.
pub(crate) fn client_credentials_not_sent(provider: &ProviderSettings) -> Option<NotSent> {
    match &provider.tenant {
        Tenant::Multi(name) => Some(NotSent::MultiTenant(name.clone())),
        Tenant::Single(_) => None,
    }
}

pub(crate) fn client_credentials(provider: &ProviderSettings, probe: &TokenProbe, timeout: Duration) -> Check {
    let names = ProviderNames::new(&provider.alias);
    let check = names.check("client_credentials");
    let secret_key = names.key("client_secret", "_CLIENT_SECRET");
    let (status, found, fix) = match probe {
        TokenProbe::NotSent(NotSent::MultiTenant(name)) => (
            Status::Skip,
            format!(
                "not checked: Entra issues client_credentials tokens only from one tenant's endpoint, and tenant_id is `{name}`"
            ),
            format!(
                "to check client id and secret, run doctor once with {}=<the app registration's Directory (tenant) ID>",
                env_name("", &provider.alias, "_TENANT_ID")
            ),
        ),
        TokenProbe::NotSent(NotSent::NoDiscovery) => (
            Status::Skip,
            "not checked: the token endpoint comes from the discovery document, which could not be fetched".to_owned(),
            format!("resolve {} first", names.check("entra_reachable")),
        ),
        TokenProbe::TimedOut { endpoint } => (
            Status::Fail,
            format!("no answer from the token endpoint {endpoint} within {}", seconds(timeout)),
            network_fix(provider),
        ),
        TokenProbe::Answered { result: Ok(()), .. } => (
            Status::Ok,
            format!(
                "Entra accepted client id `{}` and its secret ({}) and issued a token for Azure DevOps",
                provider.client_id,
                client_auth_name(provider)
            ),
            String::new(),
        ),
        TokenProbe::Answered { endpoint, result: Err(err) } => {
            let (found, fix) = token_refusal(provider, endpoint, err, &secret_key);
            (Status::Fail, found, fix)
        }
    };
    row(check, status, found, fix)
}

fn client_auth_name(provider: &ProviderSettings) -> &'static str {
    match provider.client_auth {
        crate::config::UpstreamClientAuth::ClientSecretPost => "client_secret_post",
        crate::config::UpstreamClientAuth::ClientSecretBasic => "client_secret_basic",
    }
}

/// What Entra's refusal means and which key fixes it.
fn token_refusal(
    provider: &ProviderSettings,
    endpoint: &str,
    err: &UpstreamError,
    secret_key: &str,
) -> (String, String) {
    let names = ProviderNames::new(&provider.alias);
    let client_id_key = names.key("client_id", "_CLIENT_ID");
    let tenant_key = names.key("tenant_id", "_TENANT_ID");
    let body = match err {
        UpstreamError::Refused { body, .. } | UpstreamError::Throttled { body, .. } => body,
        UpstreamError::Unreachable(why) => {
            return (format!("the token endpoint {endpoint}: {}", crate::telemetry::Chain(why)), network_fix(provider));
        }
        UpstreamError::Malformed { status, body } => {
            return (
                format!("the token endpoint {endpoint} answered HTTP {status}: {body}"),
                format!("check {}; a proxy may be answering instead of Entra", names.key("authority", "_AUTHORITY")),
            );
        }
        UpstreamError::IdToken(err) => return (format!("unexpected: {err}"), String::new()),
    };
    let summary = body.summary();
    match body.aadsts() {
        Some(7000215) => (
            format!("Entra refused the client secret: {summary}"),
            format!(
                "configure the secret's Value, not its ID, as {secret_key}; the Value is shown once, when the secret is created under Certificates & secrets"
            ),
        ),
        Some(7000222) => (
            format!("the client secret has expired: {summary}"),
            format!("create a new secret under Certificates & secrets in the app registration and configure its Value as {secret_key}"),
        ),
        Some(700016) => (
            format!(
                "Entra has no application `{}` in tenant `{}`: {summary}",
                provider.client_id,
                provider.tenant.path_segment()
            ),
            format!(
                "set {client_id_key} to the Application (client) ID and {tenant_key} to the Directory (tenant) ID, both on the app registration's Overview page"
            ),
        ),
        Some(90002) => tenant_not_found(provider, summary),
        Some(500011) => (
            format!("tenant `{}` has no Azure DevOps service principal: {summary}", provider.tenant.path_segment()),
            "connect an Azure DevOps organization to this Entra tenant (Organization settings, Microsoft Entra), or set the tenant that owns it".to_owned(),
        ),
        code => {
            let found = if summary.is_empty() {
                format!("Entra refused: {}", body.error)
            } else {
                format!("Entra refused: {summary}")
            };
            let fix = match entra::classify(400, body) {
                ErrorClass::Operator { cause, config_key } => {
                    format!("{cause}: check {}", refusal::config_key(&provider.alias, config_key))
                }
                _ => match code {
                    Some(code) => format!("see https://login.microsoftonline.com/error?code={code}"),
                    None => "see Entra's message".to_owned(),
                },
            };
            (found, fix)
        }
    }
}

/// `{devops_url}/{organization}`, where Azure DevOps answers for an organization.
pub(crate) fn organization_url(provider: &ProviderSettings) -> Option<Url> {
    let organization = provider.organization.as_deref()?;
    let mut url = provider.devops_url.clone();
    url.path_segments_mut().ok()?.pop_if_empty().push(organization);
    Some(url)
}

pub(crate) fn organization(provider: &ProviderSettings, facts: Option<&OrganizationFacts>, timeout: Duration) -> Check {
    let names = ProviderNames::new(&provider.alias);
    let check = names.check("organization");
    let key = names.key("organization", "_ORGANIZATION");
    let (Some(name), Some(facts)) = (provider.organization.as_deref(), facts) else {
        return row(
            check,
            Status::Warn,
            "not set: OpenHands needs the Azure DevOps organization's name",
            format!("set {key} to the name in https://dev.azure.com/<name>"),
        );
    };
    let url = &facts.url;
    let host = provider.devops_url.host_str().unwrap_or("Azure DevOps");
    let scheme = provider.devops_url.scheme().to_ascii_uppercase();
    let network =
        || format!("let this host reach {host} over {scheme}, and check providers.{}.devops_url", provider.alias);
    match &facts.answer {
        Probed::TimedOut => {
            row(check, Status::Fail, format!("no answer from {url} within {}", seconds(timeout)), network())
        }
        Probed::Failed(why) => row(check, Status::Fail, format!("{url}: {why}"), network()),
        Probed::Found(HttpAnswer { status: 404, .. }) => row(
            check,
            Status::Fail,
            format!("Azure DevOps has no organization `{name}`: {url} answered HTTP 404"),
            format!(
                "set {key} to the organization's name as in https://dev.azure.com/<name> (the name only, not the URL)"
            ),
        ),
        Probed::Found(HttpAnswer { status, .. }) if *status >= 500 => row(
            check,
            Status::Warn,
            format!("{url} answered HTTP {status}: Azure DevOps could not say whether `{name}` exists"),
            "run doctor again later",
        ),
        Probed::Found(HttpAnswer { status, .. }) => {
            row(check, Status::Ok, format!("`{name}` exists: {url} answered HTTP {status} without sign-in"), "")
        }
    }
}

// ---------------------------------------------------------------------------------------
// The database and its keys

fn database_fix() -> &'static str {
    "check database.url (env DATABASE_URL): host, port, user, password and database name, and that this host may reach it"
}

pub(crate) fn database_connection(facts: &DatabaseFacts, timeout: Duration) -> Check {
    let location = &facts.location;
    match &facts.contents {
        Probed::Found(_) => row("database.connection", Status::Ok, format!("connected to {location}"), ""),
        Probed::TimedOut => row(
            "database.connection",
            Status::Fail,
            format!("no connection to {location} within {}", seconds(timeout)),
            database_fix(),
        ),
        Probed::Failed(why) => {
            row("database.connection", Status::Fail, format!("cannot connect to {location}: {why}"), database_fix())
        }
    }
}

/// What a migration check found wrong, if anything, and how many are pending.
#[derive(Debug, Default, PartialEq, Eq)]
struct MigrationGaps {
    pending: Vec<i64>,
    failed: Vec<i64>,
    changed: Vec<i64>,
    unknown: Vec<i64>,
}

fn migration_gaps(records: &MigrationRecords) -> MigrationGaps {
    let applied = records.applied.as_deref().unwrap_or_default();
    let mut gaps = MigrationGaps::default();
    for known in &records.embedded {
        match applied.iter().find(|a| a.version == known.version) {
            None => gaps.pending.push(known.version),
            Some(a) if !a.success => gaps.failed.push(a.version),
            Some(a) if a.checksum != known.checksum => gaps.changed.push(a.version),
            Some(_) => {}
        }
    }
    gaps.unknown = applied
        .iter()
        .filter(|a| !records.embedded.iter().any(|k| k.version == a.version))
        .map(|a| a.version)
        .collect();
    gaps
}

fn versions(list: &[i64]) -> String {
    list.iter().map(|v| format!("{v:04}")).collect::<Vec<_>>().join(", ")
}

fn unreached(check: &str) -> Check {
    row(check, Status::Skip, "not checked: the database could not be reached", "resolve database.connection first")
}

fn unmigrated(check: &str) -> Check {
    row(check, Status::Skip, "not checked: the database is not migrated yet", "resolve database.migrations first")
}

pub(crate) fn migrations(facts: &DatabaseFacts, migrate_at_start: bool, timeout: Duration) -> Check {
    const CHECK: &str = "database.migrations";
    let Probed::Found(contents) = &facts.contents else {
        return unreached(CHECK);
    };
    let records = match &contents.migrations {
        Probed::Found(records) => records,
        Probed::TimedOut => {
            return row(CHECK, Status::Fail, format!("no answer within {}", seconds(timeout)), database_fix());
        }
        Probed::Failed(why) => {
            return row(CHECK, Status::Fail, format!("cannot read _sqlx_migrations: {why}"), database_fix());
        }
    };
    let gaps = migration_gaps(records);
    let total = records.embedded.len();
    if !gaps.failed.is_empty() {
        return row(
            CHECK,
            Status::Fail,
            format!("migration {} failed part-way: the database is marked dirty", versions(&gaps.failed)),
            "repair the schema by hand, delete that version's row from _sqlx_migrations, then run `identity-broker migrate`",
        );
    }
    if !gaps.unknown.is_empty() {
        return row(
            CHECK,
            Status::Fail,
            format!(
                "the database has migrations this binary does not know ({}): a newer identity-broker migrated it",
                versions(&gaps.unknown)
            ),
            "run the identity-broker version that migrated it, or a newer one",
        );
    }
    if !gaps.changed.is_empty() {
        return row(
            CHECK,
            Status::Fail,
            format!("migration {} was applied with other content than this binary's", versions(&gaps.changed)),
            "run the identity-broker version that applied it: released migrations never change",
        );
    }
    if gaps.pending.is_empty() {
        let latest = records.embedded.last().map(|m| format!(" (latest {:04} {})", m.version, m.description));
        return row(CHECK, Status::Ok, format!("all {total} migrations applied{}", latest.unwrap_or_default()), "");
    }
    let found = format!("{} of {total} migrations pending ({})", gaps.pending.len(), versions(&gaps.pending));
    if migrate_at_start {
        row(
            CHECK,
            Status::Warn,
            format!("{found}; `start` applies them, as database.migrate = true"),
            "nothing, or run `identity-broker migrate` now",
        )
    } else {
        row(
            CHECK,
            Status::Fail,
            format!("{found}, and database.migrate = false: `start` will not apply them"),
            "run `identity-broker migrate` (the Helm chart's migration Job runs it before each install and upgrade)",
        )
    }
}

/// Whether the schema the other checks read is there; their failures mean little otherwise.
fn schema_pending(facts: &DatabaseFacts) -> bool {
    match &facts.contents {
        Probed::Found(contents) => match &contents.migrations {
            Probed::Found(records) => !migration_gaps(records).pending.is_empty(),
            _ => false,
        },
        _ => false,
    }
}

fn start_dev_hint(key_id: &str) -> &'static str {
    if key_id == "dev" { "; key `dev` is the one `start-dev` generated and keeps in the database" } else { "" }
}

pub(crate) fn vault_keys(
    facts: &DatabaseFacts,
    configured: &[&str],
    cipher: Option<&Cipher>,
    timeout: Duration,
) -> Check {
    const CHECK: &str = "vault.keys";
    let Probed::Found(contents) = &facts.contents else {
        return unreached(CHECK);
    };
    let sealed = match &contents.sealed {
        Probed::Found(sealed) => sealed,
        _ if schema_pending(facts) => return unmigrated(CHECK),
        Probed::TimedOut => {
            return row(CHECK, Status::Fail, format!("no answer within {}", seconds(timeout)), database_fix());
        }
        Probed::Failed(why) => {
            return row(CHECK, Status::Fail, format!("cannot read the sealed rows: {why}"), database_fix());
        }
    };
    let Some(cipher) = cipher else {
        return row(
            CHECK,
            Status::Fail,
            "vault.encryption_keys is empty",
            "set vault.encryption_keys (env BROKER_ENCRYPTION_KEYS) to `id:<base64 of 32 random bytes>`; make one with `openssl rand -base64 32`",
        );
    };
    let needed = sealed_by_key(sealed);
    let first = configured.first().copied().unwrap_or_default();
    let missing: Vec<&KeyUse> = needed.iter().filter(|k| !configured.contains(&k.key_id.as_str())).collect();
    if let Some(example) = missing.first() {
        let list: Vec<String> = missing.iter().map(|k| k.describe()).collect();
        return row(
            CHECK,
            Status::Fail,
            format!(
                "stored rows need vault keys that vault.encryption_keys lacks: {}; configured: {}",
                list.join("; "),
                quoted(configured)
            ),
            format!(
                "add each missing key (`{}:<its base64>`) to vault.encryption_keys (env BROKER_ENCRYPTION_KEYS) after `{first}`, then run `identity-broker vault rekey` to move the rows to `{first}`{}",
                example.key_id,
                start_dev_hint(&example.key_id)
            ),
        );
    }
    for sample in &sealed.token_samples {
        if let Err(CipherError::Unauthentic) = crate::vault::open_tokens(cipher, sample) {
            return row(
                CHECK,
                Status::Fail,
                format!(
                    "the configured key `{}` does not open the upstream tokens sealed under that id: another key carries the id",
                    sample.vault_key_id
                ),
                format!("put the original key material of `{}` back into vault.encryption_keys", sample.vault_key_id),
            );
        }
    }
    if needed.is_empty() {
        return row(CHECK, Status::Ok, format!("no sealed rows yet; new ones are sealed under `{first}`"), "");
    }
    let list: Vec<String> = needed.iter().map(KeyUse::describe).collect();
    let older: i64 = needed.iter().filter(|k| k.key_id != first).map(|k| k.tokens + k.signing_keys).sum();
    let found = format!("every key the stored rows need is configured: {}", list.join("; "));
    if older == 0 {
        return row(CHECK, Status::Ok, found, "");
    }
    row(
        CHECK,
        Status::Ok,
        format!("{found}; {} still under older keys", count(older, "row")),
        format!("`identity-broker vault rekey` moves them to `{first}`; run it before removing an older key"),
    )
}

fn quoted(ids: &[&str]) -> String {
    if ids.is_empty() {
        "none".to_owned()
    } else {
        ids.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(", ")
    }
}

/// How many rows one vault key seals.
#[derive(Debug, PartialEq, Eq)]
struct KeyUse {
    key_id: String,
    tokens: i64,
    signing_keys: i64,
}

impl KeyUse {
    fn describe(&self) -> String {
        format!(
            "`{}` seals {} and {}",
            self.key_id,
            count(self.tokens, "upstream token row"),
            count(self.signing_keys, "signing key")
        )
    }
}

fn sealed_by_key(sealed: &SealedRows) -> Vec<KeyUse> {
    let ids: BTreeSet<&str> =
        sealed.vault_tokens.iter().chain(&sealed.signing_keys).map(|(id, _)| id.as_str()).collect();
    let count = |list: &[(String, i64)], id: &str| list.iter().filter(|(k, _)| k == id).map(|(_, n)| *n).sum();
    ids.into_iter()
        .map(|id| KeyUse {
            key_id: id.to_owned(),
            tokens: count(&sealed.vault_tokens, id),
            signing_keys: count(&sealed.signing_keys, id),
        })
        .collect()
}

pub(crate) fn signing_keys(
    facts: &DatabaseFacts,
    cipher: Option<&Cipher>,
    algorithm: JwsAlgorithm,
    now: i64,
    timeout: Duration,
) -> Check {
    const CHECK: &str = "signing_keys";
    let Probed::Found(contents) = &facts.contents else {
        return unreached(CHECK);
    };
    let rows = match &contents.signing_keys {
        Probed::Found(rows) => rows,
        _ if schema_pending(facts) => return unmigrated(CHECK),
        Probed::TimedOut => {
            return row(CHECK, Status::Fail, format!("no answer within {}", seconds(timeout)), database_fix());
        }
        Probed::Failed(why) => {
            return row(CHECK, Status::Fail, format!("cannot read signing_keys: {why}"), database_fix());
        }
    };
    let Some(active) = signing_key_at(rows, now, algorithm) else {
        return row(
            CHECK,
            Status::Warn,
            format!(
                "no stored signing key may sign now ({} in force or announced)",
                count(rows.len() as i64, "stored key")
            ),
            "nothing before the first start: `start` creates one; `identity-broker keys rotate` creates one now",
        );
    };
    if let Some(cipher) = cipher {
        for key in rows {
            if let Err(err) = cipher.open(&key.vault_key_id, &key.private_key, &signing_key_aad(&key.kid)) {
                return row(CHECK, Status::Fail, unopened_signing_key(key, &err), unopened_fix(key, &err));
            }
        }
    }
    row(
        CHECK,
        Status::Ok,
        format!(
            "`{}` ({}) signs now; {} in force, every one opens with the configured vault keys",
            active.kid,
            active.algorithm,
            count(rows.len() as i64, "key")
        ),
        "",
    )
}

fn unopened_signing_key(key: &SigningKeyRow, err: &CipherError) -> String {
    match err {
        CipherError::Unauthentic => format!(
            "signing key `{}` does not open with the configured vault key `{}`: another key carries that id",
            key.kid, key.vault_key_id
        ),
        _ => format!(
            "signing key `{}` is sealed under vault key `{}`, which vault.encryption_keys lacks: `start` would fail",
            key.kid, key.vault_key_id
        ),
    }
}

fn unopened_fix(key: &SigningKeyRow, err: &CipherError) -> String {
    match err {
        CipherError::Unauthentic => {
            format!("put the original key material of `{}` back into vault.encryption_keys", key.vault_key_id)
        }
        _ => format!(
            "add `{}:<its base64>` to vault.encryption_keys (env BROKER_ENCRYPTION_KEYS){}",
            key.vault_key_id,
            start_dev_hint(&key.vault_key_id)
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Clients and service accounts

/// `https://`, or `http://` to this machine (a developer's OpenHands).
fn safe_redirect(uri: &str) -> bool {
    let Ok(url) = Url::parse(uri) else { return false };
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

pub(crate) fn clients(clients: &[ClientSettings]) -> Check {
    const CHECK: &str = "clients";
    if clients.is_empty() {
        return row(
            CHECK,
            Status::Fail,
            "no [[clients]]: no application (OpenHands) can sign users in",
            "add a [[clients]] entry for OpenHands: client_id = \"allhands\", redirect_uris = [\"https://<openhands host>/oauth/keycloak/callback\"], and its secret in BROKER_CLIENT_ALLHANDS_SECRET",
        );
    }
    let unsafe_uris: Vec<String> = clients
        .iter()
        .flat_map(|c| {
            c.redirect_uris
                .iter()
                .chain(&c.post_logout_redirect_uris)
                .filter(|uri| !safe_redirect(uri))
                .map(move |uri| format!("`{uri}` ({})", c.client_id))
        })
        .collect();
    if !unsafe_uris.is_empty() {
        return row(
            CHECK,
            Status::Fail,
            format!("redirect URIs neither https nor loopback: {}", unsafe_uris.join(", ")),
            "use https:// redirect URIs (http:// only to localhost or 127.0.0.1): codes and tokens travel in them",
        );
    }
    let list: Vec<String> = clients
        .iter()
        .map(|c| format!("`{}` ({})", c.client_id, count(c.redirect_uris.len() as i64, "redirect URI")))
        .collect();
    row(CHECK, Status::Ok, format!("{}; every redirect URI is https or loopback", list.join(", ")), "")
}

pub(crate) fn service_accounts(accounts: &[ServiceAccountSettings], providers: &[ProviderSettings]) -> Check {
    const CHECK: &str = "service_accounts";
    if accounts.is_empty() {
        return row(
            CHECK,
            Status::Ok,
            "none: only services reading users' tokens through the internal API need one",
            "",
        );
    }
    let mut unknown = Vec::new();
    let mut list = Vec::new();
    for account in accounts {
        for alias in &account.allowed_providers {
            if !providers.iter().any(|p| &p.alias == alias) {
                unknown.push(format!("`{alias}` ({})", account.client_id));
            }
        }
        let reads = if account.allowed_providers.is_empty() {
            "no provider's tokens".to_owned()
        } else {
            account.allowed_providers.join(", ")
        };
        list.push(format!("`{}` reads {reads}", account.client_id));
    }
    if unknown.is_empty() {
        row(CHECK, Status::Ok, list.join("; "), "")
    } else {
        row(
            CHECK,
            Status::Fail,
            format!("allowed_providers names providers that are not enabled: {}", unknown.join(", ")),
            "enable those providers, or remove them from allowed_providers",
        )
    }
}

/// Whether the provider's ID tokens prove e-mail addresses: Entra's `email` claim is not
/// verified in general, so without the optional claim `xms_edov` (seen at the last sign-in) only
/// `verified_email_domains` makes an address verified, and OpenHands treats the rest as unproven.
pub(crate) fn email_proof(provider: &ProviderSettings, facts: &DatabaseFacts) -> Check {
    let names = ProviderNames::new(&provider.alias);
    let check = names.check("email_proof");
    if provider.trust_email {
        return row(
            check,
            Status::Warn,
            "trust_email = true: every `email` claim counts as verified, though Entra does not verify it in general",
            format!(
                "set {} = false and let the ID token prove addresses (the optional claim `xms_edov`) or list your domains in {}",
                names.check("trust_email"),
                names.check("verified_email_domains")
            ),
        );
    }
    let seen = match &facts.contents {
        Probed::Found(contents) => match &contents.email_proofs {
            Probed::Found(rows) => {
                rows.iter().find(|(alias, _, _)| *alias == provider.alias).map(|(_, seen, at)| (*seen, *at))
            }
            _ => return row(check, Status::Skip, "the database's sign-in facts could not be read", database_fix()),
        },
        _ => return row(check, Status::Skip, "the database could not be read", database_fix()),
    };
    match seen {
        None => row(
            check,
            Status::Skip,
            "no sign-in through this provider yet: its ID tokens are checked for `xms_edov` at the first",
            "sign in once, then run doctor again",
        ),
        Some((true, _)) => row(check, Status::Ok, "the last sign-in's ID token carried `xms_edov`", ""),
        Some((false, at)) => row(
            check,
            Status::Warn,
            format!(
                "the last sign-in's ID token (at {at}, Unix seconds) carried no `xms_edov`: e-mail addresses count as verified only in {}",
                names.check("verified_email_domains")
            ),
            "in the Entra app registration, Token configuration, add the optional claim `xms_edov` (and `email`) to the ID token",
        ),
    }
}

/// Whether `send-verify-email`, which OpenHands calls for every user whose e-mail is not
/// verified, can send anything: such users exist unless every provider trusts every address.
pub(crate) fn smtp(configured: bool, providers: &[ProviderSettings], facts: &DatabaseFacts) -> Check {
    const CHECK: &str = "smtp";
    if configured {
        return row(CHECK, Status::Ok, "[smtp] is configured: send-verify-email sends its links", "");
    }
    let unverified = match &facts.contents {
        Probed::Found(DatabaseContents { unverified_emails: Probed::Found(count), .. }) => Some(*count),
        _ => None,
    };
    let untrusting = providers.iter().filter(|p| !p.trust_email).count();
    if untrusting == 0 && unverified.is_none_or(|count| count == 0) {
        return row(
            CHECK,
            Status::Ok,
            "not configured; every provider trusts its e-mail claims and no user's address is unverified",
            "",
        );
    }
    let who = match unverified {
        Some(users) if users > 0 => format!("{} with an unverified e-mail address", count(users, "user")),
        _ => "users with an unverified e-mail address can exist (trust_email = false)".to_owned(),
    };
    row(
        CHECK,
        Status::Warn,
        format!("not configured, and {who}: OpenHands calls send-verify-email for them, which is then refused"),
        "configure [smtp] (host, port, from, security; password in env BROKER_SMTP_PASSWORD)",
    )
}
