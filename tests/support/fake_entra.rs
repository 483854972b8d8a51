//! A fake Microsoft Entra ID (v2.0 endpoints) served over real HTTP, for tests and benchmarks.
//!
//! It mimics what the broker sees from `login.microsoftonline.com`: the per-tenant
//! discovery document (with the literal `{tenantid}` issuer for `organizations` and
//! `common`), the JWKS, an authorize endpoint that auto-approves one configured user,
//! and a token endpoint (authorization code, refresh token and client credentials grants)
//! with Entra-shaped errors. Knobs on [`FakeEntra`] spoil the next
//! answer for negative tests; counters and the list of issued tokens let tests assert
//! what the broker did.
//!
//! Part of the support module that the benchmarks compile too; it uses nothing of its siblings.

// Knobs and counters a test binary or a benchmark does not touch.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use url::Url;

/// The tenant the default users live in (a real-looking GUID).
pub const HOME_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Some other tenant, for cross-tenant negative tests.
pub const OTHER_TENANT: &str = "0b5d4c10-6a2b-4e4e-9f0e-3c2b1a000001";

/// Scopes that shape the ID token rather than naming a resource; Entra drops them from
/// the `scope` it reports for the access token.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Azure DevOps as a resource: its app id and its URI (Entra reports scopes by URI).
const ADO_RESOURCE_ID: &str = "499b84ac-1321-427f-aa17-267ca6975798";
const ADO_RESOURCE_URI: &str = "https://app.vssps.visualstudio.com";

/// A user the authorize endpoint signs in without asking.
#[derive(Clone, Debug)]
pub struct FakeUser {
    /// Pairwise `sub` (per application), as Entra issues it.
    pub subject: String,
    /// `oid`: stable across applications within the tenant.
    pub object_id: String,
    pub tenant_id: String,
    pub preferred_username: String,
    pub name: String,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// Optional claims the app registration adds to the ID token (`xms_edov`,
    /// `verified_primary_email`, …), as they are written into it.
    pub optional_claims: Vec<(&'static str, Value)>,
}

impl FakeUser {
    /// The default user: no `email` claim (common in real tenants) and a mixed-case UPN,
    /// so the broker's case handling and its fallback to `preferred_username` get exercised.
    pub fn alice() -> FakeUser {
        FakeUser {
            subject: "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ".to_owned(),
            object_id: "00000000-0000-0000-66f3-3332eca7ea81".to_owned(),
            tenant_id: HOME_TENANT.to_owned(),
            preferred_username: "Alice@Contoso.onmicrosoft.com".to_owned(),
            name: "Alice Anderson".to_owned(),
            email: None,
            given_name: None,
            family_name: None,
            optional_claims: Vec::new(),
        }
    }

    /// A second user of the same tenant, with the optional claims present.
    pub fn bob() -> FakeUser {
        FakeUser {
            subject: "AAAAAAAAAAAAAAAAAAAAAGRFc0Bq1uz2ZUkMwXHiEVo".to_owned(),
            object_id: "9f3e8a1c-5b7d-4e2f-a6c0-2d4b8e1f7a93".to_owned(),
            tenant_id: HOME_TENANT.to_owned(),
            preferred_username: "bob@contoso.com".to_owned(),
            name: "Bob Jones".to_owned(),
            email: Some("bob@contoso.com".to_owned()),
            given_name: Some("Bob".to_owned()),
            family_name: Some("Jones".to_owned()),
            optional_claims: Vec::new(),
        }
    }
}

/// How to spoil the next ID token, for negative tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdTokenTweak {
    #[default]
    None,
    /// `aud` is some other application.
    WrongAudience,
    /// `nonce` differs from the one sent to authorize.
    WrongNonce,
    /// Issued two hours ago, expired one hour ago.
    Expired,
    /// One character of the signature is changed.
    BadSignature,
    /// Signed by a throw-away key whose `kid` the JWKS never publishes.
    UnknownKid,
    /// `iss` names [`OTHER_TENANT`] while `tid` stays the user's tenant.
    WrongIssuer,
    /// No `nonce` claim at all.
    MissingNonce,
}

/// An error the token endpoint answers once, in Entra's shape.
#[derive(Clone, Debug)]
pub struct UpstreamFailure {
    pub status: u16,
    /// The OAuth `error` code, e.g. `invalid_grant`.
    pub error: String,
    /// The AADSTS number; it prefixes the description and fills `error_codes`.
    pub aadsts: Option<u32>,
    /// Human text, without the `AADSTSnnnn: ` prefix.
    pub description: String,
    /// Entra's `suberror` (`message_only`, `consent_required`, …).
    pub suberror: Option<String>,
    /// A Conditional Access claims challenge, as Entra sends it (a JSON string).
    pub claims: Option<String>,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

impl UpstreamFailure {
    pub fn aadsts(status: u16, error: &str, code: u32, description: &str) -> Self {
        UpstreamFailure {
            status,
            error: error.to_owned(),
            aadsts: Some(code),
            description: description.to_owned(),
            suberror: None,
            claims: None,
            retry_after: None,
        }
    }

    /// With Entra's `suberror`.
    pub fn with_suberror(mut self, suberror: &str) -> Self {
        self.suberror = Some(suberror.to_owned());
        self
    }

