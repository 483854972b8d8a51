//! Key rotation of both kinds: `keys rotate` and `vault rekey`, run as the real commands
//! against a running broker's database, and the compare-and-swap that keeps a rekey from
//! overwriting a concurrent refresh.

use identity_broker::config::parse_vault_key;
use identity_broker::crypto::Cipher;
use identity_broker::http::AppState;
use identity_broker::store::{IdentityKey, Lease};
use identity_broker::vault::rekey::rekey;
use identity_broker::vault::{open_tokens, seal_tokens};
use reqwest::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::FakeUser;
use crate::support::process::{BINARY, ConfigFile};

/// The key an operator adds in front of [`VAULT_KEY`] to rotate the vault.
const NEW_VAULT_KEY: &str = "t2:HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
const NEW_VAULT_KEY_ID: &str = "t2";
const ALIAS: &str = "azure_devops";

fn cipher(keys: &[&str]) -> Cipher {
    let keys: Vec<_> = keys.iter().map(|k| parse_vault_key(k).expect("vault key")).collect();
    Cipher::new(&keys).expect("cipher")
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// The test application's own settings as a production file for the commands: its
/// database, a public hostname, and `vault_keys` (first encrypts).
fn command_config(app: &TestApp, vault_keys: &[&str]) -> ConfigFile {
    let keys: Vec<String> = vault_keys.iter().map(|k| format!("\"{k}\"")).collect();
    let text = settings_toml(&app.entra, &ProviderSetup::default())
        .replace("[http]\n", "[http]\nhostname = \"https://broker.test\"\n")
        .replace(&format!("encryption_keys = [\"{VAULT_KEY}\"]"), &format!("encryption_keys = [{}]", keys.join(", ")))
        // The fake Entra speaks plain HTTP, which production settings refuse unless told.
        .replace("[providers.azure_devops]\n", "[providers.azure_devops]\nallow_insecure_http = true\n")
        + &format!("\n[database]\nurl = \"{}\"\n", app.db.url);
    ConfigFile::write(&text)
}

struct CommandOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the built binary with `args --config <config>`, with no environment overrides.
async fn run_command(args: &[&str], config: &ConfigFile) -> CommandOutput {
    let output = tokio::process::Command::new(BINARY)
        .args(args)
        .arg("--config")
        .arg(config.path())
        .env_remove("DATABASE_URL")
        .env_remove("BROKER_ENCRYPTION_KEYS")
        .env_remove("BROKER_HOSTNAME")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the broker binary runs");
    CommandOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn run_ok(args: &[&str], config: &ConfigFile) -> String {
    let output = run_command(args, config).await;
    assert!(output.success, "`{}` failed:\n{}\n{}", args.join(" "), output.stdout, output.stderr);
    output.stdout
}

/// The word after `prefix` on the line that starts with it.
fn field_after(output: &str, prefix: &str) -> String {
    let line = output
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}`:\n{output}"));
    line.split_whitespace().next().expect("a word").trim_end_matches(',').to_owned()
}

/// The JSON of a compact JWS's part `index` (0: header, 1: payload).
fn jwt_part(jwt: &str, index: usize) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(index).expect("a JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

fn kid_of(jwt: &str) -> String {
    jwt_part(jwt, 0)["kid"].as_str().expect("kid").to_owned()
}

fn alg_of(jwt: &str) -> String {
    jwt_part(jwt, 0)["alg"].as_str().expect("alg").to_owned()
}

/// A `refresh_token` grant of the test client.
async fn refresh_grant(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.post_form(
        paths::TOKEN,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await
}

async fn published_kids(app: &TestApp) -> Vec<String> {
    let certs: Value =
        app.api.get(app.url(&realm_path(paths::CERTS))).send().await.expect("certs").json().await.expect("JSON");
    certs["keys"].as_array().expect("keys").iter().map(|k| k["kid"].as_str().expect("kid").to_owned()).collect()
}

/// What the housekeeping loop does every minute, at a chosen time.
async fn reload_keys(app: &TestApp, at: i64) -> bool {
    app.state.tokens.keys().reload(&app.store, &cipher(&[VAULT_KEY]), at).await.expect("keys reload")
}

both_backends!(rotated_keys_sign_new_tokens_and_still_verify_old_ones, |backend| async move {
    let app = spawn_app(backend).await;
    let before = app.tokens().await;
    let old_kid = kid_of(access_token(&before));
    let config = command_config(&app, &[VAULT_KEY]);

    let output = run_ok(&["keys", "rotate"], &config).await;
    let changed = reload_keys(&app, app.state.clock.now()).await;

    let new_kid = field_after(&output, "new signing key: ");
    assert_ne!(new_kid, old_kid);
    assert_eq!(field_after(&output, "retired signing key: "), old_kid, "{output}");
    assert!(changed, "the running server picks the rotation up");
    assert_eq!(
        published_kids(&app).await,
        [new_kid.clone(), old_kid.clone()],
        "certs: the active key, then the retired"
    );
    let old_access = access_token(&before);
    assert_eq!(app.userinfo(old_access).await.status(), StatusCode::OK, "a token from before the rotation still works");
    let refreshed = app
        .post_form(
            paths::TOKEN,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", before["refresh_token"].as_str().expect("refresh_token")),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK, "a refresh token from before the rotation still works");
    let refreshed: Value = refreshed.json().await.expect("JSON");
    assert_eq!(kid_of(access_token(&refreshed)), new_kid, "the refresh is signed with the new key");
    let after = app.tokens().await;
    assert_eq!(kid_of(access_token(&after)), new_kid, "new sign-ins carry the new kid");
    assert_eq!(app.userinfo(access_token(&after)).await.status(), StatusCode::OK);
    let realm: Value =
        app.api.get(app.url(&realm_path(paths::REALM))).send().await.expect("realm").json().await.expect("JSON");
    assert!(realm["public_key"].is_string());
    assert!(!reload_keys(&app, app.state.clock.now()).await, "nothing changed since the last reload");

    // Once every token the old key signed has expired, it is no longer published or accepted.
    let verify_until: i64 =
        field_after(&output, &format!("retired signing key: {old_kid} (published and verifying until "))
            .parse()
            .expect("Unix seconds");
    assert!(verify_until >= now() + 2_592_000, "the realm's longest token lifetime (offline, 30 days) at least");
    assert!(reload_keys(&app, verify_until + 1).await);
    assert_eq!(published_kids(&app).await, [new_kid]);
    assert_eq!(app.userinfo(old_access).await.status(), StatusCode::UNAUTHORIZED);
});

both_backends!(a_key_announced_for_later_is_published_first_and_signs_from_its_time, |backend| async move {
    let app = spawn_app(backend).await;
    let old_kid = app.state.tokens.keys().current().active_kid().to_owned();
    let config = command_config(&app, &[VAULT_KEY]);

    let output = run_ok(&["keys", "rotate", "--activate-after", "600"], &config).await;
    assert!(reload_keys(&app, app.state.clock.now()).await);

    let new_kid = field_after(&output, "new signing key: ");
    assert_eq!(published_kids(&app).await, [old_kid.clone(), new_kid.clone()], "announced before it signs");
    let early = app.tokens().await;
    assert_eq!(kid_of(access_token(&early)), old_kid, "the old key signs until the new one's time");

    assert!(reload_keys(&app, app.state.clock.now() + 601).await);
    let late = app.tokens().await;
    assert_eq!(kid_of(access_token(&late)), new_kid);
    assert_eq!(published_kids(&app).await, [new_kid, old_kid]);
    assert_eq!(app.userinfo(access_token(&early)).await.status(), StatusCode::OK);
});

both_backends!(refresh_tokens_signed_before_and_after_hs512_and_a_rotation_are_accepted, |backend| async move {
    let app = spawn_app(backend).await;
    let signed_in = app.tokens().await;
    let hs512 = signed_in["refresh_token"].as_str().expect("refresh_token").to_owned();
    let old_hmac_kid = app.state.tokens.keys().current().refresh_kid().to_owned();
    let public_kid = app.state.tokens.keys().current().active_kid().to_owned();
    // What an earlier release issued: the same claims, signed RS256 with the realm's key.
    let rs256 = app.state.tokens.sign_with_public_key(&jwt_part(&hs512, 1)).expect("signs");
    let config = command_config(&app, &[VAULT_KEY]);

    assert_eq!((alg_of(&hs512), kid_of(&hs512)), ("HS512".to_owned(), old_hmac_kid.clone()), "refresh: HS512");
    assert_eq!(alg_of(access_token(&signed_in)), "RS256", "access tokens stay on the realm's public key");
    assert!(!published_kids(&app).await.contains(&old_hmac_kid), "the HMAC key is never published");
    assert_eq!((alg_of(&rs256), kid_of(&rs256)), ("RS256".to_owned(), public_kid.clone()));
    for (name, token) in [("an RS256 refresh token from before HS512", &rs256), ("an HS512 one", &hs512)] {
        let response = refresh_grant(&app, token).await;
        assert_eq!(response.status(), StatusCode::OK, "{name} is accepted");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(kid_of(body["refresh_token"].as_str().expect("refresh_token")), old_hmac_kid, "{name}");
    }

    let output = run_ok(&["keys", "rotate"], &config).await;
    assert!(reload_keys(&app, app.state.clock.now()).await);
    let new_hmac_kid = app.state.tokens.keys().current().refresh_kid().to_owned();

    assert_ne!(new_hmac_kid, old_hmac_kid, "`keys rotate` rotates the HMAC key too:\n{output}");
    assert!(output.contains(&format!("new signing key: {new_hmac_kid} (HS512")), "{output}");
    assert!(output.contains(&format!("retired signing key: {old_hmac_kid} ")), "{output}");
    for (name, token) in [("the RS256 refresh token", &rs256), ("the HS512 one", &hs512)] {
        let response = refresh_grant(&app, token).await;
        assert_eq!(response.status(), StatusCode::OK, "{name} is still accepted after a rotation");
        let body: Value = response.json().await.expect("JSON");
        let renewed = body["refresh_token"].as_str().expect("refresh_token").to_owned();
        assert_eq!((alg_of(&renewed), kid_of(&renewed)), ("HS512".to_owned(), new_hmac_kid.clone()), "{name}");
        assert_eq!(refresh_grant(&app, &renewed).await.status(), StatusCode::OK, "{name}: the renewed one works");
    }

    // Once every token the retired keys signed has expired, their refresh tokens are refused.
    let verify_until: i64 =
        field_after(&output, &format!("retired signing key: {old_hmac_kid} (published and verifying until "))
            .parse()
            .expect("Unix seconds");
    assert!(reload_keys(&app, verify_until + 1).await);
    for (name, token) in [("the RS256 refresh token", &rs256), ("the HS512 one", &hs512)] {
        let response = refresh_grant(&app, token).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name} outlived its retired key");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"], "invalid_grant", "{name}");
    }
});

both_backends!(each_signature_algorithm_publishes_its_key_type_and_rotates, |backend| async move {
    let cases = [("RS256", "RSA", None), ("ES256", "EC", Some("P-256")), ("EdDSA", "OKP", Some("Ed25519"))];
    for (algorithm, kty, crv) in cases {
        let realm = format!("\n[realm]\nsignature_algorithm = \"{algorithm}\"\n");
        let app = TestApp::builder(backend)
            .settings(|entra| settings_toml(entra, &ProviderSetup::default()) + &realm)
            .spawn()
            .await;
        let signed_in = app.tokens().await;

        let certs: Value =
            app.api.get(app.url(&realm_path(paths::CERTS))).send().await.expect("certs").json().await.expect("JSON");
        let keys = certs["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1, "{algorithm}: one public key, no HMAC key: {certs}");
        assert_eq!((keys[0]["kty"].as_str(), keys[0]["alg"].as_str()), (Some(kty), Some(algorithm)), "{certs}");
        assert_eq!(keys[0]["crv"].as_str(), crv, "{algorithm}: {certs}");
        assert_eq!(keys[0]["use"], "sig", "{algorithm}");
        let discovery: Value = app
            .api
            .get(app.url(&realm_path(paths::DISCOVERY)))
            .send()
            .await
            .expect("discovery")
            .json()
            .await
            .expect("JSON");
        assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!([algorithm]));
        for field in ["access_token", "id_token"] {
            assert_eq!(alg_of(signed_in[field].as_str().expect(field)), algorithm, "{algorithm}: {field}");
        }
        assert_eq!(alg_of(signed_in["refresh_token"].as_str().expect("refresh_token")), "HS512", "{algorithm}");
        assert_eq!(app.userinfo(access_token(&signed_in)).await.status(), StatusCode::OK, "{algorithm}: verifies");
        let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
        assert_eq!(alg_of(&service), algorithm, "{algorithm}: service-account tokens");

        // A rotation under the same configuration makes a key of the same algorithm.
        let config = ConfigFile::write(
            &(std::fs::read_to_string(command_config(&app, &[VAULT_KEY]).path()).expect("config") + &realm),
        );
        let output = run_ok(&["keys", "rotate"], &config).await;
        assert!(reload_keys(&app, app.state.clock.now()).await);
        let after = app.tokens().await;
        let certs: Value =
            app.api.get(app.url(&realm_path(paths::CERTS))).send().await.expect("certs").json().await.expect("JSON");
        let kinds: Vec<(&str, &str)> = certs["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| (k["kty"].as_str().expect("kty"), k["alg"].as_str().expect("alg")))
            .collect();
        assert_eq!(kinds, [(kty, algorithm), (kty, algorithm)], "{algorithm}: the new key, then the retired: {output}");
        assert_eq!(kid_of(access_token(&after)), field_after(&output, "new signing key: "), "{algorithm}");
        assert_eq!(app.userinfo(access_token(&signed_in)).await.status(), StatusCode::OK, "{algorithm}: old token");
    }
});

/// A second broker over the same database, built from `vault_keys` only.
struct Replica {
    public: String,
    internal: String,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: ServerTask,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}

async fn spawn_replica(app: &TestApp, vault_keys: &[&str]) -> Replica {
    let keys: Vec<String> = vault_keys.iter().map(|k| format!("\"{k}\"")).collect();
    let text = settings_toml(&app.entra, &ProviderSetup::default())
        .replace(&format!("encryption_keys = [\"{VAULT_KEY}\"]"), &format!("encryption_keys = [{}]", keys.join(", ")));
    // It builds with the new vault key alone.
    let (Running { public, internal, state, .. }, stop, server) = start_application(&text, &app.db.url).await;
    Replica { public, internal, state, stop: Some(stop), server }
}

impl Replica {
    /// Signs in through this replica, driving the browser with the harness's redirect walker.
    async fn sign_in(&self, app: &TestApp) -> Value {
        let auth_url = app.auth_url(&[]).replacen(&app.public, &self.public, 1);
        let code = app.follow(&browser_client(), &auth_url).await.code();
        let response = app
            .api
            .post(format!("{}{}", self.public, realm_path(paths::TOKEN)))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ])
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), StatusCode::OK, "a sign-in through the replica");
        response.json().await.expect("JSON")
    }
}

/// The upstream access token stored for `user_id`, read from the internal listener at `internal`.
async fn upstream_access_token(app: &TestApp, internal: &str, service: &str, user_id: &str) -> String {
    let response = app.read_token_at(internal, service, user_id, ALIAS, "").await;
    assert_eq!(response.status(), StatusCode::OK, "{internal} reads {user_id}'s upstream token");
    let body: Value = response.json().await.expect("JSON");
    access_token(&body).to_owned()
}

both_backends!(rekey_moves_every_row_to_the_new_vault_key_and_nothing_is_lost, |backend| async move {
    let app = spawn_app(backend).await;
    let alice = user_id_of(&app.tokens().await);
    app.entra.set_user(FakeUser::bob());
    let bob = user_id_of(&app.tokens().await);
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let stored = [
        (alice.clone(), upstream_access_token(&app, &app.internal, &service, &alice).await),
        (bob.clone(), upstream_access_token(&app, &app.internal, &service, &bob).await),
    ];

    // Without the key the rows are sealed under, the command refuses, names it, and changes nothing.
    let missing = run_command(&["vault", "rekey"], &command_config(&app, &[NEW_VAULT_KEY])).await;
    assert!(!missing.success, "{}", missing.stdout);
    assert!(missing.stdout.contains("vault key `t1` is not configured"), "{}", missing.stdout);
    assert_eq!(app.store.count_vault_rows_by_key(NEW_VAULT_KEY_ID).await.expect("count").under_key, 0);

    let config = command_config(&app, &[NEW_VAULT_KEY, VAULT_KEY]);
    let first = run_ok(&["vault", "rekey", "--batch-size", "1"], &config).await;
    let second = run_ok(&["vault", "rekey"], &config).await;

    assert!(
        first.contains("upstream tokens: 2 rekeyed, 0 skipped because they changed meanwhile, 0 already current"),
        "{first}"
    );
    assert!(
        first.contains("signing keys: 2 rekeyed, 0 skipped because they changed meanwhile, 0 already current"),
        "{first}"
    );
    let vault = app.store.count_vault_rows_by_key(NEW_VAULT_KEY_ID).await.expect("count");
    assert_eq!((vault.under_key, vault.under_other_keys), (2, 0), "every vault row is under t2");
    let signing = app.store.count_signing_keys_by_key(NEW_VAULT_KEY_ID).await.expect("count");
    assert_eq!(
        (signing.under_key, signing.under_other_keys),
        (2, 0),
        "every signing key, the public one and the refresh tokens' HMAC one, is under t2"
    );
    assert!(
        second.contains("upstream tokens: 0 rekeyed, 0 skipped because they changed meanwhile, 2 already current"),
        "{second}"
    );
    assert!(second.contains("signing keys: 0 rekeyed"), "{second}");

    let replica = spawn_replica(&app, &[NEW_VAULT_KEY]).await;
    let replica_service = app.service_token_at(&replica.internal, SERVICE_ID, SERVICE_SECRET).await;
    for (user_id, upstream) in &stored {
        let read = upstream_access_token(&app, &replica.internal, &replica_service, user_id).await;
        assert_eq!(&read, upstream, "the same token");
    }
    let signed_in = replica.sign_in(&app).await;
    assert_eq!(
        kid_of(access_token(&signed_in)),
        replica.state.tokens.keys().current().active_kid(),
        "the rekeyed signing key signs"
    );
    let userinfo = app
        .api
        .get(format!("{}{}", replica.public, realm_path(paths::USERINFO)))
        .bearer_auth(access_token(&signed_in))
        .send()
        .await
        .expect("userinfo");
    assert_eq!(userinfo.status(), StatusCode::OK);
});

both_backends!(a_row_rewritten_between_read_and_write_is_not_clobbered_by_the_rekey, |backend| async move {
    let app = spawn_app(backend).await;
    let user_id = user_id_of(&app.tokens().await);
    let (old, both) = (cipher(&[VAULT_KEY]), cipher(&[NEW_VAULT_KEY, VAULT_KEY]));
    let seen = app.store.vault_rows_not_under_key(NEW_VAULT_KEY_ID, ("", ""), 10).await.expect("rows");
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];

    // A refresh by a server still sealing with t1 lands after the rekey read the row, within
    // the same second, so `updated_at` alone could not tell.
    let lease = Lease { owner: "refresh-in-flight", until: now() + 60 };
    let claimed = app
        .store
        .claim_refresh_lease(IdentityKey { user_id: &user_id, alias: ALIAS }, lease, now())
        .await
        .expect("lease")
        .expect("row");
    let mut refreshed = open_tokens(&old, &claimed).expect("opens");
    refreshed.access_token = SecretString::from("refreshed-upstream-token".to_owned());
    let written = seal_tokens(&old, IdentityKey { user_id: &user_id, alias: ALIAS }, &refreshed, seen.updated_at);
    assert!(app.store.finish_refresh(&written, lease.owner).await.expect("finish"));
    let mut stale = seal_tokens(
        &both,
        IdentityKey { user_id: &user_id, alias: ALIAS },
        &open_tokens(&old, seen).expect("opens"),
        seen.updated_at,
    );
    stale.refreshed_at = seen.refreshed_at;

    let replaced = app.store.replace_vault_ciphertexts(seen, &stale).await.expect("update");

    assert!(!replaced, "the rekey's copy is older than the row");
    let row =
        app.store.find_vault_row(IdentityKey { user_id: &user_id, alias: ALIAS }).await.expect("read").expect("row");
    assert_eq!(row.vault_key_id, "t1");
    assert_eq!(open_tokens(&old, &row).expect("opens").access_token.expose_secret(), "refreshed-upstream-token");

    // The next run takes the row as it is now.
    let report = rekey(&app.store, &both, 10).await.expect("rekey");
    assert_eq!((report.tokens.rekeyed, report.tokens.changed, report.tokens.remaining), (1, 0, 0));
    let row =
        app.store.find_vault_row(IdentityKey { user_id: &user_id, alias: ALIAS }).await.expect("read").expect("row");
    assert_eq!(row.vault_key_id, NEW_VAULT_KEY_ID);
    let only_new = cipher(&[NEW_VAULT_KEY]);
    assert_eq!(
        open_tokens(&only_new, &row).expect("t2 opens").access_token.expose_secret(),
        "refreshed-upstream-token"
    );
});
