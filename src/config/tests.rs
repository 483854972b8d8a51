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
fn e_mail_trust_is_off_and_fifty_refreshes_a_second_by_default_and_domains_are_kept_in_lower_case() {
    let settings = production(&minimal(PROVIDER), &[]).expect("valid");
    assert!(!settings.providers[0].trust_email, "Keycloak's default: Entra's e-mail is not verified in general");
    assert!(settings.providers[0].verified_email_domains.is_empty());
    assert_eq!(settings.vault.max_refreshes_per_second, 50, "the contract's default");
    let set = with_edit(
        "client_secret = \"xyz\"",
        "client_secret = \"xyz\"\nverified_email_domains = [\"Contoso.COM\", \"@fabrikam.com\"]\ntrust_email = true",
    )
    .replacen("[vault]", "[vault]\nmax_refreshes_per_second = 7", 1);
    let settings = production(&set, &[]).expect("valid");
    assert_eq!(settings.providers[0].verified_email_domains, ["contoso.com", "fabrikam.com"]);
    assert!(settings.providers[0].trust_email, "an explicit opt-in");
    assert_eq!(settings.vault.max_refreshes_per_second, 7);
}

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
        "a refresh timeout of 0 answers every read that needs a refresh with 503",
        "[vault]",
        "[vault]\nrefresh_timeout_seconds = 0",
        "vault.refresh_timeout_seconds",
        "write 1 to 60",
    ),
    (
        "a refresh timeout longer than any caller waits",
        "[vault]",
        "[vault]\nrefresh_timeout_seconds = 61",
        "vault.refresh_timeout_seconds",
        "write 1 to 60",
    ),
    (
        "a refresh timeout the request timeout cuts off with 408",
        "[vault]",
        "[vault]\nrefresh_timeout_seconds = 30",
        "vault.refresh_timeout_seconds",
        "below `http.request_timeout_seconds` (30)",
    ),
    (
        "no refresh at all after a throttling window",
        "[vault]",
        "[vault]\nmax_refreshes_per_second = 0",
        "vault.max_refreshes_per_second",
        "1 to 10000",
    ),
    (
        "an address for a domain",
        "client_secret = \"xyz\"",
        "client_secret = \"xyz\"\nverified_email_domains = [\"bob@contoso.com\"]",
        "providers.azure_devops.verified_email_domains",
        "the part after `@` only",
    ),
    (
        "a domain without a dot",
        "client_secret = \"xyz\"",
        "client_secret = \"xyz\"\nverified_email_domains = [\"contoso\"]",
        "providers.azure_devops.verified_email_domains",
        "not a domain name",
    ),
    (
        "the replaced wait key, so a deployment does not believe it still applies",
        "[vault]",
        "[vault]\nrefresh_wait_seconds = 20",
        "vault.refresh_wait_seconds",
        "vault.refresh_timeout_seconds",
    ),
    (
        "a header timeout of 0 closes every connection before its request",
        HOSTNAME,
        "hostname = \"https://auth.example.com\"\nheader_read_timeout_seconds = 0",
        "http.header_read_timeout_seconds",
        "from 1 to 3600",
    ),
    (
        "an idle timeout of 0 closes every keep-alive connection at once",
        HOSTNAME,
        "hostname = \"https://auth.example.com\"\nidle_timeout_seconds = 0",
        "http.idle_timeout_seconds",
        "from 1 to 86400",
    ),
    (
        "a listener that may serve no connection",
        HOSTNAME,
        "hostname = \"https://auth.example.com\"\nmax_connections = 0",
        "http.max_connections",
        "from 1 to 65536",
    ),
    (
        "an acquire timeout of 0 answers every request 503",
        "[database]",
        "[database]\nacquire_timeout_seconds = 0",
        "database.acquire_timeout_seconds",
        "from 1 to 60",
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
        "HS512 signs refresh tokens only: clients could not verify access tokens",
        "[vault]",
        "[realm]\nsignature_algorithm = \"HS512\"\n[vault]",
        "realm.signature_algorithm",
        "`ES256`",
    ),
    (
        "a lower-case algorithm name, which JWS does not know",
        "[vault]",
        "[realm]\nsignature_algorithm = \"rs256\"\n[vault]",
        "realm.signature_algorithm",
        "spelled so",
    ),
    (
        "an algorithm the broker does not implement",
        "[vault]",
        "[realm]\nsignature_algorithm = \"PS256\"\n[vault]",
        "realm.signature_algorithm",
        "`RS256` (the default)",
    ),
    (
        "unsigned tokens",
        "[vault]",
        "[realm]\nsignature_algorithm = \"none\"\n[vault]",
        "realm.signature_algorithm",
        "`EdDSA`",
    ),
    (
        "no wrong password at all before a lockout",
        "[vault]",
        "[realm.brute_force]\nfailures = 0\n[vault]",
        "realm.brute_force.failures",
        "from 1 to 10000",
    ),
    (
        "a default role without a name",
        "[vault]",
        "[realm]\ndefault_roles = [\"offline_access\", \" \"]\n[vault]",
        "realm.default_roles",
        "not a role name",
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
        ("a one-second refresh timeout", "[vault]", "[vault]\nrefresh_timeout_seconds = 1"),
        ("a refresh timeout just below the request timeout", "[vault]", "[vault]\nrefresh_timeout_seconds = 29"),
        (
            "the shortest connection timeouts and the largest bound",
            HOSTNAME,
            "hostname = \"https://auth.example.com\"\nheader_read_timeout_seconds = 1\nidle_timeout_seconds = 1\nmax_connections = 65536",
        ),
        ("a one-second acquire timeout", "[database]", "[database]\nacquire_timeout_seconds = 1"),
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
fn the_refresh_timeout_defaults_to_ten_seconds_and_never_outlasts_the_request_timeout() {
    let settings = production(&minimal(PROVIDER), &[]).expect("valid");
    assert_eq!(settings.vault.refresh_timeout_seconds, 10, "the contract's default");
    let short = with_edit(HOSTNAME, "hostname = \"https://auth.example.com\"\nrequest_timeout_seconds = 5");
    let settings = production(&short, &[]).expect("valid");
    assert_eq!(settings.vault.refresh_timeout_seconds, 4, "the default ends before a 5-second request timeout");
    let tiny = with_edit(HOSTNAME, "hostname = \"https://auth.example.com\"\nrequest_timeout_seconds = 1");
    assert_eq!(production(&tiny, &[]).expect("valid").vault.refresh_timeout_seconds, 1, "never below one second");
    let set = with_edit("[vault]", "[vault]\nrefresh_timeout_seconds = 3");
    assert_eq!(production(&set, &[]).expect("valid").vault.refresh_timeout_seconds, 3);
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
fn the_signature_algorithm_defaults_to_rs256_and_follows_the_file_and_the_environment() {
    let default = production(&minimal(""), &[]).expect("valid");
    assert_eq!(default.realm.signature_algorithm, JwsAlgorithm::Rs256);
    for algorithm in JwsAlgorithm::PUBLIC {
        let text =
            minimal("").replacen("[vault]", &format!("[realm]\nsignature_algorithm = \"{algorithm}\"\n[vault]"), 1);
        let settings = production(&text, &[]).expect("a public algorithm loads");
        assert_eq!(settings.realm.signature_algorithm, algorithm);
    }
    let env = [("BROKER_REALM_SIGNATURE_ALGORITHM", "EdDSA")];
    assert_eq!(production(&minimal(""), &env).expect("valid").realm.signature_algorithm, JwsAlgorithm::EdDsa);
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

const SMTP: &str = r#"
[smtp]
host = "smtp.example.com"
from = "OpenHands <noreply@example.com>"
username = "mailer"
"#;

#[test]
fn smtp_loads_with_defaults_and_the_password_from_the_environment() {
    let settings = production(&minimal(SMTP), &[("BROKER_SMTP_PASSWORD", "mail-pass")]).expect("valid");
    let smtp = settings.smtp.as_ref().expect("[smtp] read");
    assert_eq!(smtp.host, "smtp.example.com");
    assert_eq!(smtp.port, 587, "the submission port by default");
    assert_eq!(smtp.security, SmtpSecurity::StartTls, "STARTTLS by default");
    assert_eq!(smtp.from.to_string(), "OpenHands <noreply@example.com>");
    let credentials = smtp.credentials.as_ref().expect("credentials");
    assert_eq!(credentials.username, "mailer");
    assert_eq!(credentials.password.expose_secret(), "mail-pass");
    assert!(!format!("{settings:?}").contains("mail-pass"), "Debug never shows the SMTP password");

    let none = production(&minimal(""), &[("BROKER_SMTP_PASSWORD", "mail-pass")]).expect("valid");
    assert!(none.smtp.is_none(), "no [smtp] table, no mail, whatever the environment holds");

    let written = format!("{SMTP}port = 465\nsecurity = \"tls\"\npassword = \"from-file\"\n");
    let settings = production(&minimal(&written), &[]).expect("valid");
    let smtp = settings.smtp.as_ref().expect("[smtp] read");
    assert_eq!((smtp.port, smtp.security), (465, SmtpSecurity::Tls));
    let password = &smtp.credentials.as_ref().expect("credentials").password;
    assert_eq!(password.expose_secret(), "from-file");
    let overridden = production(&minimal(&written), &[("BROKER_SMTP_PASSWORD", "env")]).expect("valid");
    let password = &overridden.smtp.as_ref().and_then(|s| s.credentials.as_ref()).expect("credentials").password;
    assert_eq!(password.expose_secret(), "env", "the environment wins over the file");

    let anonymous = "[smtp]\nhost = \"localhost\"\nport = 25\nfrom = \"noreply@example.com\"\nsecurity = \"none\"\n";
    let settings = production(&minimal(anonymous), &[]).expect("valid");
    let smtp = settings.smtp.as_ref().expect("[smtp] read");
    assert!(smtp.credentials.is_none(), "no username, no login");
    assert_eq!(smtp.security, SmtpSecurity::None);
}

#[test]
fn bad_smtp_settings_are_refused_with_the_key_and_the_fix() {
    // Why, the [smtp] table, the key that must be named and a word of the fix.
    let cases: &[(&str, &str, &str, &str)] = &[
        ("no host", "from = \"a@example.com\"", "smtp.host", "smtp.example.com"),
        ("a URL for a host", "host = \"smtp://mail.example.com\"\nfrom = \"a@example.com\"", "smtp.host", "name alone"),
        ("an empty host", "host = \"\"\nfrom = \"a@example.com\"", "smtp.host", "name alone"),
        ("no sender", "host = \"mail.example.com\"", "smtp.from", "noreply@example.com"),
        (
            "a sender that is no address",
            "host = \"mail.example.com\"\nfrom = \"OpenHands\"",
            "smtp.from",
            "not an e-mail address",
        ),
        (
            "a sender with two @",
            "host = \"mail.example.com\"\nfrom = \"a@b@example.com\"",
            "smtp.from",
            "not an e-mail address",
        ),
        (
            "an unknown security",
            "host = \"mail.example.com\"\nfrom = \"a@example.com\"\nsecurity = \"ssl\"",
            "smtp.security",
            "`tls` (port 465",
        ),
        ("port 0", "host = \"mail.example.com\"\nfrom = \"a@example.com\"\nport = 0", "smtp.port", "587"),
        (
            "a username without a password",
            "host = \"mail.example.com\"\nfrom = \"a@example.com\"\nusername = \"u\"",
            "smtp.password",
            "BROKER_SMTP_PASSWORD",
        ),
        (
            "a password without a username",
            "host = \"mail.example.com\"\nfrom = \"a@example.com\"\npassword = \"p\"",
            "smtp.username",
            "smtp.username",
        ),
    ];
    for (why, table, key, hint) in cases {
        let err = production(&minimal(&format!("[smtp]\n{table}\n")), &[]).expect_err(why);
        let problem =
            err.problems.iter().find(|p| p.key == *key).unwrap_or_else(|| panic!("{why}: no problem for {key}: {err}"));
        assert!(problem.message.contains(hint), "{why}: message `{}` lacks `{hint}`", problem.message);
        assert!(!err.to_string().contains("\"p\""), "{why}: no password in the message");
    }
    let unknown = production(&minimal("[smtp]\nhost = \"h\"\nfrom = \"a@example.com\"\ntls = true\n"), &[])
        .expect_err("unknown key");
    assert!(unknown.to_string().contains("unknown field `tls`"), "{unknown}");
}

#[test]
fn the_admin_api_is_off_without_a_password_and_takes_openhands_variable() {
    let off = production(&minimal(PROVIDER), &[]).expect("valid");
    assert!(off.admin.password.is_none(), "no password: the admin API is off");
    assert_eq!(off.admin.username, "admin");
    assert_eq!((off.admin.access_token_lifespan_seconds, off.admin.session_idle_seconds), (60, 1800));
    assert_eq!(off.admin.session_max_seconds, 36_000, "Keycloak's master realm: 10 hours");

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
        (format!("{PROVIDER}[admin]\npassword = \"p\"\nsession_max_seconds = -1\n"), "admin.session_max_seconds"),
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

#[test]
fn plain_pkce_is_off_unless_a_client_allows_it() {
    let strict = production(&minimal(PROVIDER), &[]).expect("valid");
    let lenient = production(&minimal(&format!("allow_plain_pkce = true\n{PROVIDER}")), &[]).expect("valid");

    assert!(!strict.clients[0].allow_plain_pkce, "S256 only by default");
    assert!(lenient.clients[0].allow_plain_pkce);
}

#[test]
fn the_password_grant_and_the_roles_claim_are_off_and_keycloaks_defaults_hold() {
    let defaults = production(&minimal(PROVIDER), &[]).expect("valid");
    let chosen = minimal(&format!(
        "direct_access_grants = true\nroles_claim = true\n{PROVIDER}[realm]\ndefault_roles = [\"user\", \"user\", \"admin\"]\n[realm.brute_force]\nfailures = 5\n"
    ));
    let chosen = production(&chosen, &[]).expect("valid");

    assert!(!defaults.clients[0].direct_access_grants && !defaults.clients[0].roles_claim, "off, as in Keycloak");
    assert_eq!(defaults.realm.default_roles, ["offline_access", "uma_authorization"]);
    assert_eq!(defaults.realm.brute_force_failures, 30, "OpenHands' realm's failureFactor");
    assert!(chosen.clients[0].direct_access_grants && chosen.clients[0].roles_claim);
    assert_eq!(chosen.realm.default_roles, ["admin", "user"], "in name order, once each");
    assert_eq!(chosen.realm.brute_force_failures, 5);
}
