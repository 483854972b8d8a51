//! Serving users' upstream tokens: Keycloak's `/broker/{alias}/token`, the internal API for
//! service accounts, the refresh coordinator and its failure classes, keep-alive and unlink.

use std::time::Duration;

use identity_broker::oidc::tokens::{Grant, UserClaims};
use identity_broker::store::{IdentityKey, Lease, Table};
use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::{FakeUser, UpstreamFailure};

/// Signs the default user in and returns their broker user id and the token response.
async fn signed_in(app: &TestApp) -> (String, Value) {
    let tokens = app.tokens().await;
    (user_id_of(&tokens), tokens)
}

/// The upstream refresh tokens (`refresh`) or access tokens the fake has issued, oldest first.
fn upstream_tokens(app: &TestApp, refresh: bool) -> Vec<String> {
    use base64::Engine as _;
    let access_header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256"}"#);
    let prefix = if refresh { "1.A".to_owned() } else { format!("{access_header}.") };
    app.entra.issued_tokens().into_iter().filter(|t| t.starts_with(&prefix)).collect()
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

both_backends!(the_broker_endpoint_serves_the_stored_token_as_keycloak_does, |backend| async move {
    let app = spawn_app(backend).await;
    let (_, tokens) = signed_in(&app).await;

    let response = app.broker_token(access_token(&tokens), "azure_devops").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = json(response).await;
    let served = body["access_token"].as_str().expect("access_token");
    assert_eq!(upstream_tokens(&app, false).first().map(String::as_str), Some(served), "the sign-in's upstream token");
    let expires_in = body["expires_in"].as_i64().expect("expires_in");
    assert!((3500..=3600).contains(&expires_in), "seconds remaining, not the original lifetime: {expires_in}");
    let expiration = body["accessTokenExpiration"].as_i64().expect("accessTokenExpiration");
    let now = time_now();
    assert!((expiration - now - expires_in).abs() <= 2, "accessTokenExpiration is the epoch expiry");
    assert!(
        body["refresh_token"].as_str().is_some_and(|t| t.starts_with("1.A")),
        "refresh_token as OpenHands reads it"
    );
    assert!(body["id_token"].is_string());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(app.entra.refresh_requests(), 0, "a fresh token needs no refresh");
});

fn time_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

both_backends!(the_broker_endpoint_refuses_like_keycloak, |backend| async move {
    let app =
        TestApp::builder(backend).provider(ProviderSetup { second_provider: true, ..Default::default() }).spawn().await;
    let (user_id, tokens) = signed_in(&app).await;
    let claims = jwt_claims(access_token(&tokens));
    let mut tampered = access_token(&tokens).to_owned();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    // Tokens minted with the broker's own key for the same live session: one expired, one
    // for a client that lacks the `broker.read-token` role.
    let grant = |client_id: &str, read_token: bool| Grant {
        user_id: user_id.clone(),
        client_id: client_id.to_owned(),
        session_id: claims["sid"].as_str().expect("sid").to_owned(),
        scope: "openid".to_owned(),
        nonce: None,
        auth_time: time_now(),
        user: UserClaims {
            preferred_username: "alice".into(),
            identity_provider: "azure_devops".into(),
            ..Default::default()
        },
        read_token,
        realm_roles: Vec::new(),
        roles_claim: false,
        offline: false,
    };
    let expired = app.state.tokens.issue(&grant(CLIENT_ID, true), time_now() - 3600).await.expect("issue").access_token;
    let without_role =
        app.state.tokens.issue(&grant(OTHER_CLIENT_ID, false), time_now()).await.expect("issue").access_token;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;

    let cases: Vec<(&str, String, &str, StatusCode, String)> = vec![
        ("no bearer token", String::new(), "azure_devops", StatusCode::BAD_REQUEST, "Invalid token.".into()),
        ("tampered signature", tampered, "azure_devops", StatusCode::BAD_REQUEST, "Invalid token.".into()),
        ("expired access token", expired, "azure_devops", StatusCode::BAD_REQUEST, "Invalid token.".into()),
        ("a service account's token", service, "azure_devops", StatusCode::BAD_REQUEST, "Invalid token.".into()),
        (
            "role missing",
            without_role,
            "azure_devops",
            StatusCode::FORBIDDEN,
            format!(
                "Client [{OTHER_CLIENT_ID}] not authorized to retrieve tokens from identity provider [azure_devops]."
            ),
        ),
        (
            "provider that keeps no tokens",
            access_token(&tokens).to_owned(),
            "azure_devops_eu",
            StatusCode::BAD_REQUEST,
            "Identity Provider [azure_devops_eu] does not support this operation.".into(),
        ),
        (
            "unknown provider",
            access_token(&tokens).to_owned(),
            "github",
            StatusCode::NOT_FOUND,
            "Identity Provider [github] not found.".into(),
        ),
    ];
    for (case, bearer, alias, status, message) in cases {
        let response = app.broker_token(&bearer, alias).await;
        assert_eq!(response.status(), status, "{case}");
        assert_eq!(json(response).await["errorMessage"], message, "{case}");
    }

    // Not linked: after an unlink the user's own token gets Keycloak's words.
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let unlink = app
        .api
        .delete(format!("{}{}", app.internal, user_token_path(&user_id, "azure_devops")))
        .bearer_auth(&service)
        .send()
        .await
        .expect("unlink");
    assert_eq!(unlink.status(), StatusCode::NO_CONTENT);
    let response = app.broker_token(access_token(&tokens), "azure_devops").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let text = response.text().await.expect("body");
    assert!(
        text.contains(&format!("User [{user_id}] is not associated with identity provider [azure_devops].")),
        "OpenHands matches this text: {text}"
    );
    assert_eq!(app.entra.refresh_requests(), 0, "no refusal reached the provider");
});

both_backends!(the_broker_endpoint_answers_cors_as_keycloak_does, |backend| async move {
    let app = spawn_app(backend).await;
    let (_, tokens) = signed_in(&app).await;
    let url = app.url(&provider_path(paths::BROKER_TOKEN, "azure_devops"));

    let preflight = app
        .api
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://app.test")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), StatusCode::OK);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "http://app.test");
    assert!(preflight.headers()["access-control-allow-methods"].to_str().expect("ascii").contains("GET"));
    assert!(preflight.headers()["access-control-allow-headers"].to_str().expect("ascii").contains("Authorization"));

    for (origin, allowed) in [("http://app.test", true), ("http://evil.test", false)] {
        let response =
            app.api.get(&url).bearer_auth(access_token(&tokens)).header("Origin", origin).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::OK, "{origin}");
        let header =
            response.headers().get("access-control-allow-origin").map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(header.as_deref() == Some(origin), allowed, "{origin}: only the client's own web origins");
    }
});

