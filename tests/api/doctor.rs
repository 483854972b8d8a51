//! `identity-broker doctor`, run as the real binary against the fake Entra, a fake Azure DevOps
//! and a fresh database: one row per check, the failures Entra and the world can answer, the
//! JSON form, and no secret in any output.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::{FakeEntra, HOME_TENANT, OTHER_TENANT, UpstreamFailure};
use crate::support::process::{BINARY, ConfigFile, free_port};

const ORGANIZATION: &str = "contoso";
const HOSTNAME: &str = "https://broker.test";
const APP_REDIRECT_URI: &str = "https://app.test/oauth/keycloak/callback";
/// The database URL's password: Postgres on the test machine trusts loopback, so any works.
const DB_PASSWORD: &str = "db-password-never-shown";
/// A vault key the configuration lacks in the missing-key test.
const OLD_VAULT_KEY: &str = "t0:HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
/// What `--timeout` each run gets: short, so that a hanging upstream costs a second.
const TIMEOUT_SECONDS: &str = "1";

/// Every variable the configuration reads, so that the developer's environment cannot leak in.
const CONFIG_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "BROKER_ENCRYPTION_KEYS",
    "BROKER_HOSTNAME",
    "BROKER_LOG_FORMAT",
    "BROKER_CLIENT_ALLHANDS_SECRET",
    "BROKER_CLIENT_OPENHANDS_RUNTIME_SECRET",
    "AZURE_DEVOPS_ENABLED",
    "AZURE_DEVOPS_TENANT_ID",
    "AZURE_DEVOPS_CLIENT_ID",
    "AZURE_DEVOPS_CLIENT_SECRET",
    "AZURE_DEVOPS_ORGANIZATION",
    "AZURE_DEVOPS_SCOPE",
    "AZURE_DEVOPS_AUTHORITY",
    "AZURE_DEVOPS_URL",
];

/// A server for the test's lifetime; aborted when dropped.
struct Server {
    url: String,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// dev.azure.com as an anonymous caller sees it: 401 for an organization that exists, 404 for
/// one that does not.
async fn fake_devops() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new().route(
        "/{organization}",
        get(|Path(organization): Path<String>| async move {
            if organization == ORGANIZATION { StatusCode::UNAUTHORIZED } else { StatusCode::NOT_FOUND }
        }),
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    Server { url, task }
}

/// Accepts connections and never answers: an upstream that hangs.
async fn hanging_server() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Server { url, task }
}

/// What the configuration file says; each test changes what it checks.
#[derive(Clone)]
struct Setup {
    authority: String,
    devops_url: String,
    enabled: bool,
    tenant: String,
    client_id: String,
    client_secret: String,
    organization: Option<String>,
    database_url: String,
    migrate: bool,
    vault_keys: Vec<&'static str>,
}

impl Setup {
    fn new(entra: &FakeEntra, devops: &Server, db: &TestDb) -> Setup {
        Setup {
            authority: entra.authority(),
            devops_url: devops.url.clone(),
            enabled: true,
            tenant: HOME_TENANT.to_owned(),
            client_id: UPSTREAM_CLIENT_ID.to_owned(),
            client_secret: UPSTREAM_SECRET.to_owned(),
            organization: Some(ORGANIZATION.to_owned()),
            database_url: with_password(&db.url),
            migrate: true,
            vault_keys: vec![VAULT_KEY],
        }
    }

