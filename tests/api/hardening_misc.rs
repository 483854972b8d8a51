//! Concurrent admin deletes and updates of one user answer as Keycloak does, never 500.

use identity_broker::http::paths;
use reqwest::StatusCode;
use serde_json::json;

use crate::admin::{admin_token, admin_toml};
use crate::both_backends;
use crate::helpers::*;

/// Users raced for, one after the other; each race is won or lost afresh.
const USERS: i64 = 4;
/// Requests of each kind at once on the raced user.
const AT_ONCE: usize = 12;

/// The id `seed_users` gives its `i`-th user.
fn seeded_id(i: i64) -> String {
    format!("00000000-0000-4000-8000-1{i:011}")
}

// On SQLite a write transaction that read first used to fail at once with `database is locked`
// when another writer got in between; writes now take the lock first and wait for it.
both_backends!(concurrent_deletes_and_updates_of_a_user_answer_one_204_then_404_never_500, |backend| async move {
    // Arrange: the raced users, and a bystander every race also updates.
    let app = TestApp::builder(backend).extra(&admin_toml(600)).spawn().await;
    let token = admin_token(&app).await;
    app.store.seed_users(0, USERS, "race", app.state.clock.now()).await.expect("seed");
    let user_url = |id: &str| app.url(&paths::ADMIN_USER.replace("{realm}", REALM_NAME).replace("{user_id}", id));
    let bystander = user_url(&seeded_id(0));

    for i in 1..=USERS {
        let url = user_url(&seeded_id(i));
        // Act: deletes of the user, updates of the user and of the bystander, all at once.
        let requests = (0..AT_ONCE * 3).map(|n| {
            let body = json!({"firstName": format!("Name {n}"), "attributes": {"round": [format!("{i}-{n}")]}});
            let (kind, request) = match n % 3 {
                0 => ("delete", app.api.delete(&url)),
                1 => ("update", app.api.put(&url).json(&body)),
                _ => ("bystander", app.api.put(&bystander).json(&body)),
            };
            let request = request.bearer_auth(&token);
            async move {
                let response = request.send().await.expect("an answer");
                let status = response.status();
                (kind, status, response.text().await.unwrap_or_default())
            }
        });
        let answers = futures_util::future::join_all(requests).await;

        // Assert
        for (kind, status, body) in &answers {
            assert!(!status.is_server_error(), "{kind} of user {i} answered {status}: {body}");
        }
        let count =
            |kind: &str, wanted: StatusCode| answers.iter().filter(|(k, s, _)| *k == kind && *s == wanted).count();
        assert_eq!(count("delete", StatusCode::NO_CONTENT), 1, "one delete wins: {answers:?}");
        assert_eq!(count("delete", StatusCode::NOT_FOUND), AT_ONCE - 1, "the others find no user: {answers:?}");
        assert_eq!(
            count("update", StatusCode::NO_CONTENT) + count("update", StatusCode::NOT_FOUND),
            AT_ONCE,
            "an update lands before the delete or finds no user: {answers:?}"
        );
        assert_eq!(count("bystander", StatusCode::NO_CONTENT), AT_ONCE, "the bystander is updated: {answers:?}");
        let gone = app.api.get(&url).bearer_auth(&token).send().await.expect("get");
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "user {i} is deleted");
    }
    let kept = app.api.get(&bystander).bearer_auth(&token).send().await.expect("get");
    assert_eq!(kept.status(), StatusCode::OK);
});