    /// With a Conditional Access claims challenge.
    pub fn with_claims(mut self, claims: &str) -> Self {
        self.claims = Some(claims.to_owned());
        self
    }

    /// Throttling as Entra answers it: 429 and `Retry-After`.
    pub fn throttled(retry_after: u64) -> Self {
        UpstreamFailure {
            retry_after: Some(retry_after),
            ..Self::aadsts(429, "temporarily_unavailable", 50196, "The request was throttled. Retry later.")
        }
    }

    /// A transient outage, which a broker should report as retryable.
    pub fn server_error() -> Self {
        Self::aadsts(503, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again.")
    }

    /// The app registration's client secret has passed its expiry date.
    pub fn expired_secret(client_id: &str) -> Self {
        Self::aadsts(
            401,
            "invalid_client",
            7000222,
            &format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to \
                 create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate \
                 credentials for added security: https://aka.ms/certCreds."
            ),
        )
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakeEntra {
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl fmt::Debug for FakeEntra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeEntra").field("authority", &self.shared.authority).finish_non_exhaustive()
    }
}

impl Drop for FakeEntra {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeEntra {
    /// Starts the server on `127.0.0.1:0`, registered with exactly one confidential client.
    pub async fn start(client_id: &str, client_secret: &str) -> FakeEntra {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            authority,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            holding: tokio::sync::watch::channel(false).0,
            state: Mutex::new(MutableState {
                user: FakeUser::alice(),
                deny_next_authorization: false,
                tweak: IdTokenTweak::None,
                failure: None,
                failures_left: 0,
                throttle: None,
                refresh_times: Vec::new(),
                authorize_queries: Vec::new(),
                token_delay: Duration::ZERO,
                access_token_lifetime: 3599,
                signing_key: Arc::new(SigningKey::generate()),
                codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                unknown_tenants: HashSet::new(),
                token_requests: 0,
                client_credentials_requests: 0,
                refresh_requests: 0,
                jwks_requests: 0,
                last_token_form: None,
                issued_tokens: Vec::new(),
            }),
        });
        let app = Router::new()
            .route("/{tenant}/v2.0/.well-known/openid-configuration", get(discovery))
            .route("/{tenant}/discovery/v2.0/keys", get(jwks))
            .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/{tenant}/oauth2/v2.0/logout", get(logout))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeEntra { shared, server }
    }

    /// `http://127.0.0.1:PORT`, the stand-in for `https://login.microsoftonline.com`.
    pub fn authority(&self) -> String {
        self.shared.authority.clone()
    }

    /// Who the authorize endpoint signs in from now on (default: [`FakeUser::alice`]).
    pub fn set_user(&self, user: FakeUser) {
        self.shared.lock().user = user;
    }

    /// The next authorization answers `error=access_denied` (the user declined consent).
    pub fn deny_next_authorization(&self) {
        self.shared.lock().deny_next_authorization = true;
    }

    /// Spoils the next ID token the token endpoint issues.
    pub fn tweak_next_id_token(&self, tweak: IdTokenTweak) {
        self.shared.lock().tweak = tweak;
    }

    /// The next token request (any grant) gets this error instead of being processed.
    pub fn fail_next_token_request(&self, failure: UpstreamFailure) {
        self.fail_token_requests(failure, 1);
    }

    /// The next `times` token requests get this error.
    pub fn fail_token_requests(&self, failure: UpstreamFailure, times: usize) {
        let mut st = self.shared.lock();
        st.failure = Some(failure);
        st.failures_left = times;
    }

    /// From now on Entra knows no tenant `tenant`: its discovery document, keys, authorize and
    /// token endpoints answer AADSTS90002 (`organizations` and `common` cannot be forgotten).
    pub fn forget_tenant(&self, tenant: &str) {
        self.shared.lock().unknown_tenants.insert(tenant.to_owned());
    }

    /// From now on the token endpoint takes requests in and answers none of them, as a hanging
    /// Entra does, until [`FakeEntra::release_token_requests`]; each is counted on arrival.
    pub fn hold_token_requests(&self) {
        self.shared.holding.send_replace(true);
    }

    /// Answers every held token request as usual (a late answer), and holds no more.
    pub fn release_token_requests(&self) {
        self.shared.holding.send_replace(false);
    }

    /// Every refresh request for `window` from now is answered `failure` (e.g.
    /// [`UpstreamFailure::throttled`]); other grants are answered as usual.
    pub fn fail_refreshes_for(&self, window: Duration, failure: UpstreamFailure) -> Instant {
        let until = Instant::now() + window;
        self.shared.lock().throttle = Some((until, failure));
        until
    }

    /// When each refresh request arrived, oldest first.
    pub fn refresh_times(&self) -> Vec<Instant> {
        self.shared.lock().refresh_times.clone()
    }

    /// The query of every authorize request, oldest first.
    pub fn authorize_queries(&self) -> Vec<HashMap<String, String>> {
        self.shared.lock().authorize_queries.clone()
    }

    /// Every token response waits this long first, to test timeouts and concurrency.
    pub fn set_token_delay(&self, delay: Duration) {
        self.shared.lock().token_delay = delay;
    }

    /// `expires_in` of the access tokens issued from now on (default 3599, as Entra).
    pub fn set_access_token_lifetime(&self, seconds: i64) {
        self.shared.lock().access_token_lifetime = seconds;
    }

