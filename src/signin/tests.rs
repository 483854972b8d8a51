//! The sign-in's decisions, driven directly: a pinned `now`, rows and answers written by hand,
//! no database and no provider.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use url::Url;
use uuid::Uuid;

use super::flow::{self, Account, Arrival, Callback, Checked, Exchange, Finish, Link, SignIn, StartStep, Verify};
use super::{CallbackParams, Completed, SignInError, Started};
use crate::clock::Clock;
use crate::config::{ProviderSettings, Tenant, UpstreamClientAuth};
use crate::crypto::token_hash;
use crate::oidc::authorize::AuthorizationRequest;
use crate::store::{AuthRequestRow, IdentityRow, SessionRow, StoreError, UserRow};
use crate::telemetry::Metrics;
use crate::upstream::entra::{EntraErrorBody, IdTokenError, VerifiedIdentity, classify};
use crate::upstream::{TokenResponse, Upstream, UpstreamError};
use crate::urls::Urls;

const NOW: i64 = 1_800_000_000;
const ALIAS: &str = "entra";
const ISSUER: &str = "https://broker.example/realms/allhands";
const REDIRECT_URI: &str = "https://app.example/cb";
/// A browser secret of the shape the broker issues: 43 base64url characters.
const BROWSER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const LOGIN_TIMEOUT: i64 = 1800;

fn urls() -> Urls {
    Urls::new("https://broker.example", "allhands")
}

fn upstream(store_token: bool) -> Upstream {
    let settings = ProviderSettings {
        alias: ALIAS.to_owned(),
        display_name: "Contoso Entra".to_owned(),
        tenant: Tenant::Single(Uuid::nil()),
        organization: None,
        client_id: "client".to_owned(),
        client_secret: SecretString::from("secret".to_owned()),
        client_auth: UpstreamClientAuth::ClientSecretPost,
        scopes: "openid offline_access".to_owned(),
        authority: Url::parse("https://login.example").unwrap(),
        devops_url: Url::parse("https://dev.example").unwrap(),
        allowed_tenants: Vec::new(),
        trust_email: true,
        verified_email_domains: Vec::new(),
        store_token,
    };
    Upstream::new(vec![settings], Arc::new(Metrics::new()), Clock::default()).unwrap()
}

/// The kind of a refusal, as its variant's name.
fn kind(err: &SignInError) -> String {
    let debug = format!("{err:?}");
    debug.split([' ', '(']).next().unwrap_or_default().to_owned()
}

fn query(url: &Url) -> Vec<(String, String)> {
    url.query_pairs().map(|(name, value)| (name.into_owned(), value.into_owned())).collect()
}

fn has(url: &Url, name: &str, value: &str) -> bool {
    query(url).contains(&(name.to_owned(), value.to_owned()))
}

// ---------------------------------------------------------------------------------------
// A client's authorization request

fn request() -> AuthorizationRequest {
    AuthorizationRequest {
        client_id: "allhands".into(),
        redirect_uri: REDIRECT_URI.into(),
        scope: "openid".into(),
        state: Some("client-state".into()),
        nonce: Some("client-nonce".into()),
        code_challenge: None,
        code_challenge_method: None,
        prompt: None,
        max_age: None,
        login_hint: Some("alice@contoso.com".into()),
        idp_hint: None,
        link_alias: None,
    }
}

fn session(created_at: i64) -> SessionRow {
    SessionRow {
        id: "session-1".into(),
        cookie_hash: "cookie-hash".into(),
        user_id: "user-1".into(),
        identity_provider: ALIAS.into(),
        created_at,
        last_seen_at: created_at,
        ended_at: None,
        offline: false,
    }
}

fn start(request: &AuthorizationRequest, session: Option<SessionRow>) -> Result<StartStep, SignInError> {
    let providers = [ALIAS];
    let chosen = flow::chosen_provider(request, &providers).unwrap();
    let arrival = Arrival {
        request,
        providers: &providers,
        chosen,
        session,
        session_must_renew: false,
        request_id: "request-1".into(),
        browser_secret: BROWSER.into(),
    };
    flow::start(arrival, ISSUER, LOGIN_TIMEOUT, NOW)
}

