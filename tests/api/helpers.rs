//! The shared harness: a fresh database per test, the real application on port 0, a fake
//! Entra, and a browser-like HTTP client that keeps cookies and follows no redirects.

use std::collections::HashMap;

use identity_broker::app::Application;
use identity_broker::config::{Mode, Settings};
use identity_broker::http::AppState;
use identity_broker::store::{IdentityKey, IdentityRow, Store, Table};
use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

pub use crate::support::database::{Backend, TestDb};
use crate::support::fake_entra::{FakeEntra, HOME_TENANT};
pub use crate::support::http::{
    REALM_NAME, browser_client, location, paths, provider_path, query_of, realm_path, user_token_path,
};

pub const CLIENT_ID: &str = "allhands";
pub const CLIENT_SECRET: &str = "client-secret-for-tests";
pub const OTHER_CLIENT_ID: &str = "other-app";
pub const OTHER_CLIENT_SECRET: &str = "other-app-secret";
pub const REDIRECT_URI: &str = "http://app.test/oauth/keycloak/callback";
pub const OTHER_REDIRECT_URI: &str = "http://other.test/callback";
pub const POST_LOGOUT_URI: &str = "http://app.test/signed-out";
pub const UPSTREAM_CLIENT_ID: &str = "6f1c2f0e-1b7d-4d1e-9a55-upstream0001";
pub const UPSTREAM_SECRET: &str = "upstream-secret-value";
pub const SERVICE_ID: &str = "openhands-runtime";
pub const SERVICE_SECRET: &str = "runtime-service-secret";
/// A service account allowed no provider at all.
pub const LIMITED_SERVICE_ID: &str = "audit-reader";
pub const LIMITED_SERVICE_SECRET: &str = "audit-reader-secret";
pub const VAULT_KEY: &str = "t1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// How the provider is set up for a test.
#[derive(Debug, Clone)]
pub struct ProviderSetup {
    pub tenant: String,
    pub allowed_tenants: Vec<String>,
    /// `client_secret_post` or `client_secret_basic` towards the provider.
    pub client_auth_method: &'static str,
    /// Adds a second provider, `azure_devops_eu` (which keeps no tokens), so that the
    /// chooser page appears.
    pub second_provider: bool,
    /// `vault.keepalive_batch_size`.
    pub keepalive_batch_size: i64,
    /// `vault.refresh_timeout_seconds`, when not the default.
    pub refresh_timeout_seconds: Option<u64>,
}

impl Default for ProviderSetup {
    fn default() -> Self {
        ProviderSetup {
            tenant: HOME_TENANT.to_owned(),
            allowed_tenants: Vec::new(),
            client_auth_method: "client_secret_post",
            second_provider: false,
            keepalive_batch_size: 5,
            refresh_timeout_seconds: None,
        }
    }
}

pub struct TestApp {
    pub public: String,
    pub internal: String,
    pub management: String,
    /// The running application's state, for what only a process itself can do (a
    /// keep-alive pass at a chosen time, minting a token with its keys).
    pub state: AppState,
    pub entra: FakeEntra,
    pub store: Store,
    pub browser: reqwest::Client,
    pub api: reqwest::Client,
    /// The test database, for other broker processes that share it; removed after the test.
    pub db: TestDb,
    settings_text: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<ServerTask>,
}

/// A client of the API: no cookies, follows no redirects.
pub fn api_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