    /// Replaces the signing key with a new one under a new `kid`; the JWKS then publishes
    /// only the new key, so a broker holding a cached JWKS must refetch it.
    pub fn rotate_signing_key(&self) {
        // Generated outside the lock: RSA key generation takes a noticeable moment.
        let key = Arc::new(SigningKey::generate());
        self.shared.lock().signing_key = key;
    }

    /// A refresh token for `user` as the token endpoint would issue it after a sign-in with the
    /// broker's default scopes, without a sign-in: for seeding many identities directly.
    pub fn issue_refresh_token(&self, user: &FakeUser) -> String {
        let mut scopes: Vec<String> = OIDC_SCOPES.iter().map(|s| (*s).to_owned()).collect();
        scopes.push(format!("{ADO_RESOURCE_URI}/.default"));
        self.shared.lock().issue_refresh_token(&RefreshGrant { scopes, user: user.clone() })
    }

    /// POSTs to the token endpoint, whatever the grant and outcome.
    pub fn token_requests(&self) -> usize {
        self.shared.lock().token_requests
    }

    /// Token requests with `grant_type=refresh_token`, whatever the outcome.
    pub fn refresh_requests(&self) -> usize {
        self.shared.lock().refresh_requests
    }

    /// Token requests with `grant_type=client_credentials`, whatever the outcome.
    pub fn client_credentials_requests(&self) -> usize {
        self.shared.lock().client_credentials_requests
    }

    pub fn jwks_requests(&self) -> usize {
        self.shared.lock().jwks_requests
    }

    /// The form of the last token request, without `client_secret`.
    pub fn last_token_form(&self) -> Option<HashMap<String, String>> {
        self.shared.lock().last_token_form.clone()
    }

    /// Every access, refresh and ID token issued so far, so tests can check that none of
    /// them is stored in the clear.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued_tokens.clone()
    }
}

// ---------------------------------------------------------------------------------------
// State

/// What the handlers share with the [`FakeEntra`] handle.
struct Shared {
    authority: String,
    client_id: String,
    client_secret: String,
    /// True while token requests are held unanswered.
    holding: tokio::sync::watch::Sender<bool>,
    state: Mutex<MutableState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, MutableState> {
        // A test that panicked while holding the lock must not cascade into others.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct MutableState {
    user: FakeUser,
    deny_next_authorization: bool,
    tweak: IdTokenTweak,
    failure: Option<UpstreamFailure>,
    failures_left: usize,
    /// Every refresh request before this instant is answered with this failure (throttling).
    throttle: Option<(Instant, UpstreamFailure)>,
    /// When each refresh request arrived, whatever its answer.
    refresh_times: Vec<Instant>,
    /// The query of each authorize request, in order.
    authorize_queries: Vec<HashMap<String, String>>,
    token_delay: Duration,
    access_token_lifetime: i64,
    signing_key: Arc<SigningKey>,
    /// Authorization codes not yet redeemed.
    codes: HashMap<String, PendingCode>,
    /// Every refresh token ever issued: Entra keeps old ones valid after rotation.
    refresh_tokens: HashMap<String, RefreshGrant>,
    /// Tenants that answer AADSTS90002.
    unknown_tenants: HashSet<String>,
    token_requests: usize,
    client_credentials_requests: usize,
    refresh_requests: usize,
    jwks_requests: usize,
    last_token_form: Option<HashMap<String, String>>,
    issued_tokens: Vec<String>,
}

impl MutableState {
    /// A new refresh token for `grant`, valid from now on like every one issued before it.
    fn issue_refresh_token(&mut self, grant: &RefreshGrant) -> String {
        let token = format!("1.A{}", random_b64(200));
        self.issued_tokens.push(token.clone());
        self.refresh_tokens.insert(token.clone(), grant.clone());
        token
    }
}

/// What an authorization code stands for until it is redeemed.
struct PendingCode {
    redirect_uri: String,
    nonce: Option<String>,
    /// `(code_challenge, code_challenge_method)`.
    pkce: Option<(String, String)>,
    scopes: Vec<String>,
    user: FakeUser,
}

/// What a refresh token stands for.
#[derive(Clone)]
struct RefreshGrant {
    scopes: Vec<String>,
    user: FakeUser,
}

/// An RSA signing key and its public JWK parts.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    n: String,
    e: String,
}

impl SigningKey {
    fn generate() -> SigningKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der: Pkcs8V1Der<'static> = pair.as_der().unwrap();
        // jsonwebtoken's aws-lc backend signs with a PKCS#1 key; `from_rsa_pem` accepts a
        // PKCS#8 PEM and extracts the PKCS#1 part, `from_rsa_der` would not.
        let body = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|chunk| std::str::from_utf8(chunk).unwrap()).collect();
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
        let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            unreachable!("an RSA encoding key yields an RSA JWK");
        };
        SigningKey {
            // Entra's kids are base64url certificate thumbprints (and equal `x5t`).
            kid: random_b64(20),
            encoding,
            n: rsa.n,
            e: rsa.e,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.kid.clone());
        header.x5t = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Discovery and keys

