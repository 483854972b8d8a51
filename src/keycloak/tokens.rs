//! `--tokens-from`: the brokered tokens Keycloak kept in plaintext, sealed into the vault as
//! a sign-in seals them, so that nobody has to sign in again.
//!
//! Keycloak's `TOKEN` column holds the provider's token response as JSON
//! (`OIDCIdentityProvider` stores it when "Store tokens" is on), with
//! `accessTokenExpiration` (Unix seconds) added when the response had `expires_in`. Without
//! it the access token's age is unknown, so it is stored as expired and the refresh
//! coordinator refreshes it on its first read. A token is never printed: errors name the user
//! and provider only.

use futures_util::StreamExt as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::import::{PlannedLinks, Skipped};
use crate::config::ProviderSettings;
use crate::crypto::Cipher;
use crate::store::{KeycloakDatabase, KeycloakTokenRow, Store, StoreError};
use crate::vault::{UpstreamTokens, seal_tokens};

/// What the token pass did (or would do).
#[derive(Debug, Default)]
pub struct TokensReport {
    pub sealed: u64,
    /// Identities that already hold tokens in the broker (a sign-in's, or an earlier import's).
    pub already_held: u64,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read Keycloak's database (--tokens-from)")]
    Source(#[source] StoreError),
    #[error(
        "Keycloak's database (--tokens-from) has no realm `{0}` (table REALM, column NAME): give the database of the \
         Keycloak the export came from"
    )]
    NoRealm(String),
    #[error("database")]
    Store(#[from] StoreError),
}

/// The part of a token response the vault keeps.
#[derive(Deserialize)]
struct StoredResponse {
    access_token: SecretString,
    refresh_token: Option<SecretString>,
    id_token: Option<SecretString>,
    token_type: Option<String>,
    scope: Option<String>,
    #[serde(rename = "accessTokenExpiration")]
    access_token_expiration: Option<serde_json::Number>,
}

debug_showing!(StoredResponse { token_type, scope });

/// The tokens of Keycloak's `TOKEN` JSON, or why they cannot be used (never their content).
pub(crate) fn upstream_tokens(json: &SecretString) -> Result<UpstreamTokens, &'static str> {
    let response: StoredResponse = serde_json::from_str(json.expose_secret())
        .map_err(|_| "its TOKEN is not a token response (a JSON object with `access_token`)")?;
    if response.access_token.expose_secret().is_empty() {
        return Err("its TOKEN has an empty `access_token`");
    }
    let expires_at = response.access_token_expiration.and_then(|n| n.as_i64()).filter(|at| *at > 0).unwrap_or(0);
    Ok(UpstreamTokens {
        access_token: response.access_token,
        refresh_token: response.refresh_token.filter(|t| !t.expose_secret().is_empty()),
        id_token: response.id_token.filter(|t| !t.expose_secret().is_empty()),
        token_type: response.token_type.filter(|t| !t.is_empty()).unwrap_or_else(|| "Bearer".to_owned()),
        scope: response.scope.unwrap_or_default(),
        expires_at,
        refresh_expires_at: None,
    })
}

/// Reads every stored token of `realm` from Keycloak's database and seals those of linked
/// identities into the vault; `cipher` is `None` in a dry run, which writes nothing.
pub(crate) async fn import_tokens(
    store: Option<&Store>,
    keycloak: &KeycloakDatabase,
    realm: &str,
    providers: &[ProviderSettings],
    cipher: Option<&Cipher>,
    planned: &PlannedLinks,
    now: i64,
) -> Result<TokensReport, TokensError> {
    if !keycloak.has_realm(realm).await.map_err(TokensError::Source)? {
        return Err(TokensError::NoRealm(realm.to_owned()));
    }
    let mut report = TokensReport::default();
    let mut rows = keycloak.stored_tokens(realm);
    while let Some(row) = rows.next().await {
        let row = row.map_err(TokensError::Source)?;
        import_token(store, row, providers, cipher, planned, now, &mut report).await?;
    }
    Ok(report)
}

/// What became of one stored token.
enum Outcome {
    Sealed,
    AlreadyHeld,
    Skipped(String),
}

