//! Every route path, shared by the routers, the discovery document and the metrics labels.

use crate::upstream::development::authority_path;

pub const START: &str = "/";
/// The start page's demonstration sign-in, and the path its cookie is sent on.
macro_rules! demo {
    ($rest:literal) => {
        concat!("/demo/", $rest)
    };
}
pub const DEMO: &str = demo!("");
pub const DEMO_START: &str = demo!("start");
pub const DEMO_CALLBACK: &str = demo!("callback");

// The realm's routes are written once in `crate::urls`, beside `Urls`, which fills them in below `http`.
pub use crate::urls::{
    ACTION_TOKEN, AUTH, BROKER_ENDPOINT, BROKER_LOGIN, BROKER_TOKEN, CERTS, DISCOVERY, INTROSPECT, LOGOUT,
    MASTER_REALM, REALM, REVOKE, TOKEN, USERINFO,
};

/// Keycloak's admin REST API (python-keycloak's `KeycloakAdmin`), on the public listener.
pub const ADMIN_REALM: &str = "/admin/realms/{realm}";
pub const ADMIN_USERS: &str = "/admin/realms/{realm}/users";
pub const ADMIN_USERS_COUNT: &str = "/admin/realms/{realm}/users/count";
pub const ADMIN_USER: &str = "/admin/realms/{realm}/users/{user_id}";
pub const ADMIN_USER_IDENTITIES: &str = "/admin/realms/{realm}/users/{user_id}/federated-identity";
pub const ADMIN_USER_IDENTITY: &str = "/admin/realms/{realm}/users/{user_id}/federated-identity/{alias}";
pub const ADMIN_USER_LOGOUT: &str = "/admin/realms/{realm}/users/{user_id}/logout";
pub const ADMIN_USER_SEND_VERIFY_EMAIL: &str = "/admin/realms/{realm}/users/{user_id}/send-verify-email";
pub const ADMIN_USER_RESET_PASSWORD: &str = "/admin/realms/{realm}/users/{user_id}/reset-password";
pub const ADMIN_USER_REALM_ROLES: &str = "/admin/realms/{realm}/users/{user_id}/role-mappings/realm";
pub const ADMIN_ROLES: &str = "/admin/realms/{realm}/roles";
pub const ADMIN_ROLE_USERS: &str = "/admin/realms/{realm}/roles/{role_name}/users";

pub const INTERNAL_USER_TOKEN: &str = "/internal/v1/users/{user_id}/tokens/{alias}";
pub const INTERNAL_USERS: &str = "/internal/v1/users";
pub const INTERNAL_OPENAPI: &str = "/internal/v1/openapi.json";

pub const HEALTH: &str = "/health";
pub const HEALTH_LIVE: &str = "/health/live";
pub const HEALTH_READY: &str = "/health/ready";
pub const HEALTH_STARTED: &str = "/health/started";
pub const METRICS: &str = "/metrics";

/// The built-in development provider of `start-dev`, in Entra's layout (`upstream::development`).
pub const DEV_DISCOVERY: &str = authority_path!("/{tenant}/v2.0/.well-known/openid-configuration");
pub const DEV_JWKS: &str = authority_path!("/{tenant}/discovery/v2.0/keys");
pub const DEV_AUTHORIZE: &str = authority_path!("/{tenant}/oauth2/v2.0/authorize");
pub const DEV_TOKEN: &str = authority_path!("/{tenant}/oauth2/v2.0/token");

/// Every route the listeners serve.
pub const ALL: &[&str] = &[
    START,
    DEMO_START,
    DEMO_CALLBACK,
    REALM,
    DISCOVERY,
    CERTS,
    AUTH,
    TOKEN,
    USERINFO,
    INTROSPECT,
    REVOKE,
    LOGOUT,
    BROKER_LOGIN,
    BROKER_ENDPOINT,
    BROKER_TOKEN,
    ACTION_TOKEN,
    ADMIN_REALM,
    ADMIN_USERS,
    ADMIN_USERS_COUNT,
    ADMIN_USER,
    ADMIN_USER_IDENTITIES,
    ADMIN_USER_IDENTITY,
    ADMIN_USER_LOGOUT,
    ADMIN_USER_SEND_VERIFY_EMAIL,
    ADMIN_USER_RESET_PASSWORD,
    ADMIN_USER_REALM_ROLES,
    ADMIN_ROLES,
    ADMIN_ROLE_USERS,
    INTERNAL_USER_TOKEN,
    INTERNAL_USERS,
    INTERNAL_OPENAPI,
    HEALTH,
    HEALTH_LIVE,
    HEALTH_READY,
    HEALTH_STARTED,
    METRICS,
    DEV_DISCOVERY,
    DEV_JWKS,
    DEV_AUTHORIZE,
    DEV_TOKEN,
];

/// The constant for a matched route template, so that metrics label it without allocating.
pub(crate) fn route_label(template: &str) -> &'static str {
    ALL.iter().copied().find(|route| *route == template).unwrap_or("unmatched")
}
