//! The encrypted vault of upstream tokens: sealing rows for the store, opening them again,
//! and the coordinator that keeps them fresh (`refresh`).

mod refresh;
pub mod rekey;

use std::fmt;

use secrecy::SecretString;

pub(crate) use refresh::{RefreshPolicy, ServedTokens, TokenReader, TokenVault, VaultError};

use crate::crypto::{Cipher, CipherError, vault_column_aad};
use crate::store::VaultRow;

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

pub fn seal_tokens(cipher: &Cipher, user_id: &str, alias: &str, tokens: &UpstreamTokens, now: i64) -> VaultRow {
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