pub fn settings_toml(entra: &FakeEntra, setup: &ProviderSetup) -> String {
    let allowed: Vec<String> = setup.allowed_tenants.iter().map(|t| format!("\"{t}\"")).collect();
    let second = if setup.second_provider {
        format!(
            "[providers.azure_devops_eu]\ndisplay_name = \"Azure DevOps (EU)\"\ntenant_id = \"{HOME_TENANT}\"\n\
             client_id = \"{UPSTREAM_CLIENT_ID}\"\nclient_secret = \"{UPSTREAM_SECRET}\"\nauthority = \"{}\"\n\
             store_token = false\n",
            entra.authority()
        )
    } else {
        String::new()
    };
    let text = format!(
        r#"
[http]
bind = "127.0.0.1:0"
internal_bind = "127.0.0.1:0"
management_bind = "127.0.0.1:0"

[vault]
encryption_keys = ["{VAULT_KEY}"]
keepalive_batch_size = {batch}
{refresh_timeout}

[[clients]]
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_uris = ["{REDIRECT_URI}"]
post_logout_redirect_uris = ["{POST_LOGOUT_URI}"]

[[clients]]
client_id = "{OTHER_CLIENT_ID}"
client_secret = "{OTHER_CLIENT_SECRET}"
redirect_uris = ["{OTHER_REDIRECT_URI}"]
post_logout_redirect_uris = ["http://other.test/bye"]
read_token = false
rotate_refresh_tokens = true

[[service_accounts]]
client_id = "{SERVICE_ID}"
client_secret = "{SERVICE_SECRET}"
allowed_providers = ["azure_devops"]

[[service_accounts]]
client_id = "{LIMITED_SERVICE_ID}"
client_secret = "{LIMITED_SERVICE_SECRET}"
allowed_providers = []

[providers.azure_devops]
display_name = "Azure DevOps"
tenant_id = "{tenant}"
organization = "contoso"
client_id = "{UPSTREAM_CLIENT_ID}"
client_secret = "{UPSTREAM_SECRET}"
authority = "{authority}"
allowed_tenants = [{allowed}]
client_auth_method = "{method}"
"#,
        tenant = setup.tenant,
        authority = entra.authority(),
        allowed = allowed.join(", "),
        method = setup.client_auth_method,
        batch = setup.keepalive_batch_size,
        refresh_timeout =
            setup.refresh_timeout_seconds.map(|s| format!("refresh_timeout_seconds = {s}")).unwrap_or_default(),
    );
    text + &second
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    TestApp::builder(backend).spawn().await
}

/// What [`TestApp::builder`] starts; each call changes one thing.
pub struct AppBuilder<'a> {
    database: Database,
    settings: SettingsText<'a>,
    edits: Vec<Box<dyn FnOnce(String) -> String + 'a>>,
}

enum Database {
    Fresh(Backend),
    /// A database the test runs itself (a private Postgres it may stop).
    External(String),
}

enum SettingsText<'a> {
    Standard(ProviderSetup),
    Written(Box<dyn FnOnce(&FakeEntra) -> String + 'a>),
}

impl TestApp {
    /// The one way to start a test's application: the standard settings ([`settings_toml`]) on
    /// a fresh database of `backend`, changed by the builder's calls, started by
    /// [`AppBuilder::spawn`].
    pub fn builder<'a>(backend: Backend) -> AppBuilder<'a> {
        AppBuilder {
            database: Database::Fresh(backend),
            settings: SettingsText::Standard(ProviderSetup::default()),
            edits: Vec::new(),
        }
    }
}

impl<'a> AppBuilder<'a> {
    /// On a database the test runs itself, rather than a fresh one.
    pub fn on(mut self, database_url: &str) -> Self {
        self.database = Database::External(database_url.to_owned());
        self
    }

    /// The standard settings with another provider setup.
    pub fn provider(mut self, setup: ProviderSetup) -> Self {
        self.settings = SettingsText::Standard(setup);
        self
    }

    /// Settings written whole from the fake Entra it may point at, instead of the standard ones.
    pub fn settings(mut self, write: impl FnOnce(&FakeEntra) -> String + 'a) -> Self {
        self.settings = SettingsText::Written(Box::new(write));
        self
    }

    /// `lines` added to the `[http]` table (timeouts, limits, hostname).
    pub fn http(self, lines: &str) -> Self {
        let lines = lines.to_owned();
        self.edited(move |text| text.replacen("[http]\n", &format!("[http]\n{lines}\n"), 1))
    }

    /// `toml` appended to the settings (the admin API's `[admin]`, more service accounts, …).
    pub fn extra(self, toml: &str) -> Self {
        let toml = toml.to_owned();
        self.edited(move |text| text + &toml)
    }

