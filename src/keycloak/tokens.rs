//! `--tokens-from`: the brokered tokens Keycloak kept in plaintext, sealed into the vault as
//! a sign-in seals them, so that nobody has to sign in again.
//!
//! Keycloak's `TOKEN` column holds the provider's token response as JSON
//! (`OIDCIdentityProvider` stores it when "Store tokens" is on), with
//! `accessTokenExpiration` (Unix seconds) added when the response had `expires_in`. Without
//! it the access token's age is unknown, so it is stored as expired and the refresh
//! coordinator refreshes it on its first read. A token is never printed: errors name the user
//! and provider only; nor is the database's password, which comes from a file or `PGPASSWORD`
//! rather than the URL, where every user of the machine sees it in `ps`.

use std::fmt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::import::{PlannedLinks, Skipped};
use crate::config::ProviderSettings;
use crate::crypto::Cipher;
use crate::store::{IdentityKey, KeycloakDatabase, KeycloakTokenRow, Store, StoreError};
use crate::upstream::TokenResponse;
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
        "cannot read Keycloak's database (--tokens-from), and no password was given for it: if it asks for one, set \
         PGPASSWORD or pass --tokens-from-password-file <file>"
    )]
    SourceWithoutPassword(#[source] StoreError),
    #[error(
        "Keycloak's database (--tokens-from) asks for a password and none was given: set PGPASSWORD or pass \
         --tokens-from-password-file <file> (a password in the URL is visible to other users in `ps`)"
    )]
    PasswordMissing(#[source] StoreError),
    #[error("Keycloak's database (--tokens-from) refused the password {0}: check it")]
    PasswordRefused(PasswordOrigin, #[source] StoreError),
    #[error("cannot read --tokens-from-password-file {path}: {source}")]
    PasswordFileUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--tokens-from-password-file {0} is empty: write the password of Keycloak's database in it")]
    PasswordFileEmpty(PathBuf),
    #[error(
        "--tokens-from's URL holds a password and --tokens-from-password-file gives one too: give it once, in the file, \
         and the URL without it (a password in the URL is visible to other users in `ps`)"
    )]
    PasswordTwice,
    #[error(
        "Keycloak's database (--tokens-from) has no realm `{0}` (table REALM, column NAME): give the database of the \
         Keycloak the export came from"
    )]
    NoRealm(String),
    #[error("database")]
    Store(#[from] StoreError),
}

/// Where Keycloak's database is, and where its password may come from when the URL has none.
pub struct TokensSource {
    pub url: SecretString,
    /// `--tokens-from-password-file`: a file holding the password, trimmed of its newline.
    pub password_file: Option<PathBuf>,
    /// `PGPASSWORD`, used when neither the URL nor a file gives a password.
    pub environment_password: Option<SecretString>,
}

impl fmt::Debug for TokensSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokensSource").field("password_file", &self.password_file).finish_non_exhaustive()
    }
}

impl TokensSource {
    /// Whether the password is in the URL, where `ps` shows it to every user of the machine.
    pub fn url_has_password(&self) -> bool {
        KeycloakDatabase::url_has_password(&self.url)
    }
}

/// Where the password given for Keycloak's database came from, said in errors (never the password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordOrigin {
    Url,
    File,
    Environment,
}

impl fmt::Display for PasswordOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordOrigin::Url => "in the --tokens-from URL",
            PasswordOrigin::File => "in --tokens-from-password-file",
            PasswordOrigin::Environment => "in PGPASSWORD",
        })
    }
}

/// The password to connect with, from the first of: the URL itself (then `None` here, the
/// driver reads it there), the file, `PGPASSWORD`. A URL with a password and a file is refused:
/// which one was meant cannot be told.
fn chosen_password(source: &TokensSource) -> Result<Option<(SecretString, PasswordOrigin)>, TokensError> {
    match (source.url_has_password(), &source.password_file) {
        (true, Some(_)) => Err(TokensError::PasswordTwice),
        (true, None) => Ok(None),
        (false, Some(path)) => Ok(Some((read_password_file(path)?, PasswordOrigin::File))),
        (false, None) => {
            Ok(source.environment_password.clone().map(|password| (password, PasswordOrigin::Environment)))
        }
    }
}

/// The file's content without its final line break, as `echo secret > file` writes it.
fn read_password_file(path: &Path) -> Result<SecretString, TokensError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| TokensError::PasswordFileUnreadable { path: path.to_owned(), source })?;
    let password = text.strip_suffix('\n').map_or(text.as_str(), |line| line.strip_suffix('\r').unwrap_or(line));
    if password.is_empty() {
        return Err(TokensError::PasswordFileEmpty(path.to_owned()));
    }
    Ok(SecretString::from(password.to_owned()))
}

