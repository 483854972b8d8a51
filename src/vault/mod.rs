//! The encrypted vault of upstream tokens: sealing rows for the store, opening them again,
//! and the coordinator that keeps them fresh (`refresh`, which performs what `verdicts` decides).

mod error;
mod refresh;
pub mod rekey;
mod verdicts;

use std::fmt;

use secrecy::SecretString;

pub(crate) use error::VaultError;
pub(crate) use refresh::{RefreshPolicy, ServedTokens, TokenReader, TokenVault};

use crate::crypto::{Cipher, CipherError, vault_column_aad};
use crate::store::{IdentityKey, VaultRow};
use crate::upstream::TokenResponse;

/// How long an access token lives when its token response does not say (`expires_in` is only
/// recommended, RFC 6749 §5.1).
const DEFAULT_EXPIRES_IN_SECONDS: i64 = 3600;

/// Upstream tokens in the clear, only ever in memory.
#[derive(Clone)]
pub struct UpstreamTokens {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    pub token_type: String,
    pub scope: String,
    pub expires_at: i64,
    pub refresh_expires_at: Option<i64>,
}

impl fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamTokens {
    /// What the vault keeps of a sign-in's token response, received at `now`.
    pub(crate) fn from_response(response: TokenResponse, now: i64) -> UpstreamTokens {
        let expires_at = now + response.expires_in.unwrap_or(DEFAULT_EXPIRES_IN_SECONDS);
        let refresh_expires_at = response.refresh_token_expires_in.map(|seconds| now + seconds);
        UpstreamTokens::kept(response, expires_at, refresh_expires_at)
    }

    /// A token response kept by someone else (Keycloak), whose access token expires at
    /// `expires_at`: when it was received, and so when its refresh token expires, is unknown.
    pub(crate) fn from_record(response: TokenResponse, expires_at: i64) -> UpstreamTokens {
        UpstreamTokens::kept(response, expires_at, None)
    }

    /// These tokens after a refresh answered `response` at `now`. Entra rotates the refresh
    /// token, but when an answer omits it the old one (and its expiry) stays good. The ID token
    /// of a refresh answer may be unsigned, so the one from the sign-in is kept.
    pub(crate) fn refreshed(self, response: TokenResponse, now: i64) -> UpstreamTokens {
        let refresh_expires_at = match &response.refresh_token {
            Some(_) => response.refresh_token_expires_in.map(|seconds| now + seconds),
            None => self.refresh_expires_at,
        };
        UpstreamTokens {
            access_token: response.access_token,
            refresh_token: response.refresh_token.or(self.refresh_token),
            id_token: self.id_token,
            token_type: response.token_type.unwrap_or(self.token_type),
            scope: response.scope.unwrap_or(self.scope),
            expires_at: now + response.expires_in.unwrap_or(DEFAULT_EXPIRES_IN_SECONDS),
            refresh_expires_at,
        }
    }

    fn kept(response: TokenResponse, expires_at: i64, refresh_expires_at: Option<i64>) -> UpstreamTokens {
        UpstreamTokens {
            access_token: response.access_token,
            refresh_token: response.refresh_token,
            id_token: response.id_token,
            token_type: response.token_type.unwrap_or_else(|| "Bearer".to_owned()),
            scope: response.scope.unwrap_or_default(),
            expires_at,
            refresh_expires_at,
        }
    }
}

pub fn seal_tokens(cipher: &Cipher, identity: IdentityKey<'_>, tokens: &UpstreamTokens, now: i64) -> VaultRow {
    let IdentityKey { user_id, alias } = identity;
    let seal = |column: &str, value: &SecretString| cipher.seal_str(value, &vault_column_aad(user_id, alias, column));
    VaultRow {
        user_id: user_id.to_owned(),
        alias: alias.to_owned(),
        vault_key_id: cipher.active_key_id().to_owned(),
        access_token: seal("access_token", &tokens.access_token),
        refresh_token: tokens.refresh_token.as_ref().map(|t| seal("refresh_token", t)),
        id_token: tokens.id_token.as_ref().map(|t| seal("id_token", t)),
        token_type: tokens.token_type.clone(),
        scope: tokens.scope.clone(),
        expires_at: tokens.expires_at,
        refresh_expires_at: tokens.refresh_expires_at,
        refreshed_at: now,
        updated_at: now,
    }
}

