//! The sign-in's decisions, without I/O: each step takes what was asked, what the last call
//! answered and `now`, and says which call comes next or how the sign-in ends.
//!
//! A client's request is decided at once (`start`). A callback moves through typed states:
//! `Callback` (take the pending sign-in its state names) → `Exchange` (trade the code for
//! tokens) → `Verify` (check the ID token) → `Link` or `SignIn` (find the user) → `SaveLink` or
//! `SaveSignIn` (store the user and the tokens) → `Finish` (a session and a code for the
//! client). Each state has only the methods its answer needs, so no answer can arrive out of
//! turn. Ids and secrets come in as arguments; what an operator must know is logged here,
//! where the cause is found, and the user reads a `SignInError`.

use secrecy::SecretString;
use url::Url;

use super::profile::{EmailTrust, profile_update};
use super::{CallbackParams, Completed, SignInError, Started, with_query};
use crate::audit::Event;
use crate::crypto::token_hash;
use crate::oidc::authorize::AuthorizationRequest;
use crate::oidc::error::ErrorCode;
use crate::store::{AuthRequestRow, AuthorizationCodeRow, IdentityRow, ProfileUpdate, SessionRow, StoreError, UserRow};
use crate::telemetry::Chain;
use crate::upstream::entra::{EntraErrorBody, ErrorClass, ReauthKind, VerifiedIdentity, classify};
use crate::upstream::refusal::{Refusal, throttle_seconds};
use crate::upstream::{Provider, TokenResponse, UpstreamError};
use crate::urls::Urls;
use crate::vault::UpstreamTokens;

/// How many looks a sign-in takes at its identity: another first sign-in of the same person
/// may store it between a look and the save, and the next look finds that user.
const SIGN_IN_ATTEMPTS: u8 = 2;

// ---------------------------------------------------------------------------------------
// A client's authorization request

/// The provider a request goes to: the one it links (`kc_action`) or, without a link, hints
/// (`kc_idp_hint`), when enabled; else the only one enabled. `None` lets the user choose.
pub(super) fn chosen_provider(
    request: &AuthorizationRequest,
    providers: &[&str],
) -> Result<Option<String>, SignInError> {
    if providers.is_empty() {
        return Err(SignInError::NoProviderEnabled);
    }
    let chosen = request
        .link_alias
        .as_deref()
        .or(request.idp_hint.as_deref())
        .filter(|alias| providers.contains(alias))
        .or_else(|| (providers.len() == 1).then(|| providers[0]));
    Ok(chosen.map(str::to_owned))
}

/// The browser's pending-sign-in secret when it is one of ours in shape: a browser that holds
/// one keeps it, so that sign-ins in two tabs do not undo each other.
pub(super) fn kept_browser_secret(secret: Option<&str>) -> Option<&str> {
    secret.filter(|s| s.len() == 43 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

/// A client's authorization request as the service received it.
pub(super) struct Arrival<'a> {
    pub(super) request: &'a AuthorizationRequest,
    /// The enabled providers' aliases.
    pub(super) providers: &'a [&'a str],
    /// From `chosen_provider`.
    pub(super) chosen: Option<String>,
    /// The browser's live SSO session, found by its cookie.
    pub(super) session: Option<SessionRow>,
    /// The session's user must sign in at the chosen provider again (Entra refused the
    /// identity's refresh): the provider is asked, never the session alone.
    pub(super) session_must_renew: bool,
    /// The new pending sign-in's id, and the secret that binds it to the browser.
    pub(super) request_id: String,
    pub(super) browser_secret: String,
}

/// How a client's request goes on.
#[derive(Debug)]
pub(super) enum StartStep {
    /// Back to the client at once, storing nothing.
    ToClient(Url),
    /// The browser's session will do: touch it, and give the client a code for it.
    IssueCode { pending: AuthRequestRow, session: SessionRow },
    /// Store `pending` (within the client address's budget when `budgeted`, that is without a
    /// session), then answer `started`.
    Store { pending: AuthRequestRow, budgeted: bool, started: Started },
}

