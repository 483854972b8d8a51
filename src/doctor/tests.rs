//! Doctor's verdicts against plain facts: settings from TOML, answers written out, no I/O.

use std::time::Duration;

use secrecy::SecretString;

use super::checks::{self, organization_url};
use super::facts::{
    DatabaseContents, DatabaseFacts, EntraFacts, HttpAnswer, NotSent, OrganizationFacts, Probed, TokenProbe,
};
use super::probe::database_location;
use super::{Check, Redactor, Report, Status};
use crate::config::{Mode, ProviderSettings, Settings, parse_vault_key};
use crate::crypto::{Cipher, JwsAlgorithm, signing_key_aad};
use crate::store::{AppliedMigration, IdentityKey, KnownMigration, MigrationRecords, SealedRows, SigningKeyRow};
use crate::upstream::UpstreamError;
use crate::upstream::entra::{EntraErrorBody, classify};
use crate::vault::{UpstreamTokens, seal_tokens};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Another key under the same id `k1`.
const IMPOSTOR_KEY: &str = "k1:HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
const TIMEOUT: Duration = Duration::from_secs(10);

fn settings(provider: &str, extra: &str) -> Settings {
    let text = format!(
        r#"
[http]
hostname = "https://auth.example.com"
[database]
url = "postgres://broker:pa%40ss-word@db:5432/broker?sslmode=require"
[vault]
encryption_keys = ["{KEY}"]
[[clients]]
client_id = "allhands"
client_secret = "s3cret"
redirect_uris = ["https://app.example.com/cb"]
[providers.azure_devops]
client_id = "abc"
client_secret = "xyz-secret-value"
{provider}
{extra}"#
    );
    Settings::from_toml(Mode::Production, &text, |_| None).unwrap_or_else(|err| panic!("{err}"))
}

fn provider(lines: &str) -> ProviderSettings {
    settings(lines, "").providers.remove(0)
}

fn single() -> ProviderSettings {
    provider(&format!("tenant_id = \"{TENANT}\"\norganization = \"contoso\""))
}

fn assert_check(check: &Check, status: Status, words: &[&str], why: &str) {
    assert_eq!(check.status, status, "{why}: {check:?}");
    let text = format!("{} {}", check.found, check.fix);
    for word in words {
        assert!(text.contains(word), "{why}: `{word}` is missing from {check:?}");
    }
}

fn refused(status: u16, error: &str, code: u32, text: &str) -> UpstreamError {
    let body = EntraErrorBody {
        error: error.into(),
        error_description: format!("AADSTS{code}: {text}\r\nTrace ID: 1\r\nCorrelation ID: 2"),
        error_codes: vec![code],
        correlation_id: None,
        ..EntraErrorBody::default()
    };
    let class = classify(status, &body);
    UpstreamError::Refused { status, body, class }
}

