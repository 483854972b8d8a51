//! Users created through the admin API with a password, as OpenHands' organization
//! provisioning creates them (python-keycloak's `create_user`), the administrator's password
//! resets, and the password grant those users get their tokens with: Keycloak's answers,
//! Argon2id hashes, nothing stored on a refusal, and a lockout that never shows.

use identity_broker::http::paths;
use identity_broker::store::{AuditEvent, Table};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{ADMIN_PASSWORD, VIEWER_ID, VIEWER_SECRET, admin_token, admin_toml, admin_url, audited};
use crate::both_backends;
use crate::helpers::*;
use crate::python::python_env;

const USER_PASSWORD: &str = "Provisioned-password-7";

/// `[[clients]] direct_access_grants = true` and `roles_claim = true` for the first client
/// (OpenHands', as its `ROLE_CHECK_ENABLED` needs), and `realm.brute_force.failures` as given.
fn with_direct_access_grants(toml: String, failures: u32) -> String {
    let first_client = format!("client_id = \"{CLIENT_ID}\"\n");
    assert!(toml.contains(&first_client), "the settings name OpenHands' client");
    toml.replacen(&first_client, &format!("{first_client}direct_access_grants = true\nroles_claim = true\n"), 1)
        + &format!("\n[realm.brute_force]\nfailures = {failures}\n")
}

async fn admin_app(backend: Backend) -> TestApp {
    TestApp::builder(backend).extra(&admin_toml(300)).edited(|toml| with_direct_access_grants(toml, 30)).spawn().await
}

/// OpenHands' `create_keycloak_user` body.
fn provisioning(email: &str, password: &str) -> Value {
    json!({
        "email": email,
        "username": email,
        "enabled": true,
        "emailVerified": true,
        "credentials": [{"type": "password", "value": password, "temporary": false}],
    })
}

async fn create(app: &TestApp, bearer: &str, body: &Value) -> reqwest::Response {
    app.api.post(admin_url(app, paths::ADMIN_USERS)).bearer_auth(bearer).json(body).send().await.unwrap()
}