/// Decides a client's request: back to the client at once, a code from the browser's SSO
/// session, or a pending sign-in at a provider. A live session gets a code at once unless the
/// client asks for `prompt=login` (or `max_age` demands it); `kc_action=idp_link` runs the
/// provider's sign-in and links it to that session's user.
pub(super) fn start(
    arrival: Arrival<'_>,
    issuer: &str,
    login_timeout_seconds: i64,
    now: i64,
) -> Result<StartStep, SignInError> {
    let Arrival { request, providers, chosen, session, session_must_renew, request_id, browser_secret } = arrival;
    let mut pending = AuthRequestRow {
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
        expires_at: now + login_timeout_seconds,
        link_user_id: None,
        prompt: request.prompt.clone(),
    };
    if let Some(link) = request.link_alias.as_deref()
        && !providers.contains(&link)
    {
        let description = "kc_action names an unknown identity provider";
        return Ok(StartStep::ToClient(client_error(&pending, ErrorCode::InvalidRequest, description, issuer)?));
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
            let description = "The user must sign in again (max_age)";
            return Ok(StartStep::ToClient(client_error(&pending, ErrorCode::LoginRequired, description, issuer)?));
        }
        // Recorded as `prompt=login`, so that the provider is asked to authenticate anew.
        pending.prompt = Some(pending.prompt.take().map_or_else(|| "login".to_owned(), |p| format!("{p} login")));
    }
    let prompt_login = prompt("login") || too_old;
    let budgeted = session.is_none();
    match session {
        Some(session) if request.link_alias.is_some() => pending.link_user_id = Some(session.user_id),
        Some(session) if !prompt_login && !session_must_renew => {
            return Ok(StartStep::IssueCode { pending, session });
        }
        None if request.prompt.as_deref() == Some("none") => {
            let description = "The user must sign in";
            return Ok(StartStep::ToClient(client_error(&pending, ErrorCode::LoginRequired, description, issuer)?));
        }
        _ => {}
    }
    let started = match chosen {
        Some(alias) => Started::Provider { request_id, browser_secret, alias },
        None => Started::Choose { request_id, browser_secret },
    };
    Ok(StartStep::Store { pending, budgeted, started })
}

/// The client's redirect URI carrying an OAuth error and the client's state.
fn client_error(
    pending: &AuthRequestRow,
    error: ErrorCode,
    description: &str,
    issuer: &str,
) -> Result<Url, SignInError> {
    with_query(
        &pending.redirect_uri,
        &[
            ("error", Some(error.as_str())),
            ("error_description", Some(description)),
            ("state", pending.client_state.as_deref()),
            ("iss", Some(issuer)),
        ],
    )
    .ok_or(SignInError::InvalidRedirectUri)
}

/// The `prompt` sent to the provider: `login` when the client asked for it (or `max_age` did);
/// the client's other values are the broker's to answer.
pub(super) fn upstream_prompt(pending: &AuthRequestRow) -> Option<&'static str> {
    pending.prompt.as_deref().filter(|p| p.split(' ').any(|p| p == "login")).map(|_| "login")
}

/// The single-use code row that gives `pending`'s client the `session`, for `code`.
pub(super) fn authorization_code(
    pending: &AuthRequestRow,
    session: &SessionRow,
    code: &str,
    now: i64,
    lifespan_seconds: i64,
) -> AuthorizationCodeRow {
    AuthorizationCodeRow {
        code_hash: token_hash(code),
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        user_id: session.user_id.clone(),
        session_id: session.id.clone(),
        scope: pending.scope.clone(),
        nonce: pending.client_nonce.clone(),
        code_challenge: pending.code_challenge.clone(),
        code_challenge_method: pending.code_challenge_method.clone(),
        created_at: now,
        expires_at: now + lifespan_seconds,
        used_at: None,
    }
}

/// The client's redirect carrying `code` for session `session_id`; a link says it succeeded.
pub(super) fn code_redirect(
    pending: &AuthRequestRow,
    session_id: &str,
    code: &str,
    issuer: &str,
) -> Result<Url, SignInError> {
    with_query(
        &pending.redirect_uri,
        &[
            ("state", pending.client_state.as_deref()),
            ("session_state", Some(session_id)),
            ("iss", Some(issuer)),
            ("code", Some(code)),
            ("kc_action_status", pending.link_user_id.as_ref().map(|_| "success")),
        ],
    )
    .ok_or(SignInError::InvalidRedirectUri)
}

