//! Protocol hardening: PKCE downgrades, a discovery document that tells the truth, access
//! tokens revoked on every replica, and introspection only for callers proven by a secret.

use std::collections::BTreeSet;
use std::time::Duration;

use identity_broker::store::Table;
use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::replicas::start_process;

/// A public client (a single-page app): no secret, PKCE required.
const PUBLIC_CLIENT_ID: &str = "spa";
/// A public client configured to accept `code_challenge_method=plain`.
const PLAIN_CLIENT_ID: &str = "legacy-spa";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXk";
const S256_CHALLENGE: &str = "VYFANLqdx_HDV6BqEhluZJ63rtrIPROSSFdB3P6G83I";

fn public_client() -> String {
    format!(
        "\n[[clients]]\nclient_id = \"{PUBLIC_CLIENT_ID}\"\npublic_client = true\nredirect_uris = [\"{REDIRECT_URI}\"]\n"
    )
}

fn plain_client() -> String {
    format!(
        "\n[[clients]]\nclient_id = \"{PLAIN_CLIENT_ID}\"\npublic_client = true\nredirect_uris = [\"{REDIRECT_URI}\"]\n\
         allow_plain_pkce = true\n"
    )
}

const S256: [(&str, &str); 2] = [("code_challenge", S256_CHALLENGE), ("code_challenge_method", "S256")];

/// A code for `client_id` from a sign-in in a fresh browser, with `extra` authorization parameters.
async fn code_for(app: &TestApp, client_id: &str, extra: &[(&str, &str)]) -> String {
    app.follow(&browser_client(), &app.auth_url_for(client_id, REDIRECT_URI, extra)).await.code()
}

/// The code exchange of a public client: its id, no secret.
async fn public_exchange(app: &TestApp, client_id: &str, code: &str, verifier: &str) -> reqwest::Response {
    let form = [
        ("client_id", client_id),
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", verifier),
    ];
    app.post_form(paths::TOKEN, &form).await
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

async fn introspect(app: &TestApp, public: &str, token: &str) -> Value {
    let form = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET), ("token", token)];
    let url = format!("{public}{}", realm_path(paths::INTROSPECT));
    let answer = app.api.post(url).form(&form).send().await.expect("introspect");
    assert_eq!(answer.status(), StatusCode::OK);
    json(answer).await
}

async fn revoke(app: &TestApp, client: (&str, &str), token: &str) -> StatusCode {
    let form = [("client_id", client.0), ("client_secret", client.1), ("token", token)];
    app.post_form(paths::REVOKE, &form).await.status()
}

both_backends!(a_verifier_for_a_code_requested_without_a_challenge_is_refused, |backend| async move {
    let app = spawn_app(backend).await;
    // (challenge sent at /auth, verifier sent at /token, expected status, why)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, StatusCode, &'a str);
    let cases: [Case; 4] = [
        (&[], Some(VERIFIER), StatusCode::BAD_REQUEST, "a verifier without a challenge is a PKCE downgrade"),
        (&S256, None, StatusCode::BAD_REQUEST, "a challenged code needs its verifier"),
        (&S256, Some(VERIFIER), StatusCode::OK, "challenge and verifier"),
        (&[], None, StatusCode::OK, "a confidential client without PKCE"),
    ];
    for (challenge, verifier, status, context) in cases {
        let code = code_for(&app, CLIENT_ID, challenge).await;

        let extra: Vec<(&str, &str)> = verifier.map(|v| ("code_verifier", v)).into_iter().collect();
        let response = app.exchange(&code, &extra).await;

        assert_eq!(response.status(), status, "{context}");
        if status == StatusCode::BAD_REQUEST {
            let body = json(response).await;
            assert_eq!(body["error"], "invalid_grant", "{context}: {body}");
            assert!(body.get("access_token").is_none(), "{context}: no token");
        }
    }
});

