//! The browser sign-in: from a client's authorization request, through the upstream
//! provider, to the user, the vault, an SSO session and an authorization code.

use std::sync::Arc;

use serde_json::json;
use url::Url;

use crate::audit::AuditLog;
use crate::config::RealmSettings;
use crate::crypto::{Cipher, new_id, pkce_s256, random_token, token_hash};
use crate::oidc::authorize::AuthorizationRequest;
use crate::oidc::error::ErrorCode;
use crate::oidc::sessions::Sessions;
use crate::store::{
    AuditEvent, AuthRequestRow, AuthorizationCodeRow, ProfileUpdate, SessionRow, Store, StoreError, UpstreamLogin,
};
use crate::telemetry::{Chain, Metrics};
use crate::upstream::entra::{AuthorizeRequest, ErrorClass, VerifiedIdentity};
use crate::upstream::{Provider, TokenResponse, Upstream, UpstreamError};
use crate::urls::Urls;
use crate::vault::{UpstreamTokens, seal_tokens};

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
    #[error(
        "The application needs consent to access Azure DevOps. Ask an administrator to grant consent, then sign in again."
    )]
    ConsentRequired,
    #[error("The identity provider needs you to sign in again.")]
    UpstreamReauthentication,
    #[error("The identity provider's answer could not be verified. Go back to the application and sign in again.")]
    Unverifiable,
    #[error("The identity provider refused this sign-in. Go back to the application and sign in again.")]
    UpstreamRefused,
    #[error("This {provider} account is already linked to another user.")]
    AlreadyLinked { provider: String },
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
}

debug_showing!(CallbackParams { error, error_description });

#[derive(Debug, Clone)]
pub(crate) struct SignInService {
    pub(crate) store: Store,
    pub(crate) sessions: Sessions,
    pub(crate) audit: AuditLog,
    pub(crate) cipher: Arc<Cipher>,
    pub(crate) upstream: Upstream,
    pub(crate) realm: RealmSettings,
    pub(crate) metrics: Arc<Metrics>,
    /// The issuer, for `iss` in the client's answers, and the redirect URI sent upstream.
    pub(crate) urls: Urls,
    pub(crate) budget: Arc<PendingBudget>,
}

/// What anonymous callers may store: each client address at most `per_address` live pending
/// sign-ins, everyone together at most `ceiling`. Requests with a live session never meet it.
#[derive(Debug)]
pub(crate) struct PendingBudget {
    per_address: u32,
    ceiling: u32,
    /// The live count last read from the database and when, plus this replica's inserts since:
    /// the ceiling is read at most once a second, not on every request.
    live: std::sync::Mutex<LiveCount>,
    /// One address's count and insert run one at a time in this replica, so that requests sent
    /// together cannot all pass the count before any is stored.
    address_locks: Vec<tokio::sync::Mutex<()>>,
    /// Whether new sign-ins are being refused at the ceiling: the log says so when it starts
    /// and when it ends, not once per refused request (a flood would flood the log too).
    at_ceiling: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default, Clone, Copy)]
struct LiveCount {
    read_at: Option<i64>,
    live: i64,
}

/// How long the seconds a refused browser is told to wait.
pub(crate) const PENDING_BUDGET_RETRY_AFTER_SECONDS: u64 = 60;

