//! The sign-in's I/O: performs the calls `flow` asks for (store, provider, sessions, vault,
//! audit) and feeds it their answers.

use std::sync::Arc;

use url::Url;

use super::budget::PendingBudget;
use super::flow::{self, Account, Arrival, Callback, Checked, EmailHolder, Finish, Save, SaveSignIn, Saved, StartStep};
use super::{CallbackParams, Completed, SignInError, Started};
use crate::audit::{AuditLog, Event};
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
        // A session whose user must sign in at the chosen provider again is no SSO shortcut:
        // its code would hand out the identity whose tokens Entra refuses.
        let session_must_renew = match (&session, &chosen) {
            (Some(session), Some(alias)) => {
                self.store.find_reauth_mark(IdentityKey { user_id: &session.user_id, alias }).await?.is_some()
            }
            _ => false,
        };
        let arrival =
            Arrival { request, providers: &providers, chosen, session, session_must_renew, request_id, browser_secret };
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

    /// Sends the browser to the provider, remembering state, nonce and PKCE verifier. When the
    /// user is known before the provider answers (a link, or the browser's SSO session,
    /// `session_secret`) and Entra refused their last refresh with a claims challenge, the
    /// challenge goes along.
    pub(crate) async fn begin_upstream(
        &self,
        alias: &str,
        request_id: &str,
        browser_secret: Option<&str>,
        session_secret: Option<&str>,
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
        let claims = self.claims_challenge(&pending, alias, session_secret, now).await?;
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
                claims: claims.as_deref(),
            },
        ))
    }

    /// The claims challenge stored for the user this sign-in is for, when known: the user a
    /// link is for, else the browser's live session's.
    async fn claims_challenge(
        &self,
        pending: &AuthRequestRow,
        alias: &str,
        session_secret: Option<&str>,
        now: i64,
    ) -> Result<Option<String>, SignInError> {
        let user_id = match (&pending.link_user_id, session_secret) {
            (Some(user_id), _) => user_id.clone(),
            (None, Some(secret)) => match self.sessions.live_by_cookie(secret, now).await? {
                Some(session) => session.user_id,
                None => return Ok(None),
            },
            (None, None) => return Ok(None),
        };
        let mark = self.store.find_reauth_mark(IdentityKey { user_id: &user_id, alias }).await?;
        Ok(mark.and_then(|mark| mark.claims))
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
        // What `doctor` reports: whether this provider's ID tokens prove e-mail addresses.
        self.store.record_email_proof_claim(alias, identity.email_domain_verified.is_some(), now).await?;
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
                let save = self.withhold_taken_email(alias, save, now).await?;
                let saved = self.save(save.save(), now).await;
                match save.on_saved(saved)? {
                    Saved::Finish(finish) => break *finish,
                    Saved::Again(again) => sign_in = *again,
                }
            },
        };
        self.finish(finish, now).await
    }

    /// Looks up who else holds the sign-in's e-mail address, lets the flow decide, and audits
    /// a conflict.
    async fn withhold_taken_email<'p>(
        &self,
        alias: &str,
        save: SaveSignIn<'p>,
        now: i64,
    ) -> Result<SaveSignIn<'p>, SignInError> {
        let user_id = save.save().profile().user_id.clone();
        let holder = match save.email() {
            Some(email) => {
                let holders = self.store.find_users_by_email(email, 2).await?;
                match holders.into_iter().find(|holder| holder.id != user_id) {
                    Some(holder) => {
                        let linked_here =
                            self.store.list_identities(&holder.id).await?.iter().any(|i| i.alias == alias);
                        Some(EmailHolder { user_id: holder.id, linked_here })
                    }
                    None => None,
                }
            }
            None => None,
        };
        let holder_id = holder.as_ref().map(|holder| holder.user_id.clone()).unwrap_or_default();
        let event = |refused| Event::EmailConflict { refused, user_id: &user_id, holder_id: &holder_id, alias };
        match save.on_email_holder(holder) {
            Ok((save, withheld)) => {
                if withheld {
                    self.audit.event(now, event(false)).await;
                }
                Ok(save)
            }
            Err(err) => {
                if matches!(err, SignInError::EmailTaken { .. }) {
                    self.audit.event(now, event(true)).await;
                }
                Err(err)
            }
        }
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