both_backends!(plain_pkce_is_refused_unless_the_client_allows_it, |backend| async move {
    let app = TestApp::builder(backend).extra(&(public_client() + &plain_client())).spawn().await;
    let cases = [
        (CLIENT_ID, Some("plain"), "plain, for a client not configured for it"),
        (CLIENT_ID, None, "no method means plain"),
        (PUBLIC_CLIENT_ID, Some("plain"), "plain, for a public client"),
        (PUBLIC_CLIENT_ID, Some("S512"), "a method that does not exist"),
    ];
    for (client_id, method, context) in cases {
        let mut extra = vec![("code_challenge", VERIFIER)];
        extra.extend(method.map(|m| ("code_challenge_method", m)));

        let response = app.browser.get(app.auth_url_for(client_id, REDIRECT_URI, &extra)).send().await.expect("auth");

        assert_eq!(response.status(), StatusCode::FOUND, "{context}");
        let target = location(&response);
        assert!(target.starts_with(REDIRECT_URI), "{context}: an error for the client, at {target}");
        let params = query_of(&target);
        assert_eq!(params.get("error").map(String::as_str), Some("invalid_request"), "{context}: {params:?}");
        assert_eq!(params.get("state").map(String::as_str), Some("client-state-123"), "{context}");
    }
    assert_eq!(app.count(Table::AuthRequests).await, 0, "no refused request was recorded");

    // A client configured for plain signs in with it; S256 stays open to it.
    let code =
        code_for(&app, PLAIN_CLIENT_ID, &[("code_challenge", VERIFIER), ("code_challenge_method", "plain")]).await;
    let plain = public_exchange(&app, PLAIN_CLIENT_ID, &code, VERIFIER).await;
    assert_eq!(plain.status(), StatusCode::OK, "plain where the client allows it");
    let code = code_for(&app, PLAIN_CLIENT_ID, &S256).await;
    assert_eq!(public_exchange(&app, PLAIN_CLIENT_ID, &code, VERIFIER).await.status(), StatusCode::OK, "S256 too");
});