// ---------------------------------------------------------------------------------------
// The provider's answer

/// A callback as it arrived, for provider `alias`, in a browser holding `browser_secret`.
pub(super) struct Callback<'a> {
    alias: &'a str,
    params: CallbackParams,
    browser_secret: Option<&'a str>,
}

impl std::fmt::Debug for Callback<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback").field("alias", &self.alias).field("params", &self.params).finish_non_exhaustive()
    }
}

/// How a callback goes on once its pending sign-in is checked.
#[derive(Debug)]
pub(super) enum Checked<'p> {
    /// The provider answered with `error=` the client hears (the user declined or cancelled).
    ToClient(Url),
    /// The provider answered with a code.
    Exchange(Box<Exchange<'p>>),
}

impl<'a> Callback<'a> {
    pub(super) fn new(alias: &'a str, params: CallbackParams, browser_secret: Option<&'a str>) -> Callback<'a> {
        Callback { alias, params, browser_secret }
    }

    /// The hash of the `state` that names the pending sign-in to take; taking it uses it up,
    /// whatever comes next.
    pub(super) fn state_hash(&self) -> Result<String, SignInError> {
        let state = self.params.state.as_deref().filter(|s| !s.is_empty()).ok_or(SignInError::ExpiredOrUsed)?;
        Ok(token_hash(state))
    }

    /// Checks the pending sign-in the state named (`None`: unknown or already used) against
    /// the provider answering (`None`: not enabled), this browser and `now`, then reads the
    /// answer: an `error=` (back to the client, or a page), or the code to exchange.
    pub(super) fn on_pending<'p>(
        self,
        pending: Option<AuthRequestRow>,
        provider: Option<&'p Provider>,
        issuer: &str,
        now: i64,
    ) -> Result<Checked<'p>, SignInError> {
        let alias = self.alias;
        let pending = pending.ok_or(SignInError::ExpiredOrUsed)?;
        let provider = provider.ok_or(SignInError::UnknownProvider)?;
        let bound_to_browser = self.browser_secret.is_some_and(|secret| token_hash(secret) == pending.browser_hash);
        if !bound_to_browser {
            tracing::warn!(alias, client_id = %pending.client_id, "sign-in callback without the browser cookie that started it");
            return Err(SignInError::OtherBrowser);
        }
        if pending.alias.as_deref() != Some(alias) {
            tracing::warn!(alias, expected = ?pending.alias, "sign-in callback came from another provider than the one it started with");
            return Err(SignInError::OtherProvider);
        }
        if pending.expires_at < now {
            return Err(SignInError::ExpiredOrUsed);
        }
        if let Some(error) = self.params.error.as_deref() {
            let description = self.params.error_description.as_deref();
            let answer = EntraErrorBody::from_redirect(error, description, self.params.suberror.as_deref());
            return Ok(Checked::ToClient(authorize_error(alias, &pending, &answer, issuer)?));
        }
        let code = self.params.code.filter(|c| !c.is_empty()).ok_or(SignInError::NoCode)?;
        Ok(Checked::Exchange(Box::new(Exchange { provider, pending, code })))
    }
}