both_backends!(an_expiring_token_is_refreshed_once_and_the_rotated_refresh_token_is_kept, |backend| async move {
    let app = spawn_app(backend).await;
    // Entra issues a token that is already inside the 300-second refresh window.
    app.entra.set_access_token_lifetime(120);
    let (user_id, _) = signed_in(&app).await;
    let first_access = upstream_tokens(&app, false)[0].clone();
    let first_refresh = upstream_tokens(&app, true)[0].clone();
    app.entra.set_access_token_lifetime(3600);
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;

    let response = app.read_token(&service, &user_id, "azure_devops", "").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    let refreshed = body["access_token"].as_str().expect("access_token").to_owned();
    assert_ne!(refreshed, first_access, "the stale token is not served");
    assert!(body["expires_in"].as_i64().expect("expires_in") > 3500);
    assert_eq!(
        body["expires_at"].as_i64().expect("expires_at") - time_now() - body["expires_in"].as_i64().unwrap_or(0),
        0
    );
    assert_eq!(app.entra.refresh_requests(), 1);
    let form = app.entra.last_token_form().expect("a token request");
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], first_refresh);
    assert!(!form["scope"].split(' ').any(|s| s == "openid"), "the resource scope only: {}", form["scope"]);
    assert!(form["scope"].contains("https://app.vssps.visualstudio.com/.default"));

    // Fresh now: the next read is served from the vault.
    let again = json(app.read_token(&service, &user_id, "azure_devops", "").await).await;
    assert_eq!(again["access_token"], refreshed.as_str());
    assert_eq!(app.entra.refresh_requests(), 1, "no second refresh for a fresh token");

    // `min_validity` beyond the token's life forces a refresh, which spends the rotated token.
    let rotated = upstream_tokens(&app, true).last().expect("rotated refresh token").clone();
    assert_ne!(rotated, first_refresh, "Entra rotated the refresh token");
    let forced = app.read_token(&service, &user_id, "azure_devops", "?min_validity=7200").await;
    assert_eq!(forced.status(), StatusCode::OK);
    assert_eq!(app.entra.refresh_requests(), 2);
    assert_eq!(app.entra.last_token_form().expect("form")["refresh_token"], rotated, "the rotated token was stored");

    // Still nothing in the clear at rest.
    let cells = app.store.dump_table(Table::VaultTokens).await.expect("dump");
    for token in app.entra.issued_tokens() {
        assert!(
            !cells.iter().any(|cell| cell.windows(token.len()).any(|w| w == token.as_bytes())),
            "plaintext at rest"
        );
    }
});

