//! `import keycloak` and `export keycloak` through the real binary: Keycloak's realm exports
//! written by hand (tests/fixtures/keycloak), both layouts, idempotence, dry runs, skips, bad
//! input, a sign-in landing on the imported id, and the tokens of a Keycloak-shaped database
//! (one that asks for a password, given without the command line).

use std::path::{Path, PathBuf};
use std::process::Output;

use identity_broker::store::{Store, Table};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::{FakeEntra, FakeUser};
use crate::support::private_postgres::PrivatePostgres;
use crate::support::process::{BINARY, ConfigFile};

const ALICE: &str = "5b0f4c6e-0c3e-4a43-9a55-a11ce0000001";
const BOB: &str = "5b0f4c6e-0c3e-4a43-9a55-b0b000000002";
const CAROL: &str = "5b0f4c6e-0c3e-4a43-9a55-ca7010000003";
const SERVICE_ACCOUNT: &str = "5b0f4c6e-0c3e-4a43-9a55-5e2f1ce00004";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keycloak").join(name)
}

/// A scratch file path of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ib_import_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// What a finished command printed.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(self, context: &str) -> Ran {
        assert!(self.success, "{context} failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

/// Runs `identity-broker <args> --config <config>` with `DATABASE_URL = database`.
async fn run(config: &str, database: &str, args: &[&str]) -> Ran {
    run_with_password(config, database, args, None).await
}

/// `run`, with `PGPASSWORD = password` (and without it when `None`).
async fn run_with_password(config: &str, database: &str, args: &[&str], password: Option<&str>) -> Ran {
    let config = ConfigFile::write(config);
    let mut command = std::process::Command::new(BINARY);
    command
        .args(args)
        .arg("--config")
        .arg(config.path())
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "warn")
        .env_remove("BROKER_ENCRYPTION_KEYS")
        .env_remove("PGPASSWORD")
        .current_dir(config.dir());
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output: Output =
        tokio::task::spawn_blocking(move || command.output().expect("the binary runs")).await.expect("joined");
    drop(config);
    Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A configuration with the `azure_devops` provider pointing at `entra`.
fn config_for(entra: &FakeEntra) -> String {
    settings_toml(entra, &ProviderSetup::default())
}

async fn import(config: &str, database: &str, source: &Path, extra: &[&str]) -> Ran {
    let source = source.to_string_lossy().into_owned();
    let mut args = vec!["import", "keycloak", source.as_str()];
    args.extend_from_slice(extra);
    run(config, database, &args).await
}

/// `export keycloak` of `database`, parsed.
async fn export(config: &str, database: &str) -> (String, Value) {
    let path = scratch("export.json");
    run(config, database, &["export", "keycloak", &path.to_string_lossy()]).await.ok("export");
    let text = std::fs::read_to_string(&path).expect("export written");
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    let value = serde_json::from_str(&text).expect("the export is JSON");
    (text, value)
}

async fn store_of(database: &str) -> Store {
    Store::connect(&SecretString::from(database.to_owned()), 2).await.expect("connect")
}

async fn users_in(database: &str) -> i64 {
    let store = store_of(database).await;
    let count = store.count_rows(Table::Users).await.unwrap_or(0);
    store.close().await;
    count
}

both_backends!(both_layouts_import_the_same_users_and_an_export_imports_back_equal, |backend| async move {
    // Arrange
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    let (same, different, again) = (TestDb::new(backend).await, TestDb::new(backend).await, TestDb::new(backend).await);

    // Act
    let first = import(&config, &same.url, &fixture("same_file/allhands-realm.json"), &[]).await.ok("same_file");
    let second = import(&config, &different.url, &fixture("different_files"), &[]).await.ok("different_files");
    let (same_text, exported) = export(&config, &same.url).await;
    let (different_text, _) = export(&config, &different.url).await;
    let written = scratch("allhands-realm.json");
    std::fs::write(&written, &same_text).expect("write");
    import(&config, &again.url, &written, &[]).await.ok("import of the export");
    let (again_text, _) = export(&config, &again.url).await;

    // Assert
    for ran in [&first, &second] {
        assert!(ran.stdout.contains("3 created, 0 updated, 0 unchanged, 1 skipped"), "{}", ran.stdout);
        assert!(ran.stdout.contains(SERVICE_ACCOUNT) && ran.stdout.contains("service account of client `allhands`"));
        assert!(ran.stdout.contains(&format!("not linked: user {BOB}")) && ran.stdout.contains("`github`"));
    }
    assert!(second.stdout.contains("4 users in 3 files"), "{}", second.stdout);
    assert_eq!(same_text, different_text, "both layouts give the same users");
    assert_eq!(same_text, again_text, "export → import → export is the identity");
    assert_eq!(exported["realm"], REALM_NAME);
    let users = exported["users"].as_array().expect("users");
    let ids: Vec<&str> = users.iter().map(|u| u["id"].as_str().unwrap_or_default()).collect();
    assert_eq!(ids, [ALICE, BOB, CAROL], "ids kept, the service account left out");
    assert_eq!(
        users[0],
        json!({
            "id": ALICE, "username": "alice@contoso.onmicrosoft.com", "email": "alice@contoso.onmicrosoft.com",
            "firstName": "Alice", "lastName": "Anderson", "emailVerified": true, "enabled": true,
            "createdTimestamp": 1_700_000_000_000_i64,
            "attributes": {"azure_devops_id": ["AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ"], "identity_provider": ["azure_devops"]},
            "federatedIdentities": [{"identityProvider": "azure_devops", "userId": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
                                     "userName": "alice@contoso.onmicrosoft.com"}]
        })
    );
    assert_eq!(users[1]["enabled"], false);
    assert_eq!(users[1]["attributes"]["teams"], json!(["red", "blue"]), "values keep their order");
    assert_eq!(users[1]["federatedIdentities"].as_array().map(Vec::len), Some(1), "github is not configured");
    assert_eq!(
        users[2],
        json!({"id": CAROL, "username": "carol", "emailVerified": false, "enabled": true,
                                "createdTimestamp": 1_710_000_000_000_i64})
    );
});

both_backends!(a_second_import_changes_nothing_and_says_so, |backend| async move {
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    let db = TestDb::new(backend).await;
    import(&config, &db.url, &fixture("different_files"), &[]).await.ok("first import");
    let (before, _) = export(&config, &db.url).await;
    let store = store_of(&db.url).await;
    let rows_before = store.dump_table(Table::Users).await.expect("dump");

    let again = import(&config, &db.url, &fixture("same_file/allhands-realm.json"), &[]).await.ok("second import");

    assert!(again.stdout.contains("0 created, 0 updated, 3 unchanged, 1 skipped"), "{}", again.stdout);
    let (after, _) = export(&config, &db.url).await;
    assert_eq!(before, after);
    assert_eq!(store.dump_table(Table::Users).await.expect("dump"), rows_before, "not even updated_at moved");
    let audit = store.list_audit(Some("keycloak_import")).await.expect("audit");
    assert_eq!(audit.len(), 2, "each import is audited once");
    store.close().await;
});

both_backends!(a_dry_run_writes_nothing_and_reports_what_it_would_do, |backend| async move {
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    let db = TestDb::new(backend).await;

    // A database without even the schema: planned as empty, and still without it after.
    let fresh = import(&config, &db.url, &fixture("same_file/allhands-realm.json"), &["--dry-run"]).await.ok("dry run");
    assert!(fresh.stdout.contains("3 would be created, 0 would be updated"), "{}", fresh.stdout);
    assert!(fresh.stdout.contains("dry run: nothing was written"));
    let store = store_of(&db.url).await;
    assert!(store.count_rows(Table::Users).await.is_err(), "no migration ran");
    store.close().await;

    // A database with users: a dry run of changes leaves every row as it was.
    import(&config, &db.url, &fixture("same_file/allhands-realm.json"), &[]).await.ok("import");
    let (before, _) = export(&config, &db.url).await;
    let changed = scratch("allhands-realm.json");
    let mut text: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("same_file/allhands-realm.json")).unwrap()).unwrap();
    text["users"][2]["email"] = json!("carol@example.com");
    text["users"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "5b0f4c6e-0c3e-4a43-9a55-da7e00000005", "username": "dave"}));
    std::fs::write(&changed, text.to_string()).unwrap();
    let dry = import(&config, &db.url, &changed, &["--dry-run"]).await.ok("dry run of changes");
    assert!(dry.stdout.contains("1 would be created, 1 would be updated, 2 unchanged, 1 skipped"), "{}", dry.stdout);
    let (after, _) = export(&config, &db.url).await;
    assert_eq!(before, after, "the dry run wrote nothing");
    let real = import(&config, &db.url, &changed, &[]).await.ok("import of changes");
    assert!(real.stdout.contains("1 created, 1 updated, 2 unchanged, 1 skipped"), "{}", real.stdout);
});