async fn discovery(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if let Some(response) = reject_unknown_tenant(&shared, &tenant, "invalid_tenant") {
        return response;
    }
    let authority = &shared.authority;
    // The multi-tenant documents cannot name a tenant, so Entra publishes a template
    // that the relying party fills in with the token's `tid`.
    let issuer = if tenant == "organizations" || tenant == "common" {
        format!("{authority}/{{tenantid}}/v2.0")
    } else {
        format!("{authority}/{tenant}/v2.0")
    };
    // No `userinfo_endpoint`: Entra's points at Microsoft Graph and needs a Graph token;
    // the broker must take the identity from the ID token instead.
    Json(json!({
        "token_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported":
            ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{authority}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": issuer,
        "request_uri_parameter_supported": false,
        "authorization_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/authorize"),
        "end_session_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/logout"),
        "frontchannel_logout_supported": true,
        "http_logout_supported": true,
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce",
            "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"
        ],
        "cloud_instance_name": "microsoftonline.com",
        "msgraph_host": "graph.microsoft.com",
    }))
    .into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if let Some(response) = reject_unknown_tenant(&shared, &tenant, "invalid_tenant") {
        return response;
    }
    let key = {
        let mut state = shared.lock();
        state.jwks_requests += 1;
        Arc::clone(&state.signing_key)
    };
    Json(json!({
        "keys": [{
            "kty": "RSA",
            "use": "sig",
            "kid": key.kid,
            "x5t": key.kid,
            "n": key.n,
            "e": key.e,
        }]
    }))
    .into_response()
}

/// AADSTS90002 in Entra's shape when `tenant` is one the test made Entra forget.
fn reject_unknown_tenant(shared: &Shared, tenant: &str, error: &str) -> Option<Response> {
    if !shared.lock().unknown_tenants.contains(tenant) {
        return None;
    }
    Some(entra_error(
        StatusCode::BAD_REQUEST,
        error,
        Some(90002),
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing \
             into the correct cloud. Check with your subscription administrator, this may happen if there \
             are no active subscriptions for the tenant."
        ),
    ))
}

/// A logout endpoint so `end_session_endpoint` leads somewhere.
async fn logout(Query(query): Query<HashMap<String, String>>) -> Response {
    match query.get("post_logout_redirect_uri") {
        Some(uri) => Redirect::to(uri).into_response(),
        None => Html("<html><body>You signed out of your account.</body></html>").into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// Authorize

async fn authorize(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| query.get(name).map(String::as_str);
    shared.lock().authorize_queries.push(query.clone());

    // Before the client and redirect URI are trusted, Entra shows an error page rather
    // than redirecting anywhere.
    if shared.lock().unknown_tenants.contains(&tenant) {
        return error_page(&format!("AADSTS90002: Tenant '{tenant}' not found."));
    }
    let client_id = param("client_id").unwrap_or_default();
    if client_id != shared.client_id {
        return error_page(&format!(
            "AADSTS700016: Application with identifier '{client_id}' was not found in the \
             directory '{tenant}'. This can happen if the application has not been installed \
             by the administrator of the tenant or consented to by any user in the tenant."
        ));
    }
    let Some(redirect_uri) = param("redirect_uri") else {
        return error_page("AADSTS900144: The request body must contain the following parameter: 'redirect_uri'.");
    };
    let Ok(redirect) = Url::parse(redirect_uri) else {
        return error_page("AADSTS90102: 'redirect_uri' value must be a valid absolute URI.");
    };
    let mode = param("response_mode").unwrap_or("query");
    let state = param("state");

    // From here on errors travel back to the client, like the code does.
    let fail = |error: &str, description: &str| {
        let mut fields = vec![("error", error), ("error_description", description)];
        fields.extend(state.map(|s| ("state", s)));
        respond_to_client(&redirect, mode, &fields)
    };
    if param("response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "AADSTS700054: response_type 'code' is the only one this application may use.",
        );
    }
    let Some(scope) = param("scope") else {
        return fail(
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'scope'.",
        );
    };

    let code = format!("1.A{}", random_b64(96));
    let session_state = uuid::Uuid::new_v4().to_string();
    {
        let mut st = shared.lock();
        if std::mem::take(&mut st.deny_next_authorization) {
            drop(st);
            return fail("access_denied", "AADSTS65004: User declined to consent to access the app.");
        }
        let pkce = param("code_challenge").map(|challenge| {
            // RFC 7636: an absent method means `plain`, which Entra honours too.
            let method = param("code_challenge_method").unwrap_or("plain");
            (challenge.to_owned(), method.to_owned())
        });
        let pending = PendingCode {
            redirect_uri: redirect_uri.to_owned(),
            nonce: param("nonce").map(str::to_owned),
            pkce,
            scopes: scope.split_whitespace().map(str::to_owned).collect(),
            user: st.user.clone(),
        };
        st.codes.insert(code.clone(), pending);
    }

    let mut fields = vec![("code", code.as_str())];
    fields.extend(state.map(|s| ("state", s)));
    fields.push(("session_state", session_state.as_str()));
    respond_to_client(&redirect, mode, &fields)
}

/// Hands authorize results to the client in the requested response mode.
fn respond_to_client(redirect: &Url, mode: &str, fields: &[(&str, &str)]) -> Response {
    match mode {
        "form_post" => {
            let inputs: String = fields
                .iter()
                .map(|(name, value)| {
                    format!("<input type=\"hidden\" name=\"{}\" value=\"{}\"/>", html_escape(name), html_escape(value))
                })
                .collect();
            Html(format!(
                "<html><head><title>Working...</title></head><body>\
                 <form method=\"post\" name=\"hiddenform\" action=\"{}\">{inputs}\
                 <noscript><p>Script is disabled. Click Submit to continue.</p>\
                 <input type=\"submit\" value=\"Submit\"/></noscript></form>\
                 <script>document.forms[0].submit();</script></body></html>",
                html_escape(redirect.as_str())
            ))
            .into_response()
        }
        "fragment" => {
            let mut target = redirect.clone();
            let fragment = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
            target.set_fragment(Some(&fragment));
            found(&target)
        }
        _ => {
            // `query_pairs_mut` appends with `&` when the redirect URI already has a query.
            let mut target = redirect.clone();
            target.query_pairs_mut().extend_pairs(fields);
            found(&target)
        }
    }
}

/// 302, as Entra answers (axum's `Redirect::to` would say 303).
fn found(target: &Url) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, target.as_str().to_owned())]).into_response()
}

