//! Realm roles: the realm's default roles, Entra's app roles kept per identity at each sign-in,
//! roles an administrator grants; `realm_access.roles` in every access token, and the flat
//! `roles` claim OpenHands' role check reads in userinfo for clients with `roles_claim`.

use std::time::Duration;

use identity_broker::http::paths;
use identity_broker::store::Table;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::admin::{VIEWER_ID, VIEWER_SECRET, admin_token, admin_toml, admin_url, audited};
use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::FakeUser;

/// OpenHands' client with `roles_claim = true`, the other client without.
fn with_roles_claim(toml: String) -> String {
    let first_client = format!("client_id = \"{CLIENT_ID}\"\n");
    assert!(toml.contains(&first_client), "the settings name OpenHands' client");
    toml.replacen(&first_client, &format!("{first_client}roles_claim = true\n"), 1)
}

async fn roles_app(backend: Backend) -> TestApp {
    TestApp::builder(backend).extra(&admin_toml(3600)).edited(with_roles_claim).spawn().await
}

fn alice_with_roles(roles: Value) -> FakeUser {
    FakeUser { optional_claims: vec![("roles", roles)], ..FakeUser::alice() }
}

fn names(roles: &Value) -> Vec<&str> {
    roles.as_array().expect("a list").iter().map(|role| role.as_str().expect("a name")).collect()
}

fn role_names(representations: &Value) -> Vec<&str> {
    representations.as_array().expect("a list").iter().map(|role| role["name"].as_str().expect("a name")).collect()
}

async fn role_mappings(
    app: &TestApp,
    bearer: &str,
    user_id: &str,
    method: reqwest::Method,
    body: &str,
) -> reqwest::Response {
    let url = admin_url(app, paths::ADMIN_USER_REALM_ROLES).replace("{user_id}", user_id);
    let request = app.api.request(method, url).bearer_auth(bearer).header("content-type", "application/json");
    request.body(body.to_owned()).send().await.unwrap()
}

