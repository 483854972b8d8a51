//! Every bad input gets a clear 4xx or error page, never a 500, never a redirect to an
//! unregistered URI, and stores nothing.

use identity_broker::store::Table;
use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::IdTokenTweak;

both_backends!(bad_authorization_requests_never_redirect_to_untrusted_places, |backend| async move {
    let app = spawn_app(backend).await;
    let auth = app.url(&realm_path(paths::AUTH));
    let long = "x".repeat(5000);
    let cases = [
        (format!("{auth}?client_id=unknown&response_type=code&redirect_uri={REDIRECT_URI}"), "unknown client"),
        (
            format!("{auth}?client_id={CLIENT_ID}&response_type=code&redirect_uri=https://evil.test/cb"),
            "unregistered redirect URI",
        ),
        (
            format!("{auth}?client_id={CLIENT_ID}&response_type=code&redirect_uri={REDIRECT_URI}/extra"),
            "prefix of a registered URI",
        ),
        (format!("{auth}?client_id={CLIENT_ID}&response_type=code"), "missing redirect URI"),
        (format!("{auth}?response_type=code&redirect_uri={REDIRECT_URI}"), "missing client"),
        (
            format!("{auth}?client_id={CLIENT_ID}&client_id=other&response_type=code&redirect_uri={REDIRECT_URI}"),
            "repeated parameter",
        ),
        (
            format!("{auth}?client_id={CLIENT_ID}&response_type=code&redirect_uri={REDIRECT_URI}&state={long}"),
            "oversized state",
        ),
        (format!("{auth}?client_id=%FF%FE&response_type=code"), "malformed encoding"),
    ];
    for (url, context) in cases {
        let response = app.browser.get(&url).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{context}");
        assert!(response.headers().get("location").is_none(), "{context}: must not redirect");
        let body = response.text().await.unwrap_or_default();
        if context == "malformed encoding" {
            // Bytes that are not UTF-8 are refused at the edge, for every listener alike.
            assert!(body.contains("\"invalid_request\""), "{context}: an OAuth error body: {body}");
        } else {
            assert!(body.contains("Reference:"), "{context}: an error page");
        }
    }
    assert_eq!(app.count(Table::AuthRequests).await, 0, "no pending sign-in was recorded");
});

both_backends!(errors_after_the_redirect_uri_is_trusted_go_back_to_the_client, |backend| async move {
    let app = spawn_app(backend).await;
    let auth = app.url(&realm_path(paths::AUTH));
    let cases = [
        ("response_type=token", "unsupported_response_type"),
        ("response_type=code&code_challenge=short&code_challenge_method=S256", "invalid_request"),
        ("response_type=code&kc_action=delete_account", "invalid_request"),
        ("response_type=code&prompt=none", "login_required"),
    ];
    for (query, error) in cases {
        let url = format!("{auth}?client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}&state=s1&{query}");
        let response = app.browser.get(&url).send().await.expect("request");
        assert_eq!(response.status(), StatusCode::FOUND, "{query}");
        let target = location(&response);
        assert!(target.starts_with(REDIRECT_URI), "{query}: only to the registered URI");
        let params = query_of(&target);
        assert_eq!(params.get("error").map(String::as_str), Some(error), "{query}");
        assert_eq!(params.get("state").map(String::as_str), Some("s1"), "{query}");
    }
});

both_backends!(callbacks_without_state_cookie_or_with_a_replayed_state_are_refused, |backend| async move {
    let app = spawn_app(backend).await;
    let endpoint = app.url(&provider_path(paths::BROKER_ENDPOINT, "azure_devops"));

    let missing_state = app.browser.get(format!("{endpoint}?code=abc")).send().await.expect("request");
    assert_eq!(missing_state.status(), StatusCode::BAD_REQUEST, "missing state");
    let unknown_state = app.browser.get(format!("{endpoint}?code=abc&state=forged")).send().await.expect("request");
    assert_eq!(unknown_state.status(), StatusCode::BAD_REQUEST, "unknown state");

    // A callback carried to another browser (no cookie) is refused and uses the state up.
    let callback = app.upstream_callback(&app.browser, &[]).await;
    let stranger = browser_client().get(&callback).send().await.expect("request");
    assert_eq!(stranger.status(), StatusCode::BAD_REQUEST, "callback without the browser cookie");
    let retry = app.browser.get(&callback).send().await.expect("request");
    assert_eq!(retry.status(), StatusCode::BAD_REQUEST, "the state was consumed by the failed attempt");
    app.assert_nothing_stored("foreign browser").await;

    // A successful callback cannot be replayed.
    let callback = app.upstream_callback(&app.browser, &[]).await;
    let first = app.browser.get(&callback).send().await.expect("request");
    assert_eq!(first.status(), StatusCode::FOUND);
    let replay = app.browser.get(&callback).send().await.expect("request");
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST, "replayed state");
    assert_eq!(app.count(Table::AuthorizationCodes).await, 1, "the replay issued nothing");

    // The callback must come from the provider the sign-in started with (prompt=login, as
    // the browser now has an SSO session that would answer at once).
    let callback = app.upstream_callback(&app.browser, &[("prompt", "login")]).await;
    let other = callback.replace("/broker/azure_devops/", "/broker/github/");
    let response = app.browser.get(&other).send().await.expect("request");
    assert!(response.status().is_client_error(), "another provider's endpoint: {}", response.status());
});