fn error_page(message: &str) -> Response {
    let body = format!(
        "<html><head><title>Sign in to your account</title></head><body>\
         <h1>Sorry, but we're having trouble signing you in.</h1><p>{}</p></body></html>",
        html_escape(message)
    );
    (StatusCode::BAD_REQUEST, Html(body)).into_response()
}

// ---------------------------------------------------------------------------------------
// Token

async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let grant_type = form.get("grant_type").cloned().unwrap_or_default();

    let (delay, failure) = {
        let mut st = shared.lock();
        st.token_requests += 1;
        let now = Instant::now();
        if grant_type == "refresh_token" {
            st.refresh_requests += 1;
            st.refresh_times.push(now);
        }
        if grant_type == "client_credentials" {
            st.client_credentials_requests += 1;
        }
        let mut recorded = form.clone();
        recorded.remove("client_secret");
        st.last_token_form = Some(recorded);
        let throttled = match &st.throttle {
            Some((until, failure)) if grant_type == "refresh_token" && now < *until => Some(failure.clone()),
            _ => None,
        };
        let failure = match st.failures_left {
            _ if throttled.is_some() => throttled,
            0 => None,
            1 => {
                st.failures_left = 0;
                st.failure.take()
            }
            _ => {
                st.failures_left -= 1;
                st.failure.clone()
            }
        };
        (st.token_delay, failure)
    };
    let _ = shared.holding.subscribe().wait_for(|holding| !*holding).await;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(failure) = failure {
        return failure_response(&failure);
    }

    if let Some(response) = reject_unknown_tenant(&shared, &tenant, "invalid_request") {
        return response;
    }
    if let Some(response) = reject_client(&shared, &headers, &form) {
        return response;
    }
    match grant_type.as_str() {
        "authorization_code" => redeem_code(&shared, &form),
        "refresh_token" => redeem_refresh_token(&shared, &form),
        "client_credentials" => issue_app_token(&shared, &tenant, &form),
        other => entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            Some(70003),
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
    }
}

/// Checks `client_secret_basic` (preferred when present) or `client_secret_post`;
/// returns the error response when the client fails to authenticate.
fn reject_client(shared: &Shared, headers: &HeaderMap, form: &HashMap<String, String>) -> Option<Response> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            // RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
            Some((form_decode(id), Some(form_decode(secret))))
        });
    let (client_id, secret) = match basic {
        Some(credentials) => credentials,
        None => match form.get("client_id") {
            Some(id) => (id.clone(), form.get("client_secret").cloned()),
            None => {
                return Some(entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    Some(900144),
                    "The request body must contain the following parameter: 'client_id'.",
                ));
            }
        },
    };
    if client_id != shared.client_id {
        return Some(entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            Some(700016),
            &format!(
                "Application with identifier '{client_id}' was not found in the directory. \
                 This can happen if the application has not been installed by the administrator \
                 of the tenant or consented to by any user in the tenant."
            ),
        ));
    }
    if secret.as_deref() != Some(shared.client_secret.as_str()) {
        return Some(entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            Some(7000215),
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        ));
    }
    None
}

fn redeem_code(shared: &Shared, form: &HashMap<String, String>) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str);
    // Removing the code on the first attempt makes it single-use even when that attempt
    // fails, so a retry after a PKCE or redirect error gets 54005 like at Entra.
    let pending = field("code").and_then(|code| shared.lock().codes.remove(code));
    let Some(pending) = pending else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some(54005),
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code \
             or use an existing refresh token.",
        );
    };
    let redirect_uri = field("redirect_uri").unwrap_or_default();
    if redirect_uri != pending.redirect_uri {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some(50011),
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URI '{}' used in the authorization request for application '{}'.",
                pending.redirect_uri, shared.client_id
            ),
        );
    }
    if let Some((challenge, method)) = &pending.pkce {
        let verifier = field("code_verifier").unwrap_or_default();
        let derived = match method.as_str() {
            "S256" => URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes())),
            _ => verifier.to_owned(),
        };
        if verifier.is_empty() || derived != *challenge {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                Some(50148),
                "The code_verifier provided does not match the code_challenge supplied in the \
                 authorization request for PKCE.",
            );
        }
    }

    let wants_id_token = pending.scopes.iter().any(|s| s == "openid");
    let id_token = wants_id_token.then(|| issue_id_token(shared, &pending));
    let grant = RefreshGrant { scopes: pending.scopes, user: pending.user };
    token_response(shared, &grant, id_token)
}

