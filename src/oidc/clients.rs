//! Registered client applications and how they authenticate at the token endpoint.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::config::{ClientCredential, ClientSettings, ServiceAccountSettings};
use crate::crypto::{PKCE_PLAIN, PKCE_S256};

/// Credentials a token request presented, from the form or the `Authorization` header.
#[derive(Default)]
pub(crate) struct PresentedCredentials {
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    /// True when they came by `client_secret_basic`; an error must then answer 401 with
    /// `WWW-Authenticate: Basic`.
    pub(crate) via_basic: bool,
}

impl std::fmt::Debug for PresentedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedCredentials")
            .field("client_id", &self.client_id)
            .field("via_basic", &self.via_basic)
            .finish()
    }
}

impl PresentedCredentials {
    /// Reads `client_secret_basic` (RFC 6749 §2.3.1: both halves form-urlencoded) and falls back
    /// to the form's `client_id`/`client_secret`. Both at once is ambiguous and refused.
    pub(crate) fn from_parts(
        authorization: Option<&str>,
        form_id: Option<&str>,
        form_secret: Option<&str>,
    ) -> Result<Self, &'static str> {
        if let Some(header) = authorization {
            let encoded = header.strip_prefix("Basic ").ok_or("unsupported Authorization scheme")?;
            let decoded = BASE64.decode(encoded.trim()).map_err(|_| "malformed Basic credentials")?;
            let decoded = String::from_utf8(decoded).map_err(|_| "malformed Basic credentials")?;
            let (id, secret) = decoded.split_once(':').ok_or("malformed Basic credentials")?;
            if form_secret.is_some() {
                return Err("client credentials were sent twice");
            }
            let decode =
                |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
            return Ok(PresentedCredentials { client_id: decode(id), client_secret: decode(secret), via_basic: true });
        }
        Ok(PresentedCredentials {
            client_id: form_id.map(str::to_owned),
            client_secret: form_secret.map(str::to_owned),
            via_basic: false,
        })
    }
}

/// The registered clients, as configured at start; clones share them.
#[derive(Debug, Clone)]
pub(crate) struct ClientRegistry {
    clients: Arc<[ClientSettings]>,
}

impl ClientRegistry {
    pub(crate) fn new(clients: Vec<ClientSettings>) -> Self {
        ClientRegistry { clients: clients.into() }
    }

    pub(crate) fn find(&self, client_id: &str) -> Option<&ClientSettings> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// The client if the credentials prove it; a public client proves itself by id alone.
    pub(crate) fn authenticate(&self, credentials: &PresentedCredentials) -> Option<&ClientSettings> {
        let client = self.find(credentials.client_id.as_deref()?)?;
        match (&client.credential, credentials.client_secret.as_deref()) {
            (ClientCredential::Confidential(secret), Some(presented)) if secret.matches(presented) => Some(client),
            (ClientCredential::Public, None) => Some(client),
            _ => None,
        }
    }

    /// The PKCE methods the authorization endpoint accepts from some client, as discovery
    /// advertises them: `plain` only while a client is configured to allow it.
    pub(crate) fn code_challenge_methods(&self) -> &'static [&'static str] {
        if self.clients.iter().any(|client| client.allow_plain_pkce) { &[PKCE_S256, PKCE_PLAIN] } else { &[PKCE_S256] }
    }
}

/// Why a caller may not introspect tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntrospectionRefusal {
    /// No client or service account, or the wrong secret.
    Unauthenticated,
    /// A public client, which proves nothing by its id (Keycloak: "Client not allowed.").
    PublicClient,
}

/// RFC 7662 §2.1: only a caller that proves itself with a secret, a confidential client or a
/// service account, may read what a token says; anyone can name a public client.
pub(crate) fn may_introspect(
    clients: &ClientRegistry,
    accounts: &ServiceAccountRegistry,
    credentials: &PresentedCredentials,
) -> Result<(), IntrospectionRefusal> {
    if accounts.authenticate(credentials).is_some() {
        return Ok(());
    }
    match clients.authenticate(credentials) {
        Some(client) if client.is_public() => Err(IntrospectionRefusal::PublicClient),
        Some(_) => Ok(()),
        None => Err(IntrospectionRefusal::Unauthenticated),
    }
}

impl ClientSettings {
    /// Exact string comparison, as OAuth 2.1 requires: no prefix or wildcard matching.
    pub(crate) fn allows_redirect(&self, redirect_uri: &str) -> bool {
        self.redirect_uris.iter().any(|registered| registered == redirect_uri)
    }

    /// Keycloak's `+` web origins: the origins of the registered redirect URIs.
    pub(crate) fn allows_web_origin(&self, origin: &str) -> bool {
        self.redirect_uris
            .iter()
            .filter_map(|uri| url::Url::parse(uri).ok())
            .any(|uri| uri.origin().ascii_serialization() == origin)
    }