    /// A production configuration file; the fakes speak plain HTTP, which it allows explicitly.
    fn file(&self) -> ConfigFile {
        let keys: Vec<String> = self.vault_keys.iter().map(|k| format!("\"{k}\"")).collect();
        let organization = self.organization.as_ref().map(|o| format!("organization = \"{o}\"\n")).unwrap_or_default();
        // A disabled provider may not be named by a service account.
        let allowed = if self.enabled { "\"azure_devops\"" } else { "" };
        ConfigFile::write(&format!(
            r#"
[http]
hostname = "{HOSTNAME}"

[database]
url = "{database_url}"
migrate = {migrate}

[vault]
encryption_keys = [{keys}]

[[clients]]
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_uris = ["{APP_REDIRECT_URI}", "http://localhost:3000/oauth/keycloak/callback"]
post_logout_redirect_uris = ["https://app.test/"]

[[service_accounts]]
client_id = "{SERVICE_ID}"
client_secret = "{SERVICE_SECRET}"
allowed_providers = [{allowed}]

[providers.azure_devops]
enabled = {enabled}
display_name = "Azure DevOps"
tenant_id = "{tenant}"
{organization}client_id = "{client_id}"
client_secret = "{client_secret}"
authority = "{authority}"
devops_url = "{devops_url}"
allow_insecure_http = true

[smtp]
host = "smtp.example.com"
from = "OpenHands <noreply@example.com>"
"#,
            database_url = self.database_url,
            migrate = self.migrate,
            keys = keys.join(", "),
            enabled = self.enabled,
            tenant = self.tenant,
            client_id = self.client_id,
            client_secret = self.client_secret,
            authority = self.authority,
            devops_url = self.devops_url,
        ))
    }
}

/// The test database's URL with a password in it, which doctor must never print.
fn with_password(url: &str) -> String {
    url.replacen("postgres://postgres@", &format!("postgres://postgres:{DB_PASSWORD}@"), 1)
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    /// `(status, check, rest of the line)` of each check line.
    fn rows(&self) -> Vec<(String, String, String)> {
        self.stdout
            .lines()
            .filter_map(|line| {
                let (status, rest) = line.split_once("  ")?;
                if !["OK", "WARN", "FAIL", "SKIP"].contains(&status.trim()) {
                    return None;
                }
                let (check, found) = rest.trim_start().split_once(": ")?;
                Some((status.trim().to_owned(), check.to_owned(), found.to_owned()))
            })
            .collect()
    }

    /// The line of `check`, as `(status, found and fix)`.
    fn row(&self, check: &str) -> (String, String) {
        self.rows()
            .into_iter()
            .find(|(_, name, _)| name == check)
            .map(|(status, _, rest)| (status, rest))
            .unwrap_or_else(|| panic!("no row `{check}`:\n{}{}", self.stdout, self.stderr))
    }

    fn assert_row(&self, check: &str, status: &str, words: &[&str]) {
        let (found_status, text) = self.row(check);
        assert_eq!(found_status, status, "{check}: {text}\n{}", self.stdout);
        for word in words {
            assert!(text.contains(word), "{check} should mention `{word}`: {text}");
        }
    }

    fn json(&self) -> Vec<Value> {
        let value: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("--json prints JSON ({err}):\n{}\n{}", self.stdout, self.stderr));
        value.as_array().expect("a JSON array").clone()
    }
}

