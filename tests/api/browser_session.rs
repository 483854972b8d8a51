//! The browser's SSO session: sign-in without a round trip, `prompt`, RP-initiated logout and
//! account linking (`kc_action=idp_link`).

use identity_broker::store::IdentityKey;
use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::FakeUser;

/// The first answer to `/auth` in `browser`, not followed.
async fn authorize(app: &TestApp, browser: &reqwest::Client, extra: &[(&str, &str)]) -> reqwest::Response {
    browser.get(app.auth_url(extra)).send().await.expect("auth")
}

async fn exchange_ok(app: &TestApp, code: &str) -> Value {
    let response = app.exchange(code, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

async fn refresh_status(app: &TestApp, refresh_token: &str) -> StatusCode {
    let form = [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    app.post_form(paths::TOKEN, &form).await.status()
}

fn text(value: &Value, name: &str) -> String {
    value[name].as_str().unwrap_or_else(|| panic!("{name} in {value}")).to_owned()
}

both_backends!(a_live_sso_session_returns_a_code_without_asking_the_provider, |backend| async move {
    let app = spawn_app(backend).await;
    let first = exchange_ok(&app, &app.sign_in().await.code()).await;
    let authorizations = app.entra.token_requests();

    let again = authorize(&app, &app.browser, &[]).await;
    assert_eq!(again.status(), StatusCode::FOUND);
    let target = location(&again);
    assert!(target.starts_with(REDIRECT_URI), "straight back to the client: {target}");
    let params = query_of(&target);
    assert_eq!(params["state"], "client-state-123");
    let second = exchange_ok(&app, &params["code"]).await;
    assert_eq!(jwt_claims(&text(&second, "access_token"))["sid"], jwt_claims(&text(&first, "access_token"))["sid"]);
    assert_eq!(app.entra.token_requests(), authorizations, "no round trip to the provider");

    // prompt=none with the session: a code too. Without one: login_required to the client.
    let silent = location(&authorize(&app, &app.browser, &[("prompt", "none")]).await);
    assert!(query_of(&silent).contains_key("code"), "{silent}");
    let stranger = location(&authorize(&app, &browser_client(), &[("prompt", "none")]).await);
    assert!(stranger.starts_with(REDIRECT_URI));
    assert_eq!(query_of(&stranger)["error"], "login_required");

    // prompt=login: the provider is asked again, and told to ask for credentials.
    let upstream = app.until_upstream(&app.browser, &[("prompt", "login")]).await;
    assert_eq!(query_of(&upstream).get("prompt").map(String::as_str), Some("login"));
});

both_backends!(rp_initiated_logout_ends_the_session_and_returns_to_a_registered_uri, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = exchange_ok(&app, &app.sign_in().await.code()).await;
    let id_token = text(&tokens, "id_token");
    let logout = app.url(&realm_path(paths::LOGOUT));
    let mut tampered = id_token.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");

    // Refused without a redirect, and without ending anything.
    let refusals = [
        ("foreign post_logout_redirect_uri", id_token.as_str(), "http://evil.test/", ""),
        ("another client's uri", id_token.as_str(), "http://other.test/bye", ""),
        ("tampered id_token_hint", tampered.as_str(), POST_LOGOUT_URI, ""),
        ("client_id contradicts the hint", id_token.as_str(), POST_LOGOUT_URI, OTHER_CLIENT_ID),
    ];
    for (case, hint, uri, client_id) in refusals {
        let mut query = vec![("id_token_hint", hint), ("post_logout_redirect_uri", uri), ("state", "s1")];
        if !client_id.is_empty() {
            query.push(("client_id", client_id));
        }
        let response = app.browser.get(&logout).query(&query).send().await.expect("logout");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{case}");
        assert!(response.headers().get("location").is_none(), "{case}: never a redirect");
        assert_eq!(refresh_status(&app, &text(&tokens, "refresh_token")).await, StatusCode::OK, "{case}: still live");
    }

    let query = [("id_token_hint", id_token.as_str()), ("post_logout_redirect_uri", POST_LOGOUT_URI), ("state", "s1")];
    let response = app.browser.get(&logout).query(&query).send().await.expect("logout");

    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(location(&response), format!("{POST_LOGOUT_URI}?state=s1"));
    let cleared = response.headers().get_all("set-cookie").iter().any(|c| {
        let c = c.to_str().unwrap_or_default();
        c.starts_with("IB_SESSION=") && c.contains("Max-Age=0")
    });
    assert!(cleared, "the SSO cookie is cleared");
    assert_eq!(refresh_status(&app, &text(&tokens, "refresh_token")).await, StatusCode::BAD_REQUEST);
    assert_eq!(app.userinfo(&text(&tokens, "access_token")).await.status(), StatusCode::UNAUTHORIZED);
    let after = authorize(&app, &app.browser, &[]).await;
    assert!(!location(&after).starts_with(REDIRECT_URI), "no SSO after logout");
});

both_backends!(logout_without_an_id_token_hint_asks_the_user_first, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = exchange_ok(&app, &app.sign_in().await.code()).await;
    let logout = app.url(&realm_path(paths::LOGOUT));

    let ask = app
        .browser
        .get(&logout)
        .query(&[("client_id", CLIENT_ID), ("post_logout_redirect_uri", POST_LOGOUT_URI)])
        .send()
        .await
        .expect("logout");
    assert_eq!(ask.status(), StatusCode::OK);
    let page = ask.text().await.expect("page");
    assert!(page.contains("name=\"confirm\" value=\"yes\""));
    assert_eq!(refresh_status(&app, &text(&tokens, "refresh_token")).await, StatusCode::OK, "not yet");

    // The page's own code confirms (see session.rs for the refusals without it).
    let marker = "name=\"session_code\" value=\"";
    let code = page.split(marker).nth(1).and_then(|rest| rest.split('"').next()).expect("a confirmation code");
    let form = [
        ("client_id", CLIENT_ID),
        ("post_logout_redirect_uri", POST_LOGOUT_URI),
        ("confirm", "yes"),
        ("session_code", code),
    ];
    let confirmed = app.browser.post(&logout).form(&form).send().await.expect("confirm");
    assert_eq!(confirmed.status(), StatusCode::FOUND);
    assert_eq!(location(&confirmed), POST_LOGOUT_URI);
    assert_eq!(refresh_status(&app, &text(&tokens, "refresh_token")).await, StatusCode::BAD_REQUEST);
});

both_backends!(linking_a_provider_keeps_the_signed_in_user, |backend| async move {
    let app =
        TestApp::builder(backend).provider(ProviderSetup { second_provider: true, ..Default::default() }).spawn().await;
    let tokens = exchange_ok(&app, &app.sign_in().await.code()).await;
    let user_id = text(&jwt_claims(&text(&tokens, "access_token")), "sub");
    let link = [("kc_action", "idp_link:azure_devops_eu")];

    // An unknown provider is refused back to the client.
    let unknown = app.follow(&app.browser, &app.auth_url(&[("kc_action", "idp_link:github")])).await;
    let Outcome::ToClient(params) = unknown else { panic!("expected a return to the client: {unknown:?}") };
    assert_eq!(params.get("error").map(String::as_str), Some("invalid_request"));

    // Cancelled at the provider: back to the client, nothing linked.
    app.entra.deny_next_authorization();
    let cancelled = app.follow(&app.browser, &app.auth_url(&link)).await;
    let Outcome::ToClient(params) = cancelled else { panic!("expected a return to the client: {cancelled:?}") };
    assert_eq!(params.get("kc_action_status").map(String::as_str), Some("cancelled"));
    assert!(!params.contains_key("code"));
    assert_eq!(app.count(identity_broker::store::Table::FederatedIdentities).await, 1);

    // Linked to the same user, with a code and kc_action_status=success.
    let linked = app.follow(&app.browser, &app.auth_url(&link)).await;
    let Outcome::ToClient(params) = linked else { panic!("expected a return to the client: {linked:?}") };
    assert_eq!(params.get("kc_action_status").map(String::as_str), Some("success"));
    let after = exchange_ok(&app, &params["code"]).await;
    assert_eq!(jwt_claims(&text(&after, "access_token"))["sub"], user_id.as_str(), "the current user, not a new one");
    let identity =
        app.store.find_identity(IdentityKey { user_id: &user_id, alias: "azure_devops_eu" }).await.expect("query");
    assert!(identity.is_some(), "azure_devops_eu is linked to the user");
    assert_eq!(app.count(identity_broker::store::Table::Users).await, 1);
});

both_backends!(an_identity_of_another_user_is_never_linked, |backend| async move {
    let app = spawn_app(backend).await;
    // Alice and Bob each signed in, in their own browsers.
    app.entra.set_user(FakeUser::alice());
    let alice = exchange_ok(&app, &app.sign_in().await.code()).await;
    let alice_id = text(&jwt_claims(&text(&alice, "access_token")), "sub");
    app.entra.set_user(FakeUser::bob());
    let bob_browser = browser_client();
    let bob = exchange_ok(&app, &app.follow(&bob_browser, &app.auth_url(&[])).await.code()).await;
    let bob_id = text(&jwt_claims(&text(&bob, "access_token")), "sub");
    let vault_before = app.store.dump_table(identity_broker::store::Table::VaultTokens).await.expect("dump");

    // Bob tries to link Alice's Azure DevOps account.
    app.entra.set_user(FakeUser::alice());
    let outcome = app.follow(&bob_browser, &app.auth_url(&[("kc_action", "idp_link:azure_devops")])).await;

    assert_eq!(outcome.page_status(), StatusCode::CONFLICT);
    let alice_identity = app.identity(&alice_id, "azure_devops").await;
    assert_eq!(alice_identity.subject, FakeUser::alice().subject, "Alice keeps her identity");
    let bob_identity = app.identity(&bob_id, "azure_devops").await;
    assert_eq!(bob_identity.subject, FakeUser::bob().subject, "Bob keeps his");
    let vault_after = app.store.dump_table(identity_broker::store::Table::VaultTokens).await.expect("dump");
    assert_eq!(vault_before, vault_after, "no stored token changed");

    // Relinking one's own account replaces the stored tokens.
    app.entra.set_user(FakeUser::bob());
    let relinked = app.follow(&bob_browser, &app.auth_url(&[("kc_action", "idp_link:azure_devops")])).await;
    let Outcome::ToClient(params) = relinked else { panic!("expected a return to the client: {relinked:?}") };
    assert_eq!(params.get("kc_action_status").map(String::as_str), Some("success"));
    let vault_relinked = app.store.dump_table(identity_broker::store::Table::VaultTokens).await.expect("dump");
    assert_ne!(vault_after, vault_relinked, "the tokens were replaced");
});
