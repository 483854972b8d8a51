//! The admin API's count and pages of every user: the count read from the counter that
//! triggers keep (migration 0013), exact whatever writes users at the same time, and pages that
//! start where the previous one ended, equal to offset pages whatever changes between them.

use std::path::PathBuf;

use identity_broker::store::Table;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::admin::{admin_token, admin_toml, admin_url};
use crate::both_backends;
use crate::helpers::*;
use crate::support::process::{BINARY, ConfigFile};

/// `GET …/users/count{query}`: a bare integer.
async fn count(app: &TestApp, token: &str, query: &[(&str, &str)]) -> i64 {
    let response = app
        .api
        .get(admin_url(app, paths::ADMIN_USERS_COUNT))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .expect("count");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body.as_i64().unwrap_or_else(|| panic!("a bare integer, not {body}"))
}

/// The ids of `GET …/users?first=…&max=…` and any `extra` parameters.
async fn page(app: &TestApp, token: &str, first: i64, max: i64, extra: &[(&str, &str)]) -> Vec<String> {
    let (first, max) = (first.to_string(), max.to_string());
    let mut query = vec![("first", first.as_str()), ("max", max.as_str())];
    query.extend_from_slice(extra);
    let response =
        app.api.get(admin_url(app, paths::ADMIN_USERS)).query(&query).bearer_auth(token).send().await.expect("page");
    assert_eq!(response.status(), StatusCode::OK);
    let users: Value = response.json().await.expect("json");
    users.as_array().expect("a list").iter().map(|u| u["id"].as_str().expect("id").to_owned()).collect()
}

/// What `sql` reads from the test database, one text column.
async fn texts(backend: Backend, url: &str, sql: &str) -> Vec<String> {
    match backend {
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_all(&mut connection).await.expect("query")
        }
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(sql).fetch_all(&mut connection).await.expect("query")
        }
    }
}

/// The page the listing's order gives by offset, read straight from the database.
async fn offset_page(app: &TestApp, backend: Backend, first: i64, max: i64) -> Vec<String> {
    let sql = format!("SELECT id FROM users ORDER BY username, id LIMIT {max} OFFSET {first}");
    texts(backend, &app.db.url, &sql).await
}

/// A realm file of `count` users in a scratch directory.
fn realm_of(count: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ib_listing_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let users: Vec<Value> = (0..count)
        .map(|i| json!({"id": format!("7e570000-0000-4000-8000-{i:012}"), "username": format!("imported{i}")}))
        .collect();
    let file = dir.join("allhands-realm.json");
    std::fs::write(&file, json!({"realm": REALM_NAME, "users": users}).to_string()).expect("write");
    file
}

