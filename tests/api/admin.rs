//! Keycloak's admin REST API: python-keycloak's `KeycloakAdmin` built as OpenHands builds it,
//! against the real server on both databases; the administrator's sign-in slowed down after
//! failures and audited; the API off without a password; its OpenAPI document held against
//! the router and driven through schemathesis.

use identity_broker::http::paths;
use identity_broker::store::{AttributeValue, AuditEvent, Table};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::both_backends;
use crate::fuzz::schemathesis;
use crate::helpers::*;
use crate::openapi::route_answered;
use crate::python::python_env;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const VIEWER_ID: &str = "user-viewer";
pub const VIEWER_SECRET: &str = "user-viewer-secret";
const MANAGER_ID: &str = "user-manager";
const MANAGER_SECRET: &str = "user-manager-secret";
const SEED_PREFIX: &str = "seed";
/// More than two pages of python-keycloak's 100.
const SEEDED: i64 = 250;
const ADMIN_DOCUMENT: &str = include_str!("../../src/http/admin_openapi.json");

/// `[admin]` on, with a token life of `lifespan` seconds, and two service accounts with
/// realm-management roles.
pub fn admin_toml(lifespan: i64) -> String {
    format!(
        r#"
[admin]
password = "{ADMIN_PASSWORD}"
access_token_lifespan_seconds = {lifespan}

[[service_accounts]]
client_id = "{VIEWER_ID}"
client_secret = "{VIEWER_SECRET}"
admin_roles = ["view-users"]

[[service_accounts]]
client_id = "{MANAGER_ID}"
client_secret = "{MANAGER_SECRET}"
admin_roles = ["manage-users"]
"#
    )
}

pub fn master_token_url(app: &TestApp) -> String {
    app.url(&paths::TOKEN.replace("{realm}", paths::MASTER_REALM))
}

/// The password grant exactly as python-keycloak sends it.
pub async fn admin_sign_in(app: &TestApp, password: &str) -> reqwest::Response {
    let form = [
        ("username", "admin"),
        ("password", password),
        ("client_id", "admin-cli"),
        ("grant_type", "password"),
        ("code", ""),
        ("redirect_uri", ""),
        ("scope", "openid"),
    ];
    app.api.post(master_token_url(app)).form(&form).send().await.expect("master token")
}

pub async fn admin_token(app: &TestApp) -> String {
    let response = admin_sign_in(app, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "the administrator signs in");
    let body: Value = response.json().await.expect("json");
    access_token(&body).to_owned()
}

pub fn admin_url(app: &TestApp, template: &str) -> String {
    app.url(&template.replace("{realm}", REALM_NAME))
}

pub async fn audited(app: &TestApp, kind: &str) -> Vec<AuditEvent> {
    app.state.audit.flush().await;
    app.store.list_audit(Some(kind)).await.expect("audit events")
}

