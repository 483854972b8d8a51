//! End to end through real sockets: `/auth` → Entra → callback → code → tokens → userinfo.

use identity_broker::store::Table;
use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::{FakeUser, HOME_TENANT, OTHER_TENANT, UpstreamFailure};

both_backends!(happy_path_from_auth_to_userinfo, |backend| async move {
    // Arrange
    let app = spawn_app(backend).await;

    // Act
    let outcome = app.sign_in().await;
    let Outcome::ToClient(params) = &outcome else { panic!("expected a redirect to the client, got {outcome:?}") };
    assert_eq!(params.get("state").map(String::as_str), Some("client-state-123"), "the client's own state comes back");
    let response = app.exchange(&outcome.code(), &[]).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.expect("json");
    for field in ["access_token", "refresh_token", "id_token"] {
        assert!(tokens[field].is_string(), "{field} missing: {tokens}");
    }
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["expires_in"].as_i64().is_some_and(|s| s > 0));
    assert!(tokens["refresh_expires_in"].as_i64().is_some_and(|s| s > 0));

    let access = jwt_claims(tokens["access_token"].as_str().unwrap_or_default());
    let refresh = jwt_claims(tokens["refresh_token"].as_str().unwrap_or_default());
    let id = jwt_claims(tokens["id_token"].as_str().unwrap_or_default());
    let issuer = app.url(&realm_path(paths::REALM));
    assert!(uuid::Uuid::parse_str(access["sub"].as_str().unwrap_or_default()).is_ok(), "sub is a UUID: {access}");
    assert_eq!(access["typ"], "Bearer");
    assert_eq!(access["iss"], issuer);
    assert_eq!(access["azp"], CLIENT_ID);
    assert_eq!(access["identity_provider"], "azure_devops");
    assert_eq!(access["email_verified"], Value::Bool(false), "nothing proves the address (trust_email is off)");
    assert_eq!(access["resource_access"]["broker"]["roles"][0], "read-token");
    assert!(access["exp"].is_i64() && access["iat"].is_i64());
    assert_eq!(refresh["typ"], "Refresh");
    assert_eq!(refresh["sub"], access["sub"]);
    assert!(refresh["exp"].is_i64());
    assert_eq!(refresh["sid"], access["sid"]);
    assert_eq!(id["typ"], "ID");
    assert_eq!(id["aud"], CLIENT_ID);

    let info = app.userinfo(tokens["access_token"].as_str().unwrap_or_default()).await;
    assert_eq!(info.status(), StatusCode::OK);
    let info: Value = info.json().await.expect("json");
    assert_eq!(info["sub"], access["sub"]);
    assert_eq!(info["email"], "alice@contoso.onmicrosoft.com", "Entra omitted email; the UPN stands in, lower-cased");
    assert_eq!(info["preferred_username"], "alice@contoso.onmicrosoft.com");
    assert_eq!(info["email_verified"], Value::Bool(false), "a UPN standing in proves nothing");
    assert_eq!(info["identity_provider"], "azure_devops");
    assert_eq!(info["name"], FakeUser::alice().name);

    assert_eq!(app.count(Table::Users).await, 1);
    assert_eq!(app.count(Table::VaultTokens).await, 1);
    assert_eq!(app.count(Table::AuthRequests).await, 0, "the pending sign-in was consumed");
    let form = app.entra.last_token_form().expect("the broker called the token endpoint");
    assert!(form.get("code_verifier").is_some_and(|v| v.len() >= 43), "PKCE verifier sent upstream");
    assert!(
        form["scope"].contains("offline_access")
            && form["scope"].contains("https://app.vssps.visualstudio.com/.default")
    );
});

