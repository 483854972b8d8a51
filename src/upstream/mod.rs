//! The upstream identity provider boundary: Entra's pure protocol (`entra`) and the HTTP
//! client that performs its calls, caching discovery and JWKS per provider.

pub(crate) mod development;
pub(crate) mod entra;
pub(crate) mod refusal;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::JwkSet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::{ProviderSettings, UpstreamClientAuth};
use crate::telemetry::Metrics;
use entra::{EntraErrorBody, ErrorClass, IdTokenCheck, IdTokenError, ProviderMetadata, VerifiedIdentity};

/// How long discovery and JWKS stay cached, and the least time between two JWKS fetches
/// caused by unknown key ids (so forged `kid`s cannot make us hammer the provider), by the
/// application's clock. An age below zero (the wall clock went back) counts as expired.
const METADATA_TTL_SECONDS: i64 = 3600;
const JWKS_REFETCH_MIN_INTERVAL_SECONDS: i64 = 10;
/// The longest one upstream request may take, connection included. A refresh lets an attempt
/// begun before its deadline run this long, so that a late answer (and the refresh token it
/// rotates) is still stored.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The request failed before an answer. The URL is taken out of the cause: token endpoint
    /// URLs carry no secrets, but query strings might.
    #[error("the provider could not be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("the provider answered with HTTP {status}: {body}")]
    Malformed { status: u16, body: String },
    #[error("the provider refused: {} ({})", .body.error, .body.summary())]
    Refused { status: u16, body: EntraErrorBody, class: ErrorClass },
    /// Entra throttles: HTTP 429, or AADSTS50196 (the same request too often). `retry_after`
    /// is its `Retry-After`, in seconds, when it sent one.
    #[error("the provider is throttling requests (HTTP {status}{})", .body.aadsts().map(|c| format!(", AADSTS{c}")).unwrap_or_default())]
    Throttled { status: u16, body: EntraErrorBody, retry_after: Option<u64> },
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
}

impl UpstreamError {
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, UpstreamError::Unreachable(_))
            || matches!(self, UpstreamError::Malformed { status, .. } if *status >= 500)
            || matches!(self, UpstreamError::Refused { class: ErrorClass::Transient | ErrorClass::Throttled, .. })
            || matches!(self, UpstreamError::Throttled { .. })
    }
}

/// A token endpoint answer; the token values are secrets.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: SecretString,
    #[serde(default)]
    pub(crate) token_type: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    pub(crate) expires_in: Option<i64>,
    #[serde(default)]
    pub(crate) refresh_token: Option<SecretString>,
    #[serde(default, deserialize_with = "number_or_string")]
    pub(crate) refresh_token_expires_in: Option<i64>,
    #[serde(default)]
    pub(crate) id_token: Option<SecretString>,
    #[serde(default)]
    pub(crate) scope: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(i64),
        Text(String),
    }
    Ok(match Option::<NumberOrString>::deserialize(deserializer)? {
        Some(NumberOrString::Number(n)) => Some(n),
        Some(NumberOrString::Text(text)) => text.parse().ok(),
        None => None,
    })
}

/// A fetched document and its age, read without waiting: a reader that finds it fresh enough
/// takes it from an `ArcSwap`; only a fetch waits, for the one fetch that is already running
/// (whose result the next in line usually accepts).
struct Fetched<T> {
    current: ArcSwapOption<Stamped<T>>,
    fetching: Mutex<()>,
}

struct Stamped<T> {
    value: Arc<T>,
    /// Unix seconds, by the application's clock.
    fetched_at: i64,
}

impl<T> Default for Fetched<T> {
    fn default() -> Self {
        Fetched { current: ArcSwapOption::empty(), fetching: Mutex::new(()) }
    }
}

impl<T> Fetched<T> {
    /// The document when `accept` takes its age in seconds.
    fn accepted(&self, now: i64, accept: impl Fn(i64) -> bool) -> Option<Arc<T>> {
        let current = self.current.load();
        current.as_ref().filter(|stamped| accept(now - stamped.fetched_at)).map(|stamped| stamped.value.clone())
    }

