//! The start page's "try a sign-in" (start-dev only): a built-in confidential client that runs
//! the real code flow against this broker and reports what came back, never the values.
//!
//! The client is registered like any configured one and goes the whole way a real application
//! goes: state and PKCE kept by the browser, `/auth`, the provider, the code redeemed by the
//! token endpoint's own grant, userinfo, and the stored-token read of
//! `/broker/{alias}/token`. It calls those in process, so that the page works whatever
//! address the browser reached the public listener by. What it returns holds lengths, lifetimes
//! and flags only: the page cannot show a token because it never gets one.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::broker_token::read_for_bearer;
use crate::config::{ClientCredential, ClientSettings};
use crate::crypto::{CtSecret, constant_time_eq, pkce_s256, random_token};
use crate::oidc::clients::{ClientRegistry, PresentedCredentials};
use crate::oidc::error::OAuthError;
use crate::oidc::grants::{CodeExchange, GrantError, Grants};
use crate::oidc::tokens::{IssuedTokens, UserClaims};
use crate::store::StoreError;
use crate::telemetry::Chain;
use crate::vault::{ServedTokens, TokenVault};

/// The demonstration client's id; a configured client or service account of that id turns the
/// demonstration off rather than being shadowed.
pub(crate) const DEMO_CLIENT_ID: &str = "broker-demo";
const DEMO_SCOPE: &str = "openid email profile";

/// The built-in client: its secret, made at start and never shown, and its one redirect URI.
pub struct DemoClient {
    secret: SecretString,
    redirect_uri: String,
    authorization_endpoint: String,
}

impl fmt::Debug for DemoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoClient").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

/// Where to send the browser, and the cookie value that lets the callback check the answer.
#[derive(Debug)]
pub(crate) struct DemoStart {
    pub(crate) authorization_url: Url,
    /// `{state}.{PKCE verifier}`: both base64url, so the dot cannot occur inside either.
    pub(crate) cookie: String,
}

/// The query the broker redirects back with.
#[derive(Default, Deserialize)]
pub(crate) struct DemoAnswer {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

debug_showing!(DemoAnswer { error, error_description });

/// A checked answer: the code, and the verifier its challenge was made from.
pub(crate) struct Redemption {
    code: String,
    verifier: String,
}

impl fmt::Debug for Redemption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redemption([redacted])")
    }
}