both_backends!(no_upstream_token_is_stored_in_plaintext, |backend| async move {
    let app = spawn_app(backend).await;
    app.sign_in().await.code();

    let issued = app.entra.issued_tokens();
    assert!(issued.len() >= 3, "the fake issued access, refresh and ID tokens");
    let mut cells = Vec::new();
    for table in [Table::VaultTokens, Table::FederatedIdentities, Table::Users, Table::AuditEvents, Table::SigningKeys]
    {
        cells.extend(app.store.dump_table(table).await.expect("dump"));
    }
    for token in &issued {
        // Any 24-character slice is enough to recognise a token.
        let needle = &token.as_bytes()[..24.min(token.len())];
        let leaked = cells.iter().any(|cell| cell.windows(needle.len()).any(|w| w == needle));
        assert!(!leaked, "an upstream token was found in plaintext in the database");
    }
    assert!(!cells.iter().any(|c| c.windows(9).any(|w| w == b"PRIVATE K")), "signing key stored in the clear");
});

both_backends!(returning_user_keeps_the_same_id_and_gets_an_updated_profile, |backend| async move {
    let app = spawn_app(backend).await;
    let first = jwt_claims(app.tokens().await["access_token"].as_str().unwrap_or_default());

    let mut renamed = FakeUser::alice();
    renamed.name = "Alice Renamed".into();
    renamed.email = Some("Alice.New@Contoso.com".into());
    app.entra.set_user(renamed);
    let second = app.tokens().await;
    let second_claims = jwt_claims(second["access_token"].as_str().unwrap_or_default());

    assert_eq!(first["sub"], second_claims["sub"], "the same person maps to the same user");
    assert_eq!(app.count(Table::Users).await, 1);
    assert_eq!(app.count(Table::FederatedIdentities).await, 1);
    let info: Value =
        app.userinfo(second["access_token"].as_str().unwrap_or_default()).await.json().await.expect("json");
    assert_eq!(info["name"], "Alice Renamed");
    assert_eq!(info["email"], "alice.new@contoso.com");
    assert_eq!(app.count(Table::SsoSessions).await, 2);
});

both_backends!(multi_tenant_sign_in_accepts_allowed_tenants_and_refuses_others, |backend| async move {
    let setup = ProviderSetup {
        tenant: "organizations".into(),
        allowed_tenants: vec![HOME_TENANT.into()],
        ..ProviderSetup::default()
    };
    let app = TestApp::builder(backend).provider(setup).spawn().await;

    let mut outsider = FakeUser::bob();
    outsider.tenant_id = OTHER_TENANT.into();
    app.entra.set_user(outsider);
    let refused = app.sign_in().await;
    assert_eq!(refused.page_status(), StatusCode::BAD_REQUEST, "a tenant outside allowed_tenants is refused");
    app.assert_nothing_stored("wrong tid").await;

    app.entra.set_user(FakeUser::alice());
    let tokens = app.tokens().await;
    assert!(tokens["access_token"].is_string(), "the home tenant signs in through `organizations`");
});

both_backends!(a_declined_consent_returns_access_denied_to_the_client, |backend| async move {
    let app = spawn_app(backend).await;
    app.entra.deny_next_authorization();

    let outcome = app.sign_in().await;

    let Outcome::ToClient(params) = outcome else { panic!("expected a redirect to the client") };
    assert_eq!(params.get("error").map(String::as_str), Some("access_denied"));
    assert_eq!(params.get("state").map(String::as_str), Some("client-state-123"));
    assert!(!params.contains_key("code"));
    app.assert_nothing_stored("access_denied").await;
});

both_backends!(upstream_failures_give_a_page_and_store_nothing, |backend| async move {
    let cases = [
        (
            UpstreamFailure::aadsts(401, "invalid_client", 7000215, "Invalid client secret provided."),
            502,
            "misconfigured",
        ),
        (
            UpstreamFailure::aadsts(401, "invalid_client", 7000222, "The provided client secret keys are expired."),
            502,
            "misconfigured",
        ),
        (
            UpstreamFailure::aadsts(400, "invalid_request", 50011, "The redirect URI does not match."),
            502,
            "misconfigured",
        ),
        (UpstreamFailure::aadsts(400, "unauthorized_client", 700016, "Application not found."), 502, "misconfigured"),
        (UpstreamFailure::aadsts(400, "invalid_grant", 65001, "The user has not consented."), 400, "consent"),
        (UpstreamFailure::server_error(), 503, "try again"),
    ];
    let app = spawn_app(backend).await;
    for (failure, status, words) in cases {
        let context = format!("{} {:?}", failure.error, failure.aadsts);
        app.entra.fail_next_token_request(failure);
        let outcome = app.follow(&browser_client(), &app.auth_url(&[])).await;
        let Outcome::Page { status: got, body } = outcome else { panic!("{context}: expected an error page") };
        assert_eq!(got.as_u16(), status, "{context}");
        assert!(body.contains(words), "{context}: page should say `{words}`: {body}");
        assert!(body.contains("Reference:"), "{context}: the page carries a correlation id");
        app.assert_nothing_stored(&context).await;
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("identity_broker_sign_ins_total{provider=\"azure_devops\",outcome=\"upstream_error\"}"),
        "{metrics}"
    );
});