both_backends!(skipped_users_are_reported_each_with_its_reason, |backend| async move {
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    let db = TestDb::new(backend).await;

    let ran = import(&config, &db.url, &fixture("conflicts-realm.json"), &[]).await.ok("import");

    assert!(ran.stdout.contains("3 created, 0 updated, 0 unchanged, 3 skipped"), "{}", ran.stdout);
    let expected = [
        (
            "7c1d2e3f-0000-4000-8000-000000000011",
            "e-mail ERIN@example.com belongs to user 7c1d2e3f-0000-4000-8000-000000000010",
        ),
        (
            "7c1d2e3f-0000-4000-8000-000000000013",
            "azure_devops account frank-upstream-subject is already linked to user 7c1d2e3f-0000-4000-8000-000000000012",
        ),
        ("7c1d2e3f-0000-4000-8000-000000000014", "the service account of client `ci`"),
    ];
    for (id, reason) in expected {
        let line = ran.stdout.lines().find(|l| l.contains(&format!("skipped user {id}"))).unwrap_or_default();
        assert!(line.contains(reason), "{id} should be skipped because {reason}:\n{}", ran.stdout);
    }
    let gina = ran.stdout.lines().find(|l| l.contains("not linked: user 7c1d2e3f-0000-4000-8000-000000000015"));
    assert!(gina.is_some_and(|l| l.contains("`github` is not an enabled provider")), "{}", ran.stdout);
    assert_eq!(users_in(&db.url).await, 3);
});

both_backends!(an_imported_user_signs_in_through_entra_as_the_same_id, |backend| async move {
    // Arrange: the service runs while the import writes into its database.
    let app = spawn_app(backend).await;
    let config = config_for(&app.entra);
    import(&config, &app.db.url, &fixture("same_file/allhands-realm.json"), &[]).await.ok("import");

    // Act
    let tokens = app.tokens().await;

    // Assert
    assert_eq!(user_id_of(&tokens), ALICE, "the imported federated subject lands on the imported user");
    assert_eq!(app.count(Table::Users).await, 3, "no new user was made");
    let info: Value = app.userinfo(access_token(&tokens)).await.json().await.expect("json");
    assert_eq!(info["sub"], ALICE);
    assert_eq!(info["identity_provider"], "azure_devops");
});

both_backends!(a_user_who_signed_in_before_the_import_is_skipped_not_duplicated, |backend| async move {
    let app = spawn_app(backend).await;
    let early = user_id_of(&app.tokens().await);
    assert_ne!(early, ALICE);

    let ran = import(&app_config(&app), &app.db.url, &fixture("same_file/allhands-realm.json"), &[]).await.ok("import");

    let line = ran.stdout.lines().find(|l| l.contains(&format!("skipped user {ALICE}"))).unwrap_or_default();
    assert!(line.contains(&format!("already linked to user {early}")), "{}", ran.stdout);
    assert_eq!(user_id_of(&app.tokens().await), early, "the sign-in still lands where it did");
});

fn app_config(app: &TestApp) -> String {
    config_for(&app.entra)
}

#[tokio::test]
async fn bad_input_fails_clearly_and_writes_nothing() {
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    let cases = [
        (fixture("nowhere.json"), "cannot read", "a missing file"),
        (fixture("bad/malformed.json"), "is not a Keycloak realm export", "malformed JSON"),
        (
            fixture("bad/later_file_malformed"),
            "allhands-users-1.json is not a Keycloak realm export",
            "a later file malformed",
        ),
        (
            fixture("bad/master-realm.json"),
            "an export of realm `master`, but the broker serves realm `allhands`",
            "wrong realm",
        ),
        (
            fixture("bad"),
            "holds no `allhands-realm.json` (it holds the export of `master`",
            "a directory of another realm",
        ),
        (fixture("bad/no-id-realm.json"), "user #1 has no `id`", "a user without id"),
    ];
    for (source, expected, case) in cases {
        let db = TestDb::new(Backend::Postgres).await;
        let ran = import(&config, &db.url, &source, &[]).await;
        assert!(!ran.success, "{case}: must fail");
        assert!(ran.stderr.contains(expected), "{case}: stderr should say `{expected}`:\n{}", ran.stderr);
        assert_eq!(users_in(&db.url).await, 0, "{case}: nothing written");
        let store = store_of(&db.url).await;
        assert!(store.count_rows(Table::Users).await.is_err(), "{case}: not even the schema");
        store.close().await;
    }
}

