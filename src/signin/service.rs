//! The sign-in's I/O: performs the calls `flow` asks for (store, provider, sessions, vault,
//! audit) and feeds it their answers.

use std::sync::Arc;

use url::Url;

use super::budget::PendingBudget;
use super::flow::{self, Account, Arrival, Callback, Checked, Finish, Save, Saved, StartStep};
use super::{CallbackParams, Completed, SignInError, Started};
use crate::audit::AuditLog;
use crate::config::RealmSettings;
use crate::crypto::{Cipher, new_id, pkce_s256, random_token, token_hash};
use crate::oidc::authorize::AuthorizationRequest;
use crate::oidc::sessions::Sessions;
use crate::store::{AuthRequestRow, IdentityKey, SessionRow, Store, StoreError, UpstreamLogin};
use crate::telemetry::Metrics;
use crate::upstream::entra::{self, AuthorizeRequest};
use crate::upstream::{Provider, Upstream, UpstreamError};
use crate::urls::Urls;
use crate::vault::seal_tokens;

/// The browser sign-in as the HTTP layer calls it: `start`, `begin_upstream`, `complete`.
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

impl SignInService {
    /// Answers a client's authorization request: at once, or by recording a pending sign-in
    /// bound to the browser by a secret (a fresh one, unless the browser holds one already).
    ///
    /// Without a session, the request counts against the budget of pending sign-ins of its
    /// client address (`client_key`) and of everyone. With a live SSO session (the
    /// `session_secret` cookie) the client may get a code at once; see `flow::start`.
    pub(crate) async fn start(
        &self,
        request: &AuthorizationRequest,
        client_key: &str,
        browser_secret: Option<&str>,
        session_secret: Option<&str>,
        now: i64,
    ) -> Result<Started, SignInError> {
        let providers: Vec<&str> = self.upstream.providers().map(|p| p.alias.as_str()).collect();
        let chosen = flow::chosen_provider(request, &providers)?;
        let request_id = random_token();
        let browser_secret = flow::kept_browser_secret(browser_secret).map_or_else(random_token, str::to_owned);
        let session = match session_secret {
            Some(secret) => self.sessions.live_by_cookie(secret, now).await?,
            None => None,
        };
        let arrival = Arrival { request, providers: &providers, chosen, session, request_id, browser_secret };
        match flow::start(arrival, self.urls.issuer(), self.realm.login_timeout_seconds, now)? {
            StartStep::ToClient(url) => Ok(Started::ToClient(url)),
            StartStep::IssueCode { pending, session } => {
                self.sessions.touch(&session, now).await?;
                Ok(Started::ToClient(self.issue_code(&pending, &session, now).await?))
            }
            StartStep::Store { pending, budgeted, started } => {
                if budgeted {
                    self.budget.insert(&self.store, &pending, client_key).await?;
                } else {
                    self.store.insert_auth_request(&pending).await?;
                }
                Ok(started)
            }
        }
    }

    fn provider(&self, alias: &str) -> Result<&Provider, SignInError> {
        self.upstream.provider(alias).ok_or(SignInError::UnknownProvider)
    }

    /// The user's page for a failed call to provider `alias`, the operator's detail logged.
    fn upstream_failure<'a>(&'a self, alias: &'a str) -> impl Fn(UpstreamError) -> SignInError + 'a {
        move |err| flow::upstream_failure(alias, &self.urls, &err)
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
        let pending = self
            .store
            .find_auth_request(request_id, &token_hash(browser_secret), now)
            .await?
            .ok_or(SignInError::PendingSignInNotFound)?;
        let metadata = self.upstream.metadata(provider).await.map_err(self.upstream_failure(alias))?;
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
        Ok(entra::authorize_url(
            &metadata,
            &provider.settings,
            &AuthorizeRequest {
                redirect_uri: &redirect_uri,
                state: &state,
                nonce: &nonce,
                code_challenge: &pkce_s256(&verifier),
                login_hint: pending.login_hint.as_deref(),
                prompt: flow::upstream_prompt(&pending),
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
        let result = self.complete_callback(alias, Callback::new(alias, params, browser_secret), now).await;
        self.metrics.count_sign_in(alias, flow::outcome(&result));
        result
    }

    async fn complete_callback(&self, alias: &str, callback: Callback<'_>, now: i64) -> Result<Completed, SignInError> {
        let pending = self.store.take_auth_request_by_state(&callback.state_hash()?).await?;
        let exchange = match callback.on_pending(pending, self.upstream.provider(alias), self.urls.issuer(), now)? {
            Checked::ToClient(url) => return Ok(Completed::ToClient(url)),
            Checked::Exchange(exchange) => exchange,
        };
        let provider = exchange.provider;
        let metadata = self.upstream.metadata(provider).await.map_err(self.upstream_failure(alias))?;
        let redirect_uri = self.urls.broker_endpoint(alias);
        let response = self
            .upstream
            .exchange_code(provider, &metadata, exchange.code(), exchange.pkce_verifier(), &redirect_uri)
            .await
            .map_err(self.upstream_failure(alias))?;
        let verify = exchange.on_tokens(response, now)?;
        let identity = self
            .upstream
            .verify_id_token(provider, &metadata, verify.id_token(), verify.nonce(), now)
            .await
            .map_err(self.upstream_failure(alias))?;
        let finish = match verify.on_identity(identity) {
            Account::Link(link) => {
                let owner = self.store.find_identity_by_subject(alias, link.subject()).await?;
                let link = link.on_owner(owner)?;
                let user = self.store.find_user(link.user_id()).await?;
                let save = link.on_user(user)?;
                let saved = self.save(save.save(), now).await;
                save.on_saved(saved)?
            }
            Account::SignIn(mut sign_in) => loop {
                let existing = self.store.find_identity_by_subject(alias, sign_in.subject()).await?;
                let user = match &existing {
                    Some(existing) => self.store.find_user(&existing.user_id).await?,
                    None => None,
                };
                let save = sign_in.on_found(existing, user, new_id())?;
                let saved = self.save(save.save(), now).await;
                match save.on_saved(saved)? {
                    Saved::Finish(finish) => break *finish,
                    Saved::Again(again) => sign_in = *again,
                }
            },
        };
        self.finish(finish, now).await
    }

    /// Stores the user's profile with the tokens sealed, in one write.
    async fn save(&self, save: &Save<'_>, now: i64) -> Result<(), StoreError> {
        let profile = save.profile();
        let sealed = save.tokens().map(|tokens| {
            seal_tokens(&self.cipher, IdentityKey { user_id: &profile.user_id, alias: &profile.alias }, tokens, now)
        });
        self.store.save_sign_in(profile, sealed.as_ref(), now).await
    }

    /// Starts the user's SSO session and answers the client with a code for it.
    async fn finish(&self, finish: Finish<'_>, now: i64) -> Result<Completed, SignInError> {
        let (session, session_secret) = self.sessions.start(finish.user_id(), finish.alias(), now).await?;
        let client_redirect = self.issue_code(finish.pending(), &session, now).await?;
        self.audit.event(now, finish.audit_event(&session.id)).await;
        Ok(Completed::SignedIn { client_redirect, session_secret })
    }

    /// A single-use code for `session`, and the client's redirect carrying it.
    async fn issue_code(&self, pending: &AuthRequestRow, session: &SessionRow, now: i64) -> Result<Url, SignInError> {
        let code = random_token();
        let lifespan = self.realm.authorization_code_lifespan_seconds;
        self.store.insert_authorization_code(&flow::authorization_code(pending, session, &code, now, lifespan)).await?;
        flow::code_redirect(pending, &session.id, &code, self.urls.issuer())
    }
}
