//! Validation of `[providers.<alias>]`: each enabled table becomes `ProviderSettings`, or problems naming its keys.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use url::Url;
use uuid::Uuid;

use super::Problems;
use crate::config::environment::env_name;
use crate::config::raw::RawProvider;
use crate::config::{
    DEFAULT_AUTHORITY, DEFAULT_DEVOPS_URL, DEFAULT_SCOPES, ProviderSettings, Tenant, UpstreamClientAuth,
};

pub(super) fn validate_providers(
    problems: &mut Problems,
    dev: bool,
    raw: BTreeMap<String, RawProvider>,
) -> Vec<ProviderSettings> {
    raw.into_iter()
        .filter(|(_, provider)| provider.enabled.unwrap_or(true))
        .filter_map(|(alias, provider)| validate_provider(problems, dev, alias, provider))
        .collect()
}

/// `None` when a problem leaves nothing to build on (the alias, tenant, client id, client
/// secret or authority); the keys after it in this provider are then not checked.
fn validate_provider(problems: &mut Problems, dev: bool, alias: String, raw: RawProvider) -> Option<ProviderSettings> {
    check_alias(problems, &alias)?;
    let keys = ProviderKeys { alias: &alias };
    let tenant = parse_tenant(problems, &keys, raw.tenant_id.as_deref())?;
    let organization = parse_organization(problems, &keys, raw.organization);
    let client_id = require_client_id(problems, &keys, raw.client_id)?;
    let client_secret = require_client_secret(problems, &keys, raw.client_secret)?;
    let client_auth = parse_client_auth(problems, &keys, raw.client_auth_method.as_deref());
    let insecure_http_allowed = dev || raw.allow_insecure_http;
    let authority = parse_authority(problems, &keys, raw.authority, insecure_http_allowed)?;
    let devops_url = parse_devops_url(problems, &keys, raw.devops_url, insecure_http_allowed)?;
    let allowed_tenants = parse_allowed_tenants(problems, &keys, &raw.allowed_tenants);
    let scopes = check_scopes(problems, &keys, raw.scopes);
    let verified_email_domains = parse_email_domains(problems, &keys, raw.verified_email_domains);
    Some(ProviderSettings {
        display_name: raw.display_name.unwrap_or_else(|| alias.replace('_', " ")),
        alias,
        tenant,
        organization,
        client_id,
        client_secret,
        client_auth,
        scopes,
        authority,
        devops_url,
        allowed_tenants,
        trust_email: raw.trust_email.unwrap_or(false),
        verified_email_domains,
        store_token: raw.store_token.unwrap_or(true),
    })
}

/// Names one provider's keys and environment variables in its problems.
struct ProviderKeys<'a> {
    alias: &'a str,
}

impl ProviderKeys<'_> {
    fn key(&self, field: &str) -> String {
        format!("providers.{}.{field}", self.alias)
    }

    fn env(&self, suffix: &str) -> String {
        env_name("", self.alias, suffix)
    }
}

/// The alias appears in every broker URL, so it must be a plain path segment.
/// `verified_email_domains`: bare domain names (`contoso.com`), kept in lower case.
fn parse_email_domains(problems: &mut Problems, keys: &ProviderKeys, domains: Vec<String>) -> Vec<String> {
    let mut parsed = Vec::with_capacity(domains.len());
    for domain in domains {
        let trimmed = domain.trim().trim_start_matches('@').to_ascii_lowercase();
        let well_formed = trimmed.contains('.')
            && !trimmed.starts_with('.')
            && !trimmed.ends_with('.')
            && trimmed.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if well_formed {
            parsed.push(trimmed);
        } else {
            problems.add(
                keys.key("verified_email_domains"),
                format!("`{domain}` is not a domain name: give the part after `@` only, e.g. \"contoso.com\""),
            );
        }
    }
    parsed
}

fn check_alias(problems: &mut Problems, alias: &str) -> Option<()> {
    if alias.is_empty() || !alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        problems.add(format!("providers.{alias}"), "the alias may hold letters, digits, `-` and `_` only");
        return None;
    }
    Some(())
}

fn parse_tenant(problems: &mut Problems, keys: &ProviderKeys, tenant_id: Option<&str>) -> Option<Tenant> {
    match tenant_id {
        Some(name @ ("organizations" | "common")) => Some(Tenant::Multi(name.to_owned())),
        Some(text) => match Uuid::parse_str(text) {
            Ok(id) => Some(Tenant::Single(id)),
            Err(_) => {
                problems.add(
                    keys.key("tenant_id"),
                    format!("`{text}` is not a tenant GUID nor `organizations`/`common`; copy the Directory (tenant) ID from the app registration"),
                );
                None
            }
        },
        None => {
            problems.add(
                keys.key("tenant_id"),
                format!("missing: the Entra tenant GUID or `organizations` (env {})", keys.env("_TENANT_ID")),
            );
            None
        }
    }
}

