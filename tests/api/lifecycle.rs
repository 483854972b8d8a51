//! The session lifecycle over time: offline tokens, idle and maximum session limits under a
//! controlled clock, and refresh-token rotation with reuse detection.

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

const DAY: i64 = 24 * 3600;
const ROTATING_CLIENT: (&str, &str, &str) = (OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, OTHER_REDIRECT_URI);
const OPENHANDS: (&str, &str, &str) = (CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);

async fn refresh(app: &TestApp, client: (&str, &str, &str), token: &str) -> reqwest::Response {
    let (client_id, secret, _) = client;
    let form = [
        ("client_id", client_id),
        ("client_secret", secret),
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
    ];
    app.post_form(paths::TOKEN, &form).await
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let form = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET), ("token", token)];
    app.post_form(paths::INTROSPECT, &form).await.json().await.expect("json")
}

fn field(body: &Value, name: &str) -> String {
    body[name].as_str().unwrap_or_else(|| panic!("{name} in {body}")).to_owned()
}

both_backends!(an_offline_token_survives_logout_and_restart_and_expires_only_when_idle, |backend| async move {
    let mut app = spawn_app(backend).await;
    let offline = app.tokens_for(OPENHANDS, &[("scope", "openid offline_access")]).await;
    let offline_token = field(&offline, "refresh_token");
    let claims = jwt_claims(&offline_token);
    assert_eq!(claims["typ"], "Offline");
    assert_eq!(offline["refresh_expires_in"], 2_592_000, "offline_session_idle_seconds");
    assert_eq!(introspect(&app, &offline_token).await["active"], true);

    // The user's ordinary session ends by back-channel logout; the offline one does not.
    let online = app.tokens_for(OPENHANDS, &[]).await;
    assert_eq!(jwt_claims(&field(&online, "refresh_token"))["typ"], "Refresh");
    let form = [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("refresh_token", &field(&online, "refresh_token")),
    ];
    assert_eq!(app.post_form(paths::LOGOUT, &form).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(introspect(&app, &field(&online, "refresh_token")).await["active"], false);
    let after_logout = refresh(&app, OPENHANDS, &offline_token).await;
    assert_eq!(after_logout.status(), StatusCode::OK, "offline tokens outlive logout");
    let after_logout: Value = after_logout.json().await.expect("json");
    assert_eq!(jwt_claims(&field(&after_logout, "refresh_token"))["typ"], "Offline");
    assert_eq!(app.userinfo(&field(&after_logout, "access_token")).await.status(), StatusCode::OK);

    // And a restart.
    app.restart().await;
    let restarted = refresh(&app, OPENHANDS, &offline_token).await;
    let status = restarted.status();
    assert_eq!(
        status,
        StatusCode::OK,
        "offline tokens outlive restarts: {}",
        restarted.text().await.unwrap_or_default()
    );

    // Used within its idle time it lives on, past every SSO limit; idle too long it is gone.
    let mut latest = offline_token;
    for _ in 0..3 {
        app.state.clock.advance(20 * DAY);
        let answer = refresh(&app, OPENHANDS, &latest).await;
        assert_eq!(answer.status(), StatusCode::OK, "used within 30 days");
        latest = field(&answer.json::<Value>().await.expect("json"), "refresh_token");
    }
    app.state.clock.advance(30 * DAY + 1);
    let expired = refresh(&app, OPENHANDS, &latest).await;
    assert_eq!(expired.status(), StatusCode::BAD_REQUEST);
    assert_eq!(expired.json::<Value>().await.expect("json")["error"], "invalid_grant");
    assert_eq!(introspect(&app, &latest).await["active"], false);
});

both_backends!(revoking_an_offline_token_ends_its_offline_session, |backend| async move {
    let app = spawn_app(backend).await;
    let offline = app.tokens_for(OPENHANDS, &[("scope", "openid offline_access")]).await;
    let token = field(&offline, "refresh_token");
    let again = refresh(&app, OPENHANDS, &token).await.json::<Value>().await.expect("json");

    let form = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET), ("token", token.as_str())];
    assert_eq!(app.post_form(paths::REVOKE, &form).await.status(), StatusCode::OK);

    assert_eq!(refresh(&app, OPENHANDS, &token).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(introspect(&app, &field(&again, "refresh_token")).await["active"], false, "the whole offline session");
});

