//! Configuration tests: whole TOML texts and environments through `Settings::from_toml`, as `load` reads them.

use secrecy::ExposeSecret;

use super::*;

const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn production(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::from_toml(Mode::Production, text, |name| {
        env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    })
}

fn minimal(extra: &str) -> String {
    format!(
        r#"
[http]
hostname = "https://auth.example.com"
[database]
url = "postgres://broker@db/broker"
[vault]
encryption_keys = ["{KEY}"]
[[clients]]
client_id = "allhands"
client_secret = "s3cret"
redirect_uris = ["https://app.example.com/cb"]
{extra}"#
    )
}

const PROVIDER: &str = r#"
[providers.azure_devops]
tenant_id = "organizations"
organization = "contoso"
client_id = "abc"
client_secret = "xyz"
"#;

#[test]
fn minimal_production_configuration_loads() {
    let settings = production(&minimal(PROVIDER), &[]).expect("valid");
    assert_eq!(settings.realm.name, "allhands");
    assert_eq!(settings.providers[0].tenant, Tenant::Multi("organizations".into()));
    assert_eq!(settings.providers[0].scopes, DEFAULT_SCOPES);
    assert_eq!(settings.vault.encryption_keys[0].id, "k1");
}

#[test]
fn a_service_account_may_not_reuse_an_application_client_id() {
    let account = "[[service_accounts]]\nclient_id = \"allhands\"\nclient_secret = \"x\"\nallowed_providers = []\n";
    let err = production(&minimal(&format!("{PROVIDER}{account}")), &[]).expect_err("duplicate id");
    assert!(err.mentions("service_accounts"), "{err}");
    assert!(err.to_string().contains("`allhands` is used twice"), "{err}");
}

#[test]
fn start_refuses_missing_essentials_naming_each_key() {
    let err = production("", &[]).expect_err("nothing configured");
    for key in ["http.hostname", "database.url", "vault.encryption_keys"] {
        assert!(err.mentions(key), "expected a problem for {key}: {err}");
    }
}

const HOSTNAME: &str = "hostname = \"https://auth.example.com\"";

/// Edits of `minimal(PROVIDER)` that make one key wrong: why, the text replaced, its
/// replacement, the key that must be named and a word of the fix.
const BAD_VALUES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "an organization given as its URL",
        "organization = \"contoso\"",
        "organization = \"https://dev.azure.com/contoso\"",
        "providers.azure_devops.organization",
        "write `contoso`",
    ),
    (
        "a tenant id that is neither a GUID nor a multi-tenant name",
        "tenant_id = \"organizations\"",
        "tenant_id = \"not-a-guid\"",
        "providers.azure_devops.tenant_id",
        "tenant GUID",
    ),
    (
        "an http:// authority without allow_insecure_http",
        "client_id = \"abc\"",
        "client_id = \"abc\"\nauthority = \"http://login.example\"",
        "providers.azure_devops.authority",
        "allow_insecure_http",
    ),
    (
        "an http:// Azure DevOps URL without allow_insecure_http",
        "client_id = \"abc\"",
        "client_id = \"abc\"\ndevops_url = \"http://devops.example\"",
        "providers.azure_devops.devops_url",
        "allow_insecure_http",
    ),
    (
        "an Azure DevOps URL that is no URL",
        "client_id = \"abc\"",
        "client_id = \"abc\"\ndevops_url = \"dev.azure.com\"",
        "providers.azure_devops.devops_url",
        "absolute URL",
    ),
    (
        "a provider without its client secret",
        "client_secret = \"xyz\"",
        "",
        "providers.azure_devops.client_secret",
        "AZURE_DEVOPS_CLIENT_SECRET",
    ),
    (
        "a body limit of 0 refuses every form POST",
        HOSTNAME,
        "hostname = \"https://auth.example.com\"\nmax_body_bytes = 0",
        "http.max_body_bytes",
        "at least 8192",
    ),
    (
        "a body limit of 1 KiB refuses a token request carrying a refresh token",
        HOSTNAME,
        "hostname = \"https://auth.example.com\"\nmax_body_bytes = 1024",
        "http.max_body_bytes",
        "at least 8192",
    ),
    (
        "a request timeout of 0 answers 408 forever",
        HOSTNAME,
        "hostname = \"https://auth.example.com\"\nrequest_timeout_seconds = 0",
        "http.request_timeout_seconds",
        "at least 1",
    ),
    (
        "an audit retention of 0 days deletes every audit event",
        "[vault]",
        "[audit]\nretention_days = 0\n[vault]",
        "audit.retention_days",
        "at least 1",
    ),
    (
        "a negative audit retention deletes every audit event",
        "[vault]",
        "[audit]\nretention_days = -30\n[vault]",
        "audit.retention_days",
        "at least 1",
    ),
    (
        "an audit retention so long that its seconds overflow",
        "[vault]",
        "[audit]\nretention_days = 200000000000000\n[vault]",
        "audit.retention_days",
        "at most 36500",
    ),
];

