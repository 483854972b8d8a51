//! The users and the identities linked to them, as the APIs for other services look them up.

use crate::store::{IdentityRow, Store, StoreError, UserRow};

/// Lookups over the users; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    store: Store,
}

impl Directory {
    pub(crate) fn new(store: Store) -> Self {
        Directory { store }
    }

    /// The user who signed in through `alias` as upstream `subject`, if any.
    pub(crate) async fn find_by_identity(&self, alias: &str, subject: &str) -> Result<Option<UserRow>, StoreError> {
        match self.store.find_identity_by_subject(alias, subject).await? {
            Some(identity) => self.store.find_user(&identity.user_id).await,
            None => Ok(None),
        }
    }

    /// Users whose e-mail address matches, ignoring case; at most `limit`.
    pub(crate) async fn find_by_email(&self, email: &str, limit: i64) -> Result<Vec<UserRow>, StoreError> {
        self.store.find_users_by_email(email, limit).await
    }

    /// Every provider linked to a user.
    pub(crate) async fn identities(&self, user_id: &str) -> Result<Vec<IdentityRow>, StoreError> {
        self.store.list_identities(user_id).await
    }
}