/// A realm file of `users`, in a scratch directory.
fn realm_file(users: Vec<Value>) -> PathBuf {
    let file = scratch("allhands-realm.json");
    std::fs::write(&file, json!({"realm": REALM_NAME, "users": users}).to_string()).expect("write");
    file
}

both_backends!(users_sharing_an_id_refuse_the_whole_export_before_anything_is_written, |backend| async move {
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    // In one file: Alice, then a second user with Alice's id.
    let same_file = realm_file(vec![
        json!({"id": ALICE, "username": "alice"}),
        json!({"id": BOB, "username": "bob"}),
        json!({"id": ALICE, "username": "impostor"}),
    ]);
    // Across `different_files`: users-1.json's last user takes the id of users-0.json's first.
    let directory = scratch("export");
    std::fs::create_dir_all(&directory).expect("dir");
    for name in ["allhands-realm.json", "allhands-users-0.json", "allhands-users-1.json"] {
        std::fs::copy(fixture("different_files").join(name), directory.join(name)).expect("copy");
    }
    let first: Value =
        serde_json::from_str(&std::fs::read_to_string(directory.join("allhands-users-0.json")).unwrap()).expect("json");
    let first_id = first["users"][0]["id"].as_str().expect("id").to_owned();
    let first_username = first["users"][0]["username"].as_str().expect("username").to_owned();
    let path = directory.join("allhands-users-1.json");
    let mut second: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("json");
    let users = second["users"].as_array_mut().expect("users");
    users.push(json!({"id": first_id, "username": "copy"}));
    let copy_position = users.len();
    std::fs::write(&path, second.to_string()).expect("write");
    let cases = [
        (
            same_file.clone(),
            vec![
                format!("two users have the id `{ALICE}`"),
                format!("{} user #1 (username `alice`)", same_file.display()),
                format!("{} user #3 (username `impostor`)", same_file.display()),
            ],
            "the same file",
        ),
        (
            directory.clone(),
            vec![
                format!("two users have the id `{first_id}`"),
                format!("allhands-users-0.json user #1 (username `{first_username}`)"),
                format!("allhands-users-1.json user #{copy_position} (username `copy`)"),
            ],
            "different files",
        ),
    ];

    for (source, expected, case) in cases {
        for extra in [&[][..], &["--dry-run"][..]] {
            let db = TestDb::new(backend).await;
            let ran = import(&config, &db.url, &source, extra).await;

            assert!(!ran.success, "{case} {extra:?}: must fail:\n{}", ran.stdout);
            for words in &expected {
                assert!(
                    ran.stderr.contains(words.as_str()),
                    "{case} {extra:?}: stderr should say `{words}`:\n{}",
                    ran.stderr
                );
            }
            let store = store_of(&db.url).await;
            assert!(store.count_rows(Table::Users).await.is_err(), "{case}: nothing written, not even the schema");
            store.close().await;
        }
    }
});

both_backends!(users_over_the_admin_apis_attribute_limits_are_skipped_and_reported, |backend| async move {
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    let db = TestDb::new(backend).await;
    let names = |count: usize| -> Value {
        (0..count).map(|i| (format!("name{i:03}"), json!(["v"]))).collect::<serde_json::Map<String, Value>>().into()
    };
    let id = |n: u32| format!("9a0b0c0d-0000-4000-8000-{n:012}");
    let users = vec![
        json!({"id": id(1), "username": "at-every-limit", "attributes": names(64)}),
        json!({"id": id(2), "username": "too-many-names", "attributes": names(65)}),
        json!({"id": id(3), "username": "too-many-values", "attributes": {"a": vec!["v"; 257]}}),
        json!({"id": id(4), "username": "too-long-a-value", "attributes": {"a": ["x".repeat(2049)]}}),
        json!({"id": id(5), "username": "a-nul", "attributes": {"a": ["x\u{0}y"]}}),
        json!({"id": id(6), "username": "longest-value", "attributes": {"a": ["x".repeat(2048)], "b": vec!["v"; 255]}}),
    ];
    let file = realm_file(users);

    let dry = import(&config, &db.url, &file, &["--dry-run"]).await.ok("dry run");
    let ran = import(&config, &db.url, &file, &[]).await.ok("import");

    for (ran, created) in [(&dry, "2 would be created"), (&ran, "2 created")] {
        assert!(ran.stdout.contains(&format!("{created}, 0")), "{}", ran.stdout);
        assert!(ran.stdout.contains("0 unchanged, 4 skipped"), "{}", ran.stdout);
        let expected = [
            (id(2), "too-many-names", "65 attributes, over the admin API's limit of 64"),
            (id(3), "too-many-values", "257 attribute values, over the admin API's limit of 256"),
            (id(4), "too-long-a-value", "a value over 2048 bytes"),
            (id(5), "a-nul", "NUL"),
        ];
        for (id, username, reason) in expected {
            let line = ran.stdout.lines().find(|l| l.contains(&format!("skipped user {id} ({username})")));
            assert!(line.is_some_and(|l| l.contains(reason)), "{username} skipped because {reason}:\n{}", ran.stdout);
        }
    }
    let (_, exported) = export(&config, &db.url).await;
    let kept: Vec<&str> =
        exported["users"].as_array().expect("users").iter().filter_map(|u| u["username"].as_str()).collect();
    assert_eq!(kept, ["at-every-limit", "longest-value"], "the others are imported");
    assert_eq!(exported["users"][0]["attributes"].as_object().map(|a| a.len()), Some(64));
    assert_eq!(exported["users"][1]["attributes"]["b"].as_array().map(Vec::len), Some(255));
});

