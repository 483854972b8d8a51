//! Users as the admin API sees them: the attributes a sign-in writes, and what disabling
//! a user takes away.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection as _;

use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::{FakeUser, HOME_TENANT};
use identity_broker::store::AttributeValue;

both_backends!(each_sign_in_writes_the_realm_attributes_afresh, |backend| async move {
    // Arrange
    let app = spawn_app(backend).await;
    let alice = FakeUser::alice();

    // Act: two sign-ins, so the second must overwrite rather than add values; between them an
    // administrator gives the user an attribute of their own, which sign-in must leave alone.
    let user_id = user_id_of(&app.tokens().await);
    let team = [
        AttributeValue { name: "team".to_owned(), value: "blue".to_owned() },
        AttributeValue { name: "team".to_owned(), value: "green".to_owned() },
        AttributeValue { name: "tid".to_owned(), value: "stale".to_owned() },
    ];
    app.store.set_user_attributes(&user_id, &team).await.expect("set attributes");
    app.tokens().await;

    // Assert
    let attributes = app.store.user_attributes(&user_id).await.expect("attributes");
    let expected = [
        ("azure_devops_id", alice.subject.as_str()),
        ("identity_provider", "azure_devops"),
        ("oid", alice.object_id.as_str()),
        ("team", "blue"),
        ("team", "green"),
        ("tid", HOME_TENANT),
    ];
    let found: Vec<(&str, &str)> = attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(found, expected, "one value per mapped attribute, the upstream subject under {{alias}}_id");
});

both_backends!(a_disabled_user_gets_no_tokens_and_is_served_none, |backend| async move {
    // Arrange: a signed-in user with a stored upstream token and a service that reads it.
    let app = spawn_app(backend).await;
    let tokens = app.tokens().await;
    let user_id = user_id_of(&tokens);
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let read = app.read_token(&service, &user_id, "azure_devops", "").await;
    assert_eq!(read.status(), StatusCode::OK, "served while enabled (and now cached)");
    assert_eq!(app.tokens_refresh(&tokens).await.status(), StatusCode::OK, "refreshed (the user now cached)");

    // Act
    assert!(app.store.set_user_enabled(&user_id, false, 0).await.expect("disable"));

    // Assert: every way to a token is closed.
    let refresh = app.tokens_refresh(&tokens).await;
    assert_eq!(refresh.status(), StatusCode::BAD_REQUEST, "refresh grant refused");
    let body: Value = refresh.json().await.expect("json");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "Account disabled");
    assert_eq!(app.userinfo(access_token(&tokens)).await.status(), StatusCode::UNAUTHORIZED, "userinfo");
    let broker = app.broker_token(access_token(&tokens), "azure_devops").await;
    assert_eq!(broker.status(), StatusCode::FORBIDDEN, "Keycloak's stored-token read");
    let read = app.read_token(&service, &user_id, "azure_devops", "").await;
    assert_eq!(read.status(), StatusCode::FORBIDDEN, "the internal read, although the row was cached");
    let body: Value = read.json().await.expect("json");
    assert_eq!(body["error"], "access_denied");
    assert!(!body.to_string().contains(&app.entra.issued_tokens()[0]), "no token in the refusal");
    let again = app.follow(&browser_client(), &app.auth_url(&[])).await;
    assert_eq!(again.page_status(), StatusCode::FORBIDDEN, "a new sign-in is refused");

    // Enabled again, the same session and tokens work again, as in Keycloak.
    assert!(app.store.set_user_enabled(&user_id, true, 0).await.expect("enable"));
    assert_eq!(app.read_token(&service, &user_id, "azure_devops", "").await.status(), StatusCode::OK);
    assert_eq!(app.userinfo(access_token(&tokens)).await.status(), StatusCode::OK);
    assert_eq!(app.tokens_refresh(&tokens).await.status(), StatusCode::OK);
});

#[tokio::test]
async fn a_user_disabled_by_another_process_is_not_served_from_memory() {
    // Arrange: the token is read once, so this process keeps it in memory.
    let app = spawn_app(Backend::Postgres).await;
    let user_id = user_id_of(&app.tokens().await);
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    assert_eq!(app.read_token(&service, &user_id, "azure_devops", "").await.status(), StatusCode::OK);

    // Act: another replica (here a plain connection) disables the user.
    let mut other = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
    sqlx::query("UPDATE users SET enabled = 0 WHERE id = $1").bind(&user_id).execute(&mut other).await.expect("update");

    // Assert: the change notification reaches this process within moments.
    let mut status = StatusCode::OK;
    for _ in 0..50 {
        status = app.read_token(&service, &user_id, "azure_devops", "").await.status();
        if status == StatusCode::FORBIDDEN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::FORBIDDEN, "the cached row was forgotten when the user was disabled");
}