#[test]
fn the_provider_is_the_linked_one_the_hinted_one_or_the_only_one() {
    let with = |link: Option<&str>, hint: Option<&str>| AuthorizationRequest {
        link_alias: link.map(Into::into),
        idp_hint: hint.map(Into::into),
        ..request()
    };
    let cases: [(AuthorizationRequest, &[&str], Option<&str>, &str); 7] = [
        (with(None, None), &["a"], Some("a"), "the only provider"),
        (with(None, None), &["a", "b"], None, "several and no hint: the user chooses"),
        (with(None, Some("b")), &["a", "b"], Some("b"), "the hinted provider"),
        (with(None, Some("c")), &["a", "b"], None, "an unknown hint is ignored"),
        (with(None, Some("c")), &["a"], Some("a"), "an unknown hint falls back to the only provider"),
        (with(Some("a"), Some("b")), &["a", "b"], Some("a"), "the linked provider before the hint"),
        (with(Some("c"), Some("b")), &["a", "b"], None, "an unknown link hides the hint (it goes back as an error)"),
    ];
    for (request, providers, expected, case) in cases {
        assert_eq!(flow::chosen_provider(&request, providers).unwrap().as_deref(), expected, "{case}");
    }
    let none = flow::chosen_provider(&request(), &[]).unwrap_err();
    assert_eq!(kind(&none), "NoProviderEnabled", "no provider enabled");
}

#[test]
fn a_browser_keeps_its_secret_only_when_it_has_the_shape_of_ours() {
    let cases = [
        (Some(BROWSER), true, "43 base64url characters"),
        (Some("Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-_Ab-"), true, "dashes and underscores"),
        (Some(&BROWSER[1..]), false, "too short"),
        (Some("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb="), false, "padding"),
        (Some("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb;"), false, "a character of a cookie's syntax"),
        (None, false, "no cookie"),
    ];
    for (secret, kept, case) in cases {
        assert_eq!(flow::kept_browser_secret(secret).is_some(), kept, "{case}");
    }
}

#[test]
fn without_a_session_the_request_is_stored_within_the_budget_and_goes_to_the_provider() {
    let Ok(StartStep::Store { pending, budgeted, started }) = start(&request(), None) else {
        panic!("a pending sign-in is stored")
    };
    assert!(budgeted, "an anonymous request counts against its address's budget");
    assert!(matches!(started, Started::Provider { ref request_id, ref browser_secret, ref alias }
            if request_id == "request-1" && browser_secret == BROWSER && alias == ALIAS));
    assert_eq!(pending.id, "request-1");
    assert_eq!(pending.browser_hash, token_hash(BROWSER), "bound to the browser by its secret's hash");
    assert_eq!(pending.expires_at, NOW + LOGIN_TIMEOUT);
    assert_eq!(pending.client_state.as_deref(), Some("client-state"));
    assert_eq!(pending.login_hint.as_deref(), Some("alice@contoso.com"));
    assert_eq!(pending.link_user_id, None);
}

#[test]
fn several_providers_and_no_hint_let_the_user_choose() {
    let providers = [ALIAS, "other"];
    let request = request();
    let arrival = Arrival {
        request: &request,
        providers: &providers,
        chosen: flow::chosen_provider(&request, &providers).unwrap(),
        session: None,
        session_must_renew: false,
        request_id: "request-1".into(),
        browser_secret: BROWSER.into(),
    };
    let step = flow::start(arrival, ISSUER, LOGIN_TIMEOUT, NOW).unwrap();
    assert!(matches!(step, StartStep::Store { started: Started::Choose { .. }, .. }));
}

#[test]
fn a_live_session_gets_a_code_unless_the_client_or_max_age_asks_for_a_new_sign_in() {
    let with = |prompt: Option<&str>, max_age: Option<i64>| AuthorizationRequest {
        prompt: prompt.map(Into::into),
        max_age,
        ..request()
    };
    let signed_in_at = NOW - 100;
    // (request, expected step, prompt recorded for the provider, case)
    let cases = [
        (with(None, None), "code", None, "a session and no prompt"),
        (with(None, Some(100)), "code", None, "a session exactly max_age old"),
        (with(Some("login"), None), "store", Some("login"), "prompt=login"),
        (with(None, Some(0)), "store", Some("login"), "max_age=0 is prompt=login"),
        (with(None, Some(99)), "store", Some("login"), "a session older than max_age"),
        (with(Some("consent"), Some(99)), "store", Some("consent login"), "login added to the client's prompt"),
        (with(Some("none"), Some(99)), "login_required", None, "too old, and the client wants no page"),
        (with(Some("login none"), Some(99)), "store", Some("login none"), "prompt=login wins over none"),
    ];
    for (request, expected, prompt, case) in cases {
        match start(&request, Some(session(signed_in_at))).unwrap() {
            StartStep::IssueCode { pending, session } => {
                assert_eq!(expected, "code", "{case}");
                assert_eq!(session.id, "session-1", "{case}");
                assert_eq!(pending.client_state.as_deref(), Some("client-state"), "{case}");
            }
            StartStep::Store { pending, budgeted, .. } => {
                assert_eq!(expected, "store", "{case}");
                assert!(!budgeted, "{case}: a request with a session does not count against the budget");
                assert_eq!(pending.prompt.as_deref(), prompt, "{case}");
            }
            StartStep::ToClient(url) => {
                assert_eq!(expected, "login_required", "{case}");
                assert!(has(&url, "error", "login_required"), "{case}: {url}");
                assert!(has(&url, "error_description", "The user must sign in again (max_age)"), "{case}: {url}");
                assert!(has(&url, "state", "client-state") && has(&url, "iss", ISSUER), "{case}: {url}");
            }
        }
    }
}