fn with_edit(from: &str, to: &str) -> String {
    let text = minimal(PROVIDER);
    assert!(text.contains(from), "`{from}` is not in the minimal configuration");
    text.replacen(from, to, 1)
}

#[test]
fn bad_values_are_refused_with_the_key_and_the_fix() {
    for (why, from, to, key, hint) in BAD_VALUES {
        let err = production(&with_edit(from, to), &[]).expect_err(why);
        let problem =
            err.problems.iter().find(|p| p.key == *key).unwrap_or_else(|| panic!("{why}: no problem for {key}: {err}"));
        assert!(problem.message.contains(hint), "{why}: message `{}` lacks `{hint}`", problem.message);
    }
}

#[test]
fn each_bad_value_is_reported_beside_another_wrong_key() {
    for (why, from, to, key, _) in BAD_VALUES {
        let text = format!("{}\n[log]\nformat = \"xml\"\n", with_edit(from, to));
        let err = production(&text, &[]).expect_err(why);
        assert!(err.mentions(key), "{why}: {key} must be reported beside log.format: {err}");
        assert!(err.mentions("log.format"), "{why}: log.format must be reported too: {err}");
    }
}

#[test]
fn the_bounds_themselves_are_accepted() {
    let cases = [
        ("the smallest body limit", HOSTNAME, "hostname = \"https://auth.example.com\"\nmax_body_bytes = 8192"),
        ("a one-second timeout", HOSTNAME, "hostname = \"https://auth.example.com\"\nrequest_timeout_seconds = 1"),
        ("one day of audit events", "[vault]", "[audit]\nretention_days = 1\n[vault]"),
        ("a century of audit events", "[vault]", "[audit]\nretention_days = 36500\n[vault]"),
    ];
    for (why, from, to) in cases {
        if let Err(err) = production(&with_edit(from, to), &[]) {
            panic!("{why} must load: {err}");
        }
    }
}

#[test]
fn missing_client_secret_empty_redirects_and_short_keys_are_refused() {
    let text = r#"
[http]
hostname = "https://auth.example.com"
[database]
url = "postgres://x@y/z"
[vault]
encryption_keys = ["k1:AAEC"]
[[clients]]
client_id = "allhands"
redirect_uris = []
[[clients]]
client_id = "other"
client_secret = "x"
redirect_uris = []
"#;
    let err = production(text, &[]).expect_err("invalid");
    assert!(err.mentions("clients[0].client_secret"), "{err}");
    assert!(err.mentions("clients[1].redirect_uris"), "{err}");
    let key_problem = err.problems.iter().find(|p| p.key == "vault.encryption_keys[0]").expect("key problem");
    assert!(key_problem.message.contains("32"), "{}", key_problem.message);
    assert!(!err.to_string().contains("AAEC"), "key material must not be echoed");
}

#[test]
fn environment_overrides_the_file() {
    let env = [
        ("AZURE_DEVOPS_TENANT_ID", "3f0e1b0c-1111-2222-3333-444455556666"),
        ("AZURE_DEVOPS_CLIENT_ID", "from-env"),
        ("AZURE_DEVOPS_CLIENT_SECRET", "env-secret"),
        ("BROKER_CLIENT_ALLHANDS_SECRET", "env-client-secret"),
        ("DATABASE_URL", "postgres://env@db/env"),
    ];
    let settings = production(&minimal(""), &env).expect("valid from env");
    let provider = &settings.providers[0];
    assert_eq!(provider.alias, "azure_devops");
    assert_eq!(provider.client_id, "from-env");
    assert!(matches!(provider.tenant, Tenant::Single(_)));
    assert_eq!(settings.database.url.expose_secret(), "postgres://env@db/env");
    let ClientCredential::Confidential(secret) = &settings.clients[0].credential else { panic!("confidential") };
    assert!(secret.matches("env-client-secret"));
}

#[test]
fn the_azure_devops_url_defaults_to_dev_azure_com_and_follows_the_environment() {
    let settings = production(&minimal(PROVIDER), &[]).expect("valid");
    assert_eq!(settings.providers[0].devops_url.as_str(), "https://dev.azure.com/");
    let settings =
        production(&minimal(PROVIDER), &[("AZURE_DEVOPS_URL", "https://devops.sovereign.example/")]).expect("valid");
    assert_eq!(settings.providers[0].devops_url.as_str(), "https://devops.sovereign.example/");
    let insecure =
        PROVIDER.replace("client_id", "allow_insecure_http = true\ndevops_url = \"http://127.0.0.1:9\"\nclient_id");
    let settings = production(&minimal(&insecure), &[]).expect("http allowed when asked");
    assert_eq!(settings.providers[0].devops_url.as_str(), "http://127.0.0.1:9/");
}

