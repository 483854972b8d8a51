//! Refresh, introspection, revocation and logout (back-channel, and its browser confirmation), as OpenHands uses them.

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::FakeUser;

fn client_form<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
    form.extend_from_slice(extra);
    form
}

async fn active(app: &TestApp, token: &str) -> bool {
    let answer = app.post_form(paths::INTROSPECT, &client_form(&[("token", token)])).await;
    assert_eq!(answer.status(), StatusCode::OK);
    answer.json::<Value>().await.expect("json")["active"] == Value::Bool(true)
}

both_backends!(a_refresh_token_works_repeatedly_and_reflects_the_current_profile, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = app.tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap_or_default();

    // The user's profile changes through a later sign-in elsewhere.
    let mut renamed = FakeUser::alice();
    renamed.name = "Alice Renamed".into();
    app.entra.set_user(renamed);
    app.follow(&browser_client(), &app.auth_url(&[])).await.code();

    let form = client_form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)]);
    let first = app.post_form(paths::TOKEN, &form).await;
    let second = app.post_form(paths::TOKEN, &form).await;

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK, "refresh tokens are not single-use");
    let second: Value = second.json().await.expect("json");
    let claims = jwt_claims(second["access_token"].as_str().unwrap_or_default());
    assert_eq!(claims["name"], "Alice Renamed");
    assert_eq!(claims["sid"], jwt_claims(refresh)["sid"], "the same session goes on");
    assert!(active(&app, second["refresh_token"].as_str().unwrap_or_default()).await);
});

both_backends!(bad_refresh_requests_are_refused_with_invalid_grant, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = app.tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap_or_default().to_owned();
    let access = tokens["access_token"].as_str().unwrap_or_default().to_owned();
    let mut tampered = refresh.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");

    let cases = [
        (tampered.as_str(), CLIENT_ID, CLIENT_SECRET, 400, "invalid_grant", "tampered"),
        (access.as_str(), CLIENT_ID, CLIENT_SECRET, 400, "invalid_grant", "an access token"),
        ("garbage", CLIENT_ID, CLIENT_SECRET, 400, "invalid_grant", "not a JWT"),
        (refresh.as_str(), OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, 400, "invalid_grant", "another client's token"),
        (refresh.as_str(), CLIENT_ID, "wrong", 401, "invalid_client", "wrong secret"),
    ];
    for (token, client_id, secret, status, error, context) in cases {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", client_id),
            ("client_secret", secret),
        ];
        let response = app.post_form(paths::TOKEN, &form).await;
        assert_eq!(response.status().as_u16(), status, "{context}");
        assert_eq!(response.json::<Value>().await.expect("json")["error"], error, "{context}");
    }
    let still = app
        .post_form(paths::TOKEN, &client_form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]))
        .await;
    assert_eq!(still.status(), StatusCode::OK, "failed attempts changed nothing");
});

both_backends!(back_channel_logout_ends_the_session_and_its_tokens, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = app.tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap_or_default();
    let access = tokens["access_token"].as_str().unwrap_or_default();
    assert!(active(&app, access).await && active(&app, refresh).await);

    let foreign = app
        .post_form(
            paths::LOGOUT,
            &[("client_id", OTHER_CLIENT_ID), ("client_secret", OTHER_CLIENT_SECRET), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST, "another client cannot end this session");
    let wrong_secret = app
        .post_form(paths::LOGOUT, &[("client_id", CLIENT_ID), ("client_secret", "x"), ("refresh_token", refresh)])
        .await;
    assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
    assert!(active(&app, access).await, "refused logouts changed nothing");

    let logout = app.post_form(paths::LOGOUT, &client_form(&[("refresh_token", refresh)])).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    assert_eq!(app.userinfo(access).await.status(), StatusCode::UNAUTHORIZED);
    assert!(!active(&app, access).await && !active(&app, refresh).await);
    let refreshed =
        app.post_form(paths::TOKEN, &client_form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])).await;
    assert_eq!(refreshed.status(), StatusCode::BAD_REQUEST);
});

both_backends!(revocation_and_introspection_follow_the_rfcs, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = app.tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap_or_default();
    let access = tokens["access_token"].as_str().unwrap_or_default();

    let unauthenticated = app.post_form(paths::INTROSPECT, &[("token", access)]).await;
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED, "introspection needs client authentication");
    let answer: Value =
        app.post_form(paths::INTROSPECT, &client_form(&[("token", access)])).await.json().await.expect("json");
    assert_eq!(answer["active"], Value::Bool(true));
    assert_eq!(answer["client_id"], CLIENT_ID);
    assert_eq!(answer["username"], "alice@contoso.onmicrosoft.com");
    assert!(!active(&app, "garbage").await, "malformed tokens are inactive, not errors");

    let unknown = app.post_form(paths::REVOKE, &client_form(&[("token", "garbage")])).await;
    assert_eq!(unknown.status(), StatusCode::OK, "RFC 7009: unknown tokens answer 200");
    let foreign = app
        .post_form(
            paths::REVOKE,
            &[("client_id", OTHER_CLIENT_ID), ("client_secret", OTHER_CLIENT_SECRET), ("token", refresh)],
        )
        .await;
    assert_eq!(foreign.status(), StatusCode::OK);
    assert!(active(&app, refresh).await, "another client's revocation is ignored");

    let revoked = app.post_form(paths::REVOKE, &client_form(&[("token", refresh)])).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert!(!active(&app, refresh).await);
    let refreshed =
        app.post_form(paths::TOKEN, &client_form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])).await;
    assert_eq!(refreshed.status(), StatusCode::BAD_REQUEST, "a revoked refresh token is refused");
});