async fn doctor(config: &ConfigFile, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(BINARY);
    command.arg("doctor").args(["--timeout", TIMEOUT_SECONDS]).args(args).arg("--config").arg(config.path());
    for variable in CONFIG_VARIABLES {
        command.env_remove(variable);
    }
    let output = command.envs(env.iter().copied()).env("RUST_LOG", "debug").output().await.expect("doctor runs");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A database migrated with one signing key sealed under `vault_key`, as `start` leaves it.
async fn prepare_database(setup: &Setup, vault_key: &'static str) {
    let config = Setup { vault_keys: vec![vault_key], ..setup.clone() }.file();
    let output = tokio::process::Command::new(BINARY)
        .args(["keys", "rotate", "--config"])
        .arg(config.path())
        .env_remove("DATABASE_URL")
        .env_remove("BROKER_ENCRYPTION_KEYS")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("keys rotate runs");
    assert!(output.status.success(), "keys rotate: {}", String::from_utf8_lossy(&output.stderr));
}

/// Neither stream holds a configured secret, a key's material or a token Entra issued.
fn assert_no_secrets(output: &Output, entra: &FakeEntra, setup: &Setup) {
    let mut secrets = vec![
        setup.client_secret.clone(),
        UPSTREAM_SECRET.to_owned(),
        CLIENT_SECRET.to_owned(),
        SERVICE_SECRET.to_owned(),
        DB_PASSWORD.to_owned(),
    ];
    for key in [VAULT_KEY, OLD_VAULT_KEY] {
        secrets.push(key.split_once(':').expect("id:material").1.to_owned());
    }
    secrets.extend(entra.issued_tokens());
    for secret in secrets {
        for (stream, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
            assert!(!text.contains(&secret), "{stream} shows a secret ({}…):\n{text}", &secret[..4]);
        }
    }
}

/// The rows of one provider and of the rest, in the order doctor prints them.
const CHECKS: &[&str] = &[
    "providers.azure_devops.enabled",
    "providers.azure_devops.redirect_uri",
    "providers.azure_devops.tenant",
    "providers.azure_devops.entra_reachable",
    "providers.azure_devops.client_credentials",
    "providers.azure_devops.organization",
    "database.connection",
    "database.migrations",
    "vault.keys",
    "signing_keys",
    "providers.azure_devops.email_proof",
    "smtp",
    "clients",
    "service_accounts",
];

struct World {
    entra: FakeEntra,
    devops: Server,
    db: TestDb,
}

async fn world(backend: Backend) -> World {
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let devops = fake_devops().await;
    let db = TestDb::new(backend).await;
    World { entra, devops, db }
}

/// A world whose database `start` has already prepared.
async fn prepared_world() -> (World, Setup) {
    let world = world(Backend::Postgres).await;
    let setup = Setup::new(&world.entra, &world.devops, &world.db);
    prepare_database(&setup, VAULT_KEY).await;
    (world, setup)
}

both_backends!(doctor_reports_every_check_ok_for_a_working_configuration, |backend| async move {
    let world = world(backend).await;
    let setup = Setup::new(&world.entra, &world.devops, &world.db);
    prepare_database(&setup, VAULT_KEY).await;
    // A sign-in whose ID token carried `xms_edov`, as one through a registration with the claim.
    let store = identity_broker::store::Store::connect(&secrecy::SecretString::from(world.db.url.clone()), 1)
        .await
        .expect("store");
    store.record_email_proof_claim("azure_devops", true, 1_800_000_000).await.expect("a sign-in's facts");
    store.close().await;
    let config = setup.file();

    let text = doctor(&config, &[], &[]).await;
    let json = doctor(&config, &["--json"], &[]).await;

    assert_eq!(text.code, Some(0), "{}{}", text.stdout, text.stderr);
    let rows = text.rows();
    let names: Vec<&str> = rows.iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(names, CHECKS, "{}", text.stdout);
    for (status, name, rest) in &rows {
        assert_eq!(status, "OK", "{name}: {rest}");
    }
    let redirect = format!("{HOSTNAME}/realms/{REALM_NAME}/broker/azure_devops/endpoint");
    text.assert_row("providers.azure_devops.redirect_uri", "OK", &[&redirect]);
    text.assert_row("providers.azure_devops.client_credentials", "OK", &[UPSTREAM_CLIENT_ID]);
    text.assert_row("providers.azure_devops.organization", "OK", &[ORGANIZATION, "401"]);
    text.assert_row("database.migrations", "OK", &["all"]);
    text.assert_row("vault.keys", "OK", &["`t1`"]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let checks = json.json();
    let json_names: Vec<&str> = checks.iter().map(|c| c["check"].as_str().expect("check")).collect();
    assert_eq!(json_names, CHECKS);
    for check in &checks {
        assert_eq!(check["status"], "OK", "{check}");
        assert!(check["found"].is_string() && check["fix"].is_string(), "{check}");
    }
    assert_eq!(world.entra.client_credentials_requests(), 2, "one request per run");
    let form = world.entra.last_token_form().expect("a token request");
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "https://app.vssps.visualstudio.com/.default");
    assert_no_secrets(&text, &world.entra, &setup);
    assert_no_secrets(&json, &world.entra, &setup);
});

#[tokio::test]
async fn doctor_tells_a_secret_id_from_an_expired_secret_and_an_unknown_application() {
    let (world, setup) = prepared_world().await;

    let wrong_secret = Setup { client_secret: "9d0b7e52-secret-id-not-value".to_owned(), ..setup.clone() };
    let wrong = doctor(&wrong_secret.file(), &[], &[]).await;
    world.entra.fail_next_token_request(UpstreamFailure::expired_secret(UPSTREAM_CLIENT_ID));
    let expired = doctor(&setup.file(), &[], &[]).await;
    let unknown_app = Setup { client_id: "0c7a1f4e-5d2b-4c3a-9e8f-000000000016".to_owned(), ..setup.clone() };
    let unknown = doctor(&unknown_app.file(), &["--json"], &[]).await;

    let check = "providers.azure_devops.client_credentials";
    assert_eq!(wrong.code, Some(1), "{}", wrong.stdout);
    wrong.assert_row(check, "FAIL", &["AADSTS7000215", "Value, not its ID", "AZURE_DEVOPS_CLIENT_SECRET"]);
    assert_eq!(wrong.rows().len(), CHECKS.len(), "a failure stops no other check:\n{}", wrong.stdout);
    wrong.assert_row("database.connection", "OK", &[]);
    assert!(wrong.stderr.contains("1 of its checks failed"), "{}", wrong.stderr);
    assert_no_secrets(&wrong, &world.entra, &wrong_secret);

    assert_eq!(expired.code, Some(1));
    expired.assert_row(check, "FAIL", &["AADSTS7000222", "expired", "new secret", "client_secret"]);
    assert_no_secrets(&expired, &world.entra, &setup);

    assert_eq!(unknown.code, Some(1));
    let row = unknown.json().into_iter().find(|c| c["check"] == check).expect("the row");
    assert_eq!(row["status"], "FAIL", "{row}");
    assert!(row["found"].as_str().expect("found").contains("AADSTS700016"), "{row}");
    let fix = row["fix"].as_str().expect("fix");
    assert!(fix.contains("AZURE_DEVOPS_CLIENT_ID") && fix.contains("AZURE_DEVOPS_TENANT_ID"), "{row}");
    assert_no_secrets(&unknown, &world.entra, &unknown_app);
}

#[tokio::test]
async fn doctor_names_the_tenant_when_entra_does_not_know_it() {
    let (world, setup) = prepared_world().await;
    world.entra.forget_tenant(OTHER_TENANT);
    let unknown_tenant = Setup { tenant: OTHER_TENANT.to_owned(), ..setup.clone() };

    let at_discovery = doctor(&unknown_tenant.file(), &[], &[]).await;
    world.entra.fail_next_token_request(UpstreamFailure::aadsts(
        400,
        "invalid_request",
        90002,
        &format!("Tenant '{HOME_TENANT}' not found."),
    ));
    let at_token = doctor(&setup.file(), &[], &[]).await;

    assert_eq!(at_discovery.code, Some(1));
    at_discovery.assert_row(
        "providers.azure_devops.entra_reachable",
        "FAIL",
        &[OTHER_TENANT, "AADSTS90002", "AZURE_DEVOPS_TENANT_ID"],
    );
    at_discovery.assert_row("providers.azure_devops.client_credentials", "SKIP", &["discovery"]);
    assert_eq!(at_token.code, Some(1));
    at_token.assert_row(
        "providers.azure_devops.client_credentials",
        "FAIL",
        &["AADSTS90002", "AZURE_DEVOPS_TENANT_ID"],
    );
    assert_no_secrets(&at_discovery, &world.entra, &unknown_tenant);
}

#[tokio::test]
async fn a_multi_tenant_configuration_skips_the_client_credentials_request_instead_of_failing() {
    let (world, setup) = prepared_world().await;
    let multi = Setup { tenant: "organizations".to_owned(), ..setup };

    let output = doctor(&multi.file(), &[], &[]).await;

    assert_eq!(output.code, Some(0), "SKIP and WARN are not failures:\n{}", output.stdout);
    output.assert_row(
        "providers.azure_devops.client_credentials",
        "SKIP",
        &["organizations", "AZURE_DEVOPS_TENANT_ID=<"],
    );
    output.assert_row("providers.azure_devops.tenant", "WARN", &["every Microsoft Entra tenant", "allowed_tenants"]);
    output.assert_row("providers.azure_devops.entra_reachable", "OK", &[]);
    assert_eq!(world.entra.client_credentials_requests(), 0, "no request Entra would refuse");
    assert_no_secrets(&output, &world.entra, &multi);
}

#[tokio::test]
async fn an_unreachable_or_hanging_entra_fails_within_the_timeout() {
    let (world, setup) = prepared_world().await;
    let hanging = hanging_server().await;
    let unreachable = Setup { authority: format!("http://127.0.0.1:{}", free_port()), ..setup.clone() };
    let hung = Setup { authority: hanging.url.clone(), ..setup.clone() };

    let refused = doctor(&unreachable.file(), &[], &[]).await;
    let started = Instant::now();
    let silent = doctor(&hung.file(), &[], &[]).await;
    let silent_took = started.elapsed();
    world.entra.set_token_delay(Duration::from_secs(5));
    let started = Instant::now();
    let slow_token = doctor(&setup.file(), &[], &[]).await;
    let slow_took = started.elapsed();

    let check = "providers.azure_devops.entra_reachable";
    assert_eq!(refused.code, Some(1));
    refused.assert_row(check, "FAIL", &["connection failed", "providers.azure_devops.authority", "firewall"]);
    refused.assert_row("providers.azure_devops.client_credentials", "SKIP", &[]);
    refused.assert_row("database.connection", "OK", &[]);
    assert_eq!(silent.code, Some(1));
    silent.assert_row(check, "FAIL", &["no answer", "within 1 s", "providers.azure_devops.authority"]);
    assert!(silent_took < Duration::from_secs(8), "a hanging Entra costs the timeout, not more: {silent_took:?}");
    assert_eq!(slow_token.code, Some(1));
    slow_token.assert_row(check, "OK", &[]);
    slow_token.assert_row("providers.azure_devops.client_credentials", "FAIL", &["token endpoint", "within 1 s"]);
    assert!(slow_took < Duration::from_secs(5), "the token request is cut off at the timeout: {slow_took:?}");
    for output in [&refused, &silent, &slow_token] {
        assert_no_secrets(output, &world.entra, &setup);
    }
}

#[tokio::test]
async fn the_organization_must_exist_and_be_a_name() {
    let (world, setup) = prepared_world().await;
    let missing = Setup { organization: Some("no-such-organization".to_owned()), ..setup.clone() };
    let unset = Setup { organization: None, ..setup.clone() };

    let not_found = doctor(&missing.file(), &[], &[]).await;
    let not_set = doctor(&unset.file(), &[], &[]).await;
    let as_url = doctor(&setup.file(), &[], &[("AZURE_DEVOPS_ORGANIZATION", "https://dev.azure.com/contoso")]).await;
    let as_url_json =
        doctor(&setup.file(), &["--json"], &[("AZURE_DEVOPS_ORGANIZATION", "https://dev.azure.com/contoso/")]).await;

    let check = "providers.azure_devops.organization";
    assert_eq!(not_found.code, Some(1));
    not_found.assert_row(check, "FAIL", &["no-such-organization", "404", "AZURE_DEVOPS_ORGANIZATION"]);
    assert_eq!(not_set.code, Some(0), "{}", not_set.stdout);
    not_set.assert_row(check, "WARN", &["OpenHands needs", "AZURE_DEVOPS_ORGANIZATION"]);
    assert_no_secrets(&not_found, &world.entra, &missing);
    assert_eq!(as_url.code, Some(1), "reported as a failing check, not a crash:\n{}", as_url.stderr);
    as_url.assert_row("configuration.providers.azure_devops.organization", "FAIL", &["write `contoso`"]);
    let rows = as_url_json.json();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["check"], "configuration.providers.azure_devops.organization");
    assert_eq!(rows[0]["status"], "FAIL");
    assert_no_secrets(&as_url, &world.entra, &setup);
}