#[tokio::test]
async fn progress_is_a_plain_line_every_few_thousand_users_when_not_on_a_terminal() {
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let users: Vec<Value> = (0..5_001)
        .map(|i| json!({"id": format!("00000000-0000-4000-8000-{i:012}"), "username": format!("user{i}")}))
        .collect();
    let file = scratch("allhands-realm.json");
    std::fs::write(&file, json!({"realm": "allhands", "users": users}).to_string()).unwrap();

    let ran = import(&config_for(&entra), &db.url, &file, &[]).await.ok("import");

    assert!(ran.stderr.contains("import keycloak: 5000 of 5001 users imported"), "{}", ran.stderr);
    assert!(ran.stderr.contains("import keycloak: 5001 of 5001 users imported"), "{}", ran.stderr);
    assert!(ran.stdout.contains("5001 created"), "{}", ran.stdout);
}

/// Keycloak's tables as its Liquibase changelogs lay them out (jpa-changelog-1.0.0.Final and
/// 1.2.0.Beta1, with the later user columns), only those the import reads or refers to.
const KEYCLOAK_SCHEMA: &str = "
CREATE TABLE REALM (
    ID VARCHAR(36) NOT NULL,
    NAME VARCHAR(255),
    ENABLED BOOLEAN DEFAULT FALSE NOT NULL,
    CONSTRAINT CONSTRAINT_4A PRIMARY KEY (ID),
    CONSTRAINT UK_ORVSDMLA56612EAEFIQ6WL5OI UNIQUE (NAME)
);
CREATE TABLE USER_ENTITY (
    ID VARCHAR(36) NOT NULL,
    EMAIL VARCHAR(255),
    EMAIL_CONSTRAINT VARCHAR(255),
    EMAIL_VERIFIED BOOLEAN DEFAULT FALSE NOT NULL,
    ENABLED BOOLEAN DEFAULT FALSE NOT NULL,
    FEDERATION_LINK VARCHAR(255),
    FIRST_NAME VARCHAR(255),
    LAST_NAME VARCHAR(255),
    REALM_ID VARCHAR(255),
    USERNAME VARCHAR(255),
    CREATED_TIMESTAMP BIGINT,
    SERVICE_ACCOUNT_CLIENT_LINK VARCHAR(255),
    NOT_BEFORE INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT CONSTRAINT_FB PRIMARY KEY (ID)
);
CREATE TABLE FEDERATED_IDENTITY (
    IDENTITY_PROVIDER VARCHAR(255) NOT NULL,
    REALM_ID VARCHAR(36),
    FEDERATED_USER_ID VARCHAR(255),
    FEDERATED_USERNAME VARCHAR(255),
    TOKEN TEXT,
    USER_ID VARCHAR(36) NOT NULL,
    CONSTRAINT CONSTRAINT_40 PRIMARY KEY (IDENTITY_PROVIDER, USER_ID),
    CONSTRAINT FK404288B92EF007A6 FOREIGN KEY (USER_ID) REFERENCES USER_ENTITY (ID)
);
";

/// The token JSON Keycloak's OIDC provider stores: Entra's response plus `accessTokenExpiration`.
fn keycloak_token(access: &str, refresh: Option<&str>, expires_at: Option<i64>) -> String {
    let mut token = json!({
        "access_token": access, "expires_in": 3599, "refresh_expires_in": 0, "token_type": "Bearer",
        "id_token": "eyJpZC10b2tlbi1mb3ItdGVzdHMifQ.e30.c2ln", "not-before-policy": 0,
        "scope": "https://app.vssps.visualstudio.com/user_impersonation",
    });
    if let Some(refresh) = refresh {
        token["refresh_token"] = json!(refresh);
    }
    if let Some(at) = expires_at {
        token["accessTokenExpiration"] = json!(at);
    }
    token.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_keycloaks_database_are_sealed_served_and_never_stored_in_plaintext() {
    // Arrange: the broker runs; Keycloak's database holds Alice's live token and Bob's expired one.
    let app = spawn_app(Backend::Postgres).await;
    let config = app_config(&app);
    let keycloak = TestDb::new(Backend::Postgres).await;
    let mut kc = sqlx::PgConnection::connect(&keycloak.url).await.expect("keycloak db");
    sqlx::raw_sql(KEYCLOAK_SCHEMA).execute(&mut kc).await.expect("schema");
    let realm_id = "c4a1e7f0-6f6e-4f55-8a3c-1f0a11a4a1d5";
    sqlx::raw_sql(&format!(
        "INSERT INTO REALM (ID, NAME, ENABLED) VALUES ('{realm_id}', 'allhands', TRUE), ('master', 'master', TRUE);
         INSERT INTO USER_ENTITY (ID, EMAIL, REALM_ID, USERNAME, ENABLED) VALUES
             ('{ALICE}', 'alice@contoso.onmicrosoft.com', '{realm_id}', 'alice@contoso.onmicrosoft.com', TRUE),
             ('{BOB}', 'bob@contoso.com', '{realm_id}', 'bob@contoso.com', FALSE),
             ('a0000000-0000-4000-8000-00000000ad00', NULL, 'master', 'admin', TRUE);"
    ))
    .execute(&mut kc)
    .await
    .expect("users");
    let now = time_now();
    let alice_access = "alice-access-token-from-keycloak-0123456789";
    let bob_refresh = app.entra.issue_refresh_token(&FakeUser::bob());
    let rows = [
        (
            ALICE,
            realm_id,
            FakeUser::alice().subject,
            keycloak_token(alice_access, Some("alice-refresh-token-kc-0123456789"), Some(now + 3000)),
        ),
        (
            BOB,
            realm_id,
            FakeUser::bob().subject,
            keycloak_token("bob-expired-access-token-0123456789", Some(&bob_refresh), None),
        ),
        (
            "a0000000-0000-4000-8000-00000000ad00",
            "master",
            "admin-subject".to_owned(),
            keycloak_token("master-realm-token-0123456789", None, Some(now + 3000)),
        ),
    ];
    for (user, realm, subject, token) in &rows {
        sqlx::query(
            "INSERT INTO FEDERATED_IDENTITY (IDENTITY_PROVIDER, REALM_ID, FEDERATED_USER_ID, FEDERATED_USERNAME, TOKEN, USER_ID)
             VALUES ('azure_devops', $1, $2, 'name', $3, $4)",
        )
        .bind(realm)
        .bind(subject)
        .bind(token)
        .bind(user)
        .execute(&mut kc)
        .await
        .expect("identity");
    }
    kc.close().await.expect("close");
    import(&config, &app.db.url, &fixture("same_file/allhands-realm.json"), &[]).await.ok("users first");
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let before = app.read_token(&service, ALICE, "azure_devops", "").await;
    assert_eq!(before.status(), StatusCode::NOT_FOUND, "linked, no token stored yet (and now cached as such)");

    // Act
    let ran =
        import(&config, &app.db.url, &fixture("same_file/allhands-realm.json"), &["--tokens-from", &keycloak.url])
            .await
            .ok("import with tokens");

    // Assert
    assert!(
        ran.stdout.contains("tokens: 2 sealed into the vault, 0 already held by the broker, 0 skipped"),
        "{}",
        ran.stdout
    );
    let alice = app.read_token(&service, ALICE, "azure_devops", "").await;
    assert_eq!(alice.status(), StatusCode::OK, "the cached absence was announced away");
    let alice: Value = alice.json().await.expect("json");
    assert_eq!(alice["access_token"], alice_access, "Keycloak's live token is served as it was");
    assert_eq!(alice["expires_at"], now + 3000);
    assert_eq!(app.entra.refresh_requests(), 0);
    // Bob was disabled in Keycloak, and so is here: his tokens are kept but not served.
    let refused = app.read_token(&service, BOB, "azure_devops", "").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "a disabled user's tokens are not served");
    assert!(app.store.set_user_enabled(BOB, true, now).await.expect("enable Bob"));
    let bob: Value = app.read_token(&service, BOB, "azure_devops", "").await.json().await.expect("json");
    assert!(bob["access_token"].is_string() && bob["access_token"] != "bob-expired-access-token-0123456789", "{bob}");
    assert_eq!(app.entra.refresh_requests(), 1, "Bob's token of unknown age was refreshed on first read");
    let mut cells = Vec::new();
    for table in [Table::VaultTokens, Table::FederatedIdentities, Table::Users, Table::AuditEvents] {
        cells.extend(app.store.dump_table(table).await.expect("dump"));
    }
    for (_, _, _, token) in &rows {
        let token: Value = serde_json::from_str(token).unwrap();
        for field in ["access_token", "refresh_token", "id_token"] {
            let Some(secret) = token[field].as_str() else { continue };
            let needle = &secret.as_bytes()[..24.min(secret.len())];
            let leaked = cells.iter().any(|cell| cell.windows(needle.len()).any(|w| w == needle));
            assert!(!leaked, "a {field} from Keycloak was found in plaintext in the broker's database");
            assert!(!ran.stdout.contains(secret) && !ran.stderr.contains(secret), "{field} printed");
        }
    }

    let again =
        import(&config, &app.db.url, &fixture("same_file/allhands-realm.json"), &["--tokens-from", &keycloak.url])
            .await
            .ok("second import with tokens");
    assert!(again.stdout.contains("tokens: 0 sealed into the vault, 2 already held by the broker"), "{}", again.stdout);
    // The second run made Bob disabled again, as Keycloak has him; his tokens stayed.
    assert!(app.store.set_user_enabled(BOB, true, now).await.expect("enable Bob"));
    let bob_again: Value = app.read_token(&service, BOB, "azure_devops", "").await.json().await.expect("json");
    assert_eq!(bob_again["access_token"], bob["access_token"], "the refreshed token was not overwritten");
}