both_backends!(concurrent_readers_in_one_process_share_one_refresh, |backend| async move {
    let app = spawn_app(backend).await;
    app.entra.set_access_token_lifetime(60);
    let (user_id, _) = signed_in(&app).await;
    app.entra.set_access_token_lifetime(3600);
    app.entra.set_token_delay(Duration::from_millis(200));
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;

    let reads = (0..40).map(|_| app.read_token(&service, &user_id, "azure_devops", ""));
    let responses = futures_util::future::join_all(reads).await;

    let mut served = std::collections::HashSet::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::OK);
        served.insert(json(response).await["access_token"].as_str().expect("token").to_owned());
    }
    assert_eq!(app.entra.refresh_requests(), 1, "one refresh for forty readers");
    assert_eq!(served.len(), 1, "every reader got the same new token");
});

/// Why the upstream refused, and what each reader must then be told.
struct Refusal {
    case: &'static str,
    failure: UpstreamFailure,
    status: StatusCode,
    error: &'static str,
    mentions: &'static str,
    needs_reauth: bool,
}

fn refusals() -> Vec<Refusal> {
    let reauth = |case, error: &str, code, mentions| Refusal {
        case,
        failure: UpstreamFailure::aadsts(400, error, code, "Entra's words."),
        status: StatusCode::CONFLICT,
        error: "reauth_required",
        mentions,
        needs_reauth: true,
    };
    vec![
        reauth("refresh token expired", "invalid_grant", 70008, "AADSTS70008"),
        reauth("refresh token revoked", "invalid_grant", 50173, "AADSTS50173"),
        reauth("multi-factor authentication", "interaction_required", 50076, "AADSTS50076"),
        reauth("consent missing", "invalid_grant", 65001, "AADSTS65001"),
        Refusal {
            case: "client secret wrong",
            failure: UpstreamFailure::aadsts(401, "invalid_client", 7000215, "Invalid client secret provided."),
            status: StatusCode::BAD_GATEWAY,
            error: "upstream_misconfigured",
            mentions: "providers.azure_devops.client_secret",
            needs_reauth: false,
        },
        Refusal {
            case: "application not found",
            failure: UpstreamFailure::aadsts(400, "unauthorized_client", 700016, "Application not found."),
            status: StatusCode::BAD_GATEWAY,
            error: "upstream_misconfigured",
            mentions: "providers.azure_devops.client_id",
            needs_reauth: false,
        },
    ]
}

both_backends!(upstream_refusals_are_classified_and_nothing_is_deleted, |backend| async move {
    for refusal in refusals() {
        let case = refusal.case;
        let app = spawn_app(backend).await;
        app.entra.set_access_token_lifetime(120);
        let (user_id, tokens) = signed_in(&app).await;
        let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
        app.entra.fail_next_token_request(refusal.failure);

        let response = app.read_token(&service, &user_id, "azure_devops", "").await;

        assert_eq!(response.status(), refusal.status, "{case}");
        let body = json(response).await;
        assert_eq!(body["error"], refusal.error, "{case}");
        let description = body["error_description"].as_str().expect("description");
        assert!(description.contains(refusal.mentions), "{case}: {description}");
        for table in [Table::Users, Table::FederatedIdentities, Table::VaultTokens] {
            assert_eq!(app.count(table).await, 1, "{case}: {table:?} kept for the record");
        }
        let identity = app.identity(&user_id, "azure_devops").await;
        assert_eq!(identity.needs_reauth, refusal.needs_reauth, "{case}");
        if refusal.needs_reauth {
            assert!(description.contains("sign in"), "{case}: tells what the user must do: {description}");
            // Marked: the next read answers at once, without asking Entra again, on both surfaces.
            let again = app.read_token(&service, &user_id, "azure_devops", "").await;
            assert_eq!(again.status(), StatusCode::CONFLICT, "{case}");
            let broker = app.broker_token(access_token(&tokens), "azure_devops").await;
            assert_eq!(broker.status(), StatusCode::CONFLICT, "{case}: a 4xx OpenHands surfaces");
            assert_eq!(json(broker).await["error"], "reauth_required");
            assert_eq!(app.entra.refresh_requests(), 1, "{case}");
            let text = app.metrics().await;
            assert!(
                text.contains(
                    "identity_broker_token_refreshes_total{provider=\"azure_devops\",outcome=\"reauth_required\"} 1"
                ),
                "{case}: counted"
            );
            // A new sign-in clears the mark.
            app.entra.set_access_token_lifetime(3600);
            let _ = app.tokens().await;
            let identity = app.identity(&user_id, "azure_devops").await;
            assert!(!identity.needs_reauth, "{case}: cleared by the sign-in");
            let after = app.read_token(&service, &user_id, "azure_devops", "").await;
            assert_eq!(after.status(), StatusCode::OK, "{case}");
        }
    }
});