both_backends!(spoiled_id_tokens_are_refused, |backend| async move {
    let app = spawn_app(backend).await;
    let tweaks = [
        IdTokenTweak::BadSignature,
        IdTokenTweak::Expired,
        IdTokenTweak::WrongNonce,
        IdTokenTweak::MissingNonce,
        IdTokenTweak::WrongAudience,
        IdTokenTweak::WrongIssuer,
        IdTokenTweak::UnknownKid,
    ];
    for tweak in tweaks {
        app.entra.tweak_next_id_token(tweak);
        let outcome = app.follow(&browser_client(), &app.auth_url(&[])).await;
        assert_eq!(outcome.page_status(), StatusCode::BAD_REQUEST, "{tweak:?}");
        app.assert_nothing_stored(&format!("{tweak:?}")).await;
    }
});

both_backends!(an_upstream_key_rotation_is_followed, |backend| async move {
    let app = spawn_app(backend).await;
    app.tokens().await;
    let fetched = app.entra.jwks_requests();

    app.entra.rotate_signing_key();

    // The JWKS is re-fetched at most every 10 seconds (JWKS_REFETCH_MIN_INTERVAL_SECONDS).
    let too_soon = app.follow(&browser_client(), &app.auth_url(&[])).await;
    assert_eq!(too_soon.page_status(), StatusCode::BAD_REQUEST, "the new key is not known yet");
    assert_eq!(app.entra.jwks_requests(), fetched, "no re-fetch within the guard's interval");
    app.state.clock.advance(10);
    let tokens = app.tokens().await;

    assert!(tokens["access_token"].is_string());
    assert_eq!(app.entra.jwks_requests(), fetched + 1, "one re-fetch on the unknown kid");
});

both_backends!(code_replay_wrong_secret_and_bad_grants_are_refused, |backend| async move {
    let app = spawn_app(backend).await;

    let code = app.sign_in().await.code();
    let wrong_secret = app.exchange(&code, &[("client_secret", "not-the-secret")]).await;
    assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_secret.json::<Value>().await.expect("json")["error"], "invalid_client");
    let wrong_redirect = app.exchange(&code, &[("redirect_uri", "http://app.test/other")]).await;
    assert_eq!(wrong_redirect.status(), StatusCode::BAD_REQUEST, "a redirect URI other than the code's");

    let code = app.follow(&browser_client(), &app.auth_url(&[])).await.code();
    let first = app.exchange(&code, &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let access = first.json::<Value>().await.expect("json")["access_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(app.userinfo(&access).await.status(), StatusCode::OK);
    let replay = app.exchange(&code, &[]).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(replay.json::<Value>().await.expect("json")["error"], "invalid_grant");
    assert_eq!(
        app.userinfo(&access).await.status(),
        StatusCode::UNAUTHORIZED,
        "a replayed code revokes what it issued"
    );

    let token_url = app.url(&realm_path(paths::TOKEN));
    let basic = app
        .api
        .post(&token_url)
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .expect("request");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert!(basic.headers().get("www-authenticate").is_some(), "Basic auth failures carry a challenge");

    let huge = "a".repeat(200_000);
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: [Case; 6] = [
        (
            vec![("grant_type", "implicit"), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)],
            400,
            "unsupported_grant_type",
        ),
        // The password grant, for a client without `direct_access_grants`.
        (
            vec![("grant_type", "password"), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)],
            400,
            "unauthorized_client",
        ),
        (vec![("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)], 400, "invalid_request"),
        (
            vec![("grant_type", "authorization_code"), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("code", "forged"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("redirect_uri", REDIRECT_URI),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![("grant_type", "authorization_code"), ("client_id", "nobody"), ("client_secret", "x")],
            401,
            "invalid_client",
        ),
    ];
    for (form, status, error) in cases {
        let response = app.api.post(&token_url).form(&form).send().await.expect("request");
        assert_eq!(response.status().as_u16(), status, "{form:?}");
        assert_eq!(response.json::<Value>().await.expect("json")["error"], error, "{form:?}");
    }
    let oversized = app.api.post(&token_url).form(&[("grant_type", huge.as_str())]).send().await.expect("request");
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE, "oversized body");
    // The rest of the body is never read, so the connection ends, and the answer says so: a
    // pooled client must not send the next request down it.
    assert_eq!(oversized.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]), "oversized body");
    let not_a_form =
        app.api.post(&token_url).header("content-type", "application/json").body("{}").send().await.expect("request");
    assert_eq!(not_a_form.status(), StatusCode::BAD_REQUEST, "JSON body");
});

both_backends!(userinfo_refuses_bad_bearer_tokens, |backend| async move {
    let app = spawn_app(backend).await;
    let tokens = app.tokens().await;
    let access = tokens["access_token"].as_str().unwrap_or_default();
    let refresh = tokens["refresh_token"].as_str().unwrap_or_default();
    let mut tampered = access.to_owned();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let parts: Vec<&str> = access.split('.').collect();
    let forged_payload = {
        use base64::Engine as _;
        let mut claims = jwt_claims(access);
        claims["sub"] = Value::String(uuid::Uuid::new_v4().to_string());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
    };
    let swapped = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    for (token, context) in [
        (tampered.as_str(), "tampered signature"),
        (swapped.as_str(), "tampered payload"),
        ("garbage", "not a JWT"),
        (refresh, "a refresh token"),
    ] {
        let response = app.userinfo(token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{context}");
        let challenge = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{context}: {challenge}");
    }
    let none = app.api.get(app.url(&realm_path(paths::USERINFO))).send().await.expect("request");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "no token");
});