fn time_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Keycloak's database on a private cluster that asks for passwords, as a production one does:
/// role `keycloak` with `password` owns database `keycloak`, whose tokens of Alice and Bob are
/// those the realm fixture links.
async fn password_protected_keycloak(password: &str) -> PrivatePostgres {
    let postgres = PrivatePostgres::start();
    let mut admin = sqlx::PgConnection::connect(&postgres.url()).await.expect("private cluster");
    for statement in
        [format!("CREATE ROLE keycloak LOGIN PASSWORD '{password}'"), "CREATE DATABASE keycloak OWNER keycloak".into()]
    {
        sqlx::raw_sql(&statement).execute(&mut admin).await.expect("role and database");
    }
    admin.close().await.expect("close");
    let mut kc = sqlx::PgConnection::connect(&postgres.url_for("keycloak", "keycloak")).await.expect("keycloak db");
    sqlx::raw_sql(KEYCLOAK_SCHEMA).execute(&mut kc).await.expect("schema");
    let realm_id = "c4a1e7f0-6f6e-4f55-8a3c-1f0a11a4a1d5";
    sqlx::raw_sql(&format!(
        "INSERT INTO REALM (ID, NAME, ENABLED) VALUES ('{realm_id}', 'allhands', TRUE);
         INSERT INTO USER_ENTITY (ID, REALM_ID, USERNAME, ENABLED) VALUES
             ('{ALICE}', '{realm_id}', 'alice', TRUE), ('{BOB}', '{realm_id}', 'bob', TRUE);"
    ))
    .execute(&mut kc)
    .await
    .expect("users");
    let expires_at = time_now() + 3000;
    for (user, subject) in [(ALICE, FakeUser::alice().subject), (BOB, FakeUser::bob().subject)] {
        sqlx::query(
            "INSERT INTO FEDERATED_IDENTITY (IDENTITY_PROVIDER, REALM_ID, FEDERATED_USER_ID, TOKEN, USER_ID)
             VALUES ('azure_devops', $1, $2, $3, $4)",
        )
        .bind(realm_id)
        .bind(subject)
        .bind(keycloak_token("access-token-0123456789", Some("refresh-token-0123456789"), Some(expires_at)))
        .bind(user)
        .execute(&mut kc)
        .await
        .expect("identity");
    }
    kc.close().await.expect("close");
    postgres.require_passwords();
    postgres
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_database_asking_for_a_password_take_it_from_pgpassword_or_a_file_not_the_url() {
    // Arrange
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    let password = "kc-db-password-7f3a9c";
    let keycloak = password_protected_keycloak(password).await;
    let url = keycloak.url_for("keycloak", "keycloak");
    let url_with_password = url.replacen("keycloak@", &format!("keycloak:{password}@"), 1);
    let password_file = scratch("keycloak-password");
    std::fs::write(&password_file, format!("{password}\n")).expect("password file");
    let file = password_file.to_string_lossy().into_owned();
    let export = fixture("same_file/allhands-realm.json");
    let tokens = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["import", "keycloak", &export.to_string_lossy(), "--tokens-from"].iter().map(|a| a.to_string()).collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let refused = [
        (
            tokens(&[&url]),
            None,
            "asks for a password and none was given: set PGPASSWORD or pass --tokens-from-password-file",
            "no password",
        ),
        (tokens(&[&url]), Some("wrong-password-1b2c"), "refused the password in PGPASSWORD", "a wrong PGPASSWORD"),
        (
            tokens(&[&url_with_password, "--tokens-from-password-file", &file]),
            None,
            "gives one too",
            "the password twice",
        ),
    ];
    let accepted = [
        (tokens(&[&url]), Some(password), "PGPASSWORD"),
        (
            tokens(&[&url, "--tokens-from-password-file", &file]),
            Some("wrong-password-1b2c"),
            "a file, before PGPASSWORD",
        ),
        (tokens(&[&url_with_password]), None, "the URL's own, with a warning"),
    ];

    // Act and Assert
    for (args, environment, expected, case) in refused {
        let db = TestDb::new(Backend::Postgres).await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = run_with_password(&config, &db.url, &args, environment).await;
        assert!(!ran.success, "{case}: must fail:\n{}", ran.stdout);
        assert!(ran.stderr.contains(expected), "{case}: stderr should say `{expected}`:\n{}", ran.stderr);
        assert!(!ran.stderr.contains(password) && !ran.stdout.contains(password), "{case}: the password printed");
        assert!(!ran.stderr.contains("wrong-password") && !ran.stdout.contains("wrong-password"), "{case}: printed");
        assert_eq!(users_in(&db.url).await, 0, "{case}: nothing imported");
    }
    for (args, environment, case) in accepted {
        let db = TestDb::new(Backend::Postgres).await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = run_with_password(&config, &db.url, &args, environment).await.ok(case);
        assert!(ran.stdout.contains("tokens: 2 sealed into the vault"), "{case}:\n{}", ran.stdout);
        assert!(!ran.stderr.contains(password) && !ran.stdout.contains(password), "{case}: the password printed");
        let warned = ran.stderr.contains("can see in `ps`")
            && ran.stderr.contains("PGPASSWORD")
            && ran.stderr.contains("--tokens-from-password-file");
        assert_eq!(
            warned,
            args.contains(&url_with_password.as_str()),
            "{case}: a warning only for a URL's password:\n{}",
            ran.stderr
        );
    }
    let _ = std::fs::remove_dir_all(password_file.parent().expect("dir"));
}

// ---------------------------------------------------------------------------------------------
// The import at scale: chunks written a set at a time, digests that spare unchanged users.

/// Users a generated export holds: more than a few chunks of 500.
const GENERATED: usize = 3_000;

/// The id of generated user `i`.
fn generated_id(i: usize) -> String {
    format!("3c0d0000-0000-4000-8000-{i:012}")
}

/// A realm file of `count` generated users, each with attributes and an `azure_devops` link as
/// Keycloak exports OpenHands' users; `last_name(i)` is user `i`'s last name.
fn generated_export(count: usize, last_name: impl Fn(usize) -> String) -> PathBuf {
    let users: Vec<Value> = (0..count)
        .map(|i| {
            let subject = format!("generated-subject-{i:08}");
            json!({
                "id": generated_id(i), "username": format!("user{i}@contoso.com"), "email": format!("user{i}@contoso.com"),
                "emailVerified": true, "enabled": true, "firstName": "User", "lastName": last_name(i),
                "createdTimestamp": 1_700_000_000_000_i64 + i as i64,
                "attributes": {"identity_provider": ["azure_devops"], "azure_devops_id": [subject], "teams": ["red", "blue"]},
                "federatedIdentities": [{"identityProvider": "azure_devops", "userId": subject, "userName": format!("user{i}@contoso.com")}]
            })
        })
        .collect();
    realm_file(users)
}

fn number(i: usize) -> String {
    format!("Number {i}")
}

/// `sql` run on the test database, statements separated by `;` (or inside a trigger's body).
async fn execute(backend: Backend, url: &str, sql: &str) {
    match backend {
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::raw_sql(sql).execute(&mut connection).await.expect("SQL runs");
            connection.close().await.expect("close");
        }
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::raw_sql(sql).execute(&mut connection).await.expect("SQL runs");
            connection.close().await.expect("close");
        }
    }
}