both_backends!(a_transient_outage_is_retried_then_the_valid_token_is_served_else_503, |backend| async move {
    let app = spawn_app(backend).await;
    app.entra.set_access_token_lifetime(120);
    let (user_id, _) = signed_in(&app).await;
    let stale_but_valid = upstream_tokens(&app, false)[0].clone();
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;

    // One failure: the retry succeeds.
    app.entra.fail_next_token_request(UpstreamFailure::server_error());
    let response = app.read_token(&service, &user_id, "azure_devops", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(json(response).await["access_token"], stale_but_valid.as_str(), "refreshed on the second attempt");
    assert_eq!(app.entra.refresh_requests(), 2);

    // A longer outage while the stored token is still valid: that token is served.
    let app = spawn_app(backend).await;
    app.entra.set_access_token_lifetime(120);
    let (user_id, _) = signed_in(&app).await;
    let stale_but_valid = upstream_tokens(&app, false)[0].clone();
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    app.entra.fail_token_requests(UpstreamFailure::server_error(), 10);
    let response = app.read_token(&service, &user_id, "azure_devops", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["access_token"], stale_but_valid.as_str());
    assert_eq!(app.entra.refresh_requests(), 3, "three attempts, then the valid token");

    // The same outage once the stored token has expired: 503 with Retry-After.
    let app = spawn_app(backend).await;
    app.entra.set_access_token_lifetime(0);
    let (user_id, _) = signed_in(&app).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    app.entra.fail_token_requests(UpstreamFailure::server_error(), 10);
    let response = app.read_token(&service, &user_id, "azure_devops", "").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_some(), "Retry-After tells when to come back");
    assert_eq!(json(response).await["error"], "temporarily_unavailable");
    assert_eq!(app.count(Table::VaultTokens).await, 1, "nothing deleted");
    let identity = app.identity(&user_id, "azure_devops").await;
    assert!(!identity.needs_reauth, "an outage is not the user's fault");
});