async fn import_token(
    store: Option<&Store>,
    row: KeycloakTokenRow,
    providers: &[ProviderSettings],
    cipher: Option<&Cipher>,
    planned: &PlannedLinks,
    now: i64,
    report: &mut TokensReport,
) -> Result<(), StoreError> {
    let user_id = row.user_id.clone();
    let alias = row.alias.clone();
    match token_outcome(store, row, providers, cipher, planned, now).await? {
        Outcome::Sealed => report.sealed += 1,
        Outcome::AlreadyHeld => report.already_held += 1,
        Outcome::Skipped(reason) => report.skipped.push(Skipped { user_id, username: alias, reason }),
    }
    Ok(())
}

async fn token_outcome(
    store: Option<&Store>,
    row: KeycloakTokenRow,
    providers: &[ProviderSettings],
    cipher: Option<&Cipher>,
    planned: &PlannedLinks,
    now: i64,
) -> Result<Outcome, StoreError> {
    let user_id = row.user_id.clone();
    let alias = row.alias.clone();
    let subject = row.subject.clone().unwrap_or_default();
    let Some(provider) = providers.iter().find(|p| p.alias == alias) else {
        return Ok(Outcome::Skipped(format!("`{alias}` is not an enabled provider of the broker (providers.{alias})")));
    };
    if !provider.store_token {
        return Ok(Outcome::Skipped(format!(
            "providers.{alias}.store_token is false: the broker keeps no {alias} tokens"
        )));
    }
    let linked = match planned.get(&(user_id.clone(), alias.clone())) {
        Some(planned) => Some((planned.clone(), false)),
        None => match store {
            Some(store) => store.link_state(&user_id, &alias).await?.map(|state| (state.subject, state.has_tokens)),
            None => None,
        },
    };
    let Some((linked_subject, has_tokens)) = linked else {
        return Ok(Outcome::Skipped(format!(
            "the user has no {alias} account linked in the broker (not imported, or skipped)"
        )));
    };
    if linked_subject != subject {
        return Ok(Outcome::Skipped(format!("the user's {alias} account in the broker is another one than Keycloak's")));
    }
    if has_tokens {
        return Ok(Outcome::AlreadyHeld);
    }
    let tokens = match upstream_tokens(&row.into_token()) {
        Ok(tokens) => tokens,
        Err(reason) => return Ok(Outcome::Skipped(reason.to_owned())),
    };
    let (Some(store), Some(cipher)) = (store, cipher) else {
        // A dry run counts what it would seal.
        return Ok(Outcome::Sealed);
    };
    let sealed = seal_tokens(cipher, &user_id, &alias, &tokens, now);
    Ok(if store.insert_tokens_if_absent(&sealed).await? { Outcome::Sealed } else { Outcome::AlreadyHeld })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keycloaks_token_json_becomes_vault_tokens_and_an_unknown_age_counts_as_expired() {
        let stored = SecretString::from(
            r#"{"access_token":"at","expires_in":3599,"refresh_expires_in":0,"refresh_token":"rt","token_type":"Bearer",
                "id_token":"it","not-before-policy":0,"scope":"https://app.vssps.visualstudio.com/user_impersonation",
                "accessTokenExpiration":1800000000}"#
                .to_owned(),
        );
        let tokens = upstream_tokens(&stored).unwrap();
        assert_eq!(tokens.expires_at, 1_800_000_000);
        assert_eq!(tokens.refresh_token.as_ref().map(|t| t.expose_secret().to_owned()).as_deref(), Some("rt"));
        assert_eq!(tokens.scope, "https://app.vssps.visualstudio.com/user_impersonation");

        let ageless = upstream_tokens(&SecretString::from(r#"{"access_token":"at","expires_in":3600}"#.to_owned())).unwrap();
        assert_eq!(ageless.expires_at, 0, "no accessTokenExpiration: stored as expired, refreshed on first read");
        assert_eq!(ageless.token_type, "Bearer");
    }

    #[test]
    fn unusable_token_json_is_refused_without_repeating_it() {
        for json in ["not json secret-value", r#"{"refresh_token":"secret-value"}"#, r#"{"access_token":""}"#, "[]"] {
            let reason = upstream_tokens(&SecretString::from(json.to_owned())).map(|_| ()).unwrap_err();
            assert!(!reason.contains("secret-value"), "{json}: {reason}");
        }
    }
}
