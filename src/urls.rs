//! The broker's own addresses: the realm's routes, and `Urls`, which builds every URL and realm
//! path from the public base URL and the realm name, once.
//!
//! This module sits beneath every layer rather than in `http/` beside `paths.rs`, because the
//! layers below `http` put these addresses into what they make: tokens carry the issuer, sign-in
//! sends the redirect URI registered in Entra and puts `iss` in its answers, e-mails carry the
//! action-token link, doctor prints the redirect URI to register. Data flows one way (http →
//! oidc/upstream/vault → store), so none of those may import `http`. The realm's routes, which
//! `Urls` fills in, live here for the same reason, each written once; `http/paths.rs` re-exports
//! them, so that the routers, the discovery document and the metrics labels still take every
//! route from its one list.

use std::net::SocketAddr;

use url::Url;

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
/// The realm of Keycloak's administrator, whose token endpoint signs `admin-cli` in.
pub const MASTER_REALM: &str = "master";

/// Prefixes Keycloak's realm document names: the broker serves routes beneath the first, and
/// has no account console at the second.
const TOKEN_SERVICE: &str = "/realms/{realm}/protocol/openid-connect";
const ACCOUNT_SERVICE: &str = "/realms/{realm}/account";

/// The addresses of one running broker, fixed at start so that none depends on which host name
/// or listener a request came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Urls {
    /// The public base URL without a trailing `/`.
    public: String,
    realm: String,
    /// `{public}/realms/{realm}`.
    issuer: String,
}

impl Urls {
    /// The addresses under `base` (`http.hostname`; a trailing `/` is ignored) of realm `realm`.
    pub(crate) fn new(base: &str, realm: &str) -> Urls {
        let public = base.trim_end_matches('/').to_owned();
        let issuer = format!("{public}{}", fill(REALM, realm));
        Urls { public, realm: realm.to_owned(), issuer }
    }

    /// Under `http.hostname`, or without one under the public listener's own address.
    pub(crate) fn for_listener(hostname: Option<&Url>, public_addr: SocketAddr, realm: &str) -> Urls {
        match hostname {
            Some(hostname) => Urls::new(hostname.as_str(), realm),
            None => Urls::new(&format!("http://{public_addr}"), realm),
        }
    }

    /// The public base URL, without a trailing `/`.
    pub(crate) fn public_url(&self) -> &str {
        &self.public
    }

    /// Whether browsers reach the broker over TLS: cookies are `Secure` and HSTS is sent.
    pub(crate) fn is_https(&self) -> bool {
        self.public.starts_with("https://")
    }

    /// A route outside the realm (the start page, the demonstration, the development provider).
    pub(crate) fn public(&self, path: &str) -> String {
        format!("{}{path}", self.public)
    }

    /// `{hostname}/realms/{realm}`: the realm URL, which is also its tokens' issuer.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `{hostname}/realms/master`: the issuer of the administrator's tokens.
    pub(crate) fn master_issuer(&self) -> String {
        format!("{}{}", self.public, fill(REALM, MASTER_REALM))
    }

    /// A realm route's path with this realm filled in: `/realms/{realm}/…`.
    pub(crate) fn path(&self, template: &str) -> String {
        fill(template, &self.realm)
    }

    /// A provider's route's path with this realm and `alias` filled in.
    pub(crate) fn provider_path(&self, template: &str, alias: &str) -> String {
        self.path(template).replace("{alias}", alias)
    }

    /// A realm route's absolute URL.
    pub(crate) fn endpoint(&self, template: &str) -> String {
        format!("{}{}", self.public, self.path(template))
    }

    /// The upstream redirect URI for provider `alias`: what its app registration must list,
    /// exactly as sign-in sends it.
    pub(crate) fn broker_endpoint(&self, alias: &str) -> String {
        format!("{}{}", self.public, self.provider_path(BROKER_ENDPOINT, alias))
    }