both_backends!(service_accounts_get_tokens_and_read_only_their_providers, |backend| async move {
    let app = spawn_app(backend).await;
    let (user_id, tokens) = signed_in(&app).await;
    let token_url = format!("{}{}", app.internal, realm_path(paths::TOKEN));
    let grant = |id: &'static str, secret: &'static str| {
        app.api
            .post(&token_url)
            .form(&[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)])
            .send()
    };

    let wrong = grant(SERVICE_ID, "not-the-secret").await.expect("request");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(wrong).await["error"], "invalid_client");
    let application = grant(CLIENT_ID, CLIENT_SECRET).await.expect("request");
    assert_eq!(application.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(application).await["error"], "unauthorized_client");
    let good = json(grant(SERVICE_ID, SERVICE_SECRET).await.expect("request")).await;
    assert!(good.get("refresh_token").is_none(), "no refresh token for a service account");
    assert_eq!(jwt_claims(good["access_token"].as_str().expect("token"))["azp"], SERVICE_ID);

    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let limited = app.service_token(LIMITED_SERVICE_ID, LIMITED_SERVICE_SECRET).await;
    let cases: Vec<(&str, &str, String, &str, StatusCode, &str)> = vec![
        ("no token", "", user_id.clone(), "", StatusCode::UNAUTHORIZED, "invalid_token"),
        (
            "a user's access token",
            access_token(&tokens),
            user_id.clone(),
            "",
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        ("provider outside the list", &limited, user_id.clone(), "", StatusCode::FORBIDDEN, "insufficient_scope"),
        (
            "unknown user",
            &service,
            "00000000-0000-0000-0000-000000000000".into(),
            "",
            StatusCode::NOT_FOUND,
            "not_linked",
        ),
        (
            "negative min_validity",
            &service,
            user_id.clone(),
            "?min_validity=-1",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "text min_validity",
            &service,
            user_id.clone(),
            "?min_validity=soon",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "repeated parameter",
            &service,
            user_id.clone(),
            "?min_validity=1&min_validity=2",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (case, bearer, user, query, status, error) in cases {
        let response = app.read_token(bearer, &user, "azure_devops", query).await;
        assert_eq!(response.status(), status, "{case}");
        if status == StatusCode::UNAUTHORIZED {
            assert!(response.headers()["www-authenticate"].to_str().expect("ascii").starts_with("Bearer"), "{case}");
        }
        assert_eq!(json(response).await["error"], error, "{case}");
    }
    let response = app.read_token(&service, &user_id, "azure_devops", "?min_validity=60").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json(response).await;
    for field in ["access_token", "token_type", "expires_in", "expires_at", "scope"] {
        assert!(body.get(field).is_some(), "{field} in {body}");
    }

    // Every read is audited with who asked, whose token and the outcome; no token value.
    app.state.audit.flush().await;
    let reads = app.store.list_audit(Some("token_read")).await.expect("audit");
    assert!(reads.iter().any(|e| e.outcome == "ok"
        && e.client_id.as_deref() == Some(SERVICE_ID)
        && e.user_id.as_deref() == Some(user_id.as_str())
        && e.alias.as_deref() == Some("azure_devops")));
    assert!(reads.iter().any(|e| e.outcome == "not_linked"));
    let cells = app.store.dump_table(Table::AuditEvents).await.expect("dump");
    for token in app.entra.issued_tokens() {
        assert!(!cells.iter().any(|cell| cell.windows(token.len()).any(|w| w == token.as_bytes())), "token in audit");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "identity_broker_token_reads_total{surface=\"internal\",provider=\"azure_devops\",outcome=\"ok\"} 1"
        ),
        "{metrics}"
    );
});

both_backends!(users_are_found_by_subject_or_email_and_unlinking_keeps_the_user, |backend| async move {
    let app = spawn_app(backend).await;
    app.entra.set_user(FakeUser::bob());
    let (user_id, _) = signed_in(&app).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let limited = app.service_token(LIMITED_SERVICE_ID, LIMITED_SERVICE_SECRET).await;
    let find = |bearer: String, query: String| {
        let url = format!("{}{}{query}", app.internal, paths::INTERNAL_USERS);
        let api = app.api.clone();
        async move { api.get(url).bearer_auth(bearer).send().await.expect("find") }
    };

    let by_subject =
        json(find(service.clone(), format!("?provider=azure_devops&subject={}", FakeUser::bob().subject)).await).await;
    assert_eq!(by_subject["users"][0]["id"], user_id.as_str());
    assert_eq!(by_subject["users"][0]["identities"][0]["provider"], "azure_devops");
    assert_eq!(by_subject["users"][0]["identities"][0]["needs_reauth"], false);
    let by_email = json(find(service.clone(), "?email=BOB@contoso.com".into()).await).await;
    assert_eq!(by_email["users"][0]["id"], user_id.as_str(), "e-mail compared without case");
    let nobody = json(find(service.clone(), "?email=nobody@contoso.com".into()).await).await;
    assert_eq!(nobody["users"].as_array().map(Vec::len), Some(0));
    let hidden = json(find(limited.clone(), "?email=bob@contoso.com".into()).await).await;
    assert_eq!(hidden["users"][0]["identities"].as_array().map(Vec::len), Some(0), "only allowed providers show");
    let refused = find(limited.clone(), format!("?provider=azure_devops&subject={}", FakeUser::bob().subject)).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    for query in ["", "?provider=azure_devops", "?email=a@b.c&provider=azure_devops&subject=x"] {
        assert_eq!(find(service.clone(), query.into()).await.status(), StatusCode::BAD_REQUEST, "{query}");
    }

    let delete = |bearer: String| {
        let url = format!("{}{}", app.internal, user_token_path(&user_id, "azure_devops"));
        let api = app.api.clone();
        async move { api.delete(url).bearer_auth(bearer).send().await.expect("delete") }
    };
    assert_eq!(delete(limited).await.status(), StatusCode::FORBIDDEN, "outside the list: nothing happens");
    assert_eq!(app.count(Table::VaultTokens).await, 1);
    assert_eq!(delete(service.clone()).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.count(Table::Users).await, 1, "the user stays");
    assert_eq!(app.count(Table::FederatedIdentities).await, 0);
    assert_eq!(app.count(Table::VaultTokens).await, 0, "the tokens are erased");
    assert_eq!(delete(service.clone()).await.status(), StatusCode::NOT_FOUND, "already unlinked");
    let read = app.read_token(&service, &user_id, "azure_devops", "").await;
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    app.state.audit.flush().await;
    let unlinks = app.store.list_audit(Some("unlink")).await.expect("audit");
    assert_eq!(unlinks.iter().filter(|e| e.outcome == "unlinked").count(), 1);
});