impl PendingBudget {
    pub(crate) fn new(per_address: u32, ceiling: u32) -> PendingBudget {
        PendingBudget {
            per_address,
            ceiling,
            live: std::sync::Mutex::new(LiveCount::default()),
            address_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            at_ceiling: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn address_lock(&self, client_key: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(client_key);
        let stripe = usize::try_from(hash % self.address_locks.len() as u64).unwrap_or(0);
        &self.address_locks[stripe]
    }

    fn known_live(&self, now: i64) -> Option<i64> {
        let live = *self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.read_at.filter(|at| now - at < 1).map(|_| live.live)
    }

    fn set_live(&self, now: i64, count: i64) {
        *self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            LiveCount { read_at: Some(now), live: count };
    }

    fn count_insert(&self) {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).live += 1;
    }

    /// Stores `row` for `client_key` within both bounds, or says which bound refused it.
    async fn insert(&self, store: &Store, row: &AuthRequestRow, client_key: &str) -> Result<(), SignInError> {
        let now = row.created_at;
        let live = match self.known_live(now) {
            Some(live) => live,
            None => {
                let live = store.count_live_auth_requests(now, self.ceiling).await?;
                self.set_live(now, live);
                live
            }
        };
        let full = live >= i64::from(self.ceiling);
        if full != self.at_ceiling.swap(full, std::sync::atomic::Ordering::Relaxed) {
            if full {
                tracing::warn!(
                    ceiling = self.ceiling,
                    "new sign-ins are refused (503): {} sign-ins are pending (http.max_pending_sign_ins)",
                    self.ceiling
                );
            } else {
                tracing::info!("pending sign-ins are below http.max_pending_sign_ins again: new sign-ins are taken");
            }
        }
        if full {
            return Err(SignInError::SignInsBusy);
        }
        let _one_at_a_time = self.address_lock(client_key).lock().await;
        if !store.insert_auth_request_within_budget(row, client_key, self.per_address).await? {
            return Err(SignInError::TooManyPendingSignIns);
        }
        self.count_insert();
        Ok(())
    }
}

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

impl SignInService {
    /// The client's redirect URI carrying an OAuth error and the client's state.
    fn client_error(&self, request: &AuthRequestRow, error: ErrorCode, description: &str) -> Result<Url, SignInError> {
        with_query(
            &request.redirect_uri,
            &[
                ("error", Some(error.as_str())),
                ("error_description", Some(description)),
                ("state", request.client_state.as_deref()),
                ("iss", Some(self.urls.issuer())),
            ],
        )
        .ok_or(SignInError::InvalidRedirectUri)
    }