async fn reset(app: &TestApp, bearer: &str, user_id: &str, body: &str) -> reqwest::Response {
    let url = admin_url(app, paths::ADMIN_USER_RESET_PASSWORD).replace("{user_id}", user_id);
    app.api
        .put(url)
        .bearer_auth(bearer)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn get_user(app: &TestApp, bearer: &str, user_id: &str) -> Value {
    let url = admin_url(app, paths::ADMIN_USER).replace("{user_id}", user_id);
    let response = app.api.get(url).bearer_auth(bearer).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn error_message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("a JSON error");
    body["errorMessage"].as_str().unwrap_or_default().to_owned()
}

/// Every text cell of every table that could hold a password, and the audit trail.
async fn assert_password_stored_nowhere(app: &TestApp, password: &str) {
    app.state.audit.flush().await;
    for table in [Table::Users, Table::UserPasswords, Table::UserRequiredActions, Table::AuditEvents] {
        for cell in app.store.dump_table(table).await.unwrap() {
            let text = String::from_utf8_lossy(&cell);
            assert!(!text.contains(password), "the password in {table:?}: {text}");
        }
    }
}

both_backends!(openhands_provisions_users_through_python_keycloak, |backend| async move {
    // Arrange
    let app = admin_app(backend).await;
    let email = "New.Member@Contoso.com";

    // Act: OpenHands' calls, through python-keycloak itself.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/keycloak_provision.py");
    let server_url = format!("{}/", app.public);
    let output = tokio::process::Command::new(python_env().await.python())
        .args([script, "--server-url", &server_url, "--realm", REALM_NAME, "--password", ADMIN_PASSWORD])
        .args(["--email", email, "--user-password", USER_PASSWORD])
        .args(["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
        .output()
        .await
        .expect("the environment's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "provisioning through python-keycloak failed:\n{stdout}\n{stderr}");

    // Assert: an Argon2id hash with OWASP's parameters is stored, never the password.
    let user_id = stdout.lines().find_map(|line| line.strip_prefix("USER_ID=")).expect("the script names the user");
    let hash = app.store.password_hash(user_id).await.unwrap().expect("a password is stored");
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    assert_password_stored_nowhere(&app, USER_PASSWORD).await;
    let created = audited(&app, "admin_user_create").await;
    let outcomes: Vec<&str> = created.iter().map(|e: &AuditEvent| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["created", "username_taken", "email_taken", "created"], "{created:?}");
    assert_eq!(audited(&app, "admin_password_reset").await.len(), 2);
});

both_backends!(a_created_user_answers_as_keycloak_and_is_found_as_any_other, |backend| async move {
    // Arrange
    let app = admin_app(backend).await;
    let admin = admin_token(&app).await;
    let body = json!({
        "username": "Ann.Lee",
        "email": "ann@example.com",
        "firstName": "Ann",
        "lastName": "Lee",
        "attributes": {"team": ["blue", "green"]},
        "requiredActions": ["VERIFY_EMAIL"],
        "credentials": [{"type": "password", "value": USER_PASSWORD, "temporary": true}],
        "realmRoles": ["ignored on creation, as Keycloak ignores it"],
    });

    // Act
    let response = create(&app, &admin, &body).await;

    // Assert
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let prefix = format!("{}/admin/realms/{REALM_NAME}/users/", app.public);
    let user_id = location.strip_prefix(&prefix).unwrap_or_else(|| panic!("{location} under {prefix}"));
    let user = get_user(&app, &admin, user_id).await;
    assert_eq!(user["username"], "ann.lee", "Keycloak keeps usernames in lower case");
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!((user["enabled"].as_bool(), user["emailVerified"].as_bool()), (Some(false), Some(false)), "{user}");
    assert_eq!(user["attributes"]["team"], json!(["blue", "green"]));
    assert_eq!(user["requiredActions"], json!(["UPDATE_PASSWORD", "VERIFY_EMAIL"]), "a temporary password");
    let found = app
        .api
        .get(admin_url(&app, paths::ADMIN_USERS))
        .query(&[("q", "email:ANN@example.com")])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let found: Value = found.json().await.unwrap();
    assert_eq!(found[0]["id"], user_id, "q=email: finds the created user");
    assert_password_stored_nowhere(&app, USER_PASSWORD).await;
});

both_backends!(bad_creations_are_refused_with_keycloaks_answer_and_store_nothing, |backend| async move {
    // Arrange: one user holds a username and an e-mail.
    let app = admin_app(backend).await;
    let admin = admin_token(&app).await;
    let taken = create(&app, &admin, &provisioning("held@example.com", USER_PASSWORD)).await;
    assert_eq!(taken.status(), StatusCode::CREATED);
    let users = app.count(Table::Users).await;
    let cases: [(&str, Value, StatusCode, &str); 13] = [
        (
            "the same username",
            provisioning("held@example.com", "x"),
            StatusCode::CONFLICT,
            "User exists with same username",
        ),
        (
            "the username in other case",
            provisioning("HELD@example.com", "x"),
            StatusCode::CONFLICT,
            "User exists with same username",
        ),
        (
            "another username, the same e-mail",
            json!({"username": "other", "email": "Held@Example.com"}),
            StatusCode::CONFLICT,
            "User exists with same email",
        ),
        ("no username", json!({"email": "a@example.com"}), StatusCode::BAD_REQUEST, "username"),
        ("a username with a space", json!({"username": "a b"}), StatusCode::BAD_REQUEST, "username"),
        (
            "an e-mail that is none",
            json!({"username": "a", "email": "not-an-address"}),
            StatusCode::BAD_REQUEST,
            "invalid-email",
        ),
        (
            "a password credential without value",
            json!({"username": "a", "credentials": [{"type": "password", "temporary": false}]}),
            StatusCode::BAD_REQUEST,
            "No password provided",
        ),
        (
            "an empty password",
            json!({"username": "a", "credentials": [{"type": "password", "value": " "}]}),
            StatusCode::BAD_REQUEST,
            "Empty password",
        ),
        (
            "a credential of another type",
            json!({"username": "a", "credentials": [{"type": "otp", "value": "123456"}]}),
            StatusCode::BAD_REQUEST,
            "unsupported credential type",
        ),
        (
            "two passwords",
            json!({"username": "a", "credentials": [{"value": "one"}, {"value": "two"}]}),
            StatusCode::BAD_REQUEST,
            "at most one credential",
        ),
        (
            "an unknown required action",
            json!({"username": "a", "requiredActions": ["DANCE"]}),
            StatusCode::BAD_REQUEST,
            "Unknown required action: DANCE",
        ),
        ("groups", json!({"username": "a", "groups": ["/admins"]}), StatusCode::BAD_REQUEST, "groups"),
        ("not a representation", json!(["username", "a"]), StatusCode::BAD_REQUEST, "unrecognized user representation"),
    ];

    for (case, body, status, words) in cases {
        // Act
        let response = create(&app, &admin, &body).await;

        // Assert
        assert_eq!(response.status(), status, "{case}");
        let message = error_message(response).await;
        assert!(message.contains(words), "{case}: {message:?} must say {words:?}");
    }
    assert_eq!(app.count(Table::Users).await, users, "no refused creation stored a user");
    assert_eq!(app.count(Table::UserPasswords).await, 1, "nor a password");
    let viewer = app.service_token(VIEWER_ID, VIEWER_SECRET).await;
    let forbidden = create(&app, &viewer, &provisioning("viewer@example.com", "x")).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN, "view-users may not create");
    assert_eq!(app.count(Table::Users).await, users);
    let unparsable = create(&app, &admin, &json!({"username": "a", "credentials": "hunter2-secret"})).await;
    let message = error_message(unparsable).await;
    assert!(!message.contains("hunter2-secret"), "a refusal never repeats the body: {message}");
});

both_backends!(reset_password_replaces_the_hash_and_sets_or_lifts_update_password, |backend| async move {
    // Arrange
    let app = admin_app(backend).await;
    let admin = admin_token(&app).await;
    let created = create(&app, &admin, &provisioning("reset@example.com", USER_PASSWORD)).await;
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let user_id = location.rsplit('/').next().unwrap().to_owned();
    let first_hash = app.store.password_hash(&user_id).await.unwrap().unwrap();

    // Act + Assert: a temporary password, then a permanent one.
    let temporary =
        reset(&app, &admin, &user_id, r#"{"type":"password","value":"Temporary-1","temporary":true}"#).await;
    assert_eq!(temporary.status(), StatusCode::NO_CONTENT);
    assert_eq!(get_user(&app, &admin, &user_id).await["requiredActions"], json!(["UPDATE_PASSWORD"]));
    let second_hash = app.store.password_hash(&user_id).await.unwrap().unwrap();
    assert_ne!(first_hash, second_hash, "a new hash");
    let permanent =
        reset(&app, &admin, &user_id, r#"{"type":"password","value":"Permanent-2","temporary":false}"#).await;
    assert_eq!(permanent.status(), StatusCode::NO_CONTENT);
    assert_eq!(get_user(&app, &admin, &user_id).await["requiredActions"], json!([]));

    // Bad input changes nothing.
    let third_hash = app.store.password_hash(&user_id).await.unwrap().unwrap();
    let cases = [
        ("no value", r#"{"type":"password"}"#, StatusCode::BAD_REQUEST, "No password provided"),
        ("another type", r#"{"type":"otp","value":"1"}"#, StatusCode::BAD_REQUEST, "unsupported credential type"),
        ("not JSON", "password=1", StatusCode::BAD_REQUEST, "unrecognized credential representation"),
    ];
    for (case, body, status, words) in cases {
        let response = reset(&app, &admin, &user_id, body).await;
        assert_eq!(response.status(), status, "{case}");
        let message = error_message(response).await;
        assert!(message.contains(words), "{case}: {message:?}");
    }
    assert_eq!(app.store.password_hash(&user_id).await.unwrap().unwrap(), third_hash, "refusals change nothing");
    let unknown = reset(&app, &admin, "00000000-0000-4000-8000-000000000000", r#"{"value":"x"}"#).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let viewer = app.service_token(VIEWER_ID, VIEWER_SECRET).await;
    assert_eq!(reset(&app, &viewer, &user_id, r#"{"value":"x"}"#).await.status(), StatusCode::FORBIDDEN);
    assert_password_stored_nowhere(&app, "Permanent-2").await;
    assert_password_stored_nowhere(&app, "Temporary-1").await;
});

/// The password grant as python-keycloak's `KeycloakOpenID.token` sends it.
async fn password_grant(
    app: &TestApp,
    client: (&str, &str),
    username: &str,
    password: &str,
    scope: &str,
) -> reqwest::Response {
    let form = [
        ("username", username),
        ("password", password),
        ("client_id", client.0),
        ("client_secret", client.1),
        ("grant_type", "password"),
        ("code", ""),
        ("redirect_uri", ""),
        ("scope", scope),
    ];
    app.post_form(paths::TOKEN, &form).await
}

/// A provisioned user's id.
async fn provision(app: &TestApp, admin: &str, body: &Value) -> String {
    let created = create(app, admin, body).await;
    assert_eq!(created.status(), StatusCode::CREATED, "{body}");
    created.headers()["location"].to_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

async fn oauth_error(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.expect("an OAuth error body"))
}

both_backends!(the_password_grant_gives_a_browser_sign_ins_tokens_and_keycloaks_refusals, |backend| async move {
    // Arrange: a provisioned user, a disabled one and one with a required action.
    let app = admin_app(backend).await;
    let admin = admin_token(&app).await;
    let user_id = provision(&app, &admin, &provisioning("dana@example.com", USER_PASSWORD)).await;
    let disabled = json!({"username": "off", "enabled": false, "credentials": [{"value": USER_PASSWORD}]});
    provision(&app, &admin, &disabled).await;
    let unfinished = json!({"username": "todo", "enabled": true, "requiredActions": ["VERIFY_EMAIL"], "credentials": [{"value": USER_PASSWORD}]});
    provision(&app, &admin, &unfinished).await;
    let openhands = (CLIENT_ID, CLIENT_SECRET);

    // Act + Assert: tokens, offline with `offline_access`, by username or e-mail.
    let online = password_grant(&app, openhands, "DANA@example.com", USER_PASSWORD, "openid").await;
    assert_eq!(online.status(), StatusCode::OK);
    let online: Value = online.json().await.unwrap();
    assert_eq!(jwt_claims(online["refresh_token"].as_str().unwrap())["typ"], "Refresh");
    assert!(online["id_token"].is_string(), "openid gives an ID token");
    let access = jwt_claims(access_token(&online));
    assert_eq!((access["sub"].as_str(), access["azp"].as_str()), (Some(user_id.as_str()), Some(CLIENT_ID)));
    assert_eq!(access["resource_access"]["broker"]["roles"], json!(["read-token"]), "as a browser sign-in's");
    let offline = password_grant(&app, openhands, "dana@example.com", USER_PASSWORD, "openid offline_access").await;
    let offline: Value = offline.json().await.unwrap();
    assert_eq!(jwt_claims(offline["refresh_token"].as_str().unwrap())["typ"], "Offline");
    assert_eq!(app.tokens_refresh(&offline).await.status(), StatusCode::OK, "the offline token refreshes");
    let info: Value = app.userinfo(access_token(&offline)).await.json().await.unwrap();
    assert_eq!(info["sub"], user_id.as_str());
    assert!(info.get("identity_provider").is_none(), "no provider for a password session: {info}");

    // The refusals, each as Keycloak words it.
    let invalid = json!({"error": "invalid_grant", "error_description": "Invalid user credentials"});
    let cases = [
        ("a wrong password", openhands, "dana@example.com", "wrong", StatusCode::UNAUTHORIZED, invalid.clone()),
        ("an unknown user", openhands, "nobody@example.com", USER_PASSWORD, StatusCode::UNAUTHORIZED, invalid.clone()),
        ("no username", openhands, "", USER_PASSWORD, StatusCode::UNAUTHORIZED, invalid.clone()),
        ("a disabled user, wrong password", openhands, "off", "wrong", StatusCode::UNAUTHORIZED, invalid.clone()),
        (
            "a disabled user, right password",
            openhands,
            "off",
            USER_PASSWORD,
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "Account disabled"}),
        ),
        (
            "a required action",
            openhands,
            "todo",
            USER_PASSWORD,
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_grant", "error_description": "Account is not fully set up"}),
        ),
        (
            "a client without direct_access_grants",
            (OTHER_CLIENT_ID, OTHER_CLIENT_SECRET),
            "dana@example.com",
            USER_PASSWORD,
            StatusCode::BAD_REQUEST,
            json!({"error": "unauthorized_client", "error_description": "Client not allowed for direct access grants"}),
        ),
    ];
    let sessions = app.count(Table::SsoSessions).await;
    for (case, client, username, password, status, body) in cases {
        let answer = oauth_error(password_grant(&app, client, username, password, "openid").await).await;
        assert_eq!(answer, (status, body), "{case}");
    }
    assert_eq!(app.count(Table::SsoSessions).await, sessions, "no refusal opened a session");
    let wrong_secret =
        password_grant(&app, (CLIENT_ID, "not-the-secret"), "dana@example.com", USER_PASSWORD, "openid").await;
    assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_secret.json::<Value>().await.unwrap()["error"], "invalid_client");
});

both_backends!(twenty_wrong_passwords_lock_the_user_without_saying_so_until_the_wait_ends, |backend| async move {
    // Arrange: Keycloak's lockout after 20 failures.
    let app = TestApp::builder(backend)
        .extra(&admin_toml(3600))
        .edited(|toml| with_direct_access_grants(toml, 20))
        .spawn()
        .await;
    let admin = admin_token(&app).await;
    provision(&app, &admin, &provisioning("erin@example.com", USER_PASSWORD)).await;
    let openhands = (CLIENT_ID, CLIENT_SECRET);
    let unknown = oauth_error(password_grant(&app, openhands, "ghost@example.com", "x", "openid").await).await;

    // Act: twenty wrong passwords.
    for attempt in 1..=20 {
        let answer = oauth_error(password_grant(&app, openhands, "erin@example.com", "wrong", "openid").await).await;
        assert_eq!(answer, unknown, "wrong password {attempt} reads as an unknown user's answer");
    }

    // Assert: the right password is refused with the same words while the lock runs…
    let locked = oauth_error(password_grant(&app, openhands, "erin@example.com", USER_PASSWORD, "openid").await).await;
    assert_eq!(locked, unknown, "a lockout never reveals itself");
    app.state.clock.advance(59);
    let still = password_grant(&app, openhands, "erin@example.com", USER_PASSWORD, "openid").await;
    assert_eq!(still.status(), StatusCode::UNAUTHORIZED, "still locked within the minute");

    // …and accepted once the wait is over, which forgets the failures.
    app.state.clock.advance(2);
    let freed = password_grant(&app, openhands, "erin@example.com", USER_PASSWORD, "openid").await;
    assert_eq!(freed.status(), StatusCode::OK, "free after the wait");
    for _ in 1..20 {
        password_grant(&app, openhands, "erin@example.com", "wrong", "openid").await;
    }
    let after = password_grant(&app, openhands, "erin@example.com", USER_PASSWORD, "openid").await;
    assert_eq!(after.status(), StatusCode::OK, "19 failures after a success do not lock");
});