    /// The document when `accept` takes its age, else one fetched now (once, however many ask).
    async fn get<E, F: Future<Output = Result<T, E>>>(
        &self,
        clock: &Clock,
        accept: impl Fn(i64) -> bool,
        fetch: impl FnOnce() -> F,
    ) -> Result<Arc<T>, E> {
        if let Some(value) = self.accepted(clock.now(), &accept) {
            return Ok(value);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(value) = self.accepted(clock.now(), &accept) {
            return Ok(value);
        }
        let value = Arc::new(fetch().await?);
        self.current.store(Some(Arc::new(Stamped { value: value.clone(), fetched_at: clock.now() })));
        Ok(value)
    }
}

/// One configured provider with its cached discovery document and keys.
pub(crate) struct Provider {
    pub(crate) settings: ProviderSettings,
    metadata: Fetched<ProviderMetadata>,
    jwks: Fetched<JwkSet>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider").field("alias", &self.settings.alias).finish_non_exhaustive()
    }
}

/// The HTTP client to every upstream provider.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    http: reqwest::Client,
    providers: Arc<Vec<Provider>>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl Upstream {
    pub(crate) fn new(
        providers: Vec<ProviderSettings>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Upstream, reqwest::Error> {
        // One crypto library for the whole process: AWS-LC, as for JWTs and the vault. An
        // error only means a provider is installed already (a second application in tests).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("identity-broker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let providers = providers
            .into_iter()
            .map(|settings| Provider { settings, metadata: Fetched::default(), jwks: Fetched::default() })
            .collect();
        Ok(Upstream { http, providers: Arc::new(providers), metrics, clock })
    }

    pub(crate) fn provider(&self, alias: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.settings.alias == alias)
    }

    pub(crate) fn providers(&self) -> impl Iterator<Item = &ProviderSettings> {
        self.providers.iter().map(|p| &p.settings)
    }

    /// The client every upstream call goes through (no redirects followed, bounded waits), for
    /// `doctor`'s probes of discovery, keys and Azure DevOps with the very same settings.
    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        url: &str,
    ) -> Result<T, UpstreamError> {
        let started = Instant::now();
        let result = self.http.get(url).send().await;
        self.metrics.observe_upstream(operation, started.elapsed());
        let response = result.map_err(|err| UpstreamError::Unreachable(err.without_url()))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|err| UpstreamError::Unreachable(err.without_url()))?;
        if status != 200 {
            return Err(UpstreamError::Malformed { status, body: truncate(&text) });
        }
        serde_json::from_str(&text)
            .map_err(|err| UpstreamError::Malformed { status, body: format!("{operation}: {err}") })
    }

    pub(crate) async fn metadata(&self, provider: &Provider) -> Result<Arc<ProviderMetadata>, UpstreamError> {
        let fresh = |age: i64| (0..METADATA_TTL_SECONDS).contains(&age);
        let fetch = || async { self.get_json("discovery", &entra::discovery_url(&provider.settings)).await };
        provider.metadata.get(&self.clock, fresh, fetch).await
    }

    /// The provider's keys; `force` fetches them again (unknown key id) unless they were
    /// fetched moments ago.
    async fn jwks(
        &self,
        provider: &Provider,
        metadata: &ProviderMetadata,
        force: bool,
    ) -> Result<Arc<JwkSet>, UpstreamError> {
        let accept = |age: i64| {
            if force {
                (0..JWKS_REFETCH_MIN_INTERVAL_SECONDS).contains(&age)
            } else {
                (0..METADATA_TTL_SECONDS).contains(&age)
            }
        };
        provider.jwks.get(&self.clock, accept, || self.get_json("jwks", metadata.jwks_uri.as_str())).await
    }

    /// Verifies an ID token, fetching the JWKS again once when the key id is unknown
    /// (Entra rotates its keys).
    pub(crate) async fn verify_id_token(
        &self,
        provider: &Provider,
        metadata: &ProviderMetadata,
        id_token: &SecretString,
        nonce: &str,
        now: i64,
    ) -> Result<VerifiedIdentity, UpstreamError> {
        let check = IdTokenCheck { provider: &provider.settings, issuer_template: &metadata.issuer, nonce, now };
        let jwks = self.jwks(provider, metadata, false).await?;
        match entra::verify_id_token(id_token.expose_secret(), &jwks, &check) {
            Err(IdTokenError::UnknownKid(_)) => {
                let jwks = self.jwks(provider, metadata, true).await?;
                Ok(entra::verify_id_token(id_token.expose_secret(), &jwks, &check)?)
            }
            other => Ok(other?),
        }
    }

    pub(crate) async fn exchange_code(
        &self,
        provider: &Provider,
        metadata: &ProviderMetadata,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse, UpstreamError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce_verifier),
            ("scope", provider.settings.scopes.as_str()),
        ];
        self.token_request(provider, metadata, "token_code", &form).await
    }

    pub(crate) async fn refresh(
        &self,
        provider: &Provider,
        metadata: &ProviderMetadata,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, UpstreamError> {
        let scope = entra::refresh_scope(&provider.settings);
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
            ("scope", scope.as_str()),
        ];
        self.token_request(provider, metadata, "token_refresh", &form).await
    }

    /// A `client_credentials` grant for `scope`: the one token request that proves the client id
    /// and secret without a user (`doctor`). Entra serves it on a tenant's own endpoint only.
    pub(crate) async fn client_credentials(
        &self,
        provider: &Provider,
        metadata: &ProviderMetadata,
        scope: &str,
    ) -> Result<TokenResponse, UpstreamError> {
        let form = [("grant_type", "client_credentials"), ("scope", scope)];
        self.token_request(provider, metadata, "token_client_credentials", &form).await
    }

    async fn token_request(
        &self,
        provider: &Provider,
        metadata: &ProviderMetadata,
        operation: &'static str,
        form: &[(&str, &str)],
    ) -> Result<TokenResponse, UpstreamError> {
        let settings = &provider.settings;
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut request = self.http.post(metadata.token_endpoint.clone());
        match settings.client_auth {
            UpstreamClientAuth::ClientSecretPost => {
                fields.push(("client_id", &settings.client_id));
                fields.push(("client_secret", settings.client_secret.expose_secret()));
            }
            UpstreamClientAuth::ClientSecretBasic => {
                let user: String = url::form_urlencoded::byte_serialize(settings.client_id.as_bytes()).collect();
                let pass: String =
                    url::form_urlencoded::byte_serialize(settings.client_secret.expose_secret().as_bytes()).collect();
                request = request.basic_auth(user, Some(pass));
            }
        }
        let started = Instant::now();
        let result = request.form(&fields).send().await;
        self.metrics.observe_upstream(operation, started.elapsed());
        let response = result.map_err(|err| UpstreamError::Unreachable(err.without_url()))?;
        let status = response.status().as_u16();
        let retry_after = entra::retry_after_seconds(
            response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
        );
        let text = response.text().await.map_err(|err| UpstreamError::Unreachable(err.without_url()))?;
        if status == 200 {
            return serde_json::from_str(&text)
                .map_err(|_| UpstreamError::Malformed { status, body: "the token response is not valid JSON".into() });
        }
        match serde_json::from_str::<EntraErrorBody>(&text) {
            Ok(body) if !body.error.is_empty() => match entra::classify(status, &body) {
                ErrorClass::Throttled => Err(UpstreamError::Throttled { status, body, retry_after }),
                class => Err(UpstreamError::Refused { status, body, class }),
            },
            _ if status == 429 => {
                Err(UpstreamError::Throttled { status, body: EntraErrorBody::default(), retry_after })
            }
            _ => Err(UpstreamError::Malformed { status, body: truncate(&text) }),
        }
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(300).collect()
}