/// `error=` on the callback: the user declined (back to the client), or the provider refused
/// the request (a page).
fn authorize_error(
    alias: &str,
    pending: &AuthRequestRow,
    answer: &EntraErrorBody,
    issuer: &str,
) -> Result<Url, SignInError> {
    let (error, summary) = (answer.error.as_str(), answer.summary());
    if classify(400, answer) == ErrorClass::Blocked {
        return Err(blocked_by_policy(alias, answer));
    }
    match error {
        "access_denied" if pending.link_user_id.is_some() => {
            tracing::info!(alias, client_id = %pending.client_id, "the user cancelled linking at the provider");
            with_query(
                &pending.redirect_uri,
                &[
                    ("state", pending.client_state.as_deref()),
                    ("kc_action_status", Some("cancelled")),
                    ("iss", Some(issuer)),
                ],
            )
            .ok_or(SignInError::InvalidRedirectUri)
        }
        "access_denied" => {
            tracing::info!(alias, client_id = %pending.client_id, "the user declined the sign-in at the provider");
            client_error(pending, ErrorCode::AccessDenied, "The user declined the sign-in", issuer)
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

/// The page of a sign-in a Conditional Access policy blocks, with one line for the operator
/// that carries what Microsoft's support asks for: the AADSTS number, trace id and correlation id.
fn blocked_by_policy(alias: &str, answer: &EntraErrorBody) -> SignInError {
    tracing::warn!(
        alias,
        aadsts = answer.aadsts(),
        suberror = answer.suberror.as_deref().unwrap_or_default(),
        upstream_trace_id = answer.trace_id().unwrap_or_default(),
        upstream_correlation_id = answer.correlation_id().unwrap_or_default(),
        "a Conditional Access policy of the user's organization blocks the sign-in"
    );
    SignInError::BlockedByPolicy
}

/// A code to trade for tokens at `provider`'s token endpoint.
pub(super) struct Exchange<'p> {
    pub(super) provider: &'p Provider,
    pending: AuthRequestRow,
    code: String,
}

impl std::fmt::Debug for Exchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("provider", &self.provider)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<'p> Exchange<'p> {
    pub(super) fn code(&self) -> &str {
        &self.code
    }

    /// The PKCE verifier recorded when the browser left for the provider.
    pub(super) fn pkce_verifier(&self) -> &str {
        self.pending.pkce_verifier.as_deref().unwrap_or_default()
    }

    /// Keeps the provider's tokens, received at `now`; an answer without the ID token that says
    /// who signed in is refused.
    pub(super) fn on_tokens(self, response: TokenResponse, now: i64) -> Result<Verify<'p>, SignInError> {
        let alias = self.provider.settings.alias.as_str();
        let Some(id_token) = response.id_token.clone() else {
            tracing::error!(
                alias,
                "the provider's token response has no id_token; is `openid` in providers.{alias}.scopes?"
            );
            return Err(SignInError::IncompleteAnswer);
        };
        let tokens = UpstreamTokens::from_response(response, now);
        Ok(Verify { provider: self.provider, pending: self.pending, tokens, id_token })
    }
}

/// An ID token to verify against the nonce sent with the sign-in.
#[derive(Debug)]
pub(super) struct Verify<'p> {
    pub(super) provider: &'p Provider,
    pending: AuthRequestRow,
    tokens: UpstreamTokens,
    id_token: SecretString,
}

/// A sign-in whose ID token verified: who signed in, at which provider, and their tokens.
#[derive(Debug)]
struct Verified<'p> {
    provider: &'p Provider,
    pending: AuthRequestRow,
    identity: VerifiedIdentity,
    tokens: UpstreamTokens,
}

/// What a verified sign-in does for the user.
#[derive(Debug)]
pub(super) enum Account<'p> {
    /// `kc_action=idp_link`: link the identity to the user signed in when it started.
    Link(Link<'p>),
    /// Sign in the identity's user, or a new user at its first sign-in.
    SignIn(SignIn<'p>),
}

impl<'p> Verify<'p> {
    pub(super) fn id_token(&self) -> &SecretString {
        &self.id_token
    }

    /// The nonce recorded when the browser left for the provider.
    pub(super) fn nonce(&self) -> &str {
        self.pending.upstream_nonce.as_deref().unwrap_or_default()
    }

    /// Goes on with the identity the ID token proved.
    pub(super) fn on_identity(self, identity: VerifiedIdentity) -> Account<'p> {
        let Verify { provider, pending, tokens, .. } = self;
        let link_user_id = pending.link_user_id.clone();
        let verified = Verified { provider, pending, identity, tokens };
        match link_user_id {
            Some(user_id) => Account::Link(Link { verified, user_id }),
            None => Account::SignIn(SignIn { verified, attempt: 1 }),
        }
    }
}