    /// The settings text changed by `edit` (a table added, a key set).
    pub fn edited(mut self, edit: impl FnOnce(String) -> String + 'a) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// As `start-dev` runs with no provider configured, its public listener on `bind`: the
    /// built-in development provider signs users in (when `bind` is loopback).
    pub fn development(self, bind: &str) -> Self {
        let text = format!(
            r#"
[http]
bind = "{bind}"
internal_bind = "127.0.0.1:0"
management_bind = "127.0.0.1:0"

[vault]
encryption_keys = ["{VAULT_KEY}"]

[[clients]]
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_uris = ["{REDIRECT_URI}"]
post_logout_redirect_uris = ["{POST_LOGOUT_URI}"]
"#
        );
        self.settings(move |_| text)
    }

    pub async fn spawn(self) -> TestApp {
        let db = match self.database {
            Database::Fresh(backend) => TestDb::new(backend).await,
            Database::External(url) => TestDb::external(url),
        };
        let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
        let written = match self.settings {
            SettingsText::Standard(setup) => settings_toml(&entra, &setup),
            SettingsText::Written(write) => write(&entra),
        };
        let text = self.edits.into_iter().fold(written, |text, edit| edit(text));
        let (running, shutdown, server) = start_application(&text, &db.url).await;
        let Running { public, internal, management, state } = running;
        let store = state.store.clone();
        TestApp {
            public,
            internal,
            state,
            management,
            entra,
            store,
            browser: browser_client(),
            api: api_client(),
            db,
            settings_text: text,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }
}

/// Where a started application listens, and its state.
pub struct Running {
    pub public: String,
    pub internal: String,
    pub management: String,
    pub state: AppState,
}

pub type ServerTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Builds the application from the settings `text` and the database, and serves it in this
/// process until the sender is used.
pub async fn start_application(
    text: &str,
    database_url: &str,
) -> (Running, tokio::sync::oneshot::Sender<()>, ServerTask) {
    start_application_in(Mode::Development, text, database_url).await
}

/// As [`start_application`], validated and built as `mode` starts it (`Mode::Production`
/// needs an `https://` hostname and `allow_insecure_http` for the fake provider).
pub async fn start_application_in(
    mode: Mode,
    text: &str,
    database_url: &str,
) -> (Running, tokio::sync::oneshot::Sender<()>, ServerTask) {
    let url = database_url.to_owned();
    let settings = Settings::from_toml(mode, text, |name| (name == "DATABASE_URL").then(|| url.clone()))
        .unwrap_or_else(|err| panic!("test settings are valid: {err}"));
    let app = Application::build(settings).await.expect("application builds");
    let running = Running {
        public: format!("http://{}", app.public_addr),
        internal: format!("http://{}", app.internal_addr),
        management: format!("http://{}", app.management_addr),
        state: app.state().clone(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    (running, tx, server)
}

/// Where the browser stopped: the client's redirect URI, or a page of the broker.
#[derive(Debug)]
pub enum Outcome {
    ToClient(HashMap<String, String>),
    Page { status: StatusCode, body: String },
}

impl Outcome {
    pub fn code(&self) -> String {
        match self {
            Outcome::ToClient(params) => params.get("code").cloned().unwrap_or_else(|| panic!("no code in {params:?}")),
            Outcome::Page { status, body } => panic!("sign-in stopped at a {status} page: {body}"),
        }
    }

    pub fn page_status(&self) -> StatusCode {
        match self {
            Outcome::Page { status, .. } => *status,
            Outcome::ToClient(params) => {
                panic!("expected an error page, the browser went back to the client with {params:?}")
            }
        }
    }
}

impl TestApp {
    /// Stops the application gracefully and starts it again on the same database, as a
    /// deployment restart does; the fake provider keeps running.
    pub async fn restart(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        // Same public address, so the issuer (derived from it in development) is unchanged.
        let port = self.public.rsplit(':').next().unwrap_or("0");
        let text = self.settings_text.replace("\nbind = \"127.0.0.1:0\"", &format!("\nbind = \"127.0.0.1:{port}\""));
        let (running, shutdown, server) = start_application(&text, &self.db.url).await;
        self.public = running.public;
        self.internal = running.internal;
        self.management = running.management;
        self.store = running.state.store.clone();
        self.state = running.state;
        self.shutdown = Some(shutdown);
        self.server = Some(server);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public)
    }

    pub fn auth_url(&self, extra: &[(&str, &str)]) -> String {
        self.auth_url_for(CLIENT_ID, REDIRECT_URI, extra)
    }

    /// The authorization URL for a client; `extra` adds parameters or replaces the defaults.
    pub fn auth_url_for(&self, client_id: &str, redirect_uri: &str, extra: &[(&str, &str)]) -> String {
        let mut params = vec![
            ("client_id", client_id),
            ("response_type", "code"),
            ("redirect_uri", redirect_uri),
            ("scope", "openid email profile"),
            ("state", "client-state-123"),
            ("kc_idp_hint", "azure_devops"),
        ];
        for (k, v) in extra {
            params.retain(|(name, _)| name != k);
            params.push((k, v));
        }
        let mut url = Url::parse(&self.url(&realm_path(paths::AUTH))).expect("url");
        url.query_pairs_mut().extend_pairs(params);
        url.to_string()
    }

    /// GETs `url` and follows redirects with `browser` until the client's redirect URI or
    /// a non-redirect answer.
    pub async fn follow(&self, browser: &reqwest::Client, url: &str) -> Outcome {
        let mut next = url.to_owned();
        for _ in 0..10 {
            let response = browser.get(&next).send().await.expect("request");
            if !response.status().is_redirection() {
                let status = response.status();
                return Outcome::Page { status, body: response.text().await.unwrap_or_default() };
            }
            let target = Url::parse(&next).expect("url").join(&location(&response)).expect("location").to_string();
            if target.starts_with(REDIRECT_URI) || target.starts_with(OTHER_REDIRECT_URI) {
                return Outcome::ToClient(query_of(&target));
            }
            next = target;
        }
        panic!("too many redirects");
    }

    /// Runs the browser from `/auth` to the provider's authorize URL (not fetched).
    pub async fn until_upstream(&self, browser: &reqwest::Client, extra: &[(&str, &str)]) -> String {
        let first = browser.get(self.auth_url(extra)).send().await.expect("auth");
        assert_eq!(first.status(), StatusCode::FOUND, "/auth redirects to the provider login");
        let login = self.url(&location(&first));
        let second = browser.get(&login).send().await.expect("broker login");
        assert_eq!(second.status(), StatusCode::FOUND, "broker login redirects upstream");
        location(&second)
    }

    /// Runs the provider's authorize step and returns the broker callback URL it redirects to.
    pub async fn upstream_callback(&self, browser: &reqwest::Client, extra: &[(&str, &str)]) -> String {
        let authorize = self.until_upstream(browser, extra).await;
        let answer = browser.get(&authorize).send().await.expect("upstream authorize");
        assert_eq!(answer.status(), StatusCode::FOUND, "the fake provider approves");
        location(&answer)
    }

    pub async fn sign_in(&self) -> Outcome {
        self.follow(&self.browser, &self.auth_url(&[])).await
    }

    /// The code exchange exactly as python-keycloak sends it.
    pub async fn exchange(&self, code: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut form = vec![
            ("username", ""),
            ("password", ""),
            ("client_id", CLIENT_ID),
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
            ("client_secret", CLIENT_SECRET),
        ];
        for (k, v) in extra {
            form.retain(|(name, _)| name != k);
            form.push((k, v));
        }
        self.api.post(self.url(&realm_path(paths::TOKEN))).form(&form).send().await.expect("token")
    }

    /// A complete sign-in of `client` in a fresh browser, through the code exchange.
    pub async fn tokens_for(&self, client: (&str, &str, &str), extra: &[(&str, &str)]) -> Value {
        let (client_id, secret, redirect_uri) = client;
        let code = self.follow(&browser_client(), &self.auth_url_for(client_id, redirect_uri, extra)).await.code();
        let form = [
            ("client_id", client_id),
            ("client_secret", secret),
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
        ];
        let response = self.post_form(paths::TOKEN, &form).await;
        assert_eq!(response.status(), StatusCode::OK, "code exchange for {client_id}");
        response.json().await.expect("json")
    }

    /// A complete sign-in through the provider, in a browser of its own (so an earlier
    /// sign-in's SSO session does not answer it), and the code exchange.
    pub async fn tokens(&self) -> Value {
        let code = self.follow(&browser_client(), &self.auth_url(&[])).await.code();
        let response = self.exchange(&code, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    /// The `refresh_token` grant for the main client with the refresh token of `tokens`.
    pub async fn tokens_refresh(&self, tokens: &Value) -> reqwest::Response {
        let refresh = tokens["refresh_token"].as_str().expect("a refresh token");
        let grant = [
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
        ];
        self.post_form(paths::TOKEN, &grant).await
    }

    /// POSTs a form to an OpenID Connect endpoint of the realm (`paths::TOKEN`, `paths::LOGOUT`, …).
    pub async fn post_form(&self, route: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.api.post(self.url(&realm_path(route))).form(form).send().await.expect("request")
    }

    pub async fn userinfo(&self, access_token: &str) -> reqwest::Response {
        self.api.get(self.url(&realm_path(paths::USERINFO))).bearer_auth(access_token).send().await.expect("userinfo")
    }

    /// A service account's access token from the internal listener's token endpoint.
    pub async fn service_token(&self, client_id: &str, client_secret: &str) -> String {
        self.service_token_at(&self.internal, client_id, client_secret).await
    }

    /// A service account's access token from the token endpoint of the internal listener at
    /// `internal`, this application's or another's on the same database.
    pub async fn service_token_at(&self, internal: &str, client_id: &str, client_secret: &str) -> String {
        let response = self
            .api
            .post(format!("{internal}{}", realm_path(paths::TOKEN)))
            .form(&[("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", client_secret)])
            .send()
            .await
            .expect("client_credentials");
        assert_eq!(response.status(), StatusCode::OK, "the service account gets a token");
        let body: Value = response.json().await.expect("json");
        access_token(&body).to_owned()
    }

    /// `GET` [`paths::INTERNAL_USER_TOKEN`]`{query}` with `bearer`.
    pub async fn read_token(&self, bearer: &str, user_id: &str, alias: &str, query: &str) -> reqwest::Response {
        self.read_token_at(&self.internal, bearer, user_id, alias, query).await
    }

    /// As [`TestApp::read_token`], from the internal listener at `internal`.
    pub async fn read_token_at(
        &self,
        internal: &str,
        bearer: &str,
        user_id: &str,
        alias: &str,
        query: &str,
    ) -> reqwest::Response {
        self.api
            .get(format!("{internal}{}{query}", user_token_path(user_id, alias)))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("internal read")
    }

    /// `GET` [`paths::BROKER_TOKEN`] with the user's access token.
    pub async fn broker_token(&self, access_token: &str, alias: &str) -> reqwest::Response {
        self.api
            .get(self.url(&provider_path(paths::BROKER_TOKEN, alias)))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("broker token")
    }

    /// The management listener's Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self.api.get(format!("{}{}", self.management, paths::METRICS)).send().await.expect("metrics");
        response.text().await.expect("text")
    }

    /// The user's link to `alias`, which the test expects to exist.
    pub async fn identity(&self, user_id: &str, alias: &str) -> IdentityRow {
        self.store.find_identity(IdentityKey { user_id, alias }).await.expect("query").expect("a linked identity")
    }

    pub async fn count(&self, table: Table) -> i64 {
        self.store.count_rows(table).await.expect("count")
    }

    /// Asserts that no user, identity or token was stored.
    pub async fn assert_nothing_stored(&self, context: &str) {
        for table in [Table::Users, Table::FederatedIdentities, Table::VaultTokens, Table::AuthorizationCodes] {
            assert_eq!(self.count(table).await, 0, "{context}: {table:?} must stay empty");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The access token of a token response.
pub fn access_token(tokens: &Value) -> &str {
    tokens["access_token"].as_str().expect("access_token")
}

/// The broker's user id of a token response: its access token's subject.
pub fn user_id_of(tokens: &Value) -> String {
    jwt_claims(access_token(tokens))["sub"].as_str().expect("sub").to_owned()
}

/// Decodes a JWT's payload without verifying it, as OpenHands does.
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

/// Declares one test per backend: `both_backends!(name, |backend| async { … })`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::helpers::Backend::Postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::helpers::Backend::Sqlite).await
            }
        }
    };
}