/// The two text columns of each row `sql` reads from the test database.
async fn pairs(backend: Backend, url: &str, sql: &str) -> Vec<(String, String)> {
    match backend {
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(url).await.expect("connect");
            let rows = sqlx::query_as(sql).fetch_all(&mut connection).await.expect("query");
            connection.close().await.expect("close");
            rows
        }
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(url).await.expect("connect");
            let rows = sqlx::query_as(sql).fetch_all(&mut connection).await.expect("query");
            connection.close().await.expect("close");
            rows
        }
    }
}

/// Every user's import digest, by user.
async fn digests(backend: Backend, url: &str) -> Vec<(String, String)> {
    pairs(backend, url, "SELECT user_id, digest FROM user_import_digests ORDER BY user_id").await
}

/// Triggers that log every row written from now on, `(table, user)`, into `rows_written`, so
/// that a test sees which users a run touched, whatever it reports.
async fn log_writes(backend: Backend, url: &str) {
    let tables = [
        ("users", "id"),
        ("user_attributes", "user_id"),
        ("federated_identities", "user_id"),
        ("user_import_digests", "user_id"),
        ("vault_tokens", "user_id"),
        ("sso_sessions", "user_id"),
    ];
    let mut sql = String::from("CREATE TABLE rows_written (tbl TEXT NOT NULL, user_id TEXT NOT NULL);\n");
    match backend {
        Backend::Postgres => {
            sql.push_str(
                "CREATE FUNCTION log_row_written() RETURNS trigger LANGUAGE plpgsql AS $$
                 DECLARE row_json jsonb;
                 BEGIN
                     IF TG_OP = 'DELETE' THEN row_json := to_jsonb(OLD); ELSE row_json := to_jsonb(NEW); END IF;
                     INSERT INTO rows_written VALUES (TG_TABLE_NAME || ' ' || TG_OP,
                                                      COALESCE(row_json ->> 'user_id', row_json ->> 'id'));
                     RETURN NULL;
                 END $$;\n",
            );
            for (table, _) in tables {
                sql.push_str(&format!(
                    "CREATE TRIGGER log_{table} AFTER INSERT OR UPDATE OR DELETE ON {table}
                     FOR EACH ROW EXECUTE FUNCTION log_row_written();\n"
                ));
            }
        }
        Backend::Sqlite => {
            for (table, column) in tables {
                for (event, row) in [("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")] {
                    sql.push_str(&format!(
                        "CREATE TRIGGER log_{table}_{event} AFTER {event} ON {table}
                         BEGIN INSERT INTO rows_written VALUES ('{table} {event}', {row}.{column}); END;\n"
                    ));
                }
            }
        }
    }
    execute(backend, url, &sql).await;
}