#[test]
fn prompt_none_without_a_session_goes_back_with_login_required() {
    let request = AuthorizationRequest { prompt: Some("none".into()), ..request() };
    let Ok(StartStep::ToClient(url)) = start(&request, None) else { panic!("back to the client") };
    assert!(url.as_str().starts_with(REDIRECT_URI), "{url}");
    assert!(has(&url, "error", "login_required") && has(&url, "error_description", "The user must sign in"), "{url}");
    assert!(has(&url, "state", "client-state") && has(&url, "iss", ISSUER), "{url}");
}

#[test]
fn a_link_runs_the_providers_sign_in_for_the_sessions_user() {
    let request = AuthorizationRequest { link_alias: Some(ALIAS.into()), ..request() };
    let Ok(StartStep::Store { pending, budgeted, .. }) = start(&request, Some(session(NOW - 10))) else {
        panic!("a pending link is stored")
    };
    assert_eq!(pending.link_user_id.as_deref(), Some("user-1"));
    assert!(!budgeted);

    let Ok(StartStep::Store { pending, budgeted, .. }) = start(&request, None) else {
        panic!("without a session, a plain sign-in")
    };
    assert_eq!(pending.link_user_id, None, "no session: nobody to link to");
    assert!(budgeted);
}

#[test]
fn a_link_to_an_unknown_provider_goes_back_with_invalid_request() {
    let request = AuthorizationRequest { link_alias: Some("github".into()), ..request() };
    let Ok(StartStep::ToClient(url)) = start(&request, Some(session(NOW - 10))) else { panic!("back to the client") };
    assert!(has(&url, "error", "invalid_request"), "{url}");
    assert!(has(&url, "error_description", "kc_action names an unknown identity provider"), "{url}");
}

#[test]
fn a_redirect_uri_that_is_not_a_url_is_refused_when_an_answer_must_carry_it() {
    let request = AuthorizationRequest { redirect_uri: "not a url".into(), prompt: Some("none".into()), ..request() };
    assert_eq!(kind(&start(&request, None).unwrap_err()), "InvalidRedirectUri");
}

#[test]
fn the_provider_is_asked_for_a_login_only_when_the_client_was() {
    let cases = [
        (Some("login"), Some("login"), "prompt=login"),
        (Some("consent login"), Some("login"), "login among other values"),
        (Some("consent"), None, "the client's other values stay with the broker"),
        (Some("none"), None, "prompt=none is answered by the broker"),
        (None, None, "no prompt"),
    ];
    for (prompt, expected, case) in cases {
        let pending = AuthRequestRow { prompt: prompt.map(Into::into), ..pending(None) };
        assert_eq!(flow::upstream_prompt(&pending), expected, "{case}");
    }
}

#[test]
fn a_code_is_bound_to_the_client_and_the_session_and_a_link_says_it_succeeded() {
    let session = session(NOW);
    let code = flow::authorization_code(&pending(None), &session, "the-code", NOW, 60);
    assert_eq!(code.code_hash, token_hash("the-code"), "only the code's hash is stored");
    assert_eq!((code.user_id.as_str(), code.session_id.as_str()), ("user-1", "session-1"));
    assert_eq!((code.client_id.as_str(), code.redirect_uri.as_str()), ("allhands", REDIRECT_URI));
    assert_eq!((code.created_at, code.expires_at, code.used_at), (NOW, NOW + 60, None));

    let url = flow::code_redirect(&pending(None), "session-1", "the-code", ISSUER).unwrap();
    assert_eq!(
        query(&url),
        [("state", "client-state"), ("session_state", "session-1"), ("iss", ISSUER), ("code", "the-code")]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );
    let linked = flow::code_redirect(&pending(Some("user-1")), "session-1", "the-code", ISSUER).unwrap();
    assert!(has(&linked, "kc_action_status", "success"), "{linked}");
}