fn answered(result: Result<(), UpstreamError>) -> TokenProbe {
    TokenProbe::Answered { endpoint: format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"), result }
}

#[test]
fn entra_refusals_name_their_cause_and_the_key_to_fix() {
    let cases = [
        (
            "a secret's ID given for its Value",
            refused(401, "invalid_client", 7000215, "Invalid client secret provided."),
            &["AADSTS7000215", "Value, not its ID", "AZURE_DEVOPS_CLIENT_SECRET", "client_secret"][..],
        ),
        (
            "an expired secret",
            refused(401, "invalid_client", 7000222, "The provided client secret keys are expired."),
            &["AADSTS7000222", "expired", "new secret", "AZURE_DEVOPS_CLIENT_SECRET"][..],
        ),
        (
            "an application the tenant does not know",
            refused(400, "unauthorized_client", 700016, "Application with identifier 'abc' was not found"),
            &["AADSTS700016", "`abc`", "AZURE_DEVOPS_CLIENT_ID", "AZURE_DEVOPS_TENANT_ID"][..],
        ),
        (
            "a tenant Entra does not know",
            refused(400, "invalid_request", 90002, "Tenant not found."),
            &["AADSTS90002", TENANT, "AZURE_DEVOPS_TENANT_ID"][..],
        ),
        (
            "a tenant without Azure DevOps",
            refused(
                400,
                "invalid_resource",
                500011,
                "The resource principal named https://app.vssps.visualstudio.com was not found",
            ),
            &["AADSTS500011", "Azure DevOps service principal"][..],
        ),
        (
            "another operator error: its class names the key",
            refused(
                401,
                "invalid_client",
                700022,
                "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
            ),
            &["AADSTS700022", "providers.azure_devops.client_id"][..],
        ),
        (
            "an unknown code: Entra's own explanation",
            refused(400, "invalid_request", 1234567, "Something new."),
            &["AADSTS1234567: Something new.", "login.microsoftonline.com/error?code=1234567"][..],
        ),
        (
            "a proxy answering instead of Entra",
            UpstreamError::Malformed { status: 502, body: "Bad Gateway".into() },
            &["HTTP 502", "proxy"][..],
        ),
    ];
    let provider = single();
    for (why, err, words) in cases {
        let check = checks::client_credentials(&provider, &answered(Err(err)), TIMEOUT);
        assert_eq!(check.check, "providers.azure_devops.client_credentials");
        assert_check(&check, Status::Fail, words, why);
        assert!(!check.found.contains("Trace ID"), "{why}: only the description's first line: {check:?}");
    }
}

#[test]
fn client_credentials_that_work_cannot_be_asked_or_hang_each_say_so() {
    let provider = single();
    let ok = checks::client_credentials(&provider, &answered(Ok(())), TIMEOUT);
    assert_check(&ok, Status::Ok, &["`abc`", "client_secret_post"], "a token was issued");
    let multi = TokenProbe::NotSent(NotSent::MultiTenant("organizations".into()));
    let skipped = checks::client_credentials(&provider, &multi, TIMEOUT);
    assert_check(&skipped, Status::Skip, &["organizations", "AZURE_DEVOPS_TENANT_ID=<"], "multi-tenant");
    let undiscovered = checks::client_credentials(&provider, &TokenProbe::NotSent(NotSent::NoDiscovery), TIMEOUT);
    assert_check(&undiscovered, Status::Skip, &["entra_reachable"], "no discovery");
    let hung = TokenProbe::TimedOut { endpoint: "https://login.example/t/token".into() };
    let hung = checks::client_credentials(&provider, &hung, Duration::from_millis(1500));
    assert_check(&hung, Status::Fail, &["within 1.5 s", "https://login.example/t/token"], "no answer");
    assert_eq!(checks::client_credentials_not_sent(&provider), None);
    let common = provider_with_tenant("common");
    assert_eq!(checks::client_credentials_not_sent(&common), Some(NotSent::MultiTenant("common".into())));
}

fn provider_with_tenant(tenant: &str) -> ProviderSettings {
    provider(&format!("tenant_id = \"{tenant}\""))
}

fn found(status: u16, body: &str) -> Probed<HttpAnswer> {
    Probed::Found(HttpAnswer { status, body: body.to_owned() })
}

const DISCOVERY: &str = r#"{"issuer": "https://login.microsoftonline.com/t/v2.0",
    "authorization_endpoint": "https://login.microsoftonline.com/t/oauth2/v2.0/authorize",
    "token_endpoint": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
    "jwks_uri": "https://login.microsoftonline.com/t/discovery/v2.0/keys"}"#;
const JWKS: &str = r#"{"keys": [{"kty": "RSA", "kid": "a", "n": "sXch", "e": "AQAB"}]}"#;

fn entra_facts(discovery: Probed<HttpAnswer>, jwks: Option<Probed<HttpAnswer>>) -> EntraFacts {
    EntraFacts {
        discovery_url: format!("https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration"),
        discovery,
        jwks: jwks.map(|answer| ("https://login.microsoftonline.com/t/discovery/v2.0/keys".to_owned(), answer)),
    }
}