fn redeem_refresh_token(shared: &Shared, form: &HashMap<String, String>) -> Response {
    let grant = form.get("refresh_token").and_then(|token| shared.lock().refresh_tokens.get(token).cloned());
    let Some(mut grant) = grant else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some(70008),
            "The provided authorization code or refresh token has expired due to inactivity.",
        );
    };
    if let Some(scope) = form.get("scope") {
        grant.scopes = scope.split_whitespace().map(str::to_owned).collect();
        // The new refresh token is as good as the one it replaces, whatever was asked.
        if !grant.scopes.iter().any(|s| s == "offline_access") {
            grant.scopes.push("offline_access".to_owned());
        }
    }
    // Entra may put an (unsigned) ID token here; the broker must not rely on it, so none.
    token_response(shared, &grant, None)
}

/// The client credentials grant: an app-only access token for one resource, from a tenant's own
/// endpoint; `organizations` and `common` name no tenant to issue it from.
fn issue_app_token(shared: &Shared, tenant: &str, form: &HashMap<String, String>) -> Response {
    if tenant == "organizations" || tenant == "common" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(50059),
            "No tenant-identifying information found in either the request or implied by any provided credentials.",
        );
    }
    let scope = form.get("scope").map(String::as_str).unwrap_or_default();
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.len() != 1 || !scopes[0].ends_with("/.default") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            Some(1002012),
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope \
                 value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    let access_token = opaque_access_token();
    let lifetime = {
        let mut st = shared.lock();
        st.issued_tokens.push(access_token.clone());
        st.access_token_lifetime
    };
    let body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    });
    ([(header::CACHE_CONTROL, "no-store, no-cache"), (header::PRAGMA, "no-cache")], Json(body)).into_response()
}

/// A successful token response: access token, a refresh token when `offline_access` was
/// granted, and the ID token if one was minted.
fn token_response(shared: &Shared, grant: &RefreshGrant, id_token: Option<String>) -> Response {
    let access_token = opaque_access_token();
    let offline = grant.scopes.iter().any(|s| s == "offline_access");

    let (refresh_token, lifetime) = {
        let mut st = shared.lock();
        st.issued_tokens.push(access_token.clone());
        let refresh_token = offline.then(|| st.issue_refresh_token(grant));
        if let Some(id_token) = &id_token {
            st.issued_tokens.push(id_token.clone());
        }
        (refresh_token, st.access_token_lifetime)
    };

    let mut body = Map::new();
    body.insert("token_type".into(), json!("Bearer"));
    body.insert("scope".into(), json!(resource_scope(&grant.scopes)));
    body.insert("expires_in".into(), json!(lifetime));
    body.insert("ext_expires_in".into(), json!(lifetime));
    body.insert("access_token".into(), json!(access_token));
    if let Some(refresh_token) = refresh_token {
        body.insert("refresh_token".into(), json!(refresh_token));
    }
    if let Some(id_token) = id_token {
        body.insert("id_token".into(), json!(id_token));
    }
    ([(header::CACHE_CONTROL, "no-store, no-cache"), (header::PRAGMA, "no-cache")], Json(Value::Object(body)))
        .into_response()
}

/// The `scope` Entra reports: the resource scopes, by resource URI, `.default` resolved to
/// what the app was granted.
fn resource_scope(requested: &[String]) -> String {
    let scopes: Vec<String> = requested
        .iter()
        .filter(|s| !OIDC_SCOPES.contains(&s.as_str()))
        .map(|s| {
            let permission = s
                .strip_prefix(&format!("{ADO_RESOURCE_ID}/"))
                .or_else(|| s.strip_prefix(&format!("{ADO_RESOURCE_URI}/")));
            match permission {
                Some(".default") => format!("{ADO_RESOURCE_URI}/user_impersonation"),
                Some(permission) => format!("{ADO_RESOURCE_URI}/{permission}"),
                None => s.clone(),
            }
        })
        .collect();
    if scopes.is_empty() {
        // Only OIDC scopes: Entra issues a Microsoft Graph token.
        "https://graph.microsoft.com/User.Read".to_owned()
    } else {
        scopes.join(" ")
    }
}