/// Linking the identity to `user_id`: first, who the identity belongs to already.
#[derive(Debug)]
pub(super) struct Link<'p> {
    verified: Verified<'p>,
    user_id: String,
}

impl<'p> Link<'p> {
    /// The identity's subject at the provider, to look its owner up by.
    pub(super) fn subject(&self) -> &str {
        &self.verified.identity.subject
    }

    /// Refuses an identity that belongs to another user (`owner`); tokens stored for an
    /// earlier link of this user's are replaced.
    pub(super) fn on_owner(self, owner: Option<IdentityRow>) -> Result<LinkTo<'p>, SignInError> {
        if owner.is_some_and(|owner| owner.user_id != self.user_id) {
            return Err(self.verified.already_linked(&self.user_id));
        }
        Ok(LinkTo(self))
    }
}

/// Linking the identity to a user it may belong to: next, that user.
#[derive(Debug)]
pub(super) struct LinkTo<'p>(Link<'p>);

impl<'p> LinkTo<'p> {
    pub(super) fn user_id(&self) -> &str {
        &self.0.user_id
    }

    /// Refuses a user that is gone or disabled; otherwise saves the link, leaving the user's
    /// own profile as it is.
    pub(super) fn on_user(self, user: Option<UserRow>) -> Result<SaveLink<'p>, SignInError> {
        let Link { verified, user_id } = self.0;
        let user = user.ok_or(SignInError::LinkedUserGone)?;
        if !user.enabled {
            return Err(SignInError::UserDisabled);
        }
        let settings = &verified.provider.settings;
        let mut profile = profile_update(&user_id, &settings.alias, EmailTrust::of(settings), &verified.identity);
        profile.username = user.username;
        profile.email = user.email;
        profile.email_verified = user.email_verified;
        profile.first_name = user.first_name;
        profile.last_name = user.last_name;
        profile.full_name = user.full_name;
        Ok(SaveLink(Save { verified, profile }))
    }
}

/// Signing the identity's user in: the `attempt`th look at who the identity belongs to.
#[derive(Debug)]
pub(super) struct SignIn<'p> {
    verified: Verified<'p>,
    attempt: u8,
}

impl<'p> SignIn<'p> {
    /// The identity's subject at the provider, to look its user up by.
    pub(super) fn subject(&self) -> &str {
        &self.verified.identity.subject
    }

    /// What the store knows: the identity (`existing`) and its `user`, or neither at a first
    /// sign-in, which makes user `new_user_id`. A disabled user is refused.
    pub(super) fn on_found(
        self,
        existing: Option<IdentityRow>,
        user: Option<UserRow>,
        new_user_id: String,
    ) -> Result<SaveSignIn<'p>, SignInError> {
        let SignIn { verified, attempt } = self;
        let settings = &verified.provider.settings;
        if let Some(user) = user.as_ref().filter(|user| existing.is_some() && !user.enabled) {
            tracing::info!(alias = %settings.alias, user_id = %user.id, "refused the sign-in of a disabled user");
            return Err(SignInError::UserDisabled);
        }
        let kept_email = user.filter(|_| existing.is_some()).map(|user| (user.email, user.email_verified));
        let user_id = existing.map_or(new_user_id, |existing| existing.user_id);
        let profile = profile_update(&user_id, &settings.alias, EmailTrust::of(settings), &verified.identity);
        Ok(SaveSignIn { save: Save { verified, profile }, attempt, kept_email })
    }
}

/// The user's profile and, when the provider keeps them, the tokens, to store in one write.
#[derive(Debug)]
pub(super) struct Save<'p> {
    verified: Verified<'p>,
    profile: ProfileUpdate,
}

impl<'p> Save<'p> {
    pub(super) fn profile(&self) -> &ProfileUpdate {
        &self.profile
    }

    /// The tokens to seal beside the profile, when the provider keeps them (`store_token`).
    pub(super) fn tokens(&self) -> Option<&UpstreamTokens> {
        self.verified.provider.settings.store_token.then_some(&self.verified.tokens)
    }

    fn finish(self) -> Finish<'p> {
        let provider = self.verified.provider;
        Finish { alias: &provider.settings.alias, pending: self.verified.pending, user_id: self.profile.user_id }
    }
}