#[test]
fn entra_is_reachable_only_with_a_discovery_document_and_its_keys() {
    let tenant_unknown = r#"{"error": "invalid_tenant", "error_description": "AADSTS90002: Tenant 'x' not found.\r\nTrace ID: 1", "error_codes": [90002]}"#;
    let cases = [
        (
            "both fetched",
            entra_facts(found(200, DISCOVERY), Some(found(200, JWKS))),
            Status::Ok,
            &["1 signing key fetched"][..],
        ),
        ("no answer", entra_facts(Probed::TimedOut, None), Status::Fail, &["no answer", "within 10 s", "firewall"][..]),
        (
            "refused connection",
            entra_facts(Probed::Failed("connection failed: Connection refused".into()), None),
            Status::Fail,
            &["Connection refused", "providers.azure_devops.authority"][..],
        ),
        (
            "an unknown tenant",
            entra_facts(found(400, tenant_unknown), None),
            Status::Fail,
            &["does not know tenant", "AADSTS90002", "AZURE_DEVOPS_TENANT_ID"][..],
        ),
        (
            "a web page instead",
            entra_facts(found(404, "<html>not found</html>"), None),
            Status::Fail,
            &["HTTP 404", "AZURE_DEVOPS_AUTHORITY"][..],
        ),
        (
            "JSON that is no discovery document",
            entra_facts(found(200, "{}"), None),
            Status::Fail,
            &["not with an OpenID Connect discovery document"][..],
        ),
        (
            "keys that hang",
            entra_facts(found(200, DISCOVERY), Some(Probed::TimedOut)),
            Status::Fail,
            &["keys", "within 10 s", "jwks_uri"][..],
        ),
        (
            "an empty key set",
            entra_facts(found(200, DISCOVERY), Some(found(200, r#"{"keys": []}"#))),
            Status::Fail,
            &["not with a set of signing keys"][..],
        ),
    ];
    let provider = single();
    for (why, facts, status, words) in cases {
        assert_check(&checks::entra_reachable(&provider, &facts, TIMEOUT), status, words, why);
    }
    assert!(checks::discovery_document(&found(200, DISCOVERY)).is_some());
    assert!(checks::discovery_document(&found(400, DISCOVERY)).is_none(), "only a 200 is a document");
}

#[test]
fn the_redirect_uri_is_the_one_sign_in_sends() {
    let settings = settings(&format!("tenant_id = \"{TENANT}\""), "[realm]\nname = \"acme\"");
    let check = checks::redirect_uri(&settings.providers[0], settings.http.hostname.as_ref(), &settings.realm.name);
    assert_eq!(check.status, Status::Ok);
    assert_eq!(check.found, "https://auth.example.com/realms/acme/broker/azure_devops/endpoint");
    let unknown = checks::redirect_uri(&settings.providers[0], None, "acme");
    assert_check(&unknown, Status::Fail, &["BROKER_HOSTNAME"], "no hostname");
}

#[test]
fn tenants_and_allowed_tenants_are_judged_together() {
    let other = "0b5d4c10-6a2b-4e4e-9f0e-3c2b1a000001";
    let cases = [
        ("a single tenant", format!("tenant_id = \"{TENANT}\""), Status::Ok, vec![TENANT]),
        (
            "a single tenant with an ignored list",
            format!("tenant_id = \"{TENANT}\"\nallowed_tenants = [\"{other}\"]"),
            Status::Warn,
            vec!["ignored", other],
        ),
        (
            "any organization",
            "tenant_id = \"organizations\"".to_owned(),
            Status::Warn,
            vec!["every Microsoft Entra tenant"],
        ),
        ("common", "tenant_id = \"common\"".to_owned(), Status::Warn, vec!["`common`"]),
        (
            "organizations, limited",
            format!("tenant_id = \"organizations\"\nallowed_tenants = [\"{other}\"]"),
            Status::Ok,
            vec![other],
        ),
    ];
    for (why, lines, status, words) in cases {
        assert_check(&checks::tenant(&provider(&lines)), status, &words, why);
    }
}

fn organization_facts(url: &str, answer: Probed<HttpAnswer>) -> OrganizationFacts {
    OrganizationFacts { url: url.to_owned(), answer }
}

#[test]
fn an_organization_exists_unless_azure_devops_answers_404() {
    let contoso = single();
    let url = organization_url(&contoso).expect("an organization").to_string();
    assert_eq!(url, "https://dev.azure.com/contoso");
    let cases = [
        ("401 for an anonymous caller", found(401, ""), Status::Ok, &["`contoso` exists", "401"][..]),
        ("a redirect to sign in", found(302, ""), Status::Ok, &["302"][..]),
        ("203 Non-Authoritative", found(203, ""), Status::Ok, &["203"][..]),
        (
            "an unknown organization",
            found(404, ""),
            Status::Fail,
            &["no organization `contoso`", "AZURE_DEVOPS_ORGANIZATION"][..],
        ),
        ("an outage", found(503, ""), Status::Warn, &["503", "again later"][..]),
        ("no answer", Probed::TimedOut, Status::Fail, &["within 10 s", "devops_url"][..]),
        ("no route", Probed::Failed("connection failed: dns error".into()), Status::Fail, &["dns error"][..]),
    ];
    for (why, answer, status, words) in cases {
        let facts = organization_facts(&url, answer);
        assert_check(&checks::organization(&contoso, Some(&facts), TIMEOUT), status, words, why);
    }
    let unset = provider_with_tenant(TENANT);
    assert_eq!(organization_url(&unset), None);
    assert_check(&checks::organization(&unset, None, TIMEOUT), Status::Warn, &["OpenHands needs"], "unset");
    let sovereign = provider(&format!(
        "tenant_id = \"{TENANT}\"\norganization = \"fabrikam\"\ndevops_url = \"https://devops.example/base/\""
    ));
    assert_eq!(
        organization_url(&sovereign).map(|u| u.to_string()).as_deref(),
        Some("https://devops.example/base/fabrikam")
    );
}

fn known(version: i64) -> KnownMigration {
    KnownMigration { version, description: format!("step {version}"), checksum: vec![version as u8] }
}

fn applied(version: i64, success: bool) -> AppliedMigration {
    AppliedMigration { version, checksum: vec![version as u8], success }
}

fn database(contents: DatabaseContents) -> DatabaseFacts {
    DatabaseFacts { location: "postgres://broker:***@db:5432/broker".into(), contents: Probed::Found(contents) }
}

fn contents(migrations: MigrationRecords) -> DatabaseContents {
    DatabaseContents {
        migrations: Probed::Found(migrations),
        sealed: Probed::Found(SealedRows::default()),
        signing_keys: Probed::Found(Vec::new()),
        email_proofs: Probed::Found(Vec::new()),
        unverified_emails: Probed::Found(0),
    }
}

#[test]
fn migrations_are_compared_with_the_embedded_ones() {
    let embedded = vec![known(1), known(2)];
    let records = |applied: Option<Vec<AppliedMigration>>| MigrationRecords { embedded: embedded.clone(), applied };
    let cases = [
        (
            "all applied",
            records(Some(vec![applied(1, true), applied(2, true)])),
            false,
            Status::Ok,
            &["all 2 migrations", "0002 step 2"][..],
        ),
        (
            "a fresh database, migrated at start",
            records(None),
            true,
            Status::Warn,
            &["2 of 2 migrations pending", "`start` applies"][..],
        ),
        (
            "a fresh database, never migrated by start",
            records(None),
            false,
            Status::Fail,
            &["database.migrate = false", "identity-broker migrate"][..],
        ),
        ("one pending", records(Some(vec![applied(1, true)])), false, Status::Fail, &["1 of 2", "0002"][..]),
        (
            "a failed migration",
            records(Some(vec![applied(1, true), applied(2, false)])),
            true,
            Status::Fail,
            &["0002 failed", "dirty"][..],
        ),
        (
            "a newer binary migrated it",
            records(Some(vec![applied(1, true), applied(2, true), applied(3, true)])),
            true,
            Status::Fail,
            &["does not know (0003)"][..],
        ),
        (
            "a changed migration",
            records(Some(vec![applied(1, true), AppliedMigration { version: 2, checksum: vec![9], success: true }])),
            true,
            Status::Fail,
            &["0002 was applied with other content"][..],
        ),
    ];
    for (why, records, migrate_at_start, status, words) in cases {
        let facts = database(contents(records));
        assert_check(&checks::migrations(&facts, migrate_at_start, TIMEOUT), status, words, why);
    }
}

#[test]
fn a_database_out_of_reach_skips_what_depends_on_it() {
    let facts = DatabaseFacts {
        location: "postgres://db/broker".into(),
        contents: Probed::Failed("Connection refused".into()),
    };
    assert_check(
        &checks::database_connection(&facts, TIMEOUT),
        Status::Fail,
        &["Connection refused", "DATABASE_URL"],
        "refused",
    );
    assert_check(&checks::migrations(&facts, true, TIMEOUT), Status::Skip, &["could not be reached"], "migrations");
    assert_check(&checks::vault_keys(&facts, &["k1"], None, TIMEOUT), Status::Skip, &[], "vault");
    assert_check(&checks::signing_keys(&facts, None, JwsAlgorithm::Rs256, 0, TIMEOUT), Status::Skip, &[], "keys");
    let hung = DatabaseFacts { location: "postgres://db/broker".into(), contents: Probed::TimedOut };
    assert_check(&checks::database_connection(&hung, TIMEOUT), Status::Fail, &["within 10 s"], "hung");

    let unmigrated = DatabaseContents {
        migrations: Probed::Found(MigrationRecords { embedded: vec![known(1)], applied: None }),
        sealed: Probed::Failed("relation \"vault_tokens\" does not exist".into()),
        signing_keys: Probed::Failed("relation \"signing_keys\" does not exist".into()),
        email_proofs: Probed::Failed("relation \"provider_sign_in_facts\" does not exist".into()),
        unverified_emails: Probed::Found(0),
    };
    let facts = database(unmigrated);
    assert_check(&checks::vault_keys(&facts, &["k1"], None, TIMEOUT), Status::Skip, &["not migrated"], "vault");
    assert_check(
        &checks::signing_keys(&facts, None, JwsAlgorithm::Rs256, 0, TIMEOUT),
        Status::Skip,
        &["not migrated"],
        "keys",
    );
}

fn cipher(keys: &[&str]) -> Cipher {
    let keys: Vec<_> = keys.iter().map(|k| parse_vault_key(k).expect("key")).collect();
    Cipher::new(&keys).expect("cipher")
}

fn sealed_row(cipher: &Cipher) -> crate::store::VaultRow {
    let tokens = UpstreamTokens {
        access_token: SecretString::from("access".to_owned()),
        refresh_token: None,
        id_token: None,
        token_type: "Bearer".into(),
        scope: "s".into(),
        expires_at: 0,
        refresh_expires_at: None,
    };
    seal_tokens(cipher, IdentityKey { user_id: "user-1", alias: "azure_devops" }, &tokens, 0)
}

fn with_sealed(sealed: SealedRows) -> DatabaseFacts {
    database(DatabaseContents {
        migrations: Probed::Found(MigrationRecords { embedded: vec![], applied: Some(vec![]) }),
        sealed: Probed::Found(sealed),
        signing_keys: Probed::Found(Vec::new()),
        email_proofs: Probed::Found(Vec::new()),
        unverified_emails: Probed::Found(0),
    })
}

#[test]
fn every_vault_key_the_rows_need_must_be_configured_and_open_them() {
    let ring = cipher(&[KEY]);
    let empty = with_sealed(SealedRows::default());
    assert_check(
        &checks::vault_keys(&empty, &["k1"], Some(&ring), TIMEOUT),
        Status::Ok,
        &["no sealed rows yet", "`k1`"],
        "empty",
    );

    let current = with_sealed(SealedRows {
        vault_tokens: vec![("k1".into(), 3)],
        signing_keys: vec![("k1".into(), 1)],
        token_samples: vec![sealed_row(&ring)],
    });
    assert_check(
        &checks::vault_keys(&current, &["k1"], Some(&ring), TIMEOUT),
        Status::Ok,
        &["`k1` seals 3 upstream token rows and 1 signing key"],
        "all under the configured key",
    );

    let older = with_sealed(SealedRows {
        vault_tokens: vec![("k0".into(), 2)],
        signing_keys: vec![("k1".into(), 1)],
        token_samples: vec![],
    });
    let rotated =
        cipher(&["k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "k0:HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA="]);
    assert_check(
        &checks::vault_keys(&older, &["k1", "k0"], Some(&rotated), TIMEOUT),
        Status::Ok,
        &["2 rows still under older keys", "vault rekey"],
        "rows under an older, configured key",
    );

    let missing = with_sealed(SealedRows {
        vault_tokens: vec![("dev".into(), 2)],
        signing_keys: vec![("dev".into(), 1), ("k1".into(), 1)],
        token_samples: vec![],
    });
    assert_check(
        &checks::vault_keys(&missing, &["k1"], Some(&ring), TIMEOUT),
        Status::Fail,
        &["`dev` seals 2 upstream token rows and 1 signing key", "BROKER_ENCRYPTION_KEYS", "start-dev"],
        "a key the rows need is missing",
    );

    let impostor = with_sealed(SealedRows {
        vault_tokens: vec![("k1".into(), 1)],
        signing_keys: vec![],
        token_samples: vec![sealed_row(&ring)],
    });
    assert_check(
        &checks::vault_keys(&impostor, &["k1"], Some(&cipher(&[IMPOSTOR_KEY])), TIMEOUT),
        Status::Fail,
        &["does not open", "original key material of `k1`"],
        "another key under the same id",
    );
    assert_check(&checks::vault_keys(&empty, &[], None, TIMEOUT), Status::Fail, &["BROKER_ENCRYPTION_KEYS"], "no keys");
}

fn signing_key(cipher: &Cipher, kid: &str, active_from: i64) -> SigningKeyRow {
    SigningKeyRow {
        kid: kid.into(),
        algorithm: "RS256".into(),
        vault_key_id: cipher.active_key_id().into(),
        private_key: cipher.seal(b"pkcs8", &signing_key_aad(kid)),
        public_key: Vec::new(),
        created_at: active_from,
        active_from,
        retired_at: None,
        verify_until: None,
    }
}

fn with_signing_keys(rows: Vec<SigningKeyRow>) -> DatabaseFacts {
    database(DatabaseContents {
        migrations: Probed::Found(MigrationRecords { embedded: vec![], applied: Some(vec![]) }),
        sealed: Probed::Found(SealedRows::default()),
        signing_keys: Probed::Found(rows),
        email_proofs: Probed::Found(Vec::new()),
        unverified_emails: Probed::Found(0),
    })
}

#[test]
fn a_signing_key_must_sign_now_and_open_with_the_configured_keys() {
    let ring = cipher(&[KEY]);
    let now = 10_000;
    let none = with_signing_keys(vec![]);
    assert_check(
        &checks::signing_keys(&none, Some(&ring), JwsAlgorithm::Rs256, now, TIMEOUT),
        Status::Warn,
        &["`start` creates one", "keys rotate"],
        "none yet",
    );
    let announced = with_signing_keys(vec![signing_key(&ring, "later", now + 60)]);
    assert_check(
        &checks::signing_keys(&announced, Some(&ring), JwsAlgorithm::Rs256, now, TIMEOUT),
        Status::Warn,
        &["1 stored key"],
        "only announced",
    );
    let good = with_signing_keys(vec![signing_key(&ring, "old", now - 100), signing_key(&ring, "new", now - 10)]);
    assert_check(
        &checks::signing_keys(&good, Some(&ring), JwsAlgorithm::Rs256, now, TIMEOUT),
        Status::Ok,
        &["`new` (RS256) signs now", "2 keys"],
        "the newest signs",
    );
    let impostor = cipher(&[IMPOSTOR_KEY]);
    assert_check(
        &checks::signing_keys(&good, Some(&impostor), JwsAlgorithm::Rs256, now, TIMEOUT),
        Status::Fail,
        &["does not open", "original key material"],
        "another key under the same id",
    );
    let elsewhere = cipher(&["k9:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]);
    assert_check(
        &checks::signing_keys(&good, Some(&elsewhere), JwsAlgorithm::Rs256, now, TIMEOUT),
        Status::Fail,
        &["vault.encryption_keys lacks", "`k1:<its base64>`"],
        "the sealing key is not configured",
    );
}

#[test]
fn client_redirect_uris_must_be_https_or_loopback() {
    let client = |uris: &str| {
        settings(
            &format!("tenant_id = \"{TENANT}\""),
            &format!("[[clients]]\nclient_id = \"other\"\nclient_secret = \"x\"\nredirect_uris = [{uris}]"),
        )
        .clients
    };
    let good = client(r#""http://localhost:3000/cb", "http://127.0.0.1/cb", "http://[::1]:8000/cb""#);
    assert_check(
        &checks::clients(&good),
        Status::Ok,
        &["`allhands` (1 redirect URI)", "`other` (3 redirect URIs)"],
        "loopback",
    );
    let plain = client(r#""http://app.example.com/cb""#);
    assert_check(
        &checks::clients(&plain),
        Status::Fail,
        &["`http://app.example.com/cb` (other)", "https://"],
        "plain http",
    );
    let custom = client(r#""myapp://callback""#);
    assert_check(&checks::clients(&custom), Status::Fail, &["myapp://callback"], "custom scheme");
    assert_check(&checks::clients(&[]), Status::Fail, &["no [[clients]]", "BROKER_CLIENT_ALLHANDS_SECRET"], "none");
}

#[test]
fn service_accounts_read_enabled_providers_only() {
    let settings = settings(
        &format!("tenant_id = \"{TENANT}\""),
        "[[service_accounts]]\nclient_id = \"runtime\"\nclient_secret = \"x\"\nallowed_providers = [\"azure_devops\"]",
    );
    assert_check(
        &checks::service_accounts(&settings.service_accounts, &settings.providers),
        Status::Ok,
        &["`runtime` reads azure_devops"],
        "enabled",
    );
    assert_check(
        &checks::service_accounts(&settings.service_accounts, &[]),
        Status::Fail,
        &["`azure_devops` (runtime)"],
        "disabled",
    );
    assert_check(&checks::service_accounts(&[], &settings.providers), Status::Ok, &["none"], "none needed");
}

#[test]
fn a_refused_configuration_becomes_failing_rows_with_the_fix() {
    let text = "[providers.azure_devops]\ntenant_id = \"organizations\"\norganization = \"https://dev.azure.com/contoso\"\nclient_id = \"a\"\nclient_secret = \"b\"";
    let err = Settings::from_toml(Mode::Production, text, |_| None).expect_err("refused");
    let report = super::refused_configuration(&err);
    let row =
        report.checks.iter().find(|c| c.check == "configuration.providers.azure_devops.organization").expect("the row");
    assert_check(row, Status::Fail, &["write `contoso`"], "organization URL");
    assert!(report.checks.iter().all(|c| c.status == Status::Fail));
    assert_eq!(report.failures(), report.checks.len());
    assert!(checks::no_provider_enabled().fix.contains("AZURE_DEVOPS_ENABLED=true"));
}

#[test]
fn reports_print_as_lines_or_json_and_never_a_secret() {
    let settings = settings(&format!("tenant_id = \"{TENANT}\""), "");
    let redactor = Redactor::for_settings(&settings);
    let leaky = Check {
        check: "database.connection".into(),
        status: Status::Fail,
        found: "password authentication failed for pa@ss-word, pa%40ss-word; client secret xyz-secret-value".into(),
        fix: "key AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
    };
    let scrubbed = redactor.check(leaky);
    for secret in ["pa@ss-word", "pa%40ss-word", "xyz-secret-value", "AAECAwQF"] {
        assert!(!format!("{scrubbed:?}").contains(secret), "`{secret}` survives: {scrubbed:?}");
    }
    assert_eq!(database_location(&settings.database.url), "postgres://broker:***@db:5432/broker");
    let sqlite = SecretString::from("sqlite://./data/x.db?mode=rwc".to_owned());
    assert_eq!(database_location(&sqlite), "sqlite://./data/x.db");

    let report = Report {
        checks: vec![
            Check { check: "a".into(), status: Status::Ok, found: "fine".into(), fix: String::new() },
            Check { check: "b".into(), status: Status::Fail, found: "broken".into(), fix: "mend it".into() },
        ],
    };
    assert_eq!(
        report.text(),
        "OK    a: fine\nFAIL  b: broken — fix: mend it\n2 checks: 1 OK, 0 WARN, 1 FAIL, 0 SKIP\n"
    );
    let json: serde_json::Value = serde_json::from_str(&report.json()).expect("JSON");
    assert_eq!(json[1], serde_json::json!({"check": "b", "status": "FAIL", "found": "broken", "fix": "mend it"}));
    assert_eq!(report.failures(), 1);
}

#[test]
fn e_mail_proof_and_smtp_are_warned_about_where_unverified_addresses_can_arise() {
    let facts = |proofs: Vec<(String, bool, i64)>, unverified: i64| {
        database(DatabaseContents {
            migrations: Probed::Found(MigrationRecords { embedded: vec![], applied: Some(vec![]) }),
            sealed: Probed::Found(SealedRows::default()),
            signing_keys: Probed::Found(Vec::new()),
            email_proofs: Probed::Found(proofs),
            unverified_emails: Probed::Found(unverified),
        })
    };
    let untrusting = single();
    let alias = untrusting.alias.clone();
    let seen = |present: bool| facts(vec![(alias.clone(), present, 1_800_000_000)], 0);
    let check = checks::email_proof(&untrusting, &seen(false));
    assert_check(&check, Status::Warn, &["xms_edov", "verified_email_domains", "optional claim"], "no xms_edov");
    assert_check(&checks::email_proof(&untrusting, &seen(true)), Status::Ok, &["xms_edov"], "xms_edov seen");
    assert_check(&checks::email_proof(&untrusting, &facts(vec![], 0)), Status::Skip, &["no sign-in"], "none yet");
    let trusting = ProviderSettings { trust_email: true, ..single() };
    assert_check(&checks::email_proof(&trusting, &seen(true)), Status::Warn, &["trust_email = true"], "trust_email");

    let providers = [untrusting];
    assert_check(&checks::smtp(true, &providers, &seen(true)), Status::Ok, &["configured"], "smtp set");
    assert_check(&checks::smtp(false, &providers, &seen(true)), Status::Warn, &["send-verify-email"], "can exist");
    assert_check(
        &checks::smtp(false, std::slice::from_ref(&trusting), &facts(vec![], 3)),
        Status::Warn,
        &["3 users"],
        "exist",
    );
    assert_check(&checks::smtp(false, &[trusting], &facts(vec![], 0)), Status::Ok, &["not configured"], "none can");
}