/// Mints the ID token for a redeemed code, consuming any pending tweak.
fn issue_id_token(shared: &Shared, pending: &PendingCode) -> String {
    let (tweak, key) = {
        let mut st = shared.lock();
        (std::mem::take(&mut st.tweak), Arc::clone(&st.signing_key))
    };
    let user = &pending.user;
    let now = unix_now();
    let (iat, exp) = match tweak {
        IdTokenTweak::Expired => (now - 7200, now - 3600),
        _ => (now, now + 3600),
    };
    let audience = match tweak {
        IdTokenTweak::WrongAudience => uuid::Uuid::new_v4().to_string(),
        _ => shared.client_id.clone(),
    };
    let issuer_tenant = match tweak {
        IdTokenTweak::WrongIssuer => OTHER_TENANT,
        _ => user.tenant_id.as_str(),
    };

    let mut claims = Map::new();
    claims.insert("aud".into(), json!(audience));
    claims.insert("iss".into(), json!(format!("{}/{issuer_tenant}/v2.0", shared.authority)));
    claims.insert("iat".into(), json!(iat));
    claims.insert("nbf".into(), json!(iat));
    claims.insert("exp".into(), json!(exp));
    claims.insert("aio".into(), json!(random_b64(96)));
    if let Some(email) = &user.email {
        claims.insert("email".into(), json!(email));
    }
    if let Some(family_name) = &user.family_name {
        claims.insert("family_name".into(), json!(family_name));
    }
    if let Some(given_name) = &user.given_name {
        claims.insert("given_name".into(), json!(given_name));
    }
    claims.insert("name".into(), json!(user.name));
    match (tweak, &pending.nonce) {
        (IdTokenTweak::MissingNonce, _) | (_, None) => {}
        (IdTokenTweak::WrongNonce, Some(_)) => {
            claims.insert("nonce".into(), json!(random_b64(16)));
        }
        (_, Some(nonce)) => {
            claims.insert("nonce".into(), json!(nonce));
        }
    }
    claims.insert("oid".into(), json!(user.object_id));
    claims.insert("preferred_username".into(), json!(user.preferred_username));
    claims.insert("rh".into(), json!(format!("1.A{}.", random_b64(48))));
    claims.insert("sub".into(), json!(user.subject));
    claims.insert("tid".into(), json!(user.tenant_id));
    claims.insert("uti".into(), json!(random_b64(16)));
    claims.insert("ver".into(), json!("2.0"));
    for (name, value) in &user.optional_claims {
        claims.insert((*name).into(), value.clone());
    }
    let claims = Value::Object(claims);

    match tweak {
        IdTokenTweak::UnknownKid => SigningKey::generate().sign(&claims),
        IdTokenTweak::BadSignature => {
            let token = key.sign(&claims);
            let (signed, signature) = token.rsplit_once('.').unwrap();
            // Change the FIRST signature character: the last one partly encodes padding
            // bits, and changing only those could leave the signature bytes intact.
            let mut signature = signature.to_owned();
            let replacement = if signature.starts_with('A') { "B" } else { "A" };
            signature.replace_range(0..1, replacement);
            format!("{signed}.{signature}")
        }
        _ => key.sign(&claims),
    }
}

/// Azure DevOps access tokens are JWTs the client must not parse; this one only looks
/// like one (three base64url parts), so a broker that tries to read it fails loudly.
fn opaque_access_token() -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256"}"#);
    format!("{header}.{}.{}", random_b64(600), random_b64(256))
}

/// A configured failure in Entra's shape, with its `suberror`, `claims` and `Retry-After`.
fn failure_response(failure: &UpstreamFailure) -> Response {
    let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut body = entra_error_body(&failure.error, failure.aadsts, &failure.description);
    if let Some(suberror) = &failure.suberror {
        body.insert("suberror".into(), json!(suberror));
    }
    if let Some(claims) = &failure.claims {
        body.insert("claims".into(), json!(claims));
    }
    let mut response = (status, Json(Value::Object(body))).into_response();
    if let Some(seconds) = failure.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    }
    response
}

/// An error answer the way Entra writes it.
fn entra_error(status: StatusCode, error: &str, aadsts: Option<u32>, text: &str) -> Response {
    (status, Json(Value::Object(entra_error_body(error, aadsts, text)))).into_response()
}

/// An error body the way Entra writes it.
fn entra_error_body(error: &str, aadsts: Option<u32>, text: &str) -> Map<String, Value> {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let timestamp = entra_timestamp(unix_now());
    let text = match aadsts {
        Some(code) if !text.starts_with("AADSTS") => format!("AADSTS{code}: {text}"),
        _ => text.to_owned(),
    };
    let mut body = Map::new();
    body.insert("error".into(), json!(error));
    body.insert(
        "error_description".into(),
        json!(format!("{text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}")),
    );
    if let Some(code) = aadsts {
        body.insert("error_codes".into(), json!([code]));
    }
    body.insert("timestamp".into(), json!(timestamp));
    body.insert("trace_id".into(), json!(trace_id));
    body.insert("correlation_id".into(), json!(correlation_id));
    if let Some(code) = aadsts {
        body.insert("error_uri".into(), json!(format!("https://login.microsoftonline.com/error?code={code}")));
    }
    body
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn unix_now() -> i64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(elapsed.as_secs()).unwrap()
}