// ---------------------------------------------------------------------------------------
// The provider's answer

/// A pending sign-in that left for provider `entra`, linking `link_user_id` if any.
fn pending(link_user_id: Option<&str>) -> AuthRequestRow {
    AuthRequestRow {
        id: "request-1".into(),
        browser_hash: token_hash(BROWSER),
        client_id: "allhands".into(),
        redirect_uri: REDIRECT_URI.into(),
        scope: "openid".into(),
        client_state: Some("client-state".into()),
        client_nonce: Some("client-nonce".into()),
        code_challenge: None,
        code_challenge_method: None,
        login_hint: None,
        alias: Some(ALIAS.into()),
        upstream_state_hash: Some(token_hash("upstream-state")),
        upstream_nonce: Some("upstream-nonce".into()),
        pkce_verifier: Some("pkce-verifier".into()),
        created_at: NOW - 60,
        expires_at: NOW + 600,
        link_user_id: link_user_id.map(Into::into),
        prompt: None,
    }
}

fn params(code: Option<&str>, error: Option<&str>) -> CallbackParams {
    CallbackParams {
        state: Some("upstream-state".into()),
        code: code.map(Into::into),
        error: error.map(Into::into),
        error_description: error.map(|_| "AADSTS50000: words\r\nTrace ID: 1".into()),
        suberror: None,
    }
}

/// A callback in this browser, checked against `pending`.
fn checked<'p>(
    upstream: &'p Upstream,
    params: CallbackParams,
    pending: Option<AuthRequestRow>,
) -> Result<Checked<'p>, SignInError> {
    Callback::new(ALIAS, params, Some(BROWSER)).on_pending(pending, upstream.provider(ALIAS), ISSUER, NOW)
}

fn exchange<'p>(upstream: &'p Upstream, link_user_id: Option<&str>) -> Exchange<'p> {
    match checked(upstream, params(Some("the-code"), None), Some(pending(link_user_id))) {
        Ok(Checked::Exchange(exchange)) => *exchange,
        other => panic!("a code to exchange, not {:?}", other.map(|_| ()).map_err(|err| kind(&err))),
    }
}

fn token_response(id_token: Option<&str>) -> TokenResponse {
    TokenResponse {
        access_token: SecretString::from("access".to_owned()),
        token_type: None,
        expires_in: Some(3599),
        refresh_token: Some(SecretString::from("refresh".to_owned())),
        refresh_token_expires_in: None,
        id_token: id_token.map(|t| SecretString::from(t.to_owned())),
        scope: Some("499b84ac-1321-427f-aa17-267ca6975798/.default".into()),
    }
}

fn verify<'p>(upstream: &'p Upstream, link_user_id: Option<&str>) -> Verify<'p> {
    exchange(upstream, link_user_id).on_tokens(token_response(Some("id-token")), NOW).unwrap()
}

fn identity() -> VerifiedIdentity {
    VerifiedIdentity {
        subject: "pairwise-sub".into(),
        object_id: Some("oid".into()),
        tenant_id: Some("tid".into()),
        preferred_username: Some("alice@contoso.com".into()),
        email: None,
        name: Some("Alice Example".into()),
        given_name: Some("Alice".into()),
        family_name: Some("Example".into()),
        email_domain_verified: None,
        verified_emails: Vec::new(),
        roles: Vec::new(),
    }
}

fn link(upstream: &Upstream) -> Link<'_> {
    match verify(upstream, Some("user-1")).on_identity(identity()) {
        Account::Link(link) => link,
        Account::SignIn(_) => panic!("a link"),
    }
}

fn sign_in(upstream: &Upstream) -> SignIn<'_> {
    match verify(upstream, None).on_identity(identity()) {
        Account::SignIn(sign_in) => sign_in,
        Account::Link(_) => panic!("a sign-in"),
    }
}

fn user(id: &str, enabled: bool) -> UserRow {
    UserRow {
        id: id.into(),
        username: "alice.own".into(),
        email: Some("alice.own@contoso.com".into()),
        email_verified: false,
        first_name: Some("Al".into()),
        last_name: Some("Own".into()),
        full_name: Some("Al Own".into()),
        enabled,
        created_at: NOW - 1000,
    }
}

