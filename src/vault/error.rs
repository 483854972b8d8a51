//! Why a token read or refresh produced no token: one error for the vault's callers.

use std::sync::Arc;

use crate::store::StoreError;
use crate::upstream::entra::ReauthKind;

/// Why a token read or refresh did not produce a token. The `Display` texts of the first two
/// are Keycloak's, which OpenHands matches.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum VaultError {
    #[error("User [{user_id}] is not associated with identity provider [{alias}].")]
    NotLinked { user_id: String, alias: String },
    #[error("Identity Provider [{alias}] does not support this operation.")]
    NotStored { alias: String },
    #[error("User [{user_id}] is disabled.")]
    UserDisabled { user_id: String },
    /// The upstream refused the grant for good; the user must sign in again, for `kind`.
    #[error("{reason}")]
    ReauthRequired { reason: String, kind: ReauthKind },
    /// A Conditional Access policy blocks the user; signing in again will not help.
    #[error("{reason}")]
    Blocked { reason: String },
    /// The upstream refused the broker's own configuration; an operator must fix `config_key`.
    #[error("the provider refused the broker's configuration ({cause}); check `{config_key}`")]
    Misconfigured { cause: String, config_key: String },
    /// No fresh token in time: the upstream failed transiently, or did not answer before the
    /// refresh's deadline.
    #[error("{cause}; try again in {retry_after} seconds")]
    Unavailable { cause: &'static str, retry_after: u64 },
    /// The row is sealed under a vault key the configuration no longer lists; only an
    /// operator can mend it, by adding the key back.
    #[error(
        "the stored tokens are sealed under vault key `{key_id}`, which is not configured; an operator must add it back to `vault.encryption_keys` (env BROKER_ENCRYPTION_KEYS)"
    )]
    KeyNotConfigured { key_id: String },
    /// A failure of ours; `context` says what was being done.
    #[error("{context}")]
    Internal {
        context: &'static str,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl VaultError {
    pub(super) fn internal(context: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        VaultError::Internal { context, source: Arc::new(source) }
    }
}

impl From<StoreError> for VaultError {
    fn from(err: StoreError) -> Self {
        VaultError::internal("the vault's database failed", err)
    }
}

impl VaultError {
    /// The outcome label for metrics and the audit trail.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            VaultError::NotLinked { .. } => "not_linked",
            VaultError::NotStored { .. } => "not_stored",
            VaultError::UserDisabled { .. } => "user_disabled",
            VaultError::ReauthRequired { .. } => "reauth_required",
            VaultError::Blocked { .. } => "blocked",
            VaultError::Misconfigured { .. } => "misconfigured",
            VaultError::Unavailable { .. } => "unavailable",
            VaultError::KeyNotConfigured { .. } => "key_not_configured",
            VaultError::Internal { .. } => "error",
        }
    }
}