both_backends!(the_count_of_every_user_stays_exact_while_users_come_and_go, |backend| async move {
    // Arrange: 500 users to delete later.
    let app = TestApp::builder(backend).extra(&admin_toml(600)).spawn().await;
    let token = admin_token(&app).await;
    let now = app.state.clock.now();
    app.store.seed_users(50_001, 50_500, "old", now).await.expect("seed");
    assert_eq!(count(&app, &token, &[]).await, 500);

    // Act: at the same time, four writers inserting 500 users each a hundred at a time, two
    // deleting the old users one by one through the admin API, an import process creating
    // 1,500 users a chunk at a time, and a sign-in creating one.
    let mut writers = Vec::new();
    for writer in 0..4_i64 {
        let store = app.store.clone();
        writers.push(tokio::spawn(async move {
            for batch in 0..5 {
                let from = writer * 1_000 + batch * 100 + 1;
                store.seed_users(from, from + 99, "new", now).await.expect("seed");
            }
        }));
    }
    for half in 0..2_i64 {
        let (api, token) = (app.api.clone(), token.clone());
        let ids: Vec<String> = (50_001 + half * 250..50_001 + (half + 1) * 250)
            .map(|i| format!("00000000-0000-4000-8000-{}", 100_000_000_000_i64 + i))
            .collect();
        let template = admin_url(&app, paths::ADMIN_USER);
        writers.push(tokio::spawn(async move {
            for id in ids {
                let deleted = api.delete(template.replace("{user_id}", &id)).bearer_auth(&token).send().await;
                assert_eq!(deleted.expect("delete").status(), StatusCode::NO_CONTENT);
            }
        }));
    }
    let config = ConfigFile::write(&settings_toml(&app.entra, &ProviderSetup::default()));
    let import = tokio::process::Command::new(BINARY)
        .args(["import", "keycloak"])
        .arg(realm_of(1_500))
        .arg("--config")
        .arg(config.path())
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .env_remove("BROKER_ENCRYPTION_KEYS")
        .current_dir(config.dir())
        .output();
    let (signed_in, imported) = tokio::join!(app.tokens(), import);
    for writer in writers {
        writer.await.expect("writer");
    }

    // Assert
    let imported = imported.expect("the import runs");
    assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
    assert!(signed_in["access_token"].is_string());
    let expected = 4 * 500 + 1_500 + 1;
    assert_eq!(app.count(Table::Users).await, expected, "the users the writers left");
    assert_eq!(count(&app, &token, &[]).await, expected, "the count says the same");
    assert_eq!(count(&app, &token, &[("search", "*")]).await, expected, "search=* is every user");
    // imported1, imported10…19, imported100…199, imported1000…1499.
    assert_eq!(count(&app, &token, &[("search", "imported1")]).await, 611, "a filtered count still searches");
});

both_backends!(pages_of_every_user_are_the_offset_pages_whatever_changes_between_them, |backend| async move {
    // Arrange
    let app = TestApp::builder(backend).extra(&admin_toml(600)).spawn().await;
    let token = admin_token(&app).await;
    let now = app.state.clock.now();
    app.store.seed_users(1, 350, "page", now).await.expect("seed");

    // Act and Assert: a walk of unchanged users is the whole listing, in order.
    let mut walked = Vec::new();
    for first in (0..400).step_by(100) {
        walked.extend(page(&app, &token, first, 100, &[]).await);
    }
    assert_eq!(walked, offset_page(&app, backend, 0, 1_000).await, "a walk gives every user once, in order");
    let mut starred = Vec::new();
    for first in (0..400).step_by(100) {
        starred.extend(page(&app, &token, first, 100, &[("search", "*")]).await);
    }
    assert_eq!(starred, walked, "search=* walks the same");

    // Between the pages of a walk: a user inserted before the position, a user renamed from
    // before it to after it, a user deleted; each page is still the offset page of its moment.
    let changes = [
        ("nothing changed", ""),
        ("a user inserted before", "INSERT INTO users (id, username, created_at, updated_at) VALUES ('a', 'a', 0, 0)"),
        ("a user renamed past the position", "UPDATE users SET username = 'zzzz' WHERE username = 'page1'"),
        ("a user deleted before", "DELETE FROM users WHERE username = 'page10'"),
    ];
    let mut first = 0;
    for (case, sql) in changes {
        if !sql.is_empty() {
            match backend {
                Backend::Postgres => {
                    let mut connection = sqlx::PgConnection::connect(&app.db.url).await.expect("connect");
                    sqlx::raw_sql(sql).execute(&mut connection).await.expect("change");
                }
                Backend::Sqlite => {
                    let mut connection = sqlx::SqliteConnection::connect(&app.db.url).await.expect("connect");
                    sqlx::raw_sql(sql).execute(&mut connection).await.expect("change");
                }
            }
        }
        let served = page(&app, &token, first, 80, &[]).await;
        assert_eq!(served, offset_page(&app, backend, first, 80).await, "{case}: the page at {first}");
        first += 80;
    }
    assert_eq!(page(&app, &token, 2_000, 100, &[]).await, Vec::<String>::new(), "past the end: an empty page");
});