fn identity_of(user_id: &str) -> IdentityRow {
    IdentityRow {
        user_id: user_id.into(),
        alias: ALIAS.into(),
        subject: "pairwise-sub".into(),
        username: None,
        needs_reauth: false,
        reauth_kind: None,
    }
}

fn conflict() -> StoreError {
    StoreError::Conflict("unique".into())
}

#[test]
fn the_state_names_the_pending_sign_in_by_its_hash_and_none_ends_it() {
    let callback = |state: Option<&str>| {
        let params = CallbackParams { state: state.map(Into::into), ..Default::default() };
        Callback::new(ALIAS, params, Some(BROWSER)).state_hash().map_err(|err| kind(&err))
    };
    assert_eq!(callback(Some("upstream-state")), Ok(token_hash("upstream-state")));
    assert_eq!(callback(None), Err("ExpiredOrUsed".to_owned()), "no state");
    assert_eq!(callback(Some("")), Err("ExpiredOrUsed".to_owned()), "an empty state");
}

#[test]
fn a_callback_that_does_not_match_its_pending_sign_in_is_refused() {
    let upstream = upstream(true);
    let answer = || params(Some("the-code"), None);
    let verdict = |params: CallbackParams, pending: Option<AuthRequestRow>, browser: Option<&str>, alias: &str| {
        let provider = upstream.provider(alias);
        match Callback::new(alias, params, browser).on_pending(pending, provider, ISSUER, NOW) {
            Ok(_) => "accepted".to_owned(),
            Err(err) => kind(&err),
        }
    };
    let cases = [
        (verdict(answer(), None, Some(BROWSER), ALIAS), "ExpiredOrUsed", "an unknown or already used state"),
        (verdict(answer(), Some(pending(None)), Some(BROWSER), "github"), "UnknownProvider", "no such provider"),
        (verdict(answer(), Some(pending(None)), None, ALIAS), "OtherBrowser", "no cookie"),
        (verdict(answer(), Some(pending(None)), Some(&BROWSER[1..]), ALIAS), "OtherBrowser", "another browser's"),
        (
            verdict(answer(), Some(AuthRequestRow { alias: None, ..pending(None) }), Some(BROWSER), ALIAS),
            "OtherProvider",
            "a sign-in that never left for a provider",
        ),
        (
            verdict(
                answer(),
                Some(AuthRequestRow { alias: Some("other".into()), ..pending(None) }),
                Some(BROWSER),
                ALIAS,
            ),
            "OtherProvider",
            "a sign-in that left for another provider",
        ),
        (
            verdict(answer(), Some(AuthRequestRow { expires_at: NOW - 1, ..pending(None) }), Some(BROWSER), ALIAS),
            "ExpiredOrUsed",
            "an expired pending sign-in",
        ),
        (
            verdict(answer(), Some(AuthRequestRow { expires_at: NOW, ..pending(None) }), Some(BROWSER), ALIAS),
            "accepted",
            "a pending sign-in in its last second",
        ),
        (verdict(params(None, None), Some(pending(None)), Some(BROWSER), ALIAS), "NoCode", "no code"),
        (verdict(params(Some(""), None), Some(pending(None)), Some(BROWSER), ALIAS), "NoCode", "an empty code"),
        (
            verdict(params(None, Some("temporarily_unavailable")), Some(pending(None)), Some(BROWSER), ALIAS),
            "UpstreamUnavailable",
            "the provider is down",
        ),
        (
            verdict(params(None, Some("server_error")), Some(pending(None)), Some(BROWSER), ALIAS),
            "UpstreamUnavailable",
            "the provider failed",
        ),
        (
            verdict(params(None, Some("invalid_request")), Some(pending(None)), Some(BROWSER), ALIAS),
            "RequestRefused",
            "the provider refused our request",
        ),
        (
            verdict(params(None, Some("unauthorized_client")), Some(pending(Some("user-1"))), Some(BROWSER), ALIAS),
            "RequestRefused",
            "a link's request refused",
        ),
    ];
    for (got, expected, case) in cases {
        assert_eq!(got, expected, "{case}");
    }
}

