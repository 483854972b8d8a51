//! `identity-broker doctor`: checks a configuration against the world it depends on (Entra,
//! Azure DevOps, the database and its keys), one row per check with what was found and the fix.
//!
//! `probe` does the I/O, each network and database step bounded by the timeout, and keeps what
//! it found as plain values (`facts`); `checks` turns settings and facts into rows without I/O,
//! so every verdict is tested with plain values. Nothing here writes: doctor runs no migration
//! and creates no key; its one token request asks Entra for an app-only token, which is dropped.

mod checks;
mod facts;
mod probe;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::future::join_all;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::clock::Clock;
use crate::config::{ConfigError, ProviderSettings, Settings};
use crate::crypto::Cipher;
use crate::telemetry::Metrics;
use crate::upstream::Upstream;
use facts::{EntraFacts, NotSent, OrganizationFacts, Probed, TokenProbe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Status {
    Ok,
    /// Works, but an operator should know (or act before it stops working).
    Warn,
    Fail,
    /// Not checked, and why.
    Skip,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        })
    }
}

/// One row of the report; `--json` prints these fields as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    /// A stable name: `providers.<alias>.client_credentials`, `database.migrations`, …
    pub(crate) check: String,
    pub(crate) status: Status,
    pub(crate) found: String,
    /// Empty when there is nothing to do.
    pub(crate) fix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub(crate) checks: Vec<Check>,
}

impl Report {
    pub(crate) fn failures(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Fail).count()
    }

    /// One line per check, then a count.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&format!("{:<4}  {}: {}", check.status, check.check, check.found));
            if !check.fix.is_empty() {
                out.push_str(&format!(" — fix: {}", check.fix));
            }
            out.push('\n');
        }
        let count = |status| self.checks.iter().filter(|c| c.status == status).count();
        out.push_str(&format!(
            "{} checks: {} OK, {} WARN, {} FAIL, {} SKIP\n",
            self.checks.len(),
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip)
        ));
        out
    }

    /// `[{"check", "status", "found", "fix"}, …]`.
    pub(crate) fn json(&self) -> String {
        // A list of plain structs of strings always serializes.
        serde_json::to_string_pretty(&self.checks).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// What validation refused, as rows: a configuration that does not load is a report too.
pub(crate) fn refused_configuration(err: &ConfigError) -> Report {
    Report { checks: checks::refused_configuration(err) }
}

/// Runs every check against `settings`; each network and database step gets `timeout`.
pub(crate) async fn examine(settings: &Settings, timeout: Duration) -> Report {
    let clock = Clock::default();
    let now = clock.now();
    let upstream = Upstream::new(settings.providers.clone(), Arc::new(Metrics::new()), clock)
        .map_err(|err| format!("the HTTP client could not be built: {err}"));
    let providers =
        join_all(settings.providers.iter().map(|provider| provider_rows(settings, &upstream, provider, timeout)));
    let database = probe::database(&settings.database.url, now, timeout);
    let (provider_rows, database) = tokio::join!(providers, database);

    let mut rows = Vec::new();
    if settings.providers.is_empty() {
        rows.push(checks::no_provider_enabled());
    }
    rows.extend(provider_rows.into_iter().flatten());
    let cipher = Cipher::new(&settings.vault.encryption_keys).ok();
    let key_ids: Vec<&str> = settings.vault.encryption_keys.iter().map(|k| k.id.as_str()).collect();
    rows.push(checks::database_connection(&database, timeout));
    rows.push(checks::migrations(&database, settings.database.migrate, timeout));
    rows.push(checks::vault_keys(&database, &key_ids, cipher.as_ref(), timeout));
    rows.push(checks::signing_keys(&database, cipher.as_ref(), settings.realm.signature_algorithm, now, timeout));
    rows.extend(settings.providers.iter().map(|provider| checks::email_proof(provider, &database)));
    rows.push(checks::smtp(settings.smtp.is_some(), &settings.providers, &database));
    rows.push(checks::clients(&settings.clients));
    rows.push(checks::service_accounts(&settings.service_accounts, &settings.providers));
    let redactor = Redactor::for_settings(settings);
    Report { checks: rows.into_iter().map(|row| redactor.check(row)).collect() }
}

/// One provider's rows: what the configuration says, then what Entra and Azure DevOps answer.
async fn provider_rows(
    settings: &Settings,
    upstream: &Result<Upstream, String>,
    provider: &ProviderSettings,
    timeout: Duration,
) -> Vec<Check> {
    let ((entra, token), organization) = match upstream {
        Ok(upstream) => match upstream.provider(&provider.alias) {
            Some(handle) => {
                tokio::join!(probe::entra(upstream, handle, timeout), probe::organization(upstream, provider, timeout))
            }
            None => unprobed(provider, "the provider is unknown to the HTTP client"),
        },
        Err(why) => unprobed(provider, why),
    };
    vec![
        checks::provider_enabled(provider),
        checks::redirect_uri(provider, settings.http.hostname.as_ref(), &settings.realm.name),
        checks::tenant(provider),
        checks::entra_reachable(provider, &entra, timeout),
        checks::client_credentials(provider, &token, timeout),
        checks::organization(provider, organization.as_ref(), timeout),
    ]
}

/// Facts for a provider nothing could be asked about.
fn unprobed(provider: &ProviderSettings, why: &str) -> ((EntraFacts, TokenProbe), Option<OrganizationFacts>) {
    let entra = EntraFacts {
        discovery_url: crate::upstream::entra::discovery_url(provider),
        discovery: Probed::Failed(why.to_owned()),
        jwks: None,
    };
    let organization = checks::organization_url(provider)
        .map(|url| OrganizationFacts { url: url.to_string(), answer: Probed::Failed(why.to_owned()) });
    ((entra, TokenProbe::NotSent(NotSent::NoDiscovery)), organization)
}

/// Scrubs every configured secret from the report, whatever quoted it (a database error, a
/// proxy echoing a request): the last guard, behind checks that never print one.
struct Redactor {
    secrets: Vec<String>,
}

/// Shorter values would scrub ordinary words; no real secret is this short.
const MIN_SECRET_LEN: usize = 4;

impl Redactor {
    fn for_settings(settings: &Settings) -> Redactor {
        let mut secrets: Vec<String> =
            settings.providers.iter().map(|p| p.client_secret.expose_secret().to_owned()).collect();
        let database_url = settings.database.url.expose_secret();
        if let Ok(url) = url::Url::parse(database_url)
            && let Some(password) = url.password()
        {
            secrets.push(password.to_owned());
            let decoded: String = url::form_urlencoded::parse(format!("p={password}").as_bytes())
                .map(|(_, value)| value.into_owned())
                .collect();
            secrets.push(decoded);
        }
        secrets.extend(settings.vault.encryption_keys.iter().map(|k| BASE64.encode(k.key.expose_secret())));
        secrets.retain(|s| s.len() >= MIN_SECRET_LEN);
        // Longest first, so that a secret containing another is scrubbed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { secrets }
    }

    fn scrub(&self, text: String) -> String {
        self.secrets.iter().fold(text, |text, secret| text.replace(secret.as_str(), "[redacted]"))
    }

    fn check(&self, check: Check) -> Check {
        Check { found: self.scrub(check.found), fix: self.scrub(check.fix), ..check }
    }
}