/// `YYYY-MM-DD hh:mm:ssZ` in UTC, Entra's format for error timestamps.
fn entra_timestamp(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `len` random bytes, base64url without padding.
fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes one `application/x-www-form-urlencoded` component.
fn form_decode(value: &str) -> String {
    // Escape raw `=` so the parser sees a single key and decodes all of it.
    let escaped = value.replace('=', "%3D");
    url::form_urlencoded::parse(escaped.as_bytes()).next().map(|(key, _)| key.into_owned()).unwrap_or_default()
}

fn html_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod self_test {
    // A `harness = false` bench that includes this file still compiles `cfg(test)` under
    // `clippy --all-targets` but drops the `#[test]` functions, leaving the glob unused.
    #[allow(unused_imports)]
    use super::*;

    const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
    const CLIENT_SECRET: &str = "s3cr~et.value_1";

    fn client() -> reqwest::Client {
        // reqwest is built without a bundled rustls provider; plain HTTP still needs one
        // installed to build a client.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
    }

    #[tokio::test]
    async fn multi_tenant_discovery_has_the_literal_tenantid_issuer() {
        let entra = FakeEntra::start(CLIENT_ID, CLIENT_SECRET).await;
        let authority = entra.authority();
        let http = client();

        let url = format!("{authority}/organizations/v2.0/.well-known/openid-configuration");
        let doc: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["issuer"], format!("{authority}/{{tenantid}}/v2.0"));
        assert_eq!(doc["token_endpoint"], format!("{authority}/organizations/oauth2/v2.0/token"));

        let url = format!("{authority}/{HOME_TENANT}/v2.0/.well-known/openid-configuration");
        let doc: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["issuer"], format!("{authority}/{HOME_TENANT}/v2.0"));
    }

    /// Walks the whole code flow and verifies the ID token against the published JWKS,
    /// which proves the key plumbing (PKCS#8 → PEM → jsonwebtoken) end to end.
    #[tokio::test]
    async fn jwks_verifies_the_id_token_of_a_pkce_code_flow() {
        let entra = FakeEntra::start(CLIENT_ID, CLIENT_SECRET).await;
        let authority = entra.authority();
        let http = client();

        let jwks: Value = http
            .get(format!("{authority}/organizations/discovery/v2.0/keys"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = jwks["keys"][0]["kid"].as_str().unwrap();
        assert!(!kid.is_empty());
        assert_eq!(entra.jwks_requests(), 1);

        let verifier = "a-code-verifier-that-is-long-enough-for-rfc-7636-rules";
        let challenge = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
        let redirect_uri = "http://localhost/callback?realm=x";
        let mut authorize = Url::parse(&format!("{authority}/organizations/oauth2/v2.0/authorize")).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("client_id", CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &format!("openid profile offline_access {ADO_RESOURCE_ID}/.default"))
            .append_pair("state", "st4te")
            .append_pair("nonce", "n0nce")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let response = http.get(authorize.as_str()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = Url::parse(response.headers()[header::LOCATION].to_str().unwrap()).unwrap();
        let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(query["realm"], "x");
        assert_eq!(query["state"], "st4te");

        let response = http
            .post(format!("{authority}/organizations/oauth2/v2.0/token"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &query["code"]),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let tokens: Value = response.json().await.unwrap();
        assert_eq!(tokens["scope"], "https://app.vssps.visualstudio.com/user_impersonation");
        assert!(tokens["refresh_token"].is_string());

        let key = &jwks["keys"][0];
        let decoding =
            jsonwebtoken::DecodingKey::from_rsa_components(key["n"].as_str().unwrap(), key["e"].as_str().unwrap())
                .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&[CLIENT_ID]);
        let id_token = tokens["id_token"].as_str().unwrap();
        let claims = jsonwebtoken::decode::<Value>(id_token, &decoding, &validation).unwrap().claims;
        assert_eq!(claims["nonce"], "n0nce");
        assert_eq!(claims["iss"], format!("{authority}/{HOME_TENANT}/v2.0"));
        assert_eq!(jsonwebtoken::decode_header(id_token).unwrap().kid.as_deref(), Some(kid));
        assert_eq!(entra.issued_tokens().len(), 3);
    }

    #[tokio::test]
    async fn client_credentials_are_granted_from_a_tenant_only() {
        let entra = FakeEntra::start(CLIENT_ID, CLIENT_SECRET).await;
        let grant = |tenant: &str| {
            client()
                .post(format!("{}/{tenant}/oauth2/v2.0/token", entra.authority()))
                .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                .form(&[("grant_type", "client_credentials"), ("scope", "https://app.vssps.visualstudio.com/.default")])
                .send()
        };
        let response = grant(HOME_TENANT).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let tokens: Value = response.json().await.unwrap();
        assert!(tokens["access_token"].is_string() && tokens.get("refresh_token").is_none(), "{tokens}");

        let response = grant("organizations").await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_codes"], json!([50059]), "{body}");

        entra.forget_tenant(OTHER_TENANT);
        let response = grant(OTHER_TENANT).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error_codes"], json!([90002]), "{body}");
        let discovery = client()
            .get(format!("{}/{OTHER_TENANT}/v2.0/.well-known/openid-configuration", entra.authority()))
            .send()
            .await
            .unwrap();
        assert_eq!(discovery.status(), StatusCode::BAD_REQUEST);
        assert_eq!(entra.client_credentials_requests(), 3);
    }

    #[tokio::test]
    async fn wrong_client_secret_is_rejected_with_7000215() {
        let entra = FakeEntra::start(CLIENT_ID, CLIENT_SECRET).await;
        let response = client()
            .post(format!("{}/{HOME_TENANT}/oauth2/v2.0/token", entra.authority()))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT_ID),
                ("client_secret", "not-the-secret"),
                ("code", "whatever"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(body["error_codes"], json!([7000215]));
        assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS7000215: "));
        assert_eq!(entra.token_requests(), 1);
        assert!(!entra.last_token_form().unwrap().contains_key("client_secret"));
    }
}