    /// Records the pending request, bound to the browser by a fresh secret.
    /// A browser that already holds a pending-sign-in cookie keeps it, so that sign-ins in
    /// two tabs do not undo each other.
    ///
    /// Without a session, the request counts against the budget of pending sign-ins of its
    /// client address (`client_key`) and of everyone.
    ///
    /// With a live SSO session (the `session_secret` cookie) the client gets a code at once,
    /// unless it asks for `prompt=login`; `kc_action=idp_link` runs the provider's sign-in
    /// and links it to that session's user.
    pub(crate) async fn start(
        &self,
        request: &AuthorizationRequest,
        client_key: &str,
        browser_secret: Option<&str>,
        session_secret: Option<&str>,
        now: i64,
    ) -> Result<Started, SignInError> {
        let providers: Vec<&str> = self.upstream.providers().map(|p| p.alias.as_str()).collect();
        let chosen = request
            .link_alias
            .as_deref()
            .or(request.idp_hint.as_deref())
            .filter(|alias| providers.contains(alias))
            .or_else(|| (providers.len() == 1).then(|| providers[0]));
        if providers.is_empty() {
            return Err(SignInError::NoProviderEnabled);
        }
        let request_id = random_token();
        let browser_secret = browser_secret
            .filter(|s| s.len() == 43 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .map_or_else(random_token, str::to_owned);
        let session = match session_secret {
            Some(secret) => self.sessions.live_by_cookie(secret, now).await?,
            None => None,
        };
        let mut row = AuthRequestRow {
            id: request_id.clone(),
            browser_hash: token_hash(&browser_secret),
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            scope: request.scope.clone(),
            client_state: request.state.clone(),
            client_nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            code_challenge_method: request.code_challenge_method.clone(),
            login_hint: request.login_hint.clone(),
            alias: None,
            upstream_state_hash: None,
            upstream_nonce: None,
            pkce_verifier: None,
            created_at: now,
            expires_at: now + self.realm.login_timeout_seconds,
            link_user_id: None,
            prompt: request.prompt.clone(),
        };
        if let Some(link) = request.link_alias.as_deref()
            && !providers.contains(&link)
        {
            let url =
                self.client_error(&row, ErrorCode::InvalidRequest, "kc_action names an unknown identity provider")?;
            return Ok(Started::ToClient(url));
        }
        let prompt = |value: &str| request.prompt.as_deref().is_some_and(|p| p.split(' ').any(|p| p == value));
        // `max_age` 0 is `prompt=login` (OIDC Core §3.1.2.1); otherwise a session authenticated
        // longer ago than it must authenticate again, at the provider, for a fresh `auth_time`.
        let too_old = session
            .as_ref()
            .zip(request.max_age)
            .is_some_and(|(session, max_age)| max_age == 0 || now - session.created_at > max_age);
        if too_old && !prompt("login") {
            if prompt("none") {
                return Ok(Started::ToClient(self.client_error(
                    &row,
                    ErrorCode::LoginRequired,
                    "The user must sign in again (max_age)",
                )?));
            }
            // Recorded as `prompt=login`, so that the provider is asked to authenticate anew.
            row.prompt = Some(row.prompt.take().map_or_else(|| "login".to_owned(), |p| format!("{p} login")));
        }
        let prompt_login = prompt("login") || too_old;
        match &session {
            Some(session) if request.link_alias.is_some() => row.link_user_id = Some(session.user_id.clone()),
            Some(session) if !prompt_login => {
                self.sessions.touch(session, now).await?;
                let url = self.issue_code(&row, session, now).await?;
                return Ok(Started::ToClient(url));
            }
            None if request.prompt.as_deref() == Some("none") => {
                return Ok(Started::ToClient(self.client_error(
                    &row,
                    ErrorCode::LoginRequired,
                    "The user must sign in",
                )?));
            }
            _ => {}
        }
        if session.is_some() {
            self.store.insert_auth_request(&row).await?;
        } else {
            self.budget.insert(&self.store, &row, client_key).await?;
        }
        Ok(match chosen {
            Some(alias) => Started::Provider { request_id, browser_secret, alias: alias.to_owned() },
            None => Started::Choose { request_id, browser_secret },
        })
    }

    fn provider(&self, alias: &str) -> Result<&Provider, SignInError> {
        self.upstream.provider(alias).ok_or(SignInError::UnknownProvider)
    }

    /// Sends the browser to the provider, remembering state, nonce and PKCE verifier.
    pub(crate) async fn begin_upstream(
        &self,
        alias: &str,
        request_id: &str,
        browser_secret: Option<&str>,
        now: i64,
    ) -> Result<Url, SignInError> {
        let provider = self.provider(alias)?;
        let browser_secret = browser_secret.ok_or(SignInError::PendingSignInNotFound)?;
        let request = self
            .store
            .find_auth_request(request_id, &token_hash(browser_secret), now)
            .await?
            .ok_or(SignInError::PendingSignInNotFound)?;
        let metadata = self.upstream.metadata(provider).await.map_err(|err| self.upstream_failure(alias, &err))?;
        let state = random_token();
        let nonce = random_token();
        let verifier = random_token();
        let login = UpstreamLogin {
            alias: alias.to_owned(),
            state_hash: token_hash(&state),
            nonce: nonce.clone(),
            pkce_verifier: verifier.clone(),
        };
        if !self.store.begin_upstream_login(request_id, &login).await? {
            return Err(SignInError::AlreadyStarted);
        }
        let redirect_uri = self.urls.broker_endpoint(alias);
        Ok(crate::upstream::entra::authorize_url(
            &metadata,
            &provider.settings,
            &AuthorizeRequest {
                redirect_uri: &redirect_uri,
                state: &state,
                nonce: &nonce,
                code_challenge: &pkce_s256(&verifier),
                login_hint: request.login_hint.as_deref(),
                prompt: request.prompt.as_deref().filter(|p| p.split(' ').any(|p| p == "login")).map(|_| "login"),
            },
        ))
    }

    /// Handles the provider's answer. The pending sign-in is consumed whatever the outcome.
    pub(crate) async fn complete(
        &self,
        alias: &str,
        params: CallbackParams,
        browser_secret: Option<&str>,
        now: i64,
    ) -> Result<Completed, SignInError> {
        let result = self.complete_inner(alias, params, browser_secret, now).await;
        let outcome = match &result {
            Ok(Completed::SignedIn { .. }) => "success",
            Ok(Completed::ToClient(_)) => "denied",
            Err(SignInError::Store(_)) => "internal_error",
            Err(err) if err.is_failure() => "upstream_error",
            Err(_) => "rejected",
        };
        self.metrics.count_sign_in(alias, outcome);
        result
    }

    async fn complete_inner(
        &self,
        alias: &str,
        params: CallbackParams,
        browser_secret: Option<&str>,
        now: i64,
    ) -> Result<Completed, SignInError> {
        let state = params.state.as_deref().filter(|s| !s.is_empty()).ok_or(SignInError::ExpiredOrUsed)?;
        let request =
            self.store.take_auth_request_by_state(&token_hash(state)).await?.ok_or(SignInError::ExpiredOrUsed)?;
        let provider = self.provider(alias)?;
        let bound_to_browser = browser_secret.is_some_and(|secret| token_hash(secret) == request.browser_hash);
        if !bound_to_browser {
            tracing::warn!(alias, client_id = %request.client_id, "sign-in callback without the browser cookie that started it");
            return Err(SignInError::OtherBrowser);
        }
        if request.alias.as_deref() != Some(alias) {
            tracing::warn!(alias, expected = ?request.alias, "sign-in callback came from another provider than the one it started with");
            return Err(SignInError::OtherProvider);
        }
        if request.expires_at < now {
            return Err(SignInError::ExpiredOrUsed);
        }
        if let Some(error) = params.error.as_deref() {
            let back = self.upstream_authorize_error(alias, &request, error, params.error_description.as_deref())?;
            return Ok(Completed::ToClient(back));
        }
        let code = params.code.as_deref().filter(|c| !c.is_empty()).ok_or(SignInError::NoCode)?;
        let verifier = request.pkce_verifier.as_deref().unwrap_or_default();
        let nonce = request.upstream_nonce.as_deref().unwrap_or_default();
        let metadata = self.upstream.metadata(provider).await.map_err(|err| self.upstream_failure(alias, &err))?;
        let response = self
            .upstream
            .exchange_code(provider, &metadata, code, verifier, &self.urls.broker_endpoint(alias))
            .await
            .map_err(|err| self.upstream_failure(alias, &err))?;
        let Some(id_token) = response.id_token.as_ref() else {
            tracing::error!(
                alias,
                "the provider's token response has no id_token; is `openid` in providers.{alias}.scopes?"
            );
            return Err(SignInError::IncompleteAnswer);
        };
        let identity = self
            .upstream
            .verify_id_token(provider, &metadata, id_token, nonce, now)
            .await
            .map_err(|err| self.upstream_failure(alias, &err))?;
        let user_id = match &request.link_user_id {
            Some(user_id) => self.link_user(provider, user_id, &identity, &response, now).await?,
            None => self.save_user(provider, &identity, &response, now).await?,
        };
        self.finish(&request, alias, &user_id, now).await
    }

    /// `kc_action=idp_link`: links the provider's identity to the signed-in user, replacing
    /// tokens stored for an earlier link. An identity that belongs to another user is refused
    /// and nothing changes. The user's own profile is left as it is.
    async fn link_user(
        &self,
        provider: &Provider,
        user_id: &str,
        identity: &VerifiedIdentity,
        response: &TokenResponse,
        now: i64,
    ) -> Result<String, SignInError> {
        let settings = &provider.settings;
        let taken = || {
            tracing::warn!(alias = %settings.alias, user_id, "refused to link an identity that belongs to another user");
            SignInError::AlreadyLinked { provider: settings.display_name.clone() }
        };
        if let Some(existing) = self.store.find_identity_by_subject(&settings.alias, &identity.subject).await?
            && existing.user_id != user_id
        {
            return Err(taken());
        }
        let user = self.store.find_user(user_id).await?.ok_or(SignInError::LinkedUserGone)?;
        if !user.enabled {
            return Err(SignInError::UserDisabled);
        }
        let mut profile = profile_update(user_id, &settings.alias, settings.trust_email, identity);
        profile.username = user.username;
        profile.email = user.email;
        profile.email_verified = user.email_verified;
        profile.first_name = user.first_name;
        profile.last_name = user.last_name;
        profile.full_name = user.full_name;
        let tokens = upstream_tokens(response, now);
        let row = settings.store_token.then(|| seal_tokens(&self.cipher, user_id, &settings.alias, &tokens, now));
        match self.store.save_sign_in(&profile, row.as_ref(), now).await {
            Ok(()) => Ok(user_id.to_owned()),
            Err(StoreError::Conflict(_)) => Err(taken()),
            Err(err) => Err(err.into()),
        }
    }

    async fn save_user(
        &self,
        provider: &Provider,
        identity: &VerifiedIdentity,
        response: &TokenResponse,
        now: i64,
    ) -> Result<String, SignInError> {
        let settings = &provider.settings;
        let tokens = upstream_tokens(response, now);
        // Two first sign-ins of one person can race; the loser finds the winner's user.
        for _ in 0..2 {
            let existing = self.store.find_identity_by_subject(&settings.alias, &identity.subject).await?;
            if let Some(existing) = &existing
                && let Some(user) = self.store.find_user(&existing.user_id).await?
                && !user.enabled
            {
                tracing::info!(alias = %settings.alias, user_id = %user.id, "refused the sign-in of a disabled user");
                return Err(SignInError::UserDisabled);
            }
            let user_id = existing.map(|i| i.user_id).unwrap_or_else(new_id);
            let profile = profile_update(&user_id, &settings.alias, settings.trust_email, identity);
            let row = settings.store_token.then(|| seal_tokens(&self.cipher, &user_id, &settings.alias, &tokens, now));
            match self.store.save_sign_in(&profile, row.as_ref(), now).await {
                Ok(()) => return Ok(user_id),
                Err(StoreError::Conflict(_)) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(SignInError::Contended)
    }

    async fn finish(
        &self,
        request: &AuthRequestRow,
        alias: &str,
        user_id: &str,
        now: i64,
    ) -> Result<Completed, SignInError> {
        let (session, session_secret) = self.sessions.start(user_id, alias, now).await?;
        let client_redirect = self.issue_code(request, &session, now).await?;
        self.audit
            .record(AuditEvent {
                at: now,
                kind: if request.link_user_id.is_some() { "link".into() } else { "sign_in".into() },
                outcome: "success".into(),
                user_id: Some(user_id.to_owned()),
                client_id: Some(request.client_id.clone()),
                alias: Some(alias.to_owned()),
                detail: json!({ "session_id": session.id }).to_string(),
            })
            .await;
        Ok(Completed::SignedIn { client_redirect, session_secret })
    }

    /// A single-use code for `session`, and the client's redirect carrying it.
    async fn issue_code(&self, request: &AuthRequestRow, session: &SessionRow, now: i64) -> Result<Url, SignInError> {
        let code = random_token();
        self.store
            .insert_authorization_code(&AuthorizationCodeRow {
                code_hash: token_hash(&code),
                client_id: request.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                user_id: session.user_id.clone(),
                session_id: session.id.clone(),
                scope: request.scope.clone(),
                nonce: request.client_nonce.clone(),
                code_challenge: request.code_challenge.clone(),
                code_challenge_method: request.code_challenge_method.clone(),
                created_at: now,
                expires_at: now + self.realm.authorization_code_lifespan_seconds,
                used_at: None,
            })
            .await?;
        with_query(
            &request.redirect_uri,
            &[
                ("state", request.client_state.as_deref()),
                ("session_state", Some(&session.id)),
                ("iss", Some(self.urls.issuer())),
                ("code", Some(&code)),
                ("kc_action_status", request.link_user_id.as_ref().map(|_| "success")),
            ],
        )
        .ok_or(SignInError::InvalidRedirectUri)
    }

    /// `error=` on the callback: the user declined (back to the client), or the provider
    /// refused the request (a page).
    fn upstream_authorize_error(
        &self,
        alias: &str,
        request: &AuthRequestRow,
        error: &str,
        description: Option<&str>,
    ) -> Result<Url, SignInError> {
        let summary = description.and_then(|d| d.lines().next()).unwrap_or_default();
        match error {
            "access_denied" if request.link_user_id.is_some() => {
                tracing::info!(alias, client_id = %request.client_id, "the user cancelled linking at the provider");
                with_query(
                    &request.redirect_uri,
                    &[
                        ("state", request.client_state.as_deref()),
                        ("kc_action_status", Some("cancelled")),
                        ("iss", Some(self.urls.issuer())),
                    ],
                )
                .ok_or(SignInError::InvalidRedirectUri)
            }
            "access_denied" => {
                tracing::info!(alias, client_id = %request.client_id, "the user declined the sign-in at the provider");
                self.client_error(request, ErrorCode::AccessDenied, "The user declined the sign-in")
            }
            "temporarily_unavailable" | "server_error" => {
                tracing::warn!(alias, error, summary, "the provider is temporarily unavailable");
                Err(SignInError::UpstreamUnavailable)
            }
            _ => {
                tracing::error!(alias, error, summary, "the provider refused the authorization request");
                Err(SignInError::RequestRefused)
            }
        }
    }

    /// Turns an upstream failure into the user's page and the operator's log line.
    fn upstream_failure(&self, alias: &str, err: &UpstreamError) -> SignInError {
        match err {
            UpstreamError::Refused { body, class: ErrorClass::Operator { cause, config_key }, .. } => {
                let key = if *config_key == "http.hostname" {
                    (*config_key).to_owned()
                } else {
                    format!("providers.{alias}.{config_key}")
                };
                let redirect_uri = self.urls.broker_endpoint(alias);
                let action = if body.aadsts() == Some(50011) {
                    format!("register exactly `{redirect_uri}` as a Web redirect URI of the app registration")
                } else {
                    format!("check `{key}` and the app registration")
                };
                tracing::error!(
                    alias,
                    aadsts = body.aadsts(),
                    cause,
                    config_key = %key,
                    action = %action,
                    upstream_correlation_id = body.correlation_id.as_deref().unwrap_or_default(),
                    "upstream sign-in failed: the configuration must be fixed"
                );
                SignInError::Misconfigured
            }
            UpstreamError::Refused { body, class: ErrorClass::Reauthenticate { cause }, .. } => {
                tracing::warn!(alias, aadsts = body.aadsts(), cause, "the provider needs the user to act");
                if body.aadsts() == Some(65001) {
                    SignInError::ConsentRequired
                } else {
                    SignInError::UpstreamReauthentication
                }
            }
            err if err.is_transient() => {
                tracing::warn!(alias, error = %Chain(err), "the provider is unavailable");
                SignInError::UpstreamUnavailable
            }
            UpstreamError::IdToken(reason) => {
                tracing::warn!(alias, reason = %reason, "rejected the provider's ID token");
                SignInError::Unverifiable
            }
            other => {
                tracing::warn!(alias, error = %other, "the provider refused the sign-in");
                SignInError::UpstreamRefused
            }
        }
    }
}

/// What the vault keeps of a sign-in's token response.
fn upstream_tokens(response: &TokenResponse, now: i64) -> UpstreamTokens {
    UpstreamTokens {
        access_token: response.access_token.clone(),
        refresh_token: response.refresh_token.clone(),
        id_token: response.id_token.clone(),
        token_type: response.token_type.clone().unwrap_or_else(|| "Bearer".to_owned()),
        scope: response.scope.clone().unwrap_or_default(),
        expires_at: now + response.expires_in.unwrap_or(3600),
        refresh_expires_at: response.refresh_token_expires_in.map(|s| now + s),
    }
}

/// Maps Entra's claims onto the user, as Keycloak's mappers do for OpenHands' realm.
pub(crate) fn profile_update(
    user_id: &str,
    alias: &str,
    trust_email: bool,
    identity: &VerifiedIdentity,
) -> ProfileUpdate {
    let upn = identity.preferred_username.clone();
    let email =
        identity.email.clone().or_else(|| upn.clone().filter(|u| looks_like_email(u))).map(|e| e.to_lowercase());
    let username = upn.clone().or_else(|| email.clone()).unwrap_or_else(|| identity.subject.clone()).to_lowercase();
    let full_name = identity.name.clone().or_else(|| match (&identity.given_name, &identity.family_name) {
        (Some(g), Some(f)) => Some(format!("{g} {f}")),
        _ => None,
    });
    // OpenHands' realm maps each provider's user id to `{alias}_id` and the alias to
    // `identity_provider`; the resolvers look users up by them (`q=azure_devops_id:<sub>`).
    let mut attributes =
        vec![("identity_provider".to_owned(), alias.to_owned()), (format!("{alias}_id"), identity.subject.clone())];
    attributes.extend(identity.tenant_id.clone().map(|tid| ("tid".to_owned(), tid)));
    attributes.extend(identity.object_id.clone().map(|oid| ("oid".to_owned(), oid)));
    ProfileUpdate {
        user_id: user_id.to_owned(),
        username,
        email_verified: trust_email && email.is_some(),
        email,
        first_name: identity.given_name.clone(),
        last_name: identity.family_name.clone(),
        full_name,
        alias: alias.to_owned(),
        subject: identity.subject.clone(),
        identity_username: upn,
        tenant_id: identity.tenant_id.clone(),
        object_id: identity.object_id.clone(),
        attributes,
    }
}

fn looks_like_email(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !value.contains(' ')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(email: Option<&str>, upn: Option<&str>) -> VerifiedIdentity {
        VerifiedIdentity {
            subject: "pairwise-sub".into(),
            object_id: Some("oid".into()),
            tenant_id: Some("tid".into()),
            preferred_username: upn.map(Into::into),
            email: email.map(Into::into),
            name: Some("Alice Example".into()),
            given_name: None,
            family_name: None,
        }
    }

    #[test]
    fn email_falls_back_to_an_email_shaped_upn_and_usernames_are_lower_case() {
        let cases = [
            (Some("Bob@Contoso.com"), Some("bob_upn@contoso.com"), Some("bob@contoso.com"), "bob_upn@contoso.com"),
            (
                None,
                Some("Alice@Contoso.onmicrosoft.com"),
                Some("alice@contoso.onmicrosoft.com"),
                "alice@contoso.onmicrosoft.com",
            ),
            (None, Some("CONTOSO\\alice"), None, "contoso\\alice"),
            (None, None, None, "pairwise-sub"),
        ];
        for (email, upn, expected_email, expected_username) in cases {
            let profile = profile_update("u", "azure_devops", true, &identity(email, upn));
            assert_eq!(profile.email.as_deref(), expected_email, "email for {email:?}/{upn:?}");
            assert_eq!(profile.username, expected_username, "username for {email:?}/{upn:?}");
            assert_eq!(profile.email_verified, expected_email.is_some());
        }
        let untrusted = profile_update("u", "a", false, &identity(Some("x@y.com"), None));
        assert!(!untrusted.email_verified, "trust_email = false leaves e-mail unverified");
    }
}