both_backends!(the_form_post_response_mode_is_accepted, |backend| async move {
    let app = spawn_app(backend).await;
    let authorize =
        app.until_upstream(&app.browser, &[]).await.replace("response_mode=query", "response_mode=form_post");

    let page = app.browser.get(&authorize).send().await.expect("authorize").text().await.expect("html");
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in {page}")) + marker.len();
        page[start..].split('"').next().unwrap_or_default().to_owned()
    };
    let answer = app
        .browser
        .post(app.url(&provider_path(paths::BROKER_ENDPOINT, "azure_devops")))
        .form(&[("code", field("code")), ("state", field("state"))])
        .send()
        .await
        .expect("callback");

    assert_eq!(answer.status(), StatusCode::FOUND);
    let code = query_of(&location(&answer)).remove("code").expect("a code for the client");
    assert_eq!(app.exchange(&code, &[]).await.status(), StatusCode::OK);
});

both_backends!(the_apps_own_pkce_is_honoured, |backend| async move {
    let app = spawn_app(backend).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXk";
    let challenge =
        [("code_challenge", "VYFANLqdx_HDV6BqEhluZJ63rtrIPROSSFdB3P6G83I"), ("code_challenge_method", "S256")];

    let code = app.follow(&app.browser, &app.auth_url(&challenge)).await.code();
    let wrong = app.exchange(&code, &[("code_verifier", "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXX")]).await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST, "PKCE mismatch");
    assert_eq!(wrong.json::<Value>().await.expect("json")["error"], "invalid_grant");

    let code = app.follow(&browser_client(), &app.auth_url(&challenge)).await.code();
    let missing = app.exchange(&code, &[]).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST, "a challenged code needs a verifier");

    let code = app.follow(&browser_client(), &app.auth_url(&challenge)).await.code();
    assert_eq!(app.exchange(&code, &[("code_verifier", verifier)]).await.status(), StatusCode::OK);
});

both_backends!(several_providers_and_no_hint_show_a_chooser, |backend| async move {
    let app = TestApp::builder(backend)
        .provider(ProviderSetup { second_provider: true, ..ProviderSetup::default() })
        .spawn()
        .await;
    let without_hint = app.auth_url(&[]).replace("&kc_idp_hint=azure_devops", "");

    let page = app.browser.get(&without_hint).send().await.expect("auth");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("Sign in with Azure DevOps (EU)") && html.contains("Sign in with Azure DevOps<"), "{html}");
    let start = html.find("href=\"").expect("a link") + 6;
    let link = html[start..].split('"').next().expect("href").replace("&amp;", "&");
    assert!(link.contains("/broker/azure_devops/login?request="), "{link}");

    let outcome = app.follow(&app.browser, &app.url(&link)).await;
    let tokens: Value = app.exchange(&outcome.code(), &[]).await.json().await.expect("json");
    assert_eq!(jwt_claims(tokens["access_token"].as_str().unwrap_or_default())["identity_provider"], "azure_devops");
});

both_backends!(client_secret_basic_towards_the_provider_works, |backend| async move {
    let app = TestApp::builder(backend)
        .provider(ProviderSetup { client_auth_method: "client_secret_basic", ..ProviderSetup::default() })
        .spawn()
        .await;

    let tokens = app.tokens().await;

    assert!(tokens["access_token"].is_string());
    let form = app.entra.last_token_form().expect("a token request");
    assert!(!form.contains_key("client_secret"), "the secret travelled in the Authorization header");
});
