//! `doctor`'s I/O: each network or database step bounded by the timeout, its outcome kept as a fact.

use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::checks::{AZURE_DEVOPS_SCOPE, client_credentials_not_sent, discovery_document, organization_url};
use super::facts::{
    DatabaseContents, DatabaseFacts, EntraFacts, HttpAnswer, NotSent, OrganizationFacts, Probed, TokenProbe,
};
use crate::config::ProviderSettings;
use crate::store::{Store, StoreError};
use crate::upstream::{Provider, Upstream, UpstreamError, entra};

/// `step` within `timeout`, its error described by `describe`.
async fn bounded<T, E>(
    timeout: Duration,
    step: impl Future<Output = Result<T, E>>,
    describe: impl FnOnce(&E) -> Option<String>,
) -> Probed<T> {
    match tokio::time::timeout(timeout, step).await {
        Err(_) => Probed::TimedOut,
        Ok(Ok(value)) => Probed::Found(value),
        Ok(Err(err)) => describe(&err).map_or(Probed::TimedOut, Probed::Failed),
    }
}

/// A reqwest failure without its URL: the kind, then the innermost cause (`Connection refused`,
/// a DNS or certificate error), which tells an operator where to look. `None` for a timeout.
fn describe_http_error(err: &reqwest::Error) -> Option<String> {
    if err.is_timeout() {
        return None;
    }
    let kind = if err.is_connect() { "connection failed" } else { "request failed" };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut innermost = None;
    while let Some(current) = cause {
        innermost = Some(current.to_string());
        cause = current.source();
    }
    Some(match innermost {
        Some(why) => format!("{kind}: {why}"),
        None => kind.to_owned(),
    })
}

async fn get(http: &reqwest::Client, url: &str, timeout: Duration) -> Probed<HttpAnswer> {
    let request = async {
        let response = http.get(url).send().await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok(HttpAnswer { status, body })
    };
    bounded(timeout, request, describe_http_error).await
}

/// Discovery, then the keys and the client-credentials request it leads to.
pub(crate) async fn entra(upstream: &Upstream, provider: &Provider, timeout: Duration) -> (EntraFacts, TokenProbe) {
    let settings = &provider.settings;
    let http = upstream.http_client();
    let discovery_url = entra::discovery_url(settings);
    let discovery = get(http, &discovery_url, timeout).await;
    let Some(metadata) = discovery_document(&discovery) else {
        let facts = EntraFacts { discovery_url, discovery, jwks: None };
        return (facts, TokenProbe::NotSent(NotSent::NoDiscovery));
    };
    let jwks_url = metadata.jwks_uri.to_string();
    let jwks = get(http, &jwks_url, timeout).await;
    let facts = EntraFacts { discovery_url, discovery, jwks: Some((jwks_url, jwks)) };
    if let Some(reason) = client_credentials_not_sent(settings) {
        return (facts, TokenProbe::NotSent(reason));
    }
    let endpoint = metadata.token_endpoint.to_string();
    let request = async {
        let response = upstream.client_credentials(provider, &metadata, AZURE_DEVOPS_SCOPE).await?;
        if response.access_token.expose_secret().is_empty() {
            return Err(UpstreamError::Malformed { status: 200, body: "the answer holds no access token".to_owned() });
        }
        Ok(())
    };
    let probe = match tokio::time::timeout(timeout, request).await {
        Err(_) => TokenProbe::TimedOut { endpoint },
        Ok(result) => TokenProbe::Answered { endpoint, result },
    };
    (facts, probe)
}

/// `{devops_url}/{organization}`, when an organization is configured.
pub(crate) async fn organization(
    upstream: &Upstream,
    settings: &ProviderSettings,
    timeout: Duration,
) -> Option<OrganizationFacts> {
    let url = organization_url(settings)?.to_string();
    let answer = get(upstream.http_client(), &url, timeout).await;
    Some(OrganizationFacts { url, answer })
}

/// The database URL as doctor may print it: no password, no query (which may carry one).
pub(crate) fn database_location(url: &SecretString) -> String {
    let text = url.expose_secret();
    if text.starts_with("sqlite:") {
        return text.split('?').next().unwrap_or_default().to_owned();
    }
    match url::Url::parse(text) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "the configured database URL".to_owned(),
    }
}

/// Store errors name no URL, but a database may quote what it was sent; the caller scrubs.
fn describe_store_error(err: &StoreError) -> Option<String> {
    Some(err.to_string())
}

/// Connects with one connection and reads; never migrates, never writes.
pub(crate) async fn database(url: &SecretString, now: i64, timeout: Duration) -> DatabaseFacts {
    let location = database_location(url);
    match bounded(timeout, Store::try_connection(url), describe_store_error).await {
        Probed::Found(()) => {}
        Probed::TimedOut => return DatabaseFacts { location, contents: Probed::TimedOut },
        Probed::Failed(why) => return DatabaseFacts { location, contents: Probed::Failed(why) },
    }
    let store = match bounded(timeout, Store::connect(url, 1), describe_store_error).await {
        Probed::Found(store) => store,
        Probed::TimedOut => return DatabaseFacts { location, contents: Probed::TimedOut },
        Probed::Failed(why) => return DatabaseFacts { location, contents: Probed::Failed(why) },
    };
    let migrations = bounded(timeout, store.migration_records(), describe_store_error).await;
    let sealed = bounded(timeout, store.sealed_rows(), describe_store_error).await;
    let signing_keys = bounded(timeout, store.list_signing_keys(now), describe_store_error).await;
    let email_proofs = bounded(timeout, store.email_proof_claims(), describe_store_error).await;
    let unverified_emails = bounded(timeout, store.count_unverified_emails(), describe_store_error).await;
    // A query cut off by the timeout may still hold its connection; do not wait on it forever.
    let _ = tokio::time::timeout(timeout, store.close()).await;
    let contents = DatabaseContents { migrations, sealed, signing_keys, email_proofs, unverified_emails };
    DatabaseFacts { location, contents: Probed::Found(contents) }
}