pub fn open_tokens(cipher: &Cipher, row: &VaultRow) -> Result<UpstreamTokens, CipherError> {
    let open = |column: &str, bytes: &[u8]| {
        cipher.open_str(&row.vault_key_id, bytes, &vault_column_aad(&row.user_id, &row.alias, column))
    };
    Ok(UpstreamTokens {
        access_token: open("access_token", &row.access_token)?,
        refresh_token: row.refresh_token.as_deref().map(|b| open("refresh_token", b)).transpose()?,
        id_token: row.id_token.as_deref().map(|b| open("id_token", b)).transpose()?,
        token_type: row.token_type.clone(),
        scope: row.scope.clone(),
        expires_at: row.expires_at,
        refresh_expires_at: row.refresh_expires_at,
    })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    fn reveal(value: &Option<SecretString>) -> Option<&str> {
        value.as_ref().map(|v| v.expose_secret())
    }

    fn response(refresh_token: Option<&str>, id_token: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: secret("access-2"),
            token_type: None,
            expires_in: None,
            refresh_token: refresh_token.map(secret),
            refresh_token_expires_in: None,
            id_token: id_token.map(secret),
            scope: None,
        }
    }

    fn signed_in() -> UpstreamTokens {
        UpstreamTokens {
            access_token: secret("access-1"),
            refresh_token: Some(secret("refresh-1")),
            id_token: Some(secret("id-1")),
            token_type: "pop".into(),
            scope: "scope-1".into(),
            expires_at: NOW - 10,
            refresh_expires_at: Some(NOW + 5000),
        }
    }

    #[test]
    fn a_sign_ins_response_is_kept_whole_with_its_lifetimes_counted_from_now() {
        let full = TokenResponse {
            token_type: Some("Bearer".into()),
            expires_in: Some(3599),
            refresh_token_expires_in: Some(86400),
            scope: Some("scope-2".into()),
            ..response(Some("refresh-2"), Some("id-2"))
        };
        let tokens = UpstreamTokens::from_response(full, NOW);
        assert_eq!(tokens.access_token.expose_secret(), "access-2");
        assert_eq!((reveal(&tokens.refresh_token), reveal(&tokens.id_token)), (Some("refresh-2"), Some("id-2")));
        assert_eq!((tokens.token_type.as_str(), tokens.scope.as_str()), ("Bearer", "scope-2"));
        assert_eq!((tokens.expires_at, tokens.refresh_expires_at), (NOW + 3599, Some(NOW + 86400)));

        let bare = UpstreamTokens::from_response(response(None, None), NOW);
        assert_eq!((bare.token_type.as_str(), bare.scope.as_str()), ("Bearer", ""), "RFC 6749's defaults");
        assert_eq!(bare.expires_at, NOW + 3600, "no expires_in: an hour");
        assert_eq!((bare.refresh_token.is_none(), bare.refresh_expires_at), (true, None));
    }

    #[test]
    fn a_recorded_response_keeps_its_own_expiry_and_no_refresh_expiry() {
        let recorded = TokenResponse {
            expires_in: Some(3599),
            refresh_token_expires_in: Some(86400),
            ..response(Some("refresh-2"), None)
        };
        let tokens = UpstreamTokens::from_record(recorded, 1234);
        assert_eq!((tokens.expires_at, tokens.refresh_expires_at), (1234, None), "when it was received is unknown");
        assert_eq!(reveal(&tokens.refresh_token), Some("refresh-2"));
        assert_eq!(tokens.token_type, "Bearer");
    }

    #[test]
    fn a_refresh_replaces_what_it_answers_and_keeps_what_it_omits() {
        let rotated = TokenResponse {
            token_type: Some("Bearer".into()),
            expires_in: Some(1800),
            refresh_token_expires_in: Some(7200),
            scope: Some("scope-2".into()),
            ..response(Some("refresh-2"), Some("unsigned-id"))
        };
        let tokens = signed_in().refreshed(rotated, NOW);
        assert_eq!(tokens.access_token.expose_secret(), "access-2");
        assert_eq!(reveal(&tokens.refresh_token), Some("refresh-2"), "the rotated refresh token");
        assert_eq!(tokens.refresh_expires_at, Some(NOW + 7200), "and its own expiry");
        assert_eq!(reveal(&tokens.id_token), Some("id-1"), "the sign-in's ID token, not the refresh's");
        assert_eq!((tokens.token_type.as_str(), tokens.scope.as_str()), ("Bearer", "scope-2"));
        assert_eq!(tokens.expires_at, NOW + 1800);

        let rotated_without_expiry = signed_in().refreshed(response(Some("refresh-2"), None), NOW);
        assert_eq!(rotated_without_expiry.refresh_expires_at, None, "a new refresh token's expiry is unknown");

        let omitted = signed_in().refreshed(response(None, None), NOW);
        assert_eq!(reveal(&omitted.refresh_token), Some("refresh-1"), "the old refresh token stays good");
        assert_eq!(omitted.refresh_expires_at, Some(NOW + 5000), "with its expiry");
        assert_eq!((omitted.token_type.as_str(), omitted.scope.as_str()), ("pop", "scope-1"), "kept when omitted");
        assert_eq!(omitted.expires_at, NOW + 3600, "no expires_in: an hour");
    }
}