/// Connects to Keycloak's database; a refusal says which password was refused, or that none was given.
pub async fn connect_keycloak(source: &TokensSource) -> Result<KeycloakDatabase, TokensError> {
    let password = chosen_password(source)?;
    let origin = match &password {
        Some((_, origin)) => Some(*origin),
        None if source.url_has_password() => Some(PasswordOrigin::Url),
        None => None,
    };
    let connected = KeycloakDatabase::connect(&source.url, password.as_ref().map(|(password, _)| password)).await;
    connected.map_err(|err| match (password_refused(&err), origin) {
        (true, Some(origin)) => TokensError::PasswordRefused(origin, err),
        (true, None) => TokensError::PasswordMissing(err),
        (false, Some(_)) => TokensError::Source(err),
        // Postgres closes the connection without a word when asked for an md5 password and
        // given none, so any failure may be the missing password.
        (false, None) => TokensError::SourceWithoutPassword(err),
    })
}

/// Postgres' `invalid_password` (28P01): a password authentication failed.
fn password_refused(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("28P01"))
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
    let recorded = TokenResponse {
        access_token: response.access_token,
        token_type: response.token_type.filter(|t| !t.is_empty()),
        expires_in: None,
        refresh_token: response.refresh_token.filter(|t| !t.expose_secret().is_empty()),
        refresh_token_expires_in: None,
        id_token: response.id_token.filter(|t| !t.expose_secret().is_empty()),
        scope: response.scope,
    };
    Ok(UpstreamTokens::from_record(recorded, expires_at))
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
        return Ok(Outcome::Skipped(format!(
            "the user's {alias} account in the broker is another one than Keycloak's"
        )));
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
    let sealed = seal_tokens(cipher, IdentityKey { user_id: &user_id, alias: &alias }, &tokens, now);
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

        let ageless =
            upstream_tokens(&SecretString::from(r#"{"access_token":"at","expires_in":3600}"#.to_owned())).unwrap();
        assert_eq!(ageless.expires_at, 0, "no accessTokenExpiration: stored as expired, refreshed on first read");
        assert_eq!(ageless.token_type, "Bearer");
    }

    fn source(url: &str, file: Option<&str>, environment: Option<&str>) -> (TokensSource, Option<PathBuf>) {
        let path = file.map(|content| {
            let path = std::env::temp_dir().join(format!("ib_kc_password_{}", crate::crypto::new_id()));
            std::fs::write(&path, content).unwrap();
            path
        });
        let source = TokensSource {
            url: SecretString::from(url.to_owned()),
            password_file: path.clone(),
            environment_password: environment.map(|p| SecretString::from(p.to_owned())),
        };
        (source, path)
    }

    #[test]
    fn the_password_comes_from_the_url_else_the_file_else_pgpassword() {
        // (URL, file, PGPASSWORD, the password chosen and where from, case); `None` chosen: the driver reads the URL's.
        let cases = [
            ("postgres://kc:pw@db/kc", None, Some("env"), None, "the URL's own, read by the driver"),
            ("postgres://kc@db/kc?password=pw", None, None, None, "the URL's parameter, read by the driver"),
            (
                "postgres://kc@db/kc",
                Some("file-pw\n"),
                Some("env"),
                Some(("file-pw", PasswordOrigin::File)),
                "the file first",
            ),
            ("postgres://kc@db/kc", Some("file-pw\r\n"), None, Some(("file-pw", PasswordOrigin::File)), "CRLF trimmed"),
            (
                "postgres://kc@db/kc",
                Some(" pw "),
                None,
                Some((" pw ", PasswordOrigin::File)),
                "only the newline trimmed",
            ),
            ("postgres://kc@db/kc", None, Some("env-pw"), Some(("env-pw", PasswordOrigin::Environment)), "PGPASSWORD"),
            ("postgres://kc@db/kc", None, None, None, "none at all"),
        ];
        for (url, file, environment, expected, case) in cases {
            let (source, path) = source(url, file, environment);
            let chosen = chosen_password(&source).unwrap();
            let chosen = chosen.as_ref().map(|(password, origin)| (password.expose_secret(), *origin));
            assert_eq!(chosen, expected, "{case}");
            path.map(std::fs::remove_file);
        }
    }

    #[test]
    fn a_password_given_twice_an_empty_file_or_a_missing_one_is_refused_without_showing_it() {
        let (twice, twice_path) = source("postgres://kc:url-secret@db/kc", Some("file-secret"), None);
        let (empty, empty_path) = source("postgres://kc@db/kc", Some("\n"), None);
        let missing = TokensSource {
            url: SecretString::from("postgres://kc@db/kc".to_owned()),
            password_file: Some(PathBuf::from("/nonexistent/ib-password")),
            environment_password: None,
        };
        let cases =
            [(twice, "gives one too"), (empty, "is empty"), (missing, "cannot read --tokens-from-password-file")];
        for (source, expected) in cases {
            let message = chosen_password(&source).map(|_| ()).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("secret"), "{message}");
            assert!(!format!("{source:?}").contains("secret"), "Debug shows no URL or password");
        }
        for path in [twice_path, empty_path].into_iter().flatten() {
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn unusable_token_json_is_refused_without_repeating_it() {
        for json in ["not json secret-value", r#"{"refresh_token":"secret-value"}"#, r#"{"access_token":""}"#, "[]"] {
            let reason = upstream_tokens(&SecretString::from(json.to_owned())).map(|_| ()).unwrap_err();
            assert!(!reason.contains("secret-value"), "{json}: {reason}");
        }
    }
}
