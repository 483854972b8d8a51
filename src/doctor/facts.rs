//! What `doctor`'s probes found, as plain values: the input of every check.

use crate::store::{MigrationRecords, SealedRows, SigningKeyRow};
use crate::upstream::UpstreamError;

/// The outcome of one bounded step of I/O.
#[derive(Debug)]
pub(crate) enum Probed<T> {
    Found(T),
    /// No answer within the doctor's timeout.
    TimedOut,
    /// Why it failed, without URLs or secrets.
    Failed(String),
}

/// An HTTP answer, whatever its status.
#[derive(Debug, Clone)]
pub(crate) struct HttpAnswer {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Entra's discovery document and the keys it names.
#[derive(Debug)]
pub(crate) struct EntraFacts {
    pub(crate) discovery_url: String,
    pub(crate) discovery: Probed<HttpAnswer>,
    /// The JWKS URL and its answer; `None` when there was no usable discovery document.
    pub(crate) jwks: Option<(String, Probed<HttpAnswer>)>,
}

/// Why the client-credentials request was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotSent {
    /// `organizations` or `common`: Entra issues app-only tokens from one tenant's endpoint only.
    MultiTenant(String),
    /// The discovery document, which names the token endpoint, could not be had.
    NoDiscovery,
}

/// The `client_credentials` request that proves the client id and secret.
#[derive(Debug)]
#[allow(clippy::large_enum_variant, reason = "one value per doctor run; boxing Entra's answer would buy nothing")]
pub(crate) enum TokenProbe {
    NotSent(NotSent),
    TimedOut {
        endpoint: String,
    },
    /// `Ok` when Entra issued an access token.
    Answered {
        endpoint: String,
        result: Result<(), UpstreamError>,
    },
}

/// `{devops_url}/{organization}` and its answer.
#[derive(Debug)]
pub(crate) struct OrganizationFacts {
    pub(crate) url: String,
    pub(crate) answer: Probed<HttpAnswer>,
}

/// The database as doctor found it; `location` is its URL without password or query.
#[derive(Debug)]
pub(crate) struct DatabaseFacts {
    pub(crate) location: String,
    pub(crate) contents: Probed<DatabaseContents>,
}

/// What a reachable database holds.
#[derive(Debug)]
pub(crate) struct DatabaseContents {
    pub(crate) migrations: Probed<MigrationRecords>,
    pub(crate) sealed: Probed<SealedRows>,
    /// The signing keys in force or announced at `now` (what `start` opens).
    pub(crate) signing_keys: Probed<Vec<SigningKeyRow>>,
    /// Per provider that saw a sign-in: whether its last ID token carried `xms_edov`, and when.
    pub(crate) email_proofs: Probed<Vec<(String, bool, i64)>>,
    /// Users whose e-mail address is not verified.
    pub(crate) unverified_emails: Probed<i64>,
}