#[tokio::test]
async fn a_disabled_provider_is_reported_as_an_invisible_login_option() {
    let (world, setup) = prepared_world().await;
    let disabled = Setup { enabled: false, ..setup };

    let output = doctor(&disabled.file(), &[], &[]).await;

    assert_eq!(output.code, Some(1));
    output.assert_row("providers.enabled", "FAIL", &["not visible", "AZURE_DEVOPS_ENABLED=true"]);
    assert_eq!(world.entra.token_requests(), 0);
    assert_no_secrets(&output, &world.entra, &disabled);
}

#[tokio::test]
async fn an_unmigrated_or_unreachable_database_is_reported_and_never_migrated() {
    let world = world(Backend::Postgres).await;
    let setup = Setup { migrate: false, ..Setup::new(&world.entra, &world.devops, &world.db) };
    let migrating = Setup { migrate: true, ..setup.clone() };
    let nowhere = Setup {
        database_url: format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:{}/none", free_port()),
        ..setup.clone()
    };

    let unmigrated = doctor(&setup.file(), &[], &[]).await;
    let migrated_at_start = doctor(&migrating.file(), &[], &[]).await;
    let unreachable = doctor(&nowhere.file(), &[], &[]).await;

    assert_eq!(unmigrated.code, Some(1));
    unmigrated.assert_row("database.connection", "OK", &["postgres://postgres:***@127.0.0.1"]);
    unmigrated.assert_row(
        "database.migrations",
        "FAIL",
        &["pending", "database.migrate = false", "identity-broker migrate"],
    );
    unmigrated.assert_row("vault.keys", "SKIP", &["not migrated"]);
    unmigrated.assert_row("signing_keys", "SKIP", &["not migrated"]);
    migrated_at_start.assert_row("database.migrations", "WARN", &["pending", "`start` applies them"]);
    assert_eq!(migrated_at_start.code, Some(0), "{}", migrated_at_start.stdout);
    let again = doctor(&setup.file(), &[], &[]).await;
    again.assert_row("database.migrations", "FAIL", &["pending"]);
    assert_eq!(unreachable.code, Some(1));
    unreachable.assert_row("database.connection", "FAIL", &["cannot connect", "DATABASE_URL"]);
    unreachable.assert_row("database.migrations", "SKIP", &["could not be reached"]);
    for output in [&unmigrated, &migrated_at_start, &unreachable] {
        assert_no_secrets(output, &world.entra, &setup);
    }
}

