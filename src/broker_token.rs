//! Keycloak's stored-token read, as `GET /realms/{realm}/broker/{alias}/token` and the start
//! page's demonstration both make it: a user's own access token buys that user's upstream
//! token, when the client it was issued to holds the broker's `read-token` role.

use crate::oidc::grants::{GrantError, Grants};
use crate::oidc::tokens::READ_TOKEN_ROLE;
use crate::store::IdentityKey;
use crate::vault::{ServedTokens, TokenReader, TokenVault, VaultError};

/// Why a read for a valid bearer was refused; `Display` is Keycloak's text where it has one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BrokerReadError {
    #[error("Client [{client_id}] not authorized to retrieve tokens from identity provider [{alias}].")]
    NotAuthorized { client_id: String, alias: String },
    #[error("Identity Provider [{alias}] not found.")]
    UnknownProvider { alias: String },
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// A read for a valid bearer: whose client asked, for which provider, and what came of it.
#[derive(Debug)]
pub(crate) struct BrokerRead {
    /// The client the bearer was issued to (its web origins decide CORS).
    pub(crate) client_id: String,
    pub(crate) alias: String,
    pub(crate) result: Result<ServedTokens, BrokerReadError>,
}

/// Reads the bearer's user's stored token for `alias`, or for the provider the user signed in
/// with when `alias` is `None`: refreshed first when due, audited as a broker read. `None`
/// when the bearer is not a valid access token of this realm.
pub(crate) async fn read_for_bearer(
    grants: &Grants,
    vault: &TokenVault,
    bearer: &str,
    alias: Option<&str>,
    now: i64,
) -> Result<Option<BrokerRead>, GrantError> {
    let Some(claims) = grants.authenticate_bearer(bearer, now).await? else {
        return Ok(None);
    };
    let client_id = claims.azp.clone();
    let alias = alias.unwrap_or(&claims.user.identity_provider).to_owned();
    let result = if !claims.has_broker_role(READ_TOKEN_ROLE) {
        Err(BrokerReadError::NotAuthorized { client_id: client_id.clone(), alias: alias.clone() })
    } else if !vault.knows_provider(&alias) {
        Err(BrokerReadError::UnknownProvider { alias: alias.clone() })
    } else {
        let reader = TokenReader { surface: "broker", client_id: &client_id };
        vault.read(&reader, IdentityKey { user_id: &claims.sub, alias: &alias }, 0).await.map_err(BrokerReadError::from)
    };
    Ok(Some(BrokerRead { client_id, alias, result }))
}