#[test]
fn a_user_who_declines_goes_back_to_the_client_and_one_who_cancels_a_link_says_so() {
    let upstream = upstream(true);
    let declined = checked(&upstream, params(None, Some("access_denied")), Some(pending(None)));
    let Ok(Checked::ToClient(url)) = declined else { panic!("back to the client") };
    assert!(url.as_str().starts_with(REDIRECT_URI), "{url}");
    assert!(has(&url, "error", "access_denied") && has(&url, "error_description", "The user declined the sign-in"));
    assert!(has(&url, "state", "client-state") && has(&url, "iss", ISSUER), "{url}");

    let cancelled = checked(&upstream, params(Some("ignored"), Some("access_denied")), Some(pending(Some("u"))));
    let Ok(Checked::ToClient(url)) = cancelled else { panic!("back to the client") };
    assert_eq!(
        query(&url),
        [("state", "client-state"), ("kc_action_status", "cancelled"), ("iss", ISSUER)]
            .map(|(n, v)| (n.to_owned(), v.to_owned())),
        "an error wins over a code; a cancelled link carries no error"
    );
}

#[test]
fn a_policy_that_blocks_the_sign_in_at_the_authorize_step_ends_on_its_own_page() {
    let upstream = upstream(true);
    let blocked = |description: &str, suberror: Option<&str>| CallbackParams {
        error_description: Some(description.to_owned()),
        suberror: suberror.map(Into::into),
        ..params(None, Some("access_denied"))
    };
    let cases = [
        (blocked("AADSTS53003: Access has been blocked by Conditional Access policies.", None), "by its code"),
        (blocked("AADSTS530003: Your device is required to be managed.", None), "a managed device"),
        (blocked("AADSTS50000: words", Some("message_only")), "by its suberror"),
    ];
    for (params, case) in cases {
        let err = checked(&upstream, params, Some(pending(None))).map(|_| ()).unwrap_err();
        assert_eq!(kind(&err), "BlockedByPolicy", "{case}");
        assert!(err.to_string().contains("will not help"), "{case}: {err}");
    }
}

#[test]
fn a_code_is_exchanged_with_the_verifier_and_the_tokens_kept_need_an_id_token() {
    let upstream = upstream(true);
    let exchange = exchange(&upstream, None);
    assert_eq!((exchange.code(), exchange.pkce_verifier()), ("the-code", "pkce-verifier"));
    assert_eq!(exchange.provider.settings.alias, ALIAS);

    let incomplete = exchange.on_tokens(token_response(None), NOW).unwrap_err();
    assert_eq!(kind(&incomplete), "IncompleteAnswer", "no id_token: who signed in is unknown");

    let verify = verify(&upstream, None);
    assert_eq!(verify.id_token().expose_secret(), "id-token");
    assert_eq!(verify.nonce(), "upstream-nonce", "the nonce sent with the sign-in");
}

#[test]
fn a_pending_link_links_and_anything_else_signs_in() {
    let upstream = upstream(true);
    assert!(matches!(verify(&upstream, Some("user-1")).on_identity(identity()), Account::Link(_)));
    assert!(matches!(verify(&upstream, None).on_identity(identity()), Account::SignIn(_)));
}

#[test]
fn a_link_is_refused_for_an_identity_of_another_user_and_for_a_user_gone_or_disabled() {
    let upstream = upstream(true);
    assert_eq!(link(&upstream).subject(), "pairwise-sub");
    let taken = link(&upstream).on_owner(Some(identity_of("user-2"))).unwrap_err();
    assert!(matches!(&taken, SignInError::AlreadyLinked { provider } if provider == "Contoso Entra"), "{taken:?}");

    let relinked = link(&upstream).on_owner(Some(identity_of("user-1"))).unwrap();
    assert_eq!(relinked.user_id(), "user-1", "the user's own identity may be linked again");
    let gone = relinked.on_user(None).unwrap_err();
    assert_eq!(kind(&gone), "LinkedUserGone");

    let disabled = link(&upstream).on_owner(None).unwrap().on_user(Some(user("user-1", false))).unwrap_err();
    assert_eq!(kind(&disabled), "UserDisabled");
}

#[test]
fn a_link_keeps_the_users_own_profile_and_records_the_identity() {
    let upstream = upstream(true);
    let save = link(&upstream).on_owner(None).unwrap().on_user(Some(user("user-1", true))).unwrap();
    let profile = save.save().profile();
    assert_eq!(profile.user_id, "user-1");
    assert_eq!(
        (profile.username.as_str(), profile.email.as_deref(), profile.email_verified),
        ("alice.own", Some("alice.own@contoso.com"), false),
        "the user's own name and e-mail, not the provider's"
    );
    assert_eq!(
        (profile.first_name.as_deref(), profile.last_name.as_deref(), profile.full_name.as_deref()),
        (Some("Al"), Some("Own"), Some("Al Own"))
    );
    assert_eq!((profile.alias.as_str(), profile.subject.as_str()), (ALIAS, "pairwise-sub"));
    assert!(profile.attributes.contains(&("entra_id".to_owned(), "pairwise-sub".to_owned())));
}