/// A sign-in in `app.browser`, which then holds the SSO cookie; the tokens of its session.
async fn browser_tokens(app: &TestApp) -> Value {
    let code = app.sign_in().await.code();
    let response = app.exchange(&code, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

/// The confirmation code a logout confirmation page carries.
fn confirmation_code(page: &str) -> String {
    let marker = "name=\"session_code\" value=\"";
    let start = page.find(marker).unwrap_or_else(|| panic!("no confirmation code in {page}")) + marker.len();
    page[start..].split('"').next().unwrap_or_default().to_owned()
}

const ASKS_TO_CONFIRM: &str = "name=\"confirm\" value=\"yes\"";

both_backends!(a_cross_site_logout_get_leaves_the_session_alive, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = browser_tokens(&app).await;
    let logout = app.url(&realm_path(paths::LOGOUT));

    // What another site's link makes the browser send: a top-level GET, the Lax cookie riding along.
    let query = [("client_id", CLIENT_ID), ("post_logout_redirect_uri", POST_LOGOUT_URI), ("confirm", "yes")];
    let response = app.browser.get(&logout).query(&query).send().await.expect("logout");

    assert_eq!(response.status(), StatusCode::OK, "the confirmation page, not a redirect");
    assert!(response.text().await.expect("page").contains(ASKS_TO_CONFIRM), "asked again");
    assert_eq!(app.tokens_refresh(&tokens).await.status(), StatusCode::OK, "the session lives");
});

both_backends!(a_logout_confirmation_counts_only_with_the_pages_own_code, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = browser_tokens(&app).await;
    let logout = app.url(&realm_path(paths::LOGOUT));
    let ask = [("client_id", CLIENT_ID), ("post_logout_redirect_uri", POST_LOGOUT_URI)];
    let page = app.browser.get(&logout).query(&ask).send().await.expect("logout").text().await.expect("page");
    let code = confirmation_code(&page);
    let other_browser = browser_client();
    app.follow(&other_browser, &app.auth_url(&[])).await.code();
    let other_page = other_browser.get(&logout).query(&ask).send().await.expect("logout").text().await.expect("page");
    let other_code = confirmation_code(&other_page);

    let refusals =
        [(None, "no code"), (Some("forged"), "a made-up code"), (Some(other_code.as_str()), "another browser's code")];
    for (presented, why) in refusals {
        let mut form =
            vec![("client_id", CLIENT_ID), ("post_logout_redirect_uri", POST_LOGOUT_URI), ("confirm", "yes")];
        form.extend(presented.map(|code| ("session_code", code)));
        let response = app.browser.post(&logout).form(&form).send().await.expect("confirm");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{why}");
        let body = response.text().await.expect("page");
        assert!(body.contains("not confirmed") && body.contains(ASKS_TO_CONFIRM), "{why}: says so, asks again: {body}");
        assert_eq!(app.tokens_refresh(&tokens).await.status(), StatusCode::OK, "{why}: the session lives");
    }

    let form = [
        ("client_id", CLIENT_ID),
        ("post_logout_redirect_uri", POST_LOGOUT_URI),
        ("confirm", "yes"),
        ("session_code", code.as_str()),
    ];
    let confirmed = app.browser.post(&logout).form(&form).send().await.expect("confirm");

    assert_eq!(confirmed.status(), StatusCode::FOUND);
    assert_eq!(location(&confirmed), POST_LOGOUT_URI);
    assert_eq!(app.tokens_refresh(&tokens).await.status(), StatusCode::BAD_REQUEST, "ended");
});

both_backends!(an_id_token_hint_of_another_users_session_asks_first_and_ends_nothing, |backend| async move {
    let app = spawn_app(backend).await;
    let own = browser_tokens(&app).await;
    app.entra.set_user(FakeUser::bob());
    let other = app.tokens().await;
    let logout = app.url(&realm_path(paths::LOGOUT));
    let hinted = |tokens: &Value| {
        let hint = tokens["id_token"].as_str().unwrap_or_default().to_owned();
        vec![
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", POST_LOGOUT_URI.to_owned()),
            ("state", "s1".to_owned()),
        ]
    };

    let ask = app.browser.get(&logout).query(&hinted(&other)).send().await.expect("logout");

    assert_eq!(ask.status(), StatusCode::OK, "the confirmation page, not a redirect");
    let page = ask.text().await.expect("page");
    assert!(page.contains(ASKS_TO_CONFIRM), "{page}");
    assert!(
        page.contains(&format!("name=\"client_id\" value=\"{CLIENT_ID}\"")),
        "the hint's client carried on: {page}"
    );
    assert_eq!(app.tokens_refresh(&own).await.status(), StatusCode::OK, "the browser's session lives");
    assert_eq!(app.tokens_refresh(&other).await.status(), StatusCode::OK, "the hinted session lives");

    let own_hint = app.browser.get(&logout).query(&hinted(&own)).send().await.expect("logout");

    assert_eq!(own_hint.status(), StatusCode::FOUND, "its own session's hint: no question");
    assert_eq!(location(&own_hint), format!("{POST_LOGOUT_URI}?state=s1"));
    assert_eq!(app.tokens_refresh(&own).await.status(), StatusCode::BAD_REQUEST, "the browser's session ended");
    assert_eq!(app.tokens_refresh(&other).await.status(), StatusCode::OK, "the other one still lives");
});