/// Saving a link.
#[derive(Debug)]
pub(super) struct SaveLink<'p>(Save<'p>);

impl<'p> SaveLink<'p> {
    pub(super) fn save(&self) -> &Save<'p> {
        &self.0
    }

    /// Reads the store's answer: a conflict is an identity another user took meanwhile.
    pub(super) fn on_saved(self, saved: Result<(), StoreError>) -> Result<Finish<'p>, SignInError> {
        match saved {
            Ok(()) => Ok(self.0.finish()),
            Err(StoreError::Conflict(_)) => Err(self.0.verified.already_linked(&self.0.profile.user_id)),
            Err(err) => Err(err.into()),
        }
    }
}

/// Saving a sign-in, at the `attempt`th look at the identity.
#[derive(Debug)]
pub(super) struct SaveSignIn<'p> {
    save: Save<'p>,
    attempt: u8,
    /// The e-mail (and whether verified) an existing user has now; `None` for a new user.
    kept_email: Option<(Option<String>, bool)>,
}

/// Another user who holds the e-mail address a sign-in brings.
#[derive(Debug)]
pub(super) struct EmailHolder {
    pub(super) user_id: String,
    /// The holder has an identity at the provider signing in.
    pub(super) linked_here: bool,
}

/// How saving a sign-in ends, unless refused.
#[derive(Debug)]
pub(super) enum Saved<'p> {
    /// Stored: the user has a session to start.
    Finish(Box<Finish<'p>>),
    /// Another first sign-in of the same person stored first: look again, to find its user.
    Again(Box<SignIn<'p>>),
}

impl<'p> SaveSignIn<'p> {
    pub(super) fn save(&self) -> &Save<'p> {
        &self.save
    }

    /// The e-mail address this sign-in would give the user, to look its holders up by.
    pub(super) fn email(&self) -> Option<&str> {
        self.save.profile.email.as_deref()
    }

    /// Never gives a second user an address another holds (ignoring case): a proven address
    /// whose holder is not linked to this provider ends a first sign-in on a page, as Keycloak's
    /// "account already exists"; otherwise the address is left off this user (a new one is
    /// created without it, an existing one keeps its own); the flag says it was left off.
    pub(super) fn on_email_holder(
        mut self,
        holder: Option<EmailHolder>,
    ) -> Result<(SaveSignIn<'p>, bool), SignInError> {
        let Some(holder) = holder.filter(|holder| holder.user_id != self.save.profile.user_id) else {
            return Ok((self, false));
        };
        let settings = &self.save.verified.provider.settings;
        let profile = &mut self.save.profile;
        match self.kept_email.take() {
            None if profile.email_verified && !holder.linked_here => {
                tracing::info!(
                    alias = %settings.alias,
                    holder_user_id = %holder.user_id,
                    "refused a first sign-in whose proven e-mail address another user holds"
                );
                let email = profile.email.clone().unwrap_or_default();
                return Err(SignInError::EmailTaken { email, provider: settings.display_name.clone() });
            }
            None => {
                profile.email = None;
                profile.email_verified = false;
            }
            Some((email, verified)) => {
                profile.email = email;
                profile.email_verified = verified;
            }
        }
        tracing::info!(
            alias = %settings.alias,
            user_id = %profile.user_id,
            holder_user_id = %holder.user_id,
            "a sign-in brought an e-mail address another user holds; it was left off"
        );
        Ok((self, true))
    }

    /// Reads the store's answer: a conflict is a first sign-in of the same person that stored
    /// first, looked at again (`SIGN_IN_ATTEMPTS` looks in all).
    pub(super) fn on_saved(self, saved: Result<(), StoreError>) -> Result<Saved<'p>, SignInError> {
        match saved {
            Ok(()) => Ok(Saved::Finish(Box::new(self.save.finish()))),
            Err(StoreError::Conflict(_)) if self.attempt < SIGN_IN_ATTEMPTS => {
                Ok(Saved::Again(Box::new(SignIn { verified: self.save.verified, attempt: self.attempt + 1 })))
            }
            Err(StoreError::Conflict(_)) => Err(SignInError::Contended),
            Err(err) => Err(err.into()),
        }
    }
}