    pub(crate) fn is_public(&self) -> bool {
        matches!(self.credential, ClientCredential::Public)
    }
}

/// The service accounts that may call the internal API, as configured; clones share them.
/// A request's caller holds its account's `Arc` (one increment, no copy of the secret), found
/// anew on every request: an account no longer configured is refused at once, whatever tokens
/// it holds.
#[derive(Debug, Clone)]
pub(crate) struct ServiceAccountRegistry {
    accounts: Arc<[Arc<ServiceAccountSettings>]>,
}

impl ServiceAccountRegistry {
    pub(crate) fn new(accounts: Vec<ServiceAccountSettings>) -> Self {
        ServiceAccountRegistry { accounts: accounts.into_iter().map(Arc::new).collect() }
    }

    pub(crate) fn find(&self, client_id: &str) -> Option<&Arc<ServiceAccountSettings>> {
        self.accounts.iter().find(|a| a.client_id == client_id)
    }

    /// The account if the credentials prove it; the secret is compared in constant time.
    pub(crate) fn authenticate(&self, credentials: &PresentedCredentials) -> Option<&ServiceAccountSettings> {
        let account = self.find(credentials.client_id.as_deref()?)?;
        account.client_secret.matches(credentials.client_secret.as_deref()?).then_some(account)
    }
}

impl ServiceAccountSettings {
    pub(crate) fn may_read(&self, alias: &str) -> bool {
        self.allowed_providers.iter().any(|allowed| allowed == alias)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::crypto::CtSecret;

    fn client(client_id: &str, secret: Option<&str>, allow_plain_pkce: bool) -> ClientSettings {
        ClientSettings {
            client_id: client_id.to_owned(),
            credential: match secret {
                Some(secret) => ClientCredential::Confidential(CtSecret::new(SecretString::from(secret))),
                None => ClientCredential::Public,
            },
            redirect_uris: vec!["http://app.test/cb".to_owned()],
            post_logout_redirect_uris: Vec::new(),
            read_token: true,
            rotate_refresh_tokens: false,
            allow_plain_pkce,
            direct_access_grants: false,
            roles_claim: false,
        }
    }

    fn presented(client_id: Option<&str>, secret: Option<&str>) -> PresentedCredentials {
        PresentedCredentials {
            client_id: client_id.map(str::to_owned),
            client_secret: secret.map(str::to_owned),
            via_basic: false,
        }
    }

    #[test]
    fn only_callers_proven_by_a_secret_may_introspect() {
        let clients = ClientRegistry::new(vec![client("app", Some("app-secret"), false), client("spa", None, false)]);
        let accounts = ServiceAccountRegistry::new(vec![ServiceAccountSettings {
            client_id: "runtime".to_owned(),
            client_secret: CtSecret::new(SecretString::from("runtime-secret")),
            allowed_providers: Vec::new(),
            admin_roles: Vec::new(),
        }]);
        let cases = [
            (Some("app"), Some("app-secret"), Ok(()), "a confidential client"),
            (Some("runtime"), Some("runtime-secret"), Ok(()), "a service account"),
            (Some("spa"), None, Err(IntrospectionRefusal::PublicClient), "a public client by its id"),
            (Some("spa"), Some("guess"), Err(IntrospectionRefusal::Unauthenticated), "a public client with a secret"),
            (Some("app"), Some("wrong"), Err(IntrospectionRefusal::Unauthenticated), "a wrong secret"),
            (Some("app"), None, Err(IntrospectionRefusal::Unauthenticated), "a confidential client without its secret"),
            (
                Some("runtime"),
                Some("wrong"),
                Err(IntrospectionRefusal::Unauthenticated),
                "a service account's wrong secret",
            ),
            (Some("nobody"), Some("x"), Err(IntrospectionRefusal::Unauthenticated), "an unknown client"),
            (None, None, Err(IntrospectionRefusal::Unauthenticated), "no credentials"),
        ];
        for (client_id, secret, expected, context) in cases {
            assert_eq!(may_introspect(&clients, &accounts, &presented(client_id, secret)), expected, "{context}");
        }
    }

    #[test]
    fn plain_pkce_is_advertised_only_while_a_client_allows_it() {
        let strict = ClientRegistry::new(vec![client("app", Some("s"), false), client("spa", None, false)]);
        let lenient = ClientRegistry::new(vec![client("app", Some("s"), false), client("legacy", None, true)]);

        assert_eq!(strict.code_challenge_methods(), ["S256"]);
        assert_eq!(lenient.code_challenge_methods(), ["S256", "plain"]);
    }
}
