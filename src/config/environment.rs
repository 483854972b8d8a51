//! The environment overlay: variables that override keys of the file as written.

use secrecy::SecretString;

use super::raw::RawSettings;

/// The variable that overrides a per-client or per-provider key: `id` upper-cased, other
/// characters as `_` (`openhands-runtime` → `OPENHANDS_RUNTIME`).
pub(crate) fn env_name(prefix: &str, id: &str, suffix: &str) -> String {
    let id: String = id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{prefix}{id}{suffix}")
}

/// Environment variables win over the file; an Azure DevOps provider may come from them alone.
pub(super) fn overlay_environment(raw: &mut RawSettings, env: &impl Fn(&str) -> Option<String>) {
    overlay_single_keys(raw, env);
    overlay_client_secrets(raw, env);
    overlay_providers(raw, env);
}

/// A variable that is set replaces the file's value; an unset one leaves it.
fn replace_if_set<T>(target: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *target = value;
    }
}

/// The keys that exist once: database, listeners, log format, signature algorithm and vault keys.
fn overlay_single_keys(raw: &mut RawSettings, env: &impl Fn(&str) -> Option<String>) {
    replace_if_set(&mut raw.database.url, env("DATABASE_URL").map(SecretString::from));
    replace_if_set(&mut raw.http.hostname, env("BROKER_HOSTNAME"));
    replace_if_set(&mut raw.http.bind, env("BROKER_HTTP_BIND"));
    replace_if_set(&mut raw.http.management_bind, env("BROKER_MANAGEMENT_BIND"));
    replace_if_set(&mut raw.http.internal_bind, env("BROKER_INTERNAL_BIND"));
    replace_if_set(&mut raw.http.trusted_proxies, env("BROKER_TRUSTED_PROXIES").map(|list| comma_separated(&list)));
    replace_if_set(&mut raw.log.format, env("BROKER_LOG_FORMAT"));
    replace_if_set(&mut raw.realm.signature_algorithm, env("BROKER_REALM_SIGNATURE_ALGORITHM"));
    replace_if_set(&mut raw.admin.username, env("BROKER_ADMIN_USERNAME"));
    // OpenHands' own name for the same secret, so that one secret serves both sides; the
    // broker's name wins when both are set.
    replace_if_set(&mut raw.admin.password, env("KEYCLOAK_ADMIN_PASSWORD").map(SecretString::from));
    replace_if_set(&mut raw.admin.password, env("BROKER_ADMIN_PASSWORD").map(SecretString::from));
    if let Some(keys) = env("BROKER_ENCRYPTION_KEYS") {
        raw.vault.encryption_keys = comma_separated(&keys).into_iter().map(SecretString::from).collect();
    }
    // The password alone may come from the environment, so that it lives in a Secret; it
    // means nothing without the `[smtp]` table that says where to send.
    if let (Some(smtp), Some(password)) = (raw.smtp.as_mut(), env("BROKER_SMTP_PASSWORD")) {
        smtp.password = Some(SecretString::from(password));
    }
}

/// A variable's list: comma-separated, blanks around entries and empty entries ignored.
fn comma_separated(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|entry| !entry.is_empty()).map(str::to_owned).collect()
}

/// `BROKER_CLIENT_<CLIENT_ID>_SECRET`, for applications and service accounts alike.
fn overlay_client_secrets(raw: &mut RawSettings, env: &impl Fn(&str) -> Option<String>) {
    let secret = |client_id: &str| env(&env_name("BROKER_CLIENT_", client_id, "_SECRET")).map(SecretString::from);
    for client in &mut raw.clients {
        replace_if_set(&mut client.client_secret, secret(&client.client_id));
    }
    for account in &mut raw.service_accounts {
        replace_if_set(&mut account.client_secret, secret(&account.client_id));
    }
}

/// `<ALIAS>_*` for every provider table; any `AZURE_DEVOPS_*` variable creates that table
/// when the file has none, so the provider may be configured from the environment alone.
fn overlay_providers(raw: &mut RawSettings, env: &impl Fn(&str) -> Option<String>) {
    let azure_set = ["ENABLED", "TENANT_ID", "CLIENT_ID", "CLIENT_SECRET", "ORGANIZATION", "SCOPE"]
        .iter()
        .any(|suffix| env(&format!("AZURE_DEVOPS_{suffix}")).is_some());
    if azure_set {
        raw.providers.entry("azure_devops".to_owned()).or_default();
    }
    for (alias, provider) in &mut raw.providers {
        let var = |suffix: &str| env(&env_name("", alias, suffix));
        if let Some(enabled) = var("_ENABLED") {
            provider.enabled = Some(matches!(enabled.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        }
        replace_if_set(&mut provider.tenant_id, var("_TENANT_ID"));
        replace_if_set(&mut provider.organization, var("_ORGANIZATION"));
        replace_if_set(&mut provider.client_id, var("_CLIENT_ID"));
        replace_if_set(&mut provider.client_secret, var("_CLIENT_SECRET").map(SecretString::from));
        replace_if_set(&mut provider.scopes, var("_SCOPE"));
        replace_if_set(&mut provider.authority, var("_AUTHORITY"));
        replace_if_set(&mut provider.devops_url, var("_URL"));
    }
}