#[test]
fn a_sign_in_finds_the_identitys_user_or_makes_one_and_refuses_a_disabled_one() {
    let upstream = upstream(true);
    assert_eq!(sign_in(&upstream).subject(), "pairwise-sub");

    let first = sign_in(&upstream).on_found(None, None, "new-user".into()).unwrap();
    let profile = first.save().profile();
    assert_eq!(profile.user_id, "new-user", "a first sign-in makes a user");
    assert_eq!(
        (profile.username.as_str(), profile.email.as_deref(), profile.email_verified),
        ("alice@contoso.com", Some("alice@contoso.com"), true),
        "a new user's profile is the provider's (trust_email)"
    );

    let returning =
        sign_in(&upstream).on_found(Some(identity_of("user-1")), Some(user("user-1", true)), "unused".into()).unwrap();
    assert_eq!(returning.save().profile().user_id, "user-1", "the identity's user");
    assert_eq!(returning.save().profile().username, "alice@contoso.com", "the profile follows the provider");

    let orphan = sign_in(&upstream).on_found(Some(identity_of("user-1")), None, "unused".into()).unwrap();
    assert_eq!(orphan.save().profile().user_id, "user-1", "an identity whose user was not found keeps its user id");

    let disabled = sign_in(&upstream)
        .on_found(Some(identity_of("user-1")), Some(user("user-1", false)), "unused".into())
        .unwrap_err();
    assert_eq!(kind(&disabled), "UserDisabled");
}

#[test]
fn the_tokens_are_saved_only_where_the_provider_keeps_them() {
    let keeping = upstream(true);
    let save = sign_in(&keeping).on_found(None, None, "new-user".into()).unwrap();
    let tokens = save.save().tokens().expect("store_token = true keeps the tokens");
    assert_eq!(tokens.access_token.expose_secret(), "access");
    assert_eq!(tokens.id_token.as_ref().map(|t| t.expose_secret().to_owned()).as_deref(), Some("id-token"));
    assert_eq!(tokens.expires_at, NOW + 3599);

    let not_keeping = upstream(false);
    let save = sign_in(&not_keeping).on_found(None, None, "new-user".into()).unwrap();
    assert!(save.save().tokens().is_none(), "store_token = false keeps none");
}

fn finished(finish: &Finish<'_>) -> (String, String, String) {
    (finish.alias().to_owned(), finish.user_id().to_owned(), finish.pending().id.clone())
}

#[test]
fn a_saved_link_finishes_and_a_conflict_means_the_identity_was_taken() {
    let upstream = upstream(true);
    let save = || link(&upstream).on_owner(None).unwrap().on_user(Some(user("user-1", true))).unwrap();
    let finish = save().on_saved(Ok(())).unwrap();
    assert_eq!(finished(&finish), (ALIAS.into(), "user-1".into(), "request-1".into()));

    let taken = save().on_saved(Err(conflict())).unwrap_err();
    assert!(matches!(&taken, SignInError::AlreadyLinked { provider } if provider == "Contoso Entra"), "{taken:?}");
    let failed = save().on_saved(Err(StoreError::Io(std::io::Error::other("disk")))).unwrap_err();
    assert_eq!(kind(&failed), "Store");
}

#[test]
fn a_sign_in_that_loses_a_race_looks_again_once_then_gives_up() {
    let upstream = upstream(true);
    let save = sign_in(&upstream).on_found(None, None, "new-user".into()).unwrap();
    let Ok(flow::Saved::Again(again)) = save.on_saved(Err(conflict())) else {
        panic!("the first conflict looks again")
    };
    let save = (*again).on_found(Some(identity_of("winner")), Some(user("winner", true)), "unused".into()).unwrap();
    assert_eq!(save.save().profile().user_id, "winner", "the second look finds the winner's user");
    let contended = save.on_saved(Err(conflict())).unwrap_err();
    assert_eq!(kind(&contended), "Contended", "a second conflict gives up");

    let save = sign_in(&upstream).on_found(None, None, "new-user".into()).unwrap();
    let Ok(flow::Saved::Finish(finish)) = save.on_saved(Ok(())) else { panic!("saved") };
    assert_eq!(finished(&finish), (ALIAS.into(), "new-user".into(), "request-1".into()));
    let save = sign_in(&upstream).on_found(None, None, "new-user".into()).unwrap();
    let failed = save.on_saved(Err(StoreError::Io(std::io::Error::other("disk")))).unwrap_err();
    assert_eq!(kind(&failed), "Store", "only a conflict is tried again");
}

