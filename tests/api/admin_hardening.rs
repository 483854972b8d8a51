//! The administrator's sign-in hardened: a stranger's guessing slows only the stranger and writes
//! few audit rows; admin sessions end on a password change, at their maximum lifetime, and by logout.

use identity_broker::http::paths;
use reqwest::StatusCode;
use serde_json::Value;

use crate::admin::{ADMIN_PASSWORD, admin_sign_in, admin_toml, admin_url, audited, master_token_url};
use crate::both_backends;
use crate::helpers::*;

/// A client that sends from another loopback address than the administrator's `app.api`.
fn stranger() -> reqwest::Client {
    reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().expect("client")
}

/// A wrong password from `client`, as python-keycloak sends a sign-in.
async fn wrong_password_from(app: &TestApp, client: &reqwest::Client) -> StatusCode {
    let form = [("username", "admin"), ("password", "guess"), ("client_id", "admin-cli"), ("grant_type", "password")];
    client.post(master_token_url(app)).form(&form).send().await.expect("master token").status()
}

async fn signed_in(app: &TestApp) -> Value {
    let response = admin_sign_in(app, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK, "the administrator signs in");
    response.json().await.expect("json")
}

fn text(value: &Value, name: &str) -> String {
    value[name].as_str().unwrap_or_else(|| panic!("{name} in {value}")).to_owned()
}