#[test]
fn development_needs_nothing() {
    let settings = Settings::from_toml(Mode::Development, "", |_| None).expect("defaults");
    assert_eq!(settings.database.url.expose_secret(), DEV_DATABASE_URL);
    assert_eq!(settings.http.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.log_format, LogFormat::Pretty);
}

#[test]
fn the_shipped_example_files_load() {
    let example = include_str!("../../config/production.example.toml");
    let env = [
        ("BROKER_ENCRYPTION_KEYS", KEY),
        ("BROKER_CLIENT_ALLHANDS_SECRET", "a"),
        ("BROKER_CLIENT_OPENHANDS_RUNTIME_SECRET", "b"),
        ("AZURE_DEVOPS_CLIENT_SECRET", "c"),
    ];
    let settings = production(example, &env).unwrap_or_else(|err| panic!("production example: {err}"));
    assert_eq!(settings.service_accounts[0].allowed_providers, ["azure_devops"]);
    let dev = Settings::from_toml(Mode::Development, include_str!("../../config/dev.toml"), |_| None);
    assert!(dev.is_ok_and(|s| s.providers.is_empty()), "dev.toml loads with the provider disabled");
}

#[test]
fn debug_output_never_shows_secrets() {
    let settings = production(&minimal(PROVIDER), &[]).expect("valid");
    let debug = format!("{settings:?}");
    for secret in ["s3cret", "xyz", "AAECAwQF", "postgres://broker@db"] {
        assert!(!debug.contains(secret), "Debug leaks `{secret}`");
    }
}

#[test]
fn the_development_provider_is_start_dev_only() {
    let refused = production(&minimal(&format!("{PROVIDER}\n[development]\nprovider = true\n")), &[])
        .expect_err("start refuses the development provider");
    assert!(refused.mentions("development.provider"), "{refused}");
    assert!(refused.to_string().contains("start-dev"), "{refused}");
    assert!(!production(&minimal(PROVIDER), &[]).expect("valid").development_provider, "never by default in start");

    let dev = |text: &str| Settings::from_toml(Mode::Development, text, |_| None).expect("valid");
    assert!(dev("").development_provider, "start-dev wants it when nothing says otherwise");
    assert!(!dev("[development]\nprovider = false\n").development_provider, "and can be told not to");
}

#[test]
fn the_admin_api_is_off_without_a_password_and_takes_openhands_variable() {
    let off = production(&minimal(PROVIDER), &[]).expect("valid");
    assert!(off.admin.password.is_none(), "no password: the admin API is off");
    assert_eq!(off.admin.username, "admin");
    assert_eq!((off.admin.access_token_lifespan_seconds, off.admin.session_idle_seconds), (60, 1800));

    let file = minimal(&format!("{PROVIDER}[admin]\npassword = \"from-file\"\n"));
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[], "from-file"),
        (&[("KEYCLOAK_ADMIN_PASSWORD", "from-openhands")], "from-openhands"),
        (&[("KEYCLOAK_ADMIN_PASSWORD", "from-openhands"), ("BROKER_ADMIN_PASSWORD", "from-broker")], "from-broker"),
    ];
    for (env, expected) in cases {
        let settings = production(&file, env).expect("valid");
        let password = settings.admin.password.as_ref().expect("on");
        assert!(password.matches(expected), "{env:?} should give {expected}");
        let shown = format!("{:?}", settings.admin);
        assert!(!shown.contains(expected), "the password is never shown: {shown}");
    }
    let renamed = production(&file, &[("BROKER_ADMIN_USERNAME", "root")]).expect("valid");
    assert_eq!(renamed.admin.username, "root");
}

#[test]
fn admin_mistakes_are_named_by_key() {
    let account = "[[service_accounts]]\nclient_id = \"viewer\"\nclient_secret = \"x\"\nadmin_roles = [\"view-users\", \"realm-admin\"]\n";
    let cases = [
        (format!("{PROVIDER}[admin]\npassword = \"\"\n"), "admin.password"),
        (
            format!("{PROVIDER}[admin]\npassword = \"p\"\naccess_token_lifespan_seconds = 0\n"),
            "admin.access_token_lifespan_seconds",
        ),
        (format!("{PROVIDER}{account}"), "service_accounts[0].admin_roles"),
        (format!("{PROVIDER}[realm]\nname = \"master\"\n"), "realm.name"),
        (
            format!("{PROVIDER}[[service_accounts]]\nclient_id = \"admin-cli\"\nclient_secret = \"x\"\n"),
            "service_accounts",
        ),
    ];
    for (extra, key) in cases {
        let err = production(&minimal(&extra), &[]).expect_err(key);
        assert!(err.mentions(key), "{key}: {err}");
    }
    let roles =
        "[[service_accounts]]\nclient_id = \"manager\"\nclient_secret = \"x\"\nadmin_roles = [\"manage-users\"]\n";
    let settings = production(&minimal(&format!("{PROVIDER}{roles}")), &[]).expect("valid");
    assert_eq!(settings.service_accounts[0].admin_roles, [AdminRole::ManageUsers]);
}