both_backends!(python_keycloak_admin_as_openhands_uses_it, |backend| async move {
    let app = TestApp::builder(backend).extra(&admin_toml(6)).spawn().await;
    let tokens = app.tokens().await;
    let user_id = user_id_of(&tokens);
    let identity = app.identity(&user_id, "azure_devops").await;
    // What sign-in writes as OpenHands' realm maps it.
    let attributes = [
        AttributeValue { name: "azure_devops_id".into(), value: identity.subject.clone() },
        AttributeValue { name: "identity_provider".into(), value: "azure_devops".into() },
    ];
    app.store.set_user_attributes(&user_id, &attributes).await.unwrap();
    app.store.seed_users(1, SEEDED, SEED_PREFIX, app.state.clock.now()).await.unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/keycloak_admin.py");
    let server_url = format!("{}/", app.public);
    let seeded = SEEDED.to_string();
    let output = tokio::process::Command::new(python_env().await.python())
        .args([script, "--server-url", &server_url, "--realm", REALM_NAME, "--password", ADMIN_PASSWORD])
        .args(["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
        .args(["--user-id", &user_id, "--user-subject", &identity.subject])
        .args(["--user-access-token", access_token(&tokens)])
        .args(["--user-refresh-token", tokens["refresh_token"].as_str().unwrap()])
        .args(["--viewer-id", VIEWER_ID, "--viewer-secret", VIEWER_SECRET])
        .args(["--manager-id", MANAGER_ID, "--manager-secret", MANAGER_SECRET])
        .args(["--prefix", SEED_PREFIX, "--seeded", &seeded])
        .output()
        .await
        .expect("the environment's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "python-keycloak's admin client failed:\n{stdout}\n{stderr}");

    // The sign-ins, the refreshes and every write are in the audit trail, and no secret is.
    let logins = audited(&app, "admin_login").await;
    let grants =
        |grant: &str, outcome: &str| logins.iter().filter(|e| e.detail.contains(grant) && e.outcome == outcome).count();
    assert!(grants("\"password\"", "success") >= 2, "password sign-ins: {logins:?}");
    assert_eq!(grants("\"password\"", "failure"), 1, "the one wrong password: {logins:?}");
    assert!(grants("refresh_token", "success") >= 1, "refreshes: {logins:?}");
    assert_eq!(grants("refresh_token", "failure"), 1, "the refused refresh: {logins:?}");
    assert!(!audited(&app, "admin_user_update").await.is_empty());
    assert_eq!(audited(&app, "admin_user_delete").await.len(), 2, "two users deleted");
    let denied = audited(&app, "admin_write").await;
    assert!(denied.iter().all(|e| e.outcome == "forbidden") && denied.len() >= 2, "{denied:?}");
    assert!(denied.iter().any(|e| e.client_id.as_deref() == Some(VIEWER_ID)), "{denied:?}");
    let logouts = audited(&app, "logout").await;
    assert!(logouts.iter().any(|e| e.user_id.as_deref() == Some(user_id.as_str()) && e.detail.contains("admin")));
    let unlinks = audited(&app, "unlink").await;
    assert!(unlinks.iter().any(|e| e.outcome == "unlinked" && e.detail.contains("admin")), "{unlinks:?}");
    for cell in app.store.dump_table(Table::AuditEvents).await.unwrap() {
        let text = String::from_utf8_lossy(&cell);
        assert!(!text.contains(ADMIN_PASSWORD), "the admin password in the audit trail: {text}");
    }
    assert_eq!(app.count(Table::VaultTokens).await, 0, "the unlink erased the sealed tokens");
});

both_backends!(repeated_failures_slow_the_administrator_down_but_never_lock_them_out, |backend| async move {
    let app = TestApp::builder(backend).extra(&admin_toml(60)).spawn().await;

    // Six wrong passwords, each after any wait has ended, so that each is checked.
    for attempt in 1..=6 {
        if attempt > 1 {
            app.state.clock.advance(61);
        }
        let response = admin_sign_in(&app, "wrong-password").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(body["error_description"], "Invalid user credentials");
    }
    // Now an 8-second wait runs: even the right password is not checked until it ends.
    let during = admin_sign_in(&app, ADMIN_PASSWORD).await;
    assert_eq!(during.status(), StatusCode::UNAUTHORIZED, "the right password during the wait");
    app.state.clock.advance(9);
    assert_eq!(admin_sign_in(&app, ADMIN_PASSWORD).await.status(), StatusCode::OK, "after the wait");

    // Many failures: the wait grows but stays capped, and it ends.
    for _ in 0..40 {
        admin_sign_in(&app, "wrong-password").await;
        app.state.clock.advance(70);
    }
    assert_eq!(admin_sign_in(&app, ADMIN_PASSWORD).await.status(), StatusCode::OK, "never locked out for good");

    let logins = audited(&app, "admin_login").await;
    let outcome = |o: &str| logins.iter().filter(|e| e.outcome == o).count();
    // A stranger's failures are folded: the first of a minute is written at once, its repeats
    // counted into one row when the minute ends.
    let failures: Vec<_> = logins.iter().filter(|e| e.outcome == "failure").collect();
    assert!(failures.len() <= 2, "the first at once, its repeats in one row when the minute ends: {failures:?}");
    assert!(logins.iter().all(|e| e.outcome == "success" || e.detail.contains("\"client\":\"127.0.0.1\"")));
    assert_eq!(outcome("throttled"), 1, "the attempt during the wait is audited as throttled");
    assert_eq!(outcome("success"), 2);
    assert!(logins.iter().all(|e| e.client_id.as_deref() == Some("admin-cli")));
    for event in &logins {
        assert!(!event.detail.contains(ADMIN_PASSWORD) && !event.detail.contains("wrong-password"), "{event:?}");
    }
});

both_backends!(admin_tokens_reach_only_the_admin_api_and_other_tokens_do_not, |backend| async move {
    let app = TestApp::builder(backend).extra(&admin_toml(60)).spawn().await;
    let admin = admin_token(&app).await;
    let user = app.tokens().await;
    let users = admin_url(&app, paths::ADMIN_USERS);

    let answer = app.api.get(&users).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK, "a master-realm token is accepted by the realm's admin API");
    let cases = [
        (None, StatusCode::UNAUTHORIZED, "no bearer"),
        (Some("garbage"), StatusCode::UNAUTHORIZED, "a bad bearer"),
        (Some(access_token(&user)), StatusCode::FORBIDDEN, "a user's own token"),
    ];
    for (bearer, status, what) in cases {
        let mut request = app.api.get(&users);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), status, "{what}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["error"].is_string(), "{what}: Keycloak's {{\"error\"}}: {body}");
    }
    // The admin token is not a user's: userinfo and the broker token endpoint refuse it.
    assert_eq!(app.userinfo(&admin).await.status(), StatusCode::UNAUTHORIZED, "userinfo refuses the admin token");
    // Another realm: 404; the master realm's token endpoint refuses other clients.
    let other = app.api.get(app.url("/admin/realms/elsewhere/users")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let foreign_client =
        [("username", "admin"), ("password", ADMIN_PASSWORD), ("client_id", CLIENT_ID), ("grant_type", "password")];
    let refused = app.api.post(master_token_url(&app)).form(&foreign_client).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "only admin-cli signs in on master");
    // An expired refresh token: python-keycloak matches this text.
    let signed: Value = admin_sign_in(&app, ADMIN_PASSWORD).await.json().await.unwrap();
    app.state.clock.advance(1801);
    let form = [
        ("client_id", "admin-cli"),
        ("grant_type", "refresh_token"),
        ("refresh_token", signed["refresh_token"].as_str().unwrap()),
    ];
    let expired = app.api.post(master_token_url(&app)).form(&form).send().await.unwrap();
    assert_eq!(expired.status(), StatusCode::BAD_REQUEST);
    assert!(expired.text().await.unwrap().contains("Token is not active"));
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_password_the_admin_api_is_not_there() {
    let app = spawn_app(Backend::Sqlite).await;
    let answer = admin_sign_in(&app, "anything").await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND, "no master realm");
    let users = app.api.get(admin_url(&app, paths::ADMIN_USERS)).send().await.unwrap();
    assert_eq!(users.status(), StatusCode::NOT_FOUND, "no admin API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_openapi_document_describes_exactly_the_admin_routes() {
    let app = TestApp::builder(Backend::Sqlite).extra(&admin_toml(60)).spawn().await;
    let admin = admin_token(&app).await;
    let document: Value = serde_json::from_str(ADMIN_DOCUMENT).expect("the document is JSON");
    let documented = document["paths"].as_object().expect("the document has paths");
    let routes: Vec<&str> = paths::ALL.iter().copied().filter(|route| route.starts_with("/admin/")).collect();
    assert!(routes.len() >= 8, "the admin routes are in paths::ALL: {routes:?}");
    for route in &routes {
        assert!(documented.contains_key(*route), "{route} is served but not documented");
    }
    assert_eq!(documented.len(), routes.len(), "every documented path is an admin route");
    for (template, operations) in documented {
        let path =
            template.replace("{realm}", REALM_NAME).replace("{user_id}", "u1").replace("{alias}", "azure_devops");
        for method in ["get", "post", "put", "patch", "delete"] {
            let response = app
                .api
                .request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), app.url(&path))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let served = route_answered(&response);
            let is_documented = operations.get(method).is_some();
            assert_eq!(served, is_documented, "{method} {template}: served {served}, documented {is_documented}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_in_the_admin_api() {
    let app = TestApp::builder(Backend::Postgres).extra(&admin_toml(3600)).spawn().await;
    // A signed-in user with an identity, whose id the stateful phase finds in the listings.
    let _ = app.tokens().await;
    app.store.seed_users(1, 20, SEED_PREFIX, app.state.clock.now()).await.unwrap();
    let admin = admin_token(&app).await;
    // The document as served, with the realm and some user ids pinned, so that the fuzzer
    // reaches the users instead of hearing `Realm not found` and `User not found` only.
    let mut document: Value = serde_json::from_str(ADMIN_DOCUMENT).unwrap();
    let parameters = &mut document["components"]["parameters"];
    parameters["Realm"]["schema"] = serde_json::json!({ "type": "string", "enum": [REALM_NAME] });
    let ids: Vec<String> = (1..=20).map(|i| format!("00000000-0000-4000-8000-{}", 100_000_000_000_i64 + i)).collect();
    parameters["UserId"]["schema"] = serde_json::json!({ "type": "string", "enum": ids });
    let schema = std::env::temp_dir().join(format!("admin-openapi-{}.json", std::process::id()));
    std::fs::write(&schema, document.to_string()).unwrap();

    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,\
                  ignored_auth";
    let options = [
        "--checks",
        checks,
        // It sends real mail, and without `[smtp]` answers 500 as Keycloak does; its answers
        // are held in tests/api/email_verification.rs against a real SMTP server.
        "--exclude-operation-id",
        "sendVerifyEmail",
        // One worker: with two, hypothesis' `lambda_sources` parses its own sources from two
        // threads at once and CPython 3.11 fails with an AST recursion-depth mismatch (a fault of
        // the tool, not of the server).
        "--workers",
        "1",
    ];
    schemathesis(&schema.to_string_lossy(), &app.public, &admin, &options).await;
    let _ = std::fs::remove_file(&schema);
}