/// Why the demonstration stopped; `Display` is what the page says.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    #[error(
        "No sign-in was started from this browser, or it has expired (its cookie is missing). Start again from the start page."
    )]
    NotStarted,
    #[error(
        "The answer's state does not match the one this browser sent: it belongs to another sign-in and was not used. Start again from the start page."
    )]
    StateMismatch,
    #[error("The sign-in was cancelled (access_denied): {description}")]
    Cancelled { description: String },
    #[error("The sign-in did not complete ({error}): {description}")]
    Refused { error: String, description: String },
    #[error("The answer carried neither a code nor an error.")]
    NoCode,
    #[error("The token endpoint's grant refused the code ({0}).")]
    Exchange(OAuthError),
    #[error("The access token just issued was not accepted.")]
    TokenRejected,
    #[error("the demonstration client is not registered")]
    NotRegistered,
    #[error("the demonstration could not read the database")]
    Store(#[from] StoreError),
    #[error("the demonstration's tokens could not be issued")]
    Grant(#[source] GrantError),
}

impl DemoError {
    /// A failure of ours rather than an answer the browser brought.
    pub(crate) fn is_internal(&self) -> bool {
        matches!(self, DemoError::NotRegistered | DemoError::Store(_) | DemoError::Grant(_))
    }
}

impl From<GrantError> for DemoError {
    fn from(err: GrantError) -> Self {
        match err {
            GrantError::OAuth(error) => DemoError::Exchange(error),
            other => DemoError::Grant(other),
        }
    }
}

/// What the sign-in gave, as the page shows it.
#[derive(Debug)]
pub(crate) struct DemoOutcome {
    pub(crate) user_id: String,
    pub(crate) claims: UserClaims,
    pub(crate) issued: IssuedFacts,
    pub(crate) stored: StoredRead,
}

/// The broker's own tokens for the demonstration client, described.
#[derive(Debug)]
pub(crate) struct IssuedFacts {
    pub(crate) access_token_chars: usize,
    pub(crate) expires_in: i64,
    pub(crate) refresh_expires_in: i64,
    pub(crate) id_token: bool,
    pub(crate) scope: String,
}

/// The stored-token read for the user and the provider they signed in with.
#[derive(Debug)]
pub(crate) enum StoredRead {
    Served {
        alias: String,
        facts: StoredFacts,
    },
    /// Refused as `/broker/{alias}/token` would refuse it; the message is the vault's.
    Refused {
        alias: String,
        message: String,
    },
}

/// The upstream tokens the vault served, described.
#[derive(Debug)]
pub(crate) struct StoredFacts {
    pub(crate) token_type: String,
    pub(crate) scope: String,
    pub(crate) access_token_chars: usize,
    pub(crate) expires_in: i64,
    pub(crate) refresh_token: bool,
    pub(crate) refresh_expires_in: Option<i64>,
    pub(crate) id_token: bool,
    /// The read had to refresh the token first.
    pub(crate) refreshed: bool,
}

impl IssuedFacts {
    fn of(issued: &IssuedTokens) -> Self {
        IssuedFacts {
            access_token_chars: issued.access_token.chars().count(),
            expires_in: issued.expires_in,
            refresh_expires_in: issued.refresh_expires_in,
            id_token: issued.id_token.is_some(),
            scope: issued.scope.clone(),
        }
    }
}

impl StoredFacts {
    fn of(served: &ServedTokens, now: i64) -> Self {
        let tokens = &served.tokens;
        StoredFacts {
            token_type: tokens.token_type.clone(),
            scope: tokens.scope.clone(),
            access_token_chars: tokens.access_token.expose_secret().chars().count(),
            expires_in: (tokens.expires_at - now).max(0),
            refresh_token: tokens.refresh_token.is_some(),
            refresh_expires_in: tokens.refresh_expires_at.map(|at| (at - now).max(0)),
            id_token: tokens.id_token.is_some(),
            refreshed: served.refreshed,
        }
    }
}

impl DemoClient {
    /// A client whose secret is made now; `redirect_uri` is `{public URL}/demo/callback`.
    pub(crate) fn new(redirect_uri: String, authorization_endpoint: String) -> Self {
        DemoClient { secret: SecretString::from(random_token()), redirect_uri, authorization_endpoint }
    }

    /// The client secret, so that tests can check no page shows it.
    #[cfg(feature = "testing")]
    pub fn client_secret(&self) -> &str {
        self.secret.expose_secret()
    }

    /// What the client registry holds for it: confidential, one redirect URI, and the
    /// `read-token` role, as OpenHands' client has.
    pub(crate) fn registration(&self) -> ClientSettings {
        ClientSettings {
            client_id: DEMO_CLIENT_ID.to_owned(),
            credential: ClientCredential::Confidential(CtSecret::new(self.secret.clone())),
            redirect_uris: vec![self.redirect_uri.clone()],
            post_logout_redirect_uris: Vec::new(),
            read_token: true,
            rotate_refresh_tokens: false,
            allow_plain_pkce: false,
            direct_access_grants: false,
            roles_claim: false,
        }
    }

    /// A new sign-in: a state and a PKCE verifier for the browser's cookie, and the
    /// authorization request. With exactly one provider, `kc_idp_hint` names it, as OpenHands
    /// does; with several, the broker lets the user choose.
    pub(crate) fn begin(&self, provider_aliases: &[&str]) -> Result<DemoStart, url::ParseError> {
        let state = random_token();
        let verifier = random_token();
        let mut url = Url::parse(&self.authorization_endpoint)?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", DEMO_CLIENT_ID)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("scope", DEMO_SCOPE)
                .append_pair("state", &state)
                .append_pair("code_challenge", &pkce_s256(&verifier))
                .append_pair("code_challenge_method", "S256");
            if let [alias] = provider_aliases {
                query.append_pair("kc_idp_hint", alias);
            }
        }
        Ok(DemoStart { authorization_url: url, cookie: format!("{state}.{verifier}") })
    }

    /// Redeems the code with the token endpoint's grant as this client, then asks what
    /// userinfo and the stored-token read answer for the access token it got.
    pub(crate) async fn redeem(
        &self,
        clients: &ClientRegistry,
        grants: &Grants,
        vault: &TokenVault,
        redemption: &Redemption,
        now: i64,
    ) -> Result<DemoOutcome, DemoError> {
        let credentials = PresentedCredentials {
            client_id: Some(DEMO_CLIENT_ID.to_owned()),
            client_secret: Some(self.secret.expose_secret().to_owned()),
            via_basic: false,
        };
        let client = clients.authenticate(&credentials).ok_or(DemoError::NotRegistered)?;
        let exchange = CodeExchange {
            code: &redemption.code,
            redirect_uri: Some(&self.redirect_uri),
            code_verifier: Some(&redemption.verifier),
        };
        let issued = grants.exchange_authorization_code(client, &exchange, now).await?;
        let (user_id, claims, _) = grants.userinfo(&issued.access_token, now).await?.ok_or(DemoError::TokenRejected)?;
        let stored = read_stored(grants, vault, &issued.access_token, now).await?;
        Ok(DemoOutcome { user_id, claims, issued: IssuedFacts::of(&issued), stored })
    }
}