    /// Where the browser goes to sign in pending request `request_id` at provider `alias`;
    /// relative, so that it stays on whichever host the browser used.
    pub(crate) fn broker_login(&self, alias: &str, request_id: &str) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("request", request_id).finish();
        format!("{}?{query}", self.provider_path(BROKER_LOGIN, alias))
    }

    /// The e-mailed link's address without its key.
    pub(crate) fn action_token(&self) -> String {
        self.endpoint(ACTION_TOKEN)
    }

    /// The OpenID Connect discovery document.
    pub(crate) fn discovery(&self) -> String {
        self.endpoint(DISCOVERY)
    }

    /// The realm document's `token-service`.
    pub(crate) fn token_service(&self) -> String {
        self.endpoint(TOKEN_SERVICE)
    }

    /// The realm document's `account-service`.
    pub(crate) fn account_service(&self) -> String {
        self.endpoint(ACCOUNT_SERVICE)
    }

    /// The path the realm's cookies are scoped to: `/realms/{realm}/`.
    pub(crate) fn cookie_path(&self) -> String {
        format!("{}/", self.path(REALM))
    }
}

/// A route on the management listener at `addr`, which has no public host name.
pub(crate) fn management_url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

fn fill(template: &str, realm: &str) -> String {
    template.replace("{realm}", realm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_built_from_the_base_url_and_the_realm() {
        let cases = [
            ("https://auth.example.com", "allhands", "azure_devops", "https://auth.example.com", "a bare host"),
            ("https://auth.example.com/", "allhands", "azure_devops", "https://auth.example.com", "a trailing slash"),
            ("http://127.0.0.1:8080", "acme", "dev", "http://127.0.0.1:8080", "a listener's address"),
            ("https://example.com/auth/", "acme", "other", "https://example.com/auth", "a path prefix"),
        ];
        for (base, realm, alias, public, why) in cases {
            let urls = Urls::new(base, realm);
            let realm_url = format!("{public}/realms/{realm}");
            let expected = [
                (urls.public_url().to_owned(), public.to_owned()),
                (urls.public("/demo/callback"), format!("{public}/demo/callback")),
                (urls.issuer().to_owned(), realm_url.clone()),
                (urls.master_issuer(), format!("{public}/realms/master")),
                (urls.path(LOGOUT), format!("/realms/{realm}/protocol/openid-connect/logout")),
                (urls.provider_path(BROKER_TOKEN, alias), format!("/realms/{realm}/broker/{alias}/token")),
                (urls.endpoint(AUTH), format!("{realm_url}/protocol/openid-connect/auth")),
                (urls.broker_endpoint(alias), format!("{realm_url}/broker/{alias}/endpoint")),
                (urls.broker_login(alias, "r-1"), format!("/realms/{realm}/broker/{alias}/login?request=r-1")),
                (urls.action_token(), format!("{realm_url}/login-actions/action-token")),
                (urls.discovery(), format!("{realm_url}/.well-known/openid-configuration")),
                (urls.token_service(), format!("{realm_url}/protocol/openid-connect")),
                (urls.account_service(), format!("{realm_url}/account")),
                (urls.cookie_path(), format!("/realms/{realm}/")),
            ];
            for (built, want) in expected {
                assert_eq!(built, want, "{why}: {base}");
            }
        }
    }

    #[test]
    fn the_base_url_is_the_hostname_or_else_the_listener() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let hostname = Url::parse("https://auth.example.com").expect("a URL");
        let cases = [
            (Some(&hostname), "https://auth.example.com", true, "the configured hostname wins"),
            (None, "http://127.0.0.1:8080", false, "without one, the public listener"),
        ];
        for (hostname, public, https, why) in cases {
            let urls = Urls::for_listener(hostname, addr, "allhands");
            assert_eq!((urls.public_url(), urls.is_https()), (public, https), "{why}");
        }
    }

    #[test]
    fn the_login_link_encodes_the_request_id() {
        let urls = Urls::new("https://auth.example.com", "allhands");
        assert_eq!(urls.broker_login("dev", "a b&c"), "/realms/allhands/broker/dev/login?request=a+b%26c");
    }

    #[test]
    fn the_management_listener_is_addressed_by_its_socket() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9000));
        assert_eq!(management_url(addr, "/health"), "http://127.0.0.1:9000/health");
    }
}