/// The `refresh_token` grant of `admin-cli` at the public listener `public`.
async fn refresh_at(public: &str, refresh_token: &str) -> reqwest::Response {
    let form = [("client_id", "admin-cli"), ("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    let url = format!("{public}{}", paths::TOKEN.replace("{realm}", paths::MASTER_REALM));
    api_client().post(url).form(&form).send().await.expect("refresh")
}

/// The users list at the public listener `public` with the bearer `access_token`.
async fn users_at(public: &str, access_token: &str) -> StatusCode {
    let url = format!("{public}{}", paths::ADMIN_USERS.replace("{realm}", REALM_NAME));
    api_client().get(url).bearer_auth(access_token).send().await.expect("users").status()
}

/// A form's fields.
type Form<'a> = &'a [(&'a str, &'a str)];

async fn assert_not_active(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant", "{why}");
    assert_eq!(body["error_description"], "Token is not active", "{why}: python-keycloak matches this text");
}

both_backends!(a_strangers_flood_never_keeps_the_administrator_out, |backend| async move {
    let app = TestApp::builder(backend).extra(&admin_toml(60)).spawn().await;
    let stranger = stranger();
    for _ in 0..5 {
        wrong_password_from(&app, &stranger).await;
    }

    let mut administrator = Vec::new();
    let mut flood = Vec::new();
    for _ in 0..20 {
        let guesses = futures_util::future::join_all((0..10).map(|_| wrong_password_from(&app, &stranger)));
        let (right, guessed) = tokio::join!(admin_sign_in(&app, ADMIN_PASSWORD), guesses);
        administrator.push(right.status());
        flood.extend(guessed);
    }

    assert!(
        administrator.iter().all(|status| *status == StatusCode::OK),
        "every right sign-in got in: {administrator:?}"
    );
    assert!(flood.iter().all(|status| *status == StatusCode::UNAUTHORIZED), "no guess got in: {flood:?}");
    let throttled = audited(&app, "admin_login").await;
    assert!(
        throttled.iter().any(|e| e.outcome == "throttled" && e.detail.contains("\"client\":\"127.0.0.2\"")),
        "the stranger was slowed down: {throttled:?}"
    );
});

both_backends!(a_throttled_flood_writes_a_bounded_number_of_audit_rows, |backend| async move {
    let app = TestApp::builder(backend).extra(&admin_toml(60)).spawn().await;
    let stranger = stranger();

    for _ in 0..10 {
        let statuses = futures_util::future::join_all((0..30).map(|_| wrong_password_from(&app, &stranger))).await;
        assert!(statuses.iter().all(|status| *status == StatusCode::UNAUTHORIZED));
    }

    let rows = audited(&app, "admin_login").await;
    assert!(rows.len() <= 4, "300 refused attempts wrote {} rows: {rows:?}", rows.len());
    let outcomes: Vec<&str> = rows.iter().map(|e| e.outcome.as_str()).collect();
    assert!(outcomes.contains(&"failure") && outcomes.contains(&"throttled"), "each kind is still told: {outcomes:?}");
    assert!(rows.iter().all(|e| e.detail.contains("\"client\":\"127.0.0.2\"")), "with the address: {rows:?}");
});

/// `[admin]` with `password`, on a fixed public hostname, so that two processes on one database
/// issue and accept the same tokens, as replicas behind one host name do.
fn replica_settings(entra: &crate::support::fake_entra::FakeEntra, password: &str) -> String {
    let settings = settings_toml(entra, &ProviderSetup::default()).replacen(
        "[http]\n",
        "[http]\nhostname = \"http://broker.test\"\n",
        1,
    );
    format!("{settings}\n[admin]\npassword = \"{password}\"\naccess_token_lifespan_seconds = 60\n")
}

both_backends!(a_password_change_ends_every_admin_session_at_its_next_use, |backend| async move {
    let mut app = TestApp::builder(backend).settings(|entra| replica_settings(entra, ADMIN_PASSWORD)).spawn().await;
    let before = signed_in(&app).await;
    app.restart().await;
    let kept = refresh_at(&app.public, &text(&before, "refresh_token")).await;
    assert_eq!(kept.status(), StatusCode::OK, "a restart with the same password keeps the sessions");

    let new_password = "a-new-admin-password";
    let (changed, stop, server) = start_application(&replica_settings(&app.entra, new_password), &app.db.url).await;

    assert_eq!(
        users_at(&changed.public, &text(&before, "access_token")).await,
        StatusCode::UNAUTHORIZED,
        "the old session's access token is refused"
    );
    assert_not_active(refresh_at(&changed.public, &text(&before, "refresh_token")).await, "old session").await;
    assert_not_active(refresh_at(&app.public, &text(&before, "refresh_token")).await, "ended for every replica").await;
    let sessions = app.store.admin_sessions_for_tests().await.expect("sessions");
    let old_sid = jwt_claims(&text(&before, "access_token"))["sid"].as_str().unwrap_or_default().to_owned();
    assert!(sessions.iter().all(|s| s.id != old_sid), "the old session's row is gone: {sessions:?}");
    let form =
        [("username", "admin"), ("password", new_password), ("client_id", "admin-cli"), ("grant_type", "password")];
    let url = format!("{}{}", changed.public, paths::TOKEN.replace("{realm}", paths::MASTER_REALM));
    let fresh = api_client().post(url).form(&form).send().await.expect("sign-in");
    assert_eq!(fresh.status(), StatusCode::OK, "the new password signs in");
    let fresh: Value = fresh.json().await.expect("json");
    assert_eq!(users_at(&changed.public, &text(&fresh, "access_token")).await, StatusCode::OK);
    let stored = app.store.admin_sessions_for_tests().await.expect("sessions");
    for session in &stored {
        assert!(!session.credentials_fingerprint.contains(new_password), "never the password: {session:?}");
    }
    let _ = stop.send(());
    let _ = server.await;
});

both_backends!(an_admin_session_ends_at_its_maximum_lifetime, |backend| async move {
    let settings = admin_toml(60).replacen("[admin]\n", "[admin]\nsession_max_seconds = 100\n", 1);
    let app = TestApp::builder(backend).extra(&settings).spawn().await;
    let signed = signed_in(&app).await;
    assert!(signed["refresh_expires_in"].as_i64().unwrap_or_default() <= 100, "capped by the maximum: {signed}");

    app.state.clock.advance(50);
    let refreshed = refresh_at(&app.public, &text(&signed, "refresh_token")).await;
    assert_eq!(refreshed.status(), StatusCode::OK, "within the maximum a refresh works");
    let refreshed: Value = refreshed.json().await.expect("json");
    assert!(refreshed["refresh_expires_in"].as_i64().unwrap_or_default() <= 50, "what is left: {refreshed}");
    assert!(refreshed["expires_in"].as_i64().unwrap_or_default() <= 50, "access tokens too: {refreshed}");

    app.state.clock.advance(51);
    let late = refresh_at(&app.public, &text(&refreshed, "refresh_token")).await;
    assert_not_active(late, "past the maximum").await;
    assert_eq!(users_at(&app.public, &text(&refreshed, "access_token")).await, StatusCode::UNAUTHORIZED);
    app.store.delete_expired(app.state.clock.now()).await.expect("housekeeping");
    assert!(app.store.admin_sessions_for_tests().await.expect("sessions").is_empty(), "housekeeping deleted it");
});

both_backends!(admin_logout_ends_the_session_as_python_keycloak_sends_it, |backend| async move {
    let app = TestApp::builder(backend).extra(&admin_toml(60)).spawn().await;
    let signed = signed_in(&app).await;
    let (access, refresh) = (text(&signed, "access_token"), text(&signed, "refresh_token"));
    let logout = app.url(&paths::LOGOUT.replace("{realm}", paths::MASTER_REALM));
    let mut tampered = refresh.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");

    let refusals: [(Form, StatusCode, &str, &str); 4] = [
        (
            &[("client_id", "admin-cli"), ("refresh_token", "garbage")],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "not a JWT",
        ),
        (
            &[("client_id", "admin-cli"), ("refresh_token", &tampered)],
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "tampered",
        ),
        (
            &[("client_id", CLIENT_ID), ("refresh_token", &refresh)],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "other client",
        ),
        (&[("client_id", "admin-cli")], StatusCode::BAD_REQUEST, "invalid_request", "no refresh token"),
    ];
    for (form, status, error, why) in refusals {
        let answer = app.api.post(&logout).form(form).send().await.expect("logout");
        assert_eq!(answer.status(), status, "{why}");
        assert_eq!(answer.json::<Value>().await.expect("json")["error"], error, "{why}");
        assert_eq!(users_at(&app.public, &access).await, StatusCode::OK, "{why}: changed nothing");
    }

    let form = [("client_id", "admin-cli"), ("refresh_token", refresh.as_str())];
    let answer = app.api.post(&logout).form(&form).send().await.expect("logout");

    assert_eq!(answer.status(), StatusCode::NO_CONTENT, "Keycloak's answer");
    assert_not_active(refresh_at(&app.public, &refresh).await, "after logout").await;
    assert_eq!(users_at(&app.public, &access).await, StatusCode::UNAUTHORIZED, "its access token dies with it");
    let again = app.api.post(&logout).form(&form).send().await.expect("logout");
    assert_eq!(again.status(), StatusCode::NO_CONTENT, "a session already ended is no error");
    let logouts = audited(&app, "admin_logout").await;
    let ended: Vec<_> = logouts.iter().filter(|e| e.outcome == "success").collect();
    assert_eq!(ended.len(), 1, "one session ended: {logouts:?}");
    assert!(ended[0].detail.contains("\"cause\":\"logout\""), "{ended:?}");
    let users = app.api.get(admin_url(&app, paths::ADMIN_USERS)).bearer_auth(&access).send().await.expect("users");
    assert_eq!(users.status(), StatusCode::UNAUTHORIZED);
});