/// `(what, user)` of each row written since `log_writes`, in order.
async fn rows_written(backend: Backend, url: &str) -> Vec<(String, String)> {
    pairs(backend, url, "SELECT tbl, user_id FROM rows_written").await
}

both_backends!(one_user_changed_among_many_unchanged_is_the_only_one_written, |backend| async move {
    // Arrange: a realm imported once; then the export again with one user's last name changed.
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = config_for(&entra);
    let db = TestDb::new(backend).await;
    let changed = 1_234;
    let first = import(&config, &db.url, &generated_export(GENERATED, number), &[]).await.ok("first import");
    assert!(first.stdout.contains(&format!("{GENERATED} created, 0 updated")), "{}", first.stdout);
    let before = digests(backend, &db.url).await;
    assert_eq!(before.len(), GENERATED, "every user imported has a digest");
    log_writes(backend, &db.url).await;
    let realm = generated_export(GENERATED, |i| if i == changed { "Renamed".to_owned() } else { number(i) });

    // Act
    let again = import(&config, &db.url, &realm, &[]).await.ok("import with one change");
    let written = rows_written(backend, &db.url).await;
    let once_more = import(&config, &db.url, &realm, &[]).await.ok("the same import again");

    // Assert
    let summary = format!("0 created, 1 updated, {} unchanged, 0 skipped", GENERATED - 1);
    assert!(again.stdout.contains(&summary), "{}", again.stdout);
    let touched: std::collections::BTreeSet<&str> = written.iter().map(|(_, user)| user.as_str()).collect();
    assert_eq!(touched, [generated_id(changed).as_str()].into(), "only the changed user was written: {written:?}");
    assert!(written.iter().any(|(what, _)| what == "users UPDATE"), "its row was updated: {written:?}");
    assert!(!written.iter().any(|(what, _)| what.starts_with("user_attributes")), "attributes kept: {written:?}");
    let after = digests(backend, &db.url).await;
    let differing: Vec<&str> = before.iter().zip(&after).filter(|(b, a)| b != a).map(|(b, _)| b.0.as_str()).collect();
    assert_eq!(differing, [generated_id(changed).as_str()], "only the changed user's digest moved");
    assert!(once_more.stdout.contains(&format!("0 updated, {GENERATED} unchanged")), "{}", once_more.stdout);
    assert_eq!(rows_written(backend, &db.url).await, written, "an unchanged run writes no row at all");
    let store = store_of(&db.url).await;
    let (_, exported) = export(&config, &db.url).await;
    let renamed = exported["users"].as_array().expect("users").iter().find(|u| u["id"] == generated_id(changed));
    assert_eq!(renamed.map(|u| u["lastName"].clone()), Some(json!("Renamed")));
    assert_eq!(store.list_audit(Some("keycloak_import")).await.expect("audit").len(), 3, "each run audited once");
    store.close().await;
});

both_backends!(a_change_made_after_an_import_is_undone_by_the_next_import, |backend| async move {
    // Arrange: users imported, then changed by others (an administrator, a sign-in's attributes,
    // an unlink): each change deletes the user's digest, so the next run compares that user.
    let app = TestApp::builder(backend).spawn().await;
    let config = app_config(&app);
    let realm = generated_export(600, number);
    import(&config, &app.db.url, &realm, &[]).await.ok("import");
    let now = time_now();
    assert!(app.store.set_user_enabled(&generated_id(1), false, now).await.expect("disable"));
    let attributes = [identity_broker::store::AttributeValue { name: "team".into(), value: "green".into() }];
    app.store.set_user_attributes(&generated_id(2), &attributes).await.expect("attributes");
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let unlinked = app
        .api
        .delete(format!("{}{}", app.internal, user_token_path(&generated_id(3), "azure_devops")))
        .bearer_auth(&service)
        .send()
        .await
        .expect("unlink");
    assert!(unlinked.status().is_success(), "{}", unlinked.status());
    let remaining = digests(backend, &app.db.url).await;
    let missing: Vec<String> =
        (0..600).map(generated_id).filter(|id| !remaining.iter().any(|(u, _)| u == id)).collect();
    assert_eq!(missing, [generated_id(1), generated_id(2), generated_id(3)], "each change dropped one digest");

    // Act
    let again = import(&config, &app.db.url, &realm, &[]).await.ok("import again");

    // Assert
    assert!(again.stdout.contains("0 created, 3 updated, 597 unchanged"), "{}", again.stdout);
    assert_eq!(digests(backend, &app.db.url).await.len(), 600);
    let (_, exported) = export(&config, &app.db.url).await;
    let user =
        |i: usize| exported["users"].as_array().expect("users").iter().find(|u| u["id"] == generated_id(i)).cloned();
    assert_eq!(user(1).map(|u| u["enabled"].clone()), Some(json!(true)), "enabled again, as the export says");
    assert_eq!(user(2).map(|u| u["attributes"]["teams"].clone()), Some(json!(["red", "blue"])));
    assert_eq!(user(3).map(|u| u["federatedIdentities"].as_array().map(Vec::len)), Some(Some(1)), "linked again");
});