#[test]
fn the_audit_trail_tells_a_link_from_a_sign_in() {
    let upstream = upstream(true);
    let save = sign_in(&upstream).on_found(None, None, "new-user".into()).unwrap();
    let Ok(flow::Saved::Finish(finish)) = save.on_saved(Ok(())) else { panic!("saved") };
    let event = finish.audit_event("session-1").row(NOW);
    assert_eq!((event.kind.as_str(), event.outcome.as_str(), event.at), ("sign_in", "success", NOW));
    assert_eq!(
        (event.user_id.as_deref(), event.client_id.as_deref(), event.alias.as_deref()),
        (Some("new-user"), Some("allhands"), Some(ALIAS))
    );
    assert_eq!(event.detail, r#"{"session_id":"session-1"}"#);

    let save = link(&upstream).on_owner(None).unwrap().on_user(Some(user("user-1", true))).unwrap();
    let event = save.on_saved(Ok(())).unwrap().audit_event("session-1").row(NOW);
    assert_eq!(event.kind, "link");
}

// ---------------------------------------------------------------------------------------
// How it ends

#[test]
fn each_ending_has_its_metrics_outcome() {
    let url = Url::parse(REDIRECT_URI).unwrap();
    let cases = [
        (Ok(Completed::SignedIn { client_redirect: url.clone(), session_secret: "s".into() }), "success"),
        (Ok(Completed::ToClient(url)), "denied"),
        (Err(SignInError::Store(conflict())), "internal_error"),
        (Err(SignInError::UpstreamUnavailable), "upstream_error"),
        (Err(SignInError::Misconfigured), "upstream_error"),
        (Err(SignInError::IncompleteAnswer), "upstream_error"),
        (Err(SignInError::ExpiredOrUsed), "rejected"),
        (Err(SignInError::UserDisabled), "rejected"),
        (Err(SignInError::Unverifiable), "rejected"),
    ];
    for (result, expected) in cases {
        assert_eq!(flow::outcome(&result), expected, "{:?}", result.as_ref().map(|_| ()).map_err(kind));
    }
}

fn refused(status: u16, error: &str, code: u32) -> UpstreamError {
    let body = EntraErrorBody {
        error: error.into(),
        error_description: format!("AADSTS{code}: words"),
        error_codes: vec![code],
        correlation_id: Some("correlation".into()),
        ..EntraErrorBody::default()
    };
    let class = classify(status, &body);
    UpstreamError::Refused { status, body, class }
}

#[test]
fn each_upstream_refusal_shows_its_page() {
    let cases = [
        (refused(400, "invalid_request", 50011), "Misconfigured", "an unregistered redirect URI"),
        (refused(401, "invalid_client", 7000215), "Misconfigured", "a wrong client secret"),
        (refused(401, "invalid_client", 7000222), "Misconfigured", "an expired client secret"),
        (refused(400, "unauthorized_client", 700016), "Misconfigured", "an unknown application"),
        (refused(400, "invalid_grant", 65001), "ConsentRequired", "consent missing"),
        (refused(400, "interaction_required", 50076), "UpstreamReauthentication", "MFA required"),
        (refused(400, "invalid_grant", 70008), "UpstreamReauthentication", "an expired grant"),
        (refused(503, "temporarily_unavailable", 90033), "UpstreamUnavailable", "Entra is down"),
        (refused(429, "throttled", 50196), "UpstreamThrottled", "throttled"),
        (UpstreamError::Malformed { status: 502, body: String::new() }, "UpstreamUnavailable", "a bad gateway"),
        (UpstreamError::IdToken(IdTokenError::NonceMismatch), "Unverifiable", "an ID token that does not verify"),
        (refused(400, "invalid_grant", 50148), "UpstreamRefused", "a code refused"),
        (UpstreamError::Malformed { status: 400, body: String::new() }, "UpstreamRefused", "an answer out of shape"),
    ];
    for (err, expected, case) in cases {
        assert_eq!(kind(&flow::upstream_failure(ALIAS, &urls(), &err)), expected, "{case}");
    }
}