both_backends!(discovery_advertises_what_is_served_and_nothing_else, |backend| async move {
    let app = TestApp::builder(backend).extra(&public_client()).spawn().await;
    let discovery = |app: &TestApp| {
        let url = app.url(&realm_path(paths::DISCOVERY));
        let request = app.api.get(url);
        async move { json(request.send().await.expect("discovery")).await }
    };
    let names = |value: &Value| -> BTreeSet<String> {
        value.as_array().expect("a list").iter().map(|v| v.as_str().expect("a string").to_owned()).collect()
    };
    let set = |list: &[&str]| -> BTreeSet<String> { list.iter().map(|s| (*s).to_owned()).collect() };

    let document = discovery(&app).await;

    assert_eq!(document["authorization_response_iss_parameter_supported"], Value::Bool(true));
    assert_eq!(
        names(&document["grant_types_supported"]),
        set(&["authorization_code", "refresh_token", "client_credentials", "password"])
    );
    assert_eq!(
        names(&document["token_endpoint_auth_methods_supported"]),
        set(&["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(
        names(&document["introspection_endpoint_auth_methods_supported"]),
        set(&["client_secret_basic", "client_secret_post"]),
        "introspection takes no public client"
    );
    assert_eq!(
        names(&document["revocation_endpoint_auth_methods_supported"]),
        set(&["client_secret_basic", "client_secret_post", "none"]),
        "a public client revokes its own tokens (a_revoked_access_token_is_inactive_at_once)"
    );
    assert_eq!(document["code_challenge_methods_supported"], serde_json::json!(["S256"]));

    // Every grant advertised is one the token endpoint knows; others are unsupported.
    for grant in names(&document["grant_types_supported"]) {
        let form = [("grant_type", grant.as_str()), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
        let body = json(app.post_form(paths::TOKEN, &form).await).await;
        assert_ne!(body["error"], "unsupported_grant_type", "{grant} is advertised: {body}");
    }
    for grant in
        ["implicit", "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:token-exchange"]
    {
        let form = [("grant_type", grant), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)];
        let body = json(app.post_form(paths::TOKEN, &form).await).await;
        assert_eq!(body["error"], "unsupported_grant_type", "{grant} is not advertised: {body}");
    }

    // client_credentials, by client_secret_basic.
    let basic = app
        .api
        .post(app.url(&realm_path(paths::TOKEN)))
        .basic_auth(SERVICE_ID, Some(SERVICE_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("client_credentials");
    assert_eq!(basic.status(), StatusCode::OK, "client_credentials by client_secret_basic");
    // authorization_code and refresh_token for a public client (`none`), with S256.
    let code = code_for(&app, PUBLIC_CLIENT_ID, &S256).await;
    let issued = public_exchange(&app, PUBLIC_CLIENT_ID, &code, VERIFIER).await;
    assert_eq!(issued.status(), StatusCode::OK, "a public client's code grant");
    let issued = json(issued).await;
    let refresh = [
        ("client_id", PUBLIC_CLIENT_ID),
        ("grant_type", "refresh_token"),
        ("refresh_token", issued["refresh_token"].as_str().expect("refresh token")),
    ];
    assert_eq!(app.post_form(paths::TOKEN, &refresh).await.status(), StatusCode::OK, "a public client's refresh");

    // RFC 9207: `iss` on the way back to the client, with a code and with an error.
    let issuer = document["issuer"].as_str().expect("issuer");
    let Outcome::ToClient(granted) = app.follow(&browser_client(), &app.auth_url(&[])).await else {
        panic!("a sign-in goes back to the client")
    };
    assert_eq!(granted.get("iss").map(String::as_str), Some(issuer), "{granted:?}");
    let Outcome::ToClient(refused) = app.follow(&browser_client(), &app.auth_url(&[("prompt", "none")])).await else {
        panic!("prompt=none without a session goes back to the client")
    };
    assert_eq!(refused.get("error").map(String::as_str), Some("login_required"));
    assert_eq!(refused.get("iss").map(String::as_str), Some(issuer), "{refused:?}");

    // A client configured for plain PKCE puts it in the document.
    let lenient = TestApp::builder(backend).extra(&plain_client()).spawn().await;
    assert_eq!(discovery(&lenient).await["code_challenge_methods_supported"], serde_json::json!(["S256", "plain"]));
});

both_backends!(a_revoked_access_token_is_inactive_at_once, |backend| async move {
    let app = TestApp::builder(backend).extra(&public_client()).spawn().await;
    let tokens = app.tokens().await;
    let access = access_token(&tokens);
    // Found good once, so that the check and its revocation state are remembered.
    assert_eq!(app.userinfo(access).await.status(), StatusCode::OK);
    assert_eq!(introspect(&app, &app.public, access).await["active"], Value::Bool(true));

    assert_eq!(revoke(&app, (OTHER_CLIENT_ID, OTHER_CLIENT_SECRET), access).await, StatusCode::OK);
    assert_eq!(revoke(&app, (CLIENT_ID, CLIENT_SECRET), "garbage").await, StatusCode::OK, "unknown tokens: 200");
    assert_eq!(app.userinfo(access).await.status(), StatusCode::OK, "another client's revocation is ignored");

    let revoked = revoke(&app, (CLIENT_ID, CLIENT_SECRET), access).await;

    assert_eq!(revoked, StatusCode::OK);
    assert_eq!(introspect(&app, &app.public, access).await, serde_json::json!({"active": false}));
    let userinfo = app.userinfo(access).await;
    assert_eq!(userinfo.status(), StatusCode::UNAUTHORIZED);
    let challenge = userinfo.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_eq!(app.broker_token(access, "azure_devops").await.status(), StatusCode::BAD_REQUEST, "nor the broker");
    let refresh = tokens["refresh_token"].as_str().expect("refresh token");
    assert_eq!(introspect(&app, &app.public, refresh).await["active"], Value::Bool(true), "only that token");
    assert_eq!(revoke(&app, (CLIENT_ID, CLIENT_SECRET), access).await, StatusCode::OK, "revoking twice: 200");

    // A public client revokes its own access token by its id.
    let code = code_for(&app, PUBLIC_CLIENT_ID, &S256).await;
    let public_tokens = json(public_exchange(&app, PUBLIC_CLIENT_ID, &code, VERIFIER).await).await;
    let public_access = access_token(&public_tokens);
    assert_eq!(app.userinfo(public_access).await.status(), StatusCode::OK);
    let form = [("client_id", PUBLIC_CLIENT_ID), ("token", public_access)];
    assert_eq!(app.post_form(paths::REVOKE, &form).await.status(), StatusCode::OK);
    assert_eq!(app.userinfo(public_access).await.status(), StatusCode::UNAUTHORIZED, "a public client's own token");
});

/// Polls `status` until it answers `expected` or a few seconds pass: far less than the minute
/// a cached row may live, so only the change notification can explain a pass.
async fn eventually<F, Fut>(expected: StatusCode, status: F) -> StatusCode
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = status().await;
        if got == expected || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_access_token_revoked_at_one_process_is_refused_at_another() {
    let app = spawn_app(Backend::Postgres).await;
    let tokens = app.tokens().await;
    let access = access_token(&tokens).to_owned();
    // The same issuer as this process, so that each accepts the other's tokens.
    let other = start_process(&settings_toml(&app.entra, &ProviderSetup::default()), &app.db.url, &app.public).await;
    let client = reqwest::Client::new();
    let userinfo_there = || async {
        let url = format!("{}{}", other.public, realm_path(paths::USERINFO));
        client.get(url).bearer_auth(&access).send().await.expect("userinfo").status()
    };
    // The other process has the token's check, its session and its unrevoked state in memory.
    for _ in 0..3 {
        assert_eq!(userinfo_there().await, StatusCode::OK);
    }
    assert_eq!(introspect(&app, &other.public, &access).await["active"], Value::Bool(true));

    assert_eq!(revoke(&app, (CLIENT_ID, CLIENT_SECRET), &access).await, StatusCode::OK);

    assert_eq!(eventually(StatusCode::UNAUTHORIZED, userinfo_there).await, StatusCode::UNAUTHORIZED);
    assert_eq!(introspect(&app, &other.public, &access).await, serde_json::json!({"active": false}));
}

both_backends!(introspection_needs_a_confidential_client_or_a_service_account, |backend| async move {
    let app = TestApp::builder(backend).extra(&public_client()).spawn().await;
    let access = access_token(&app.tokens().await).to_owned();
    let url = app.url(&realm_path(paths::INTROSPECT));
    // (form credentials, Basic credentials, expected status, expected error, why)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<(&'a str, &'a str)>, StatusCode, Option<&'a str>, &'a str);
    let cases: [Case; 10] = [
        (&[("client_id", PUBLIC_CLIENT_ID)], None, StatusCode::FORBIDDEN, Some("invalid_request"), "a public client"),
        (
            &[("client_id", PUBLIC_CLIENT_ID), ("client_secret", "guess")],
            None,
            StatusCode::UNAUTHORIZED,
            Some("invalid_client"),
            "a public client with a secret",
        ),
        (&[], None, StatusCode::UNAUTHORIZED, Some("invalid_client"), "no credentials"),
        (&[("client_id", CLIENT_ID)], None, StatusCode::UNAUTHORIZED, Some("invalid_client"), "no secret"),
        (
            &[("client_id", CLIENT_ID), ("client_secret", "wrong")],
            None,
            StatusCode::UNAUTHORIZED,
            Some("invalid_client"),
            "a wrong secret",
        ),
        (&[], Some((CLIENT_ID, "wrong")), StatusCode::UNAUTHORIZED, Some("invalid_client"), "a wrong Basic secret"),
        (
            &[("client_id", SERVICE_ID), ("client_secret", "wrong")],
            None,
            StatusCode::UNAUTHORIZED,
            Some("invalid_client"),
            "a service account's wrong secret",
        ),
        (&[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)], None, StatusCode::OK, None, "confidential"),
        (&[], Some((CLIENT_ID, CLIENT_SECRET)), StatusCode::OK, None, "confidential, by Basic"),
        (
            &[("client_id", SERVICE_ID), ("client_secret", SERVICE_SECRET)],
            None,
            StatusCode::OK,
            None,
            "a service account",
        ),
    ];
    for (credentials, basic, status, error, context) in cases {
        let mut form = credentials.to_vec();
        form.push(("token", access.as_str()));
        let mut request = app.api.post(&url).form(&form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }

        let response = request.send().await.expect("introspect");

        assert_eq!(response.status(), status, "{context}");
        let body = json(response).await;
        match error {
            Some(error) => {
                assert_eq!(body["error"], error, "{context}: {body}");
                assert!(body.get("active").is_none() && body.get("sub").is_none(), "{context}: nothing leaks: {body}");
            }
            None => assert_eq!(body["active"], Value::Bool(true), "{context}: {body}"),
        }
    }
});
