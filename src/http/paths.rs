//! Every route path, shared by the routers and the discovery document.

pub const START: &str = "/";
pub const DEMO_START: &str = "/demo/start";
pub const DEMO_CALLBACK: &str = "/demo/callback";

pub const REALM: &str = "/realms/{realm}";
pub const DISCOVERY: &str = "/realms/{realm}/.well-known/openid-configuration";
pub const CERTS: &str = "/realms/{realm}/protocol/openid-connect/certs";
pub const AUTH: &str = "/realms/{realm}/protocol/openid-connect/auth";
pub const TOKEN: &str = "/realms/{realm}/protocol/openid-connect/token";
pub const USERINFO: &str = "/realms/{realm}/protocol/openid-connect/userinfo";
pub const INTROSPECT: &str = "/realms/{realm}/protocol/openid-connect/token/introspect";
pub const REVOKE: &str = "/realms/{realm}/protocol/openid-connect/revoke";
pub const LOGOUT: &str = "/realms/{realm}/protocol/openid-connect/logout";
pub const BROKER_LOGIN: &str = "/realms/{realm}/broker/{alias}/login";
pub const BROKER_ENDPOINT: &str = "/realms/{realm}/broker/{alias}/endpoint";
pub const BROKER_TOKEN: &str = "/realms/{realm}/broker/{alias}/token";
/// Keycloak's address for the links it sends by e-mail (`?key=…`).
pub const ACTION_TOKEN: &str = "/realms/{realm}/login-actions/action-token";

/// Keycloak's admin REST API (python-keycloak's `KeycloakAdmin`), on the public listener.
pub const ADMIN_REALM: &str = "/admin/realms/{realm}";
pub const ADMIN_USERS: &str = "/admin/realms/{realm}/users";
pub const ADMIN_USERS_COUNT: &str = "/admin/realms/{realm}/users/count";
pub const ADMIN_USER: &str = "/admin/realms/{realm}/users/{user_id}";
pub const ADMIN_USER_IDENTITIES: &str = "/admin/realms/{realm}/users/{user_id}/federated-identity";
pub const ADMIN_USER_IDENTITY: &str = "/admin/realms/{realm}/users/{user_id}/federated-identity/{alias}";
pub const ADMIN_USER_LOGOUT: &str = "/admin/realms/{realm}/users/{user_id}/logout";
pub const ADMIN_USER_SEND_VERIFY_EMAIL: &str = "/admin/realms/{realm}/users/{user_id}/send-verify-email";
/// The realm of Keycloak's administrator, whose token endpoint signs `admin-cli` in.
pub const MASTER_REALM: &str = "master";

pub const INTERNAL_USER_TOKEN: &str = "/internal/v1/users/{user_id}/tokens/{alias}";
pub const INTERNAL_USERS: &str = "/internal/v1/users";
pub const INTERNAL_OPENAPI: &str = "/internal/v1/openapi.json";

pub const HEALTH: &str = "/health";
pub const HEALTH_LIVE: &str = "/health/live";
pub const HEALTH_READY: &str = "/health/ready";
pub const HEALTH_STARTED: &str = "/health/started";
pub const METRICS: &str = "/metrics";

/// The built-in development provider of `start-dev`, in Entra's layout (`upstream::development`).
pub const DEV_DISCOVERY: &str = "/dev-entra/{tenant}/v2.0/.well-known/openid-configuration";
pub const DEV_JWKS: &str = "/dev-entra/{tenant}/discovery/v2.0/keys";
pub const DEV_AUTHORIZE: &str = "/dev-entra/{tenant}/oauth2/v2.0/authorize";
pub const DEV_TOKEN: &str = "/dev-entra/{tenant}/oauth2/v2.0/token";

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

/// A route template with the realm name filled in, relative to the realm URL's root.
pub(crate) fn realm_relative(template: &str) -> &str {
    template.trim_start_matches(REALM)
}