/// Checks the browser's answer against the cookie its sign-in began with: the state first, so
/// that not even an error is believed from an answer that is not this browser's.
pub(crate) fn check_answer(cookie: Option<&str>, answer: DemoAnswer) -> Result<Redemption, DemoError> {
    let (state, verifier) = cookie.and_then(|value| value.split_once('.')).ok_or(DemoError::NotStarted)?;
    let returned = answer.state.as_deref().unwrap_or_default();
    if returned.len() != state.len() || !constant_time_eq(returned, state) {
        return Err(DemoError::StateMismatch);
    }
    if let Some(error) = answer.error {
        let description = answer.error_description.unwrap_or_else(|| "no description given".to_owned());
        return Err(if error == "access_denied" {
            DemoError::Cancelled { description }
        } else {
            DemoError::Refused { error, description }
        });
    }
    let code = answer.code.ok_or(DemoError::NoCode)?;
    Ok(Redemption { code, verifier: verifier.to_owned() })
}

/// The stored-token read exactly as `/broker/{alias}/token` makes it, for the provider the
/// user signed in with.
async fn read_stored(
    grants: &Grants,
    vault: &TokenVault,
    access_token: &str,
    now: i64,
) -> Result<StoredRead, DemoError> {
    let read = read_for_bearer(grants, vault, access_token, None, now).await?.ok_or(DemoError::TokenRejected)?;
    let alias = read.alias;
    Ok(match read.result {
        Ok(served) => StoredRead::Served { facts: StoredFacts::of(&served, now), alias },
        Err(err) => {
            tracing::warn!(alias = %alias, error = %Chain(&err), "the demonstration's stored-token read was refused");
            StoredRead::Refused { alias, message: err.to_string() }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(state: Option<&str>, code: Option<&str>, error: Option<&str>) -> DemoAnswer {
        DemoAnswer {
            code: code.map(str::to_owned),
            state: state.map(str::to_owned),
            error: error.map(str::to_owned),
            error_description: error.map(|_| "User declined.".to_owned()),
        }
    }

    #[test]
    fn the_answer_must_carry_the_state_of_this_browsers_cookie() {
        let cookie = Some("state-abc.verifier-xyz");
        let cases: [(Option<&str>, DemoAnswer, &str); 7] = [
            (None, answer(Some("state-abc"), Some("c"), None), "NotStarted"),
            (Some("no-dot"), answer(Some("state-abc"), Some("c"), None), "NotStarted"),
            (cookie, answer(Some("state-abd"), Some("c"), None), "StateMismatch"),
            (cookie, answer(None, Some("c"), None), "StateMismatch"),
            (cookie, answer(Some("other"), None, Some("access_denied")), "StateMismatch"),
            (cookie, answer(Some("state-abc"), None, Some("access_denied")), "Cancelled"),
            (cookie, answer(Some("state-abc"), None, None), "NoCode"),
        ];
        for (cookie, answer, expected) in cases {
            let err = check_answer(cookie, answer).expect_err(expected);
            assert!(format!("{err:?}").starts_with(expected), "expected {expected}, got {err:?}");
        }
        let redemption = check_answer(cookie, answer(Some("state-abc"), Some("the-code"), None)).expect("accepted");
        assert_eq!((redemption.code.as_str(), redemption.verifier.as_str()), ("the-code", "verifier-xyz"));
        assert!(!format!("{redemption:?}").contains("the-code"), "Debug hides the code");
    }

    #[test]
    fn a_sign_in_asks_for_the_code_flow_with_pkce_and_hints_a_lone_provider() {
        let demo = DemoClient::new(
            "http://127.0.0.1:8080/demo/callback".to_owned(),
            "http://127.0.0.1:8080/realms/allhands/protocol/openid-connect/auth".to_owned(),
        );
        let started = demo.begin(&["azure_devops"]).expect("a valid endpoint");
        let query: std::collections::HashMap<String, String> =
            started.authorization_url.query_pairs().into_owned().collect();
        let (state, verifier) = started.cookie.split_once('.').expect("state.verifier");
        assert_eq!(query["client_id"], DEMO_CLIENT_ID);
        assert_eq!(query["redirect_uri"], "http://127.0.0.1:8080/demo/callback");
        assert_eq!(query["state"], state);
        assert_eq!(query["code_challenge"], pkce_s256(verifier));
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["kc_idp_hint"], "azure_devops");
        let several = demo.begin(&["a", "b"]).expect("a valid endpoint");
        assert!(!several.authorization_url.as_str().contains("kc_idp_hint"), "several providers: the user chooses");
        let registered = demo.registration();
        assert!(registered.allows_redirect("http://127.0.0.1:8080/demo/callback") && registered.read_token);
        assert!(!format!("{demo:?}").contains(demo.secret.expose_secret()), "Debug hides the secret");
    }
}