async fn get_json(app: &TestApp, bearer: &str, url: String) -> (StatusCode, Value) {
    let response = app.api.get(url).bearer_auth(bearer).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

both_backends!(tokens_and_userinfo_carry_default_entra_and_granted_roles, |backend| async move {
    // Arrange: Entra assigns the app role `Developer` (twice, as a token may repeat it).
    let app = roles_app(backend).await;
    app.entra.set_user(alice_with_roles(json!(["Developer", "Developer"])));

    // Act: a sign-in.
    let tokens = app.tokens().await;

    // Assert: `realm_access.roles` and the flat claim, default roles included.
    let user_id = user_id_of(&tokens);
    let expected = ["Developer", "offline_access", "uma_authorization"];
    let access = jwt_claims(access_token(&tokens));
    assert_eq!(names(&access["realm_access"]["roles"]), expected);
    assert_eq!(names(&access["roles"]), expected, "roles_claim = true: the flat claim");
    let info: Value = app.userinfo(access_token(&tokens)).await.json().await.unwrap();
    assert_eq!(names(&info["roles"]), expected, "userinfo carries what OpenHands' role check reads");
    let other = app.tokens_for((OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, OTHER_REDIRECT_URI), &[]).await;
    let other_access = jwt_claims(access_token(&other));
    assert_eq!(names(&other_access["realm_access"]["roles"]), expected, "realm_access is always there");
    assert!(other_access.get("roles").is_none(), "no flat claim without roles_claim");
    let other_info: Value = app.userinfo(access_token(&other)).await.json().await.unwrap();
    assert!(other_info.get("roles").is_none(), "nor in userinfo: {other_info}");

    // Act: an administrator grants `billing`; the refreshed token carries it.
    let admin = admin_token(&app).await;
    let granted = role_mappings(&app, &admin, &user_id, reqwest::Method::POST, r#"[{"name":"billing"}]"#).await;
    assert_eq!(granted.status(), StatusCode::NO_CONTENT);
    let refreshed: Value = app.tokens_refresh(&tokens).await.json().await.unwrap();
    let with_billing = ["Developer", "billing", "offline_access", "uma_authorization"];
    assert_eq!(names(&jwt_claims(access_token(&refreshed))["realm_access"]["roles"]), with_billing);
    let info: Value = app.userinfo(access_token(&tokens)).await.json().await.unwrap();
    assert_eq!(names(&info["roles"]), with_billing, "userinfo reads the current roles");

    // The admin API's views.
    let mappings = admin_url(&app, paths::ADMIN_USER_REALM_ROLES).replace("{user_id}", &user_id);
    let (status, held) = get_json(&app, &admin, mappings).await;
    assert_eq!((status, role_names(&held)), (StatusCode::OK, with_billing.to_vec()));
    assert_eq!(held[0]["id"], "Developer", "a realm role's id is its name");
    let (_, realm_roles) = get_json(&app, &admin, admin_url(&app, paths::ADMIN_ROLES)).await;
    assert_eq!(role_names(&realm_roles), with_billing);
    let holders = |role: &str| admin_url(&app, paths::ADMIN_ROLE_USERS).replace("{role_name}", role);
    let (status, users) = get_json(&app, &admin, holders("billing")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        users.as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap()).collect::<Vec<_>>(),
        [user_id.as_str()]
    );
    let (status, none) = get_json(&app, &admin, holders("offline_access")).await;
    assert_eq!((status, none), (StatusCode::OK, json!([])), "a default role's holders are not listed, as in Keycloak");

    // Act: the grant taken back, and Entra no longer assigning `Developer`.
    let revoked =
        role_mappings(&app, &admin, &user_id, reqwest::Method::DELETE, r#"[{"id":"billing","name":"billing"}]"#).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    app.entra.set_user(alice_with_roles(json!([])));
    let again = app.tokens().await;

    // Assert: only the default roles are left.
    assert_eq!(
        names(&jwt_claims(access_token(&again))["realm_access"]["roles"]),
        ["offline_access", "uma_authorization"]
    );
    assert_eq!(app.count(Table::UserRoles).await, 0, "nothing stored beyond the default roles");
    let mappings = audited(&app, "admin_role_mapping").await;
    let outcomes: Vec<&str> = mappings.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["granted", "revoked"], "{mappings:?}");
});

both_backends!(role_mapping_refusals_change_nothing, |backend| async move {
    // Arrange
    let app = roles_app(backend).await;
    let user_id = user_id_of(&app.tokens().await);
    let admin = admin_token(&app).await;
    let post = reqwest::Method::POST;
    let cases = [
        ("not a list", r#"{"name":"x"}"#, StatusCode::BAD_REQUEST),
        ("a role without a name", r#"[{"composite":false}]"#, StatusCode::BAD_REQUEST),
        ("an empty name", r#"[{"name":" "}]"#, StatusCode::BAD_REQUEST),
        ("an id that is not the name", r#"[{"id":"1f2e","name":"x"}]"#, StatusCode::BAD_REQUEST),
        ("a control character", r#"[{"name":"a\u0007"}]"#, StatusCode::BAD_REQUEST),
    ];

    // Act + Assert
    for (case, body, status) in cases {
        let response = role_mappings(&app, &admin, &user_id, post.clone(), body).await;
        assert_eq!(response.status(), status, "{case}");
        let message: Value = response.json().await.unwrap();
        assert!(message["errorMessage"].is_string(), "{case}: {message}");
    }
    let unknown =
        role_mappings(&app, &admin, "00000000-0000-4000-8000-000000000000", post.clone(), r#"[{"name":"x"}]"#).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let viewer = app.service_token(VIEWER_ID, VIEWER_SECRET).await;
    let forbidden = role_mappings(&app, &viewer, &user_id, post, r#"[{"name":"x"}]"#).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN, "view-users may not grant");
    let (status, _) = get_json(&app, &viewer, admin_url(&app, paths::ADMIN_ROLES)).await;
    assert_eq!(status, StatusCode::OK, "view-users may list");
    let missing = admin_url(&app, paths::ADMIN_ROLE_USERS).replace("{role_name}", "nobody-has-it");
    let (status, body) = get_json(&app, &admin, missing).await;
    assert_eq!((status, body), (StatusCode::NOT_FOUND, json!({"error": "Could not find role"})));
    assert_eq!(app.count(Table::UserRoles).await, 0, "no refusal stored a role");
});

#[tokio::test]
async fn a_role_granted_by_another_process_reaches_the_next_refresh() {
    // Arrange: a refresh, so this process keeps the user's roles in memory.
    let app = roles_app(Backend::Postgres).await;
    let tokens = app.tokens().await;
    let user_id = user_id_of(&tokens);
    let refreshed: Value = app.tokens_refresh(&tokens).await.json().await.unwrap();
    assert_eq!(
        names(&jwt_claims(access_token(&refreshed))["realm_access"]["roles"]),
        ["offline_access", "uma_authorization"]
    );

    // Act: another replica (here a plain connection) grants a role.
    let mut other = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
    sqlx::query("INSERT INTO user_roles (user_id, source, role) VALUES ($1, '', 'billing')")
        .bind(&user_id)
        .execute(&mut other)
        .await
        .expect("insert");

    // Assert: the change notification reaches this process within moments.
    let mut roles = Value::Null;
    for _ in 0..50 {
        let refreshed: Value = app.tokens_refresh(&tokens).await.json().await.unwrap();
        roles = jwt_claims(access_token(&refreshed))["realm_access"]["roles"].clone();
        if names(&roles).contains(&"billing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names(&roles), ["billing", "offline_access", "uma_authorization"], "the cached roles were forgotten");
}