both_backends!(sso_sessions_end_after_their_idle_time_and_their_maximum, |backend| async move {
    let app = spawn_app(backend).await;
    // Three sessions signed in together (the fake provider's clock does not move with ours,
    // so every sign-in happens before the clock is advanced).
    let busy = app.tokens_for(OPENHANDS, &[]).await;
    let access = field(&busy, "access_token");
    let mut busy = field(&busy, "refresh_token");
    let idle = field(&app.tokens_for(OPENHANDS, &[]).await, "refresh_token");
    let mut daily = field(&app.tokens_for(OPENHANDS, &[]).await, "refresh_token");
    let use_token = |token: String| {
        let app = &app;
        async move {
            let answer = refresh(app, OPENHANDS, &token).await;
            (
                answer.status(),
                answer.json::<Value>().await.ok().and_then(|b| b["refresh_token"].as_str().map(str::to_owned)),
            )
        }
    };

    app.state.clock.advance(301);
    assert_eq!(app.userinfo(&access).await.status(), StatusCode::UNAUTHORIZED, "access tokens live 300 s");

    // Day 3 minus a little: every session is within its idle time.
    app.state.clock.advance(3 * DAY - 600);
    for token in [&mut busy, &mut daily] {
        let (status, next) = use_token(token.clone()).await;
        assert_eq!(status, StatusCode::OK, "used within the idle time");
        *token = next.expect("a new refresh token");
    }
    // Day 6: the busy session lives only because use restarted its idle timer; the idle one
    // has been unused for more than 3 days and is over.
    app.state.clock.advance(3 * DAY - 600);
    for token in [&mut busy, &mut daily] {
        let (status, next) = use_token(token.clone()).await;
        assert_eq!(status, StatusCode::OK, "use restarts the idle timer");
        *token = next.expect("a new refresh token");
    }
    assert_eq!(use_token(idle.clone()).await.0, StatusCode::BAD_REQUEST, "idle too long");
    assert_eq!(introspect(&app, &idle).await["active"], false);

    // Just before day 7 the daily session is fine; just after, it is past its maximum
    // however busy it is.
    app.state.clock.advance(DAY - 1_000);
    let (status, next) = use_token(daily.clone()).await;
    assert_eq!(status, StatusCode::OK, "within sso_session_max_seconds");
    daily = next.expect("a new refresh token");
    app.state.clock.advance(2_000);
    let (status, _) = use_token(daily.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "past sso_session_max_seconds");
    assert_eq!(introspect(&app, &daily).await["active"], false);
});

both_backends!(a_rotating_client_gets_new_refresh_tokens_and_reuse_ends_the_session, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = app.tokens_for(ROTATING_CLIENT, &[]).await;
    let first = field(&tokens, "refresh_token");

    let second = refresh(&app, ROTATING_CLIENT, &first).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second = field(&second.json::<Value>().await.expect("json"), "refresh_token");
    let third = refresh(&app, ROTATING_CLIENT, &second).await;
    assert_eq!(third.status(), StatusCode::OK, "the new token works");
    let third = field(&third.json::<Value>().await.expect("json"), "refresh_token");

    // The first token again: theft is assumed, the whole session ends.
    let reused = refresh(&app, ROTATING_CLIENT, &first).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(reused.json::<Value>().await.expect("json")["error"], "invalid_grant");
    assert_eq!(refresh(&app, ROTATING_CLIENT, &third).await.status(), StatusCode::BAD_REQUEST, "session ended");

    // OpenHands' client does not rotate: its refresh token is reusable.
    let tokens = app.tokens_for(OPENHANDS, &[]).await;
    let token = field(&tokens, "refresh_token");
    for _ in 0..3 {
        assert_eq!(refresh(&app, OPENHANDS, &token).await.status(), StatusCode::OK);
    }
});