both_backends!(keep_alive_refreshes_exactly_the_stale_identities, |backend| async move {
    let app = TestApp::builder(backend)
        .provider(ProviderSetup { keepalive_batch_size: 1, ..Default::default() })
        .spawn()
        .await;
    let day = 24 * 3600;
    app.entra.set_user(FakeUser::alice());
    let (alice, _) = signed_in(&app).await;
    app.entra.set_user(FakeUser::bob());
    let browser = browser_client();
    let code = app.follow(&browser, &app.auth_url(&[])).await.code();
    assert_eq!(app.exchange(&code, &[]).await.status(), StatusCode::OK);
    let now = time_now();

    // Both were refreshed at sign-in: nothing is stale after 13 days.
    let report = app.state.vault.keep_alive_once(now + 13 * day).await.expect("pass");
    assert_eq!((report.refreshed, report.failed), (0, 0));
    // After 15 days both are, and batches of one take them both.
    let report = app.state.vault.keep_alive_once(now + 15 * day).await.expect("pass");
    assert_eq!((report.refreshed, report.failed), (2, 0));
    assert_eq!(app.entra.refresh_requests(), 2);

    // A third user signs in now; twenty days on, only that one is stale (the others were
    // refreshed at day 15).
    app.entra.set_user(FakeUser {
        subject: "carol-subject".into(),
        email: Some("carol@contoso.com".into()),
        ..FakeUser::bob()
    });
    let browser = browser_client();
    let code = app.follow(&browser, &app.auth_url(&[])).await.code();
    assert_eq!(app.exchange(&code, &[]).await.status(), StatusCode::OK);
    let carol_refresh = upstream_tokens(&app, true).last().expect("carol's refresh token").clone();
    let report = app.state.vault.keep_alive_once(now + 20 * day).await.expect("pass");
    assert_eq!((report.refreshed, report.failed), (1, 0));
    assert_eq!(app.entra.last_token_form().expect("form")["refresh_token"], carol_refresh);

    // An identity whose lease another replica holds is skipped, never refreshed twice.
    let held = Lease { owner: "other-replica", until: now + 40 * day };
    let claimed = app
        .store
        .claim_refresh_lease(IdentityKey { user_id: &alice, alias: "azure_devops" }, held, now + 40 * day - 1)
        .await
        .expect("claim");
    assert!(claimed.is_some());
    let report = app.state.vault.keep_alive_once(now + 40 * day - 1).await.expect("pass");
    assert_eq!((report.refreshed, report.failed), (2, 0), "bob and carol, not alice");
    assert_eq!(app.entra.refresh_requests(), 5);
    app.state.audit.flush().await;
    let refreshes = app.store.list_audit(Some("token_refresh")).await.expect("audit");
    assert_eq!(refreshes.iter().filter(|e| e.detail.contains("keepalive")).count(), 5);
});

both_backends!(a_bearer_token_checked_before_is_still_refused_once_it_expires, |backend| async move {
    let app = spawn_app(backend).await;
    let (user_id, tokens) = signed_in(&app).await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    // Both tokens are checked (and remembered as checked) by a first use.
    assert_eq!(app.read_token(&service, &user_id, "azure_devops", "").await.status(), StatusCode::OK);
    assert_eq!(app.broker_token(access_token(&tokens), "azure_devops").await.status(), StatusCode::OK);

    // Past both tokens' lifetimes (300 s), with the upstream token still fresh.
    app.state.clock.advance(301);

    let internal = app.read_token(&service, &user_id, "azure_devops", "").await;
    assert_eq!(internal.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(internal).await["error"], "invalid_token");
    let broker = app.broker_token(access_token(&tokens), "azure_devops").await;
    assert_eq!(broker.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(broker).await["errorMessage"], "Invalid token.");
});
