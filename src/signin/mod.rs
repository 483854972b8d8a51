//! The browser sign-in: from a client's authorization request, through the upstream
//! provider, to the user, the vault, an SSO session and an authorization code.
//!
//! As in kanidm, the decisions are apart from the I/O: `flow` takes what was asked, what the
//! last call answered and `now`, and says which call comes next or how the sign-in ends;
//! `service` performs those calls (store, provider, sessions, audit) and feeds the answers
//! back. `budget` bounds the pending sign-ins anonymous callers may store; `profile` maps the
//! provider's claims onto the user.

mod budget;
mod flow;
mod profile;
mod service;
#[cfg(test)]
mod tests;

use url::Url;

use crate::store::StoreError;

pub(crate) use budget::{PENDING_BUDGET_RETRY_AFTER_SECONDS, PendingBudget};
pub(crate) use service::SignInService;

/// Why a sign-in stopped on a page of ours. `Display` is what the user reads; what the
/// operator needs is logged where the cause is found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignInError {
    #[error("No identity provider is enabled on this sign-in service.")]
    NoProviderEnabled,
    #[error("This identity provider is not enabled.")]
    UnknownProvider,
    #[error("This sign-in has expired or was opened in another browser. Go back to the application and sign in again.")]
    PendingSignInNotFound,
    #[error("This sign-in was already started. Go back to the application and sign in again.")]
    AlreadyStarted,
    #[error("This sign-in has expired or was already used. Go back to the application and sign in again.")]
    ExpiredOrUsed,
    #[error(
        "This sign-in was started in another browser or its cookie is missing. Go back to the application and sign in again."
    )]
    OtherBrowser,
    #[error("This sign-in was answered by another identity provider.")]
    OtherProvider,
    #[error("The identity provider returned no authorization code.")]
    NoCode,
    #[error("The identity provider's answer was incomplete.")]
    IncompleteAnswer,
    #[error("Sign-in is misconfigured on this service. An administrator has been told; please try again later.")]
    Misconfigured,
    #[error("The identity provider refused the sign-in request.")]
    RequestRefused,
    #[error("The identity provider is temporarily unavailable. Please try again in a minute.")]
    UpstreamUnavailable,
    #[error("The identity provider is busy. Please try again in {retry_after} seconds.")]
    UpstreamThrottled { retry_after: u64 },
    #[error(
        "The application needs consent to access Azure DevOps. Ask an administrator to grant consent, then sign in again."
    )]
    ConsentRequired,
    #[error(
        "The identity provider needs more before it signs you in: {cause}. Go back to the application and sign in again, and complete what your organization asks."
    )]
    UpstreamReauthentication { cause: &'static str },
    #[error(
        "Your organization's policy blocks this sign-in (for example because of the device or the location you sign in from). Signing in again will not help: ask your organization's administrator."
    )]
    BlockedByPolicy,
    #[error("The identity provider's answer could not be verified. Go back to the application and sign in again.")]
    Unverifiable,
    #[error("The identity provider refused this sign-in. Go back to the application and sign in again.")]
    UpstreamRefused,
    #[error("This {provider} account is already linked to another user.")]
    AlreadyLinked { provider: String },
    /// Keycloak's "account already exists", for a proven e-mail address another user holds.
    #[error(
        "An account with the e-mail address {email} already exists. Sign in to that account and link {provider} from it, or ask an administrator to link them."
    )]
    EmailTaken { email: String, provider: String },
    #[error("The account this link was started for no longer exists.")]
    LinkedUserGone,
    /// Keycloak's words for a disabled user.
    #[error("Account is disabled, contact your administrator.")]
    UserDisabled,
    #[error("This account is being signed in from elsewhere at the same moment. Try again.")]
    Contended,
    #[error("The application's redirect URI is not valid.")]
    InvalidRedirectUri,
    #[error(
        "Too many sign-ins were started from your network and not finished. Finish one, or try again in a few minutes."
    )]
    TooManyPendingSignIns,
    #[error("The sign-in service is busy. Please try again in a minute.")]
    SignInsBusy,
    #[error("the sign-in could not be stored")]
    Store(#[from] StoreError),
}

impl SignInError {
    /// A failure on the provider's side or ours, rather than a refusal of this browser's request.
    pub(crate) fn is_failure(&self) -> bool {
        matches!(
            self,
            SignInError::NoProviderEnabled
                | SignInError::IncompleteAnswer
                | SignInError::Misconfigured
                | SignInError::RequestRefused
                | SignInError::UpstreamUnavailable
                | SignInError::UpstreamThrottled { .. }
                | SignInError::Store(_)
        )
    }
}

/// The answer to a client's authorization request.
#[derive(Debug)]
pub(crate) enum Started {
    /// Go straight to this provider's login.
    Provider { request_id: String, browser_secret: String, alias: String },
    /// Several providers and no hint: let the user choose.
    Choose { request_id: String, browser_secret: String },
    /// Back to the client at once: with a code from the browser's SSO session, or with an
    /// OAuth error the client handles (`login_required`, an unknown `kc_action` provider).
    ToClient(Url),
}

/// How the provider's answer ends the sign-in.
#[derive(Debug)]
pub(crate) enum Completed {
    /// Signed in: the client's redirect with a code, and the SSO cookie's value.
    SignedIn { client_redirect: Url, session_secret: String },
    /// Back to the client without a session: the user declined or cancelled linking.
    ToClient(Url),
}

/// The callback's query or form: Entra's answer.
#[derive(Default, serde::Deserialize)]
pub(crate) struct CallbackParams {
    pub(crate) state: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) error_description: Option<String>,
    pub(crate) suberror: Option<String>,
}

debug_showing!(CallbackParams { error, error_description, suberror });

/// `base` with the pairs that have a value appended to its query; `None` when `base` is not a URL.
pub(crate) fn with_query(base: &str, pairs: &[(&str, Option<&str>)]) -> Option<Url> {
    let mut url = Url::parse(base).ok()?;
    if pairs.iter().any(|(_, value)| value.is_some()) {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    Some(url)
}