#[tokio::test]
async fn a_vault_key_that_stored_rows_need_must_be_configured() {
    let world = world(Backend::Postgres).await;
    let setup = Setup::new(&world.entra, &world.devops, &world.db);
    prepare_database(&setup, OLD_VAULT_KEY).await;

    let output = doctor(&setup.file(), &[], &[]).await;

    assert_eq!(output.code, Some(1));
    output.assert_row("vault.keys", "FAIL", &["`t0`", "2 signing keys", "BROKER_ENCRYPTION_KEYS", "vault rekey"]);
    output.assert_row("signing_keys", "FAIL", &["`t0`", "start"]);
    assert_no_secrets(&output, &world.entra, &setup);
}

both_backends!(doctor_warns_when_the_last_sign_in_proved_no_email_address, |backend| async move {
    let world = world(backend).await;
    let setup = Setup::new(&world.entra, &world.devops, &world.db);
    prepare_database(&setup, VAULT_KEY).await;
    let config = setup.file();
    let before = doctor(&config, &[], &[]).await;
    before.assert_row("providers.azure_devops.email_proof", "SKIP", &["no sign-in", "xms_edov"]);

    // A sign-in whose ID token carried no `xms_edov`, as the broker records it.
    let store = identity_broker::store::Store::connect(&secrecy::SecretString::from(world.db.url.clone()), 1)
        .await
        .expect("store");
    store.record_email_proof_claim("azure_devops", false, 1_800_000_000).await.expect("a sign-in's facts");
    store.close().await;
    let after = doctor(&config, &[], &[]).await;

    assert_eq!(after.code, Some(0), "a warning is no failure:\n{}", after.stdout);
    after.assert_row(
        "providers.azure_devops.email_proof",
        "WARN",
        &["carried no `xms_edov`", "providers.azure_devops.verified_email_domains", "optional claim `xms_edov`"],
    );
});