impl Verified<'_> {
    /// The refusal of a link to an identity that belongs to another user.
    fn already_linked(&self, user_id: &str) -> SignInError {
        let settings = &self.provider.settings;
        tracing::warn!(alias = %settings.alias, user_id, "refused to link an identity that belongs to another user");
        SignInError::AlreadyLinked { provider: settings.display_name.clone() }
    }
}

/// A user signed in (or linked) at provider `alias`: next, a session and a code.
#[derive(Debug)]
pub(super) struct Finish<'p> {
    alias: &'p str,
    pending: AuthRequestRow,
    user_id: String,
}

impl Finish<'_> {
    pub(super) fn alias(&self) -> &str {
        self.alias
    }

    pub(super) fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The client's request, which the code answers.
    pub(super) fn pending(&self) -> &AuthRequestRow {
        &self.pending
    }

    /// The audit trail's record of this sign-in or link, in session `session_id`.
    pub(super) fn audit_event<'a>(&'a self, session_id: &'a str) -> Event<'a> {
        Event::SignIn {
            link: self.pending.link_user_id.is_some(),
            user_id: &self.user_id,
            client_id: &self.pending.client_id,
            alias: self.alias,
            session_id,
        }
    }
}

// ---------------------------------------------------------------------------------------
// How it ends

/// The sign-in metrics' outcome label of a callback's result.
pub(super) fn outcome(result: &Result<Completed, SignInError>) -> &'static str {
    match result {
        Ok(Completed::SignedIn { .. }) => "success",
        Ok(Completed::ToClient(_)) => "denied",
        Err(SignInError::Store(_)) => "internal_error",
        Err(err) if err.is_failure() => "upstream_error",
        Err(_) => "rejected",
    }
}

/// The user's page for a failed call to provider `alias`, logging what the operator needs:
/// the configuration key to fix (or the redirect URI to register, from `urls`), the user's
/// part, or the provider's unavailability.
pub(super) fn upstream_failure(alias: &str, urls: &Urls, err: &UpstreamError) -> SignInError {
    match Refusal::of(alias, err) {
        Refusal::Operator { cause, config_key, body } => {
            let action = if body.aadsts() == Some(50011) {
                let redirect_uri = urls.broker_endpoint(alias);
                format!("register exactly `{redirect_uri}` as a Web redirect URI of the app registration")
            } else {
                format!("check `{config_key}` and the app registration")
            };
            tracing::error!(
                alias,
                aadsts = body.aadsts(),
                cause,
                config_key = %config_key,
                action = %action,
                upstream_correlation_id = body.correlation_id.as_deref().unwrap_or_default(),
                "upstream sign-in failed: the configuration must be fixed"
            );
            SignInError::Misconfigured
        }
        Refusal::User { kind, cause, body } => {
            tracing::warn!(
                alias,
                aadsts = body.aadsts(),
                suberror = body.suberror.as_deref().unwrap_or_default(),
                reauth_kind = kind.as_str(),
                cause,
                "the provider needs the user to act"
            );
            if kind == ReauthKind::ConsentRequired {
                SignInError::ConsentRequired
            } else {
                SignInError::UpstreamReauthentication { cause }
            }
        }
        Refusal::Blocked { body } => blocked_by_policy(alias, body),
        Refusal::Throttled { retry_after } => {
            let retry_after = throttle_seconds(retry_after);
            tracing::warn!(alias, retry_after, "the provider is throttling the broker's sign-ins");
            SignInError::UpstreamThrottled { retry_after }
        }
        Refusal::Transient => {
            tracing::warn!(alias, error = %Chain(err), "the provider is unavailable");
            SignInError::UpstreamUnavailable
        }
        Refusal::Request { .. } => match err {
            UpstreamError::IdToken(reason) => {
                tracing::warn!(alias, reason = %reason, "rejected the provider's ID token");
                SignInError::Unverifiable
            }
            other => {
                tracing::warn!(alias, error = %other, "the provider refused the sign-in");
                SignInError::UpstreamRefused
            }
        },
    }
}