/// `import keycloak <source>` started, not awaited: its standard error is piped, one line at a time.
fn start_import(config: &ConfigFile, database: &str, source: &Path) -> tokio::process::Child {
    tokio::process::Command::new(BINARY)
        .args(["import", "keycloak"])
        .arg(source)
        .arg("--config")
        .arg(config.path())
        .env("DATABASE_URL", database)
        .env("RUST_LOG", "warn")
        .env_remove("BROKER_ENCRYPTION_KEYS")
        .current_dir(config.dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the import starts")
}

/// What a started import printed once it ended.
async fn finish(child: tokio::process::Child) -> Ran {
    let output = child.wait_with_output().await.expect("the import ends");
    Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

both_backends!(an_import_killed_midway_keeps_whole_chunks_and_a_rerun_completes_it, |backend| async move {
    use tokio::io::AsyncBufReadExt as _;

    // Arrange: enough users that the first progress line (5,000) comes long before the end.
    let entra = FakeEntra::start(UPSTREAM_CLIENT_ID, UPSTREAM_SECRET).await;
    let config = ConfigFile::write(&config_for(&entra));
    let db = TestDb::new(backend).await;
    let total = 20_000;
    let realm = generated_export(total, number);

    // Act: kill the import at its first progress line, then run it again.
    let mut child = start_import(&config, &db.url, &realm);
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    while let Some(line) = lines.next_line().await.expect("stderr") {
        if line.contains("users imported") {
            break;
        }
    }
    child.kill().await.expect("killed");
    let kept = users_in(&db.url).await;
    let rerun = import(&config_for(&entra), &db.url, &realm, &[]).await.ok("the import run again");

    // Assert
    assert!(kept >= 5_000, "the chunks committed before the progress line stay: {kept}");
    assert_eq!(kept % 500, 0, "a chunk lands whole or not at all: {kept} users");
    let summary = format!("{} created, 0 updated, {kept} unchanged, 0 skipped", total as i64 - kept);
    assert!(rerun.stdout.contains(&summary), "{summary}:\n{}", rerun.stdout);
    assert_eq!(users_in(&db.url).await, total as i64);
    assert_eq!(digests(backend, &db.url).await.len(), total, "every user has its digest");
    let again = import(&config_for(&entra), &db.url, &realm, &[]).await.ok("a third run");
    assert!(again.stdout.contains(&format!("0 created, 0 updated, {total} unchanged")), "{}", again.stdout);
});

/// An export in which the race happens: `blocker` (stored, changed here so that the chunk reads
/// and locks it), `racer` (linked to Alice's Entra account, not yet signed in) and `fillers` more
/// users, the first chunk holding the first two.
fn race_export(blocker_name: &str, fillers: usize) -> PathBuf {
    let mut users = vec![
        json!({"id": BOB, "username": "blocker", "lastName": blocker_name}),
        json!({"id": ALICE, "username": "racer", "federatedIdentities": [
            {"identityProvider": "azure_devops", "userId": FakeUser::alice().subject}]}),
    ];
    users.extend((0..fillers).map(|i| json!({"id": generated_id(i), "username": format!("filler{i}")})));
    realm_file(users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_racing_a_chunk_restarts_that_chunk_only() {
    // Arrange: the blocker imported; every row insert into `users` from now on counted, including
    // those of a transaction rolled back (a sequence does not roll back).
    let app = spawn_app(Backend::Postgres).await;
    let config = ConfigFile::write(&app_config(&app));
    let blocker = realm_file(vec![json!({"id": BOB, "username": "blocker", "lastName": "Before"})]);
    import(&app_config(&app), &app.db.url, &blocker, &[]).await.ok("the blocker imported");
    execute(
        Backend::Postgres,
        &app.db.url,
        "CREATE SEQUENCE user_inserts;
         CREATE FUNCTION count_user_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM nextval('user_inserts'); RETURN NULL; END $$;
         CREATE TRIGGER count_user_inserts AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION count_user_insert();",
    )
    .await;
    let fillers = 1_298;
    // The test holds the blocker's row, as a writer would.
    let mut holder = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
    sqlx::raw_sql(&format!("BEGIN; SELECT id FROM users WHERE id = '{BOB}' FOR UPDATE"))
        .execute(&mut holder)
        .await
        .expect("lock");

    // Act: the import reads the upstream accounts (no one holds Alice's), then waits for the
    // blocker; meanwhile Alice signs in through the broker and becomes a new user.
    let child = start_import(&config, &app.db.url, &race_export("After", fillers));
    let mut watcher = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
    for _ in 0..6_000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'",
        )
        .fetch_one(&mut watcher)
        .await
        .expect("activity");
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let alice = user_id_of(&app.tokens().await);
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.expect("release");
    let ran = finish(child).await.ok("the import");

    // Assert
    assert_ne!(alice, ALICE, "Alice signed in before her Keycloak account was linked: a new user");
    let line = ran.stdout.lines().find(|l| l.contains(&format!("skipped user {ALICE}"))).unwrap_or_default();
    assert!(line.contains(&format!("already linked to user {alice}")), "{}", ran.stdout);
    let summary = format!("{fillers} created, 1 updated, 0 unchanged, 1 skipped");
    assert!(ran.stdout.contains(&summary), "{summary}:\n{}", ran.stdout);
    let inserts: i64 =
        sqlx::query_scalar("SELECT last_value FROM user_inserts").fetch_one(&mut watcher).await.expect("seq");
    // Alice's sign-in; the first chunk's new users twice (the racer and 498 fillers, then the
    // 498 fillers); the other chunks' once.
    let expected = 1 + 499 + 498 + (fillers as i64 - 498);
    assert_eq!(inserts, expected, "only the raced chunk was written twice");
    assert_eq!(user_id_of(&app.tokens().await), alice, "Alice still lands where she did");
}

both_backends!(a_sign_in_during_an_import_leaves_one_user_with_the_upstream_account, |backend| async move {
    // Arrange
    let app = spawn_app(backend).await;
    let config = ConfigFile::write(&app_config(&app));
    let realm = race_export("Any", 2_000);

    // Act: the sign-in lands before, during or after the racer's chunk.
    let child = start_import(&config, &app.db.url, &realm);
    let signed_in = user_id_of(&app.tokens().await);
    let ran = finish(child).await.ok("the import");

    // Assert: either way one user holds Alice's account, and the import said which.
    let holder = app.store.find_identity_by_subject("azure_devops", &FakeUser::alice().subject).await.expect("find");
    assert_eq!(holder.map(|identity| identity.user_id), Some(signed_in.clone()));
    if signed_in == ALICE {
        assert!(ran.stdout.contains("2002 created, 0 updated, 0 unchanged, 0 skipped"), "{}", ran.stdout);
    } else {
        let line = ran.stdout.lines().find(|l| l.contains(&format!("skipped user {ALICE}"))).unwrap_or_default();
        assert!(line.contains(&format!("already linked to user {signed_in}")), "{}", ran.stdout);
    }
});
