//! Keycloak's user representation as its realm export writes it, and as `export keycloak`
//! writes it back: the fields the broker keeps; everything else (credentials, roles, groups,
//! required actions) is read past.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A user of a realm export (`UserRepresentation`). Every field may be missing or null in a
/// hand-written file; `import` checks what it needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRepresentation {
    pub id: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email_verified: Option<bool>,
    pub enabled: Option<bool>,
    /// Milliseconds since the epoch.
    pub created_timestamp: Option<i64>,
    /// `{name: [value, …]}`; a null value in a list is dropped.
    pub attributes: Option<BTreeMap<String, Option<Vec<Option<String>>>>>,
    pub federated_identities: Option<Vec<FederatedIdentityRepresentation>>,
    /// Set on the user behind a client's service account, which the broker does not import.
    pub service_account_client_id: Option<String>,
}

/// A linked upstream account: the provider alias, the account's id there and its name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedIdentityRepresentation {
    pub identity_provider: Option<String>,
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
}

/// A user as `export keycloak` writes it, in Keycloak's field names and order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedUser {
    pub id: String,
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    pub email_verified: bool,
    pub enabled: bool,
    pub created_timestamp: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub federated_identities: Vec<FederatedIdentityRepresentation>,
}