/// Operators often paste `https://dev.azure.com/contoso`; the fix names the part to keep.
fn parse_organization(problems: &mut Problems, keys: &ProviderKeys, organization: Option<String>) -> Option<String> {
    match organization {
        Some(org) if org.contains("://") || org.contains('/') || org.contains('.') => {
            let name = org.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
            problems.add(
                keys.key("organization"),
                format!("give the organization name only, not a URL: write `{name}` instead of `{org}`"),
            );
            None
        }
        Some(org) if org.is_empty() => None,
        other => other,
    }
}

fn require_client_id(problems: &mut Problems, keys: &ProviderKeys, client_id: Option<String>) -> Option<String> {
    match client_id {
        Some(id) if !id.is_empty() => Some(id),
        _ => {
            problems.add(
                keys.key("client_id"),
                format!(
                    "missing: the Application (client) ID of the Entra app registration (env {})",
                    keys.env("_CLIENT_ID")
                ),
            );
            None
        }
    }
}

fn require_client_secret(
    problems: &mut Problems,
    keys: &ProviderKeys,
    client_secret: Option<SecretString>,
) -> Option<SecretString> {
    let secret = client_secret.filter(|s| !s.expose_secret().is_empty());
    if secret.is_none() {
        problems.add(
            keys.key("client_secret"),
            format!(
                "missing: create one under Certificates & secrets in the app registration (env {})",
                keys.env("_CLIENT_SECRET")
            ),
        );
    }
    secret
}

fn parse_client_auth(problems: &mut Problems, keys: &ProviderKeys, method: Option<&str>) -> UpstreamClientAuth {
    match method {
        None | Some("client_secret_post") => UpstreamClientAuth::ClientSecretPost,
        Some("client_secret_basic") => UpstreamClientAuth::ClientSecretBasic,
        Some(other) => {
            problems.add(
                keys.key("client_auth_method"),
                format!("`{other}` is not `client_secret_post` or `client_secret_basic`"),
            );
            UpstreamClientAuth::ClientSecretPost
        }
    }
}

/// `http://` authorities serve tests and fakes; `start` takes one only when asked explicitly.
fn parse_authority(
    problems: &mut Problems,
    keys: &ProviderKeys,
    authority: Option<String>,
    insecure_http_allowed: bool,
) -> Option<Url> {
    let text = authority.unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
    parse_upstream_url(problems, keys, "authority", &text, insecure_http_allowed)
}

/// Azure DevOps' base URL, checked as the authority is: `doctor` calls it.
fn parse_devops_url(
    problems: &mut Problems,
    keys: &ProviderKeys,
    devops_url: Option<String>,
    insecure_http_allowed: bool,
) -> Option<Url> {
    let text = devops_url.unwrap_or_else(|| DEFAULT_DEVOPS_URL.to_owned());
    parse_upstream_url(problems, keys, "devops_url", &text, insecure_http_allowed)
}

fn parse_upstream_url(
    problems: &mut Problems,
    keys: &ProviderKeys,
    field: &str,
    text: &str,
    insecure_http_allowed: bool,
) -> Option<Url> {
    match Url::parse(text.trim_end_matches('/')) {
        Ok(url) if url.scheme() == "https" => Some(url),
        Ok(url) if url.scheme() == "http" && insecure_http_allowed => Some(url),
        Ok(_) => {
            problems.add(
                keys.key(field),
                format!("`{text}` is not https; set {} = true only for testing", keys.key("allow_insecure_http")),
            );
            None
        }
        Err(_) => {
            problems.add(keys.key(field), format!("`{text}` is not an absolute URL"));
            None
        }
    }
}

fn parse_allowed_tenants(problems: &mut Problems, keys: &ProviderKeys, allowed: &[String]) -> Vec<Uuid> {
    let mut tenants = Vec::new();
    for tid in allowed {
        match Uuid::parse_str(tid) {
            Ok(id) => tenants.push(id),
            Err(_) => problems.add(keys.key("allowed_tenants"), format!("`{tid}` is not a tenant GUID")),
        }
    }
    tenants
}

fn check_scopes(problems: &mut Problems, keys: &ProviderKeys, scopes: Option<String>) -> String {
    let scopes = scopes.unwrap_or_else(|| DEFAULT_SCOPES.to_owned());
    if !scopes.split_whitespace().any(|s| s == "openid") {
        problems.add(keys.key("scopes"), "must include `openid`");
    }
    scopes
}
