//! One storage suite run against both Postgres and SQLite.

use std::collections::{BTreeMap, BTreeSet};

use identity_broker::config::parse_vault_key;
use identity_broker::crypto::Cipher;
use identity_broker::store::{
    AuditEvent, AuthRequestRow, AuthorizationCodeRow, CodeRedemption, IdentityKey, Lease, ProfileUpdate, ReauthMark,
    SessionRow, Store, StoreError, Table, UpstreamLogin,
};
use identity_broker::vault::{UpstreamTokens, open_tokens, seal_tokens};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection as _;

use crate::both_backends;
use crate::helpers::*;

async fn store(db: &TestDb) -> Store {
    let store = Store::connect(&SecretString::from(db.url.clone()), 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn cipher() -> Cipher {
    Cipher::new(&[parse_vault_key(VAULT_KEY).expect("key")]).expect("cipher")
}

fn profile(user_id: &str, subject: &str) -> ProfileUpdate {
    ProfileUpdate {
        user_id: user_id.into(),
        username: "alice@contoso.com".into(),
        email: Some("alice@contoso.com".into()),
        email_verified: true,
        first_name: None,
        last_name: None,
        full_name: Some("Alice".into()),
        alias: "azure_devops".into(),
        subject: subject.into(),
        identity_username: None,
        tenant_id: None,
        object_id: None,
        attributes: Vec::new(),
        roles: Vec::new(),
    }
}

fn tokens(access: &str) -> UpstreamTokens {
    UpstreamTokens {
        access_token: SecretString::from(access.to_owned()),
        refresh_token: Some(SecretString::from("refresh-value".to_owned())),
        id_token: None,
        token_type: "Bearer".into(),
        scope: "https://app.vssps.visualstudio.com/user_impersonation".into(),
        expires_at: 2_000,
        refresh_expires_at: None,
    }
}

both_backends!(sign_ins_save_users_identities_and_sealed_tokens, |backend| async move {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let cipher = cipher();

    store
        .save_sign_in(
            &profile("u1", "sub-1"),
            Some(&seal_tokens(&cipher, IdentityKey { user_id: "u1", alias: "azure_devops" }, &tokens("first"), 1_000)),
            1_000,
        )
        .await
        .expect("first");
    store
        .save_sign_in(
            &profile("u1", "sub-1"),
            Some(&seal_tokens(&cipher, IdentityKey { user_id: "u1", alias: "azure_devops" }, &tokens("second"), 1_100)),
            1_100,
        )
        .await
        .expect("update");

    let identity = store.find_identity_by_subject("azure_devops", "sub-1").await.expect("query").expect("identity");
    assert_eq!(identity.user_id, "u1");
    let row =
        store.find_vault_row(IdentityKey { user_id: "u1", alias: "azure_devops" }).await.expect("query").expect("row");
    assert_eq!(row.vault_key_id, "t1");
    let opened = open_tokens(&cipher, &row).expect("opens");
    assert_eq!(opened.access_token.expose_secret(), "second", "the later sign-in replaced the tokens");
    assert_eq!(store.count_rows(Table::Users).await.expect("count"), 1);

    // Another user claiming the same upstream subject is a conflict, and nothing changes.
    let clash = store
        .save_sign_in(
            &profile("u2", "sub-1"),
            Some(&seal_tokens(&cipher, IdentityKey { user_id: "u2", alias: "azure_devops" }, &tokens("x"), 1_200)),
            1_200,
        )
        .await;
    assert!(matches!(clash, Err(StoreError::Conflict(_))), "{clash:?}");
    assert_eq!(store.count_rows(Table::Users).await.expect("count"), 1, "the transaction rolled back");

    // A sealed row copied to another user does not open.
    let mut moved = row.clone();
    moved.user_id = "u2".into();
    assert!(open_tokens(&cipher, &moved).is_err(), "associated data binds the row");
});

both_backends!(pending_sign_ins_are_bound_to_the_browser_and_single_use, |backend| async move {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let row = AuthRequestRow {
        id: "req".into(),
        browser_hash: "browser".into(),
        client_id: "allhands".into(),
        redirect_uri: REDIRECT_URI.into(),
        scope: "openid".into(),
        client_state: Some("s".into()),
        client_nonce: None,
        code_challenge: None,
        code_challenge_method: None,
        login_hint: None,
        alias: None,
        upstream_state_hash: None,
        upstream_nonce: None,
        pkce_verifier: None,
        created_at: 100,
        expires_at: 700,
        link_user_id: Some("u1".into()),
        prompt: Some("login".into()),
    };
    store.insert_auth_request(&row).await.expect("insert");

    assert!(store.find_auth_request("req", "other-browser", 200).await.expect("query").is_none(), "other browser");
    assert!(store.find_auth_request("req", "browser", 701).await.expect("query").is_none(), "expired");
    assert!(store.find_auth_request("req", "browser", 200).await.expect("query").is_some());

    let login = UpstreamLogin {
        alias: "azure_devops".into(),
        state_hash: "state-hash".into(),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
    };
    assert!(store.begin_upstream_login("req", &login).await.expect("begin"));
    assert!(!store.begin_upstream_login("req", &login).await.expect("begin"), "a sign-in starts upstream once");

    let taken = store.take_auth_request_by_state("state-hash").await.expect("take").expect("row");
    assert_eq!(taken.alias.as_deref(), Some("azure_devops"));
    assert_eq!((taken.link_user_id.as_deref(), taken.prompt.as_deref()), (Some("u1"), Some("login")));
    assert!(store.take_auth_request_by_state("state-hash").await.expect("take").is_none(), "single use");
    assert_eq!(store.delete_expired(10_000).await.expect("cleanup"), 0);
});

both_backends!(authorization_codes_redeem_once_and_a_replay_ends_the_session, |backend| async move {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let cipher = cipher();
    store
        .save_sign_in(
            &profile("u1", "sub-1"),
            Some(&seal_tokens(&cipher, IdentityKey { user_id: "u1", alias: "azure_devops" }, &tokens("t"), 1)),
            1,
        )
        .await
        .expect("user");
    let session = SessionRow {
        id: "sid".into(),
        cookie_hash: "c".into(),
        user_id: "u1".into(),
        identity_provider: "azure_devops".into(),
        created_at: 1,
        last_seen_at: 1,
        ended_at: None,
        offline: false,
    };
    store.insert_session(&session).await.expect("session");
    let code = AuthorizationCodeRow {
        code_hash: "code".into(),
        client_id: "allhands".into(),
        redirect_uri: REDIRECT_URI.into(),
        user_id: "u1".into(),
        session_id: "sid".into(),
        scope: "openid".into(),
        nonce: None,
        code_challenge: None,
        code_challenge_method: None,
        created_at: 1,
        expires_at: 61,
        used_at: None,
    };
    store.insert_authorization_code(&code).await.expect("code");

    assert!(matches!(store.redeem_authorization_code("code", 10).await.expect("redeem"), CodeRedemption::Redeemed(_)));
    assert!(matches!(store.redeem_authorization_code("code", 11).await.expect("redeem"), CodeRedemption::Replayed(_)));
    assert!(matches!(store.redeem_authorization_code("nope", 11).await.expect("redeem"), CodeRedemption::Unknown));
    let ended = store.find_session("sid").await.expect("query").expect("session");
    assert_eq!(ended.ended_at, Some(11));
    assert_eq!(store.delete_expired(1_000).await.expect("cleanup"), 1, "the expired code is swept");
});

both_backends!(instance_secrets_are_created_once, |backend| async move {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let first = store.instance_secret_or_insert("k", b"one", 1).await.expect("insert");
    let second = store.instance_secret_or_insert("k", b"two", 2).await.expect("again");
    assert_eq!(first, b"one");
    assert_eq!(second, b"one", "the first value wins");
    store.migrate().await.expect("migrations are idempotent");
});

/// A store holding `u1` and `u2`, each signed in with stored tokens (at 100), and its cipher.
async fn two_signed_in_users(db: &TestDb) -> (Store, Cipher) {
    let store = store(db).await;
    let cipher = cipher();
    for (user, subject) in [("u1", "sub-1"), ("u2", "sub-2")] {
        let row = seal_tokens(&cipher, IdentityKey { user_id: user, alias: "azure_devops" }, &tokens("t"), 100);
        store.save_sign_in(&profile(user, subject), Some(&row), 100).await.expect("user");
    }
    (store, cipher)
}

both_backends!(refresh_leases_admit_one_holder_until_they_expire, |backend| async move {
    let db = TestDb::new(backend).await;
    let (store, cipher) = two_signed_in_users(&db).await;
    let first = Lease { owner: "replica-a", until: 160 };
    let second = Lease { owner: "replica-b", until: 170 };

    assert!(
        store
            .claim_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, first, 110)
            .await
            .expect("claim")
            .is_some()
    );
    assert!(
        store
            .claim_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, second, 120)
            .await
            .expect("claim")
            .is_none(),
        "held"
    );
    assert!(
        store
            .claim_refresh_lease(IdentityKey { user_id: "nobody", alias: "azure_devops" }, second, 120)
            .await
            .expect("claim")
            .is_none()
    );
    // Keep-alive skips the held row and takes the other stale one.
    let stale = store.claim_stale_leases("azure_devops", 150, second, 120, 10).await.expect("stale");
    assert_eq!(stale.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(), ["u2"]);
    // Only the holder finishes; afterwards the row is free again.
    let mut refreshed = seal_tokens(&cipher, IdentityKey { user_id: "u1", alias: "azure_devops" }, &tokens("new"), 130);
    refreshed.expires_at = 5_000;
    assert!(!store.finish_refresh(&refreshed, "replica-b").await.expect("finish"), "not the holder");
    assert!(store.finish_refresh(&refreshed, "replica-a").await.expect("finish"));
    let reread = store
        .claim_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, second, 131)
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(reread.expires_at, 5_000, "the claim returns the row as the last holder left it");
    // A lease that outlives its time is taken over.
    assert!(
        store
            .claim_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, first, 171)
            .await
            .expect("claim")
            .is_some(),
        "expired"
    );
    // A marked identity is not kept alive.
    store
        .release_refresh_lease(IdentityKey { user_id: "u2", alias: "azure_devops" }, "replica-b")
        .await
        .expect("release");
    let mark = ReauthMark { kind: "expired".into(), claims: None };
    store
        .mark_needs_reauth(IdentityKey { user_id: "u2", alias: "azure_devops" }, &mark, "AADSTS70008", 200)
        .await
        .expect("mark");
    let stale = store.claim_stale_leases("azure_devops", 1_000, second, 300, 10).await.expect("stale");
    assert!(stale.iter().all(|r| r.user_id != "u2"), "needs a sign-in, not a refresh");
});

both_backends!(refresh_leases_are_renewed_by_their_holder_alone_and_given_back_at_shutdown, |backend| async move {
    let db = TestDb::new(backend).await;
    let (store, _) = two_signed_in_users(&db).await;
    let a = Lease { owner: "replica-a", until: 105 };
    let b = Lease { owner: "replica-b", until: 105 };
    assert!(
        store
            .claim_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, a, 100)
            .await
            .expect("claim")
            .is_some()
    );
    assert!(
        store
            .claim_refresh_lease(IdentityKey { user_id: "u2", alias: "azure_devops" }, b, 100)
            .await
            .expect("claim")
            .is_some()
    );

    assert!(
        store
            .renew_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, "replica-a", 110)
            .await
            .expect("renew"),
        "the holder"
    );
    assert!(
        !store
            .renew_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, "replica-b", 999)
            .await
            .expect("renew"),
        "not the holder"
    );
    assert_eq!(
        store.find_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }).await.expect("lease"),
        Some(("replica-a".into(), 110))
    );
    let too_early =
        store.claim_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, b, 108).await.expect("claim");
    assert!(too_early.is_none(), "a renewed lease is not taken where the first one would have lapsed");

    assert_eq!(store.release_refresh_leases_of("replica-a").await.expect("release"), 1, "only a's lease");
    assert_eq!(
        store.find_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }).await.expect("lease"),
        None,
        "given back"
    );
    assert_eq!(
        store.find_refresh_lease(IdentityKey { user_id: "u2", alias: "azure_devops" }).await.expect("lease"),
        Some(("replica-b".into(), 105))
    );
    assert!(
        !store
            .renew_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, "replica-a", 120)
            .await
            .expect("renew"),
        "nothing to renew"
    );
    assert!(
        store
            .claim_refresh_lease(IdentityKey { user_id: "u1", alias: "azure_devops" }, b, 108)
            .await
            .expect("claim")
            .is_some(),
        "free at once"
    );
});

both_backends!(audit_events_older_than_the_retention_go, |backend| async move {
    let db = TestDb::new(backend).await;
    let store = store(&db).await;
    let events: Vec<AuditEvent> = [10, 20, 30]
        .into_iter()
        .map(|at| AuditEvent { at, kind: "token_read".into(), outcome: "ok".into(), ..Default::default() })
        .collect();
    store.record_audits(&events).await.expect("one statement for the batch");
    assert_eq!(store.list_audit(Some("token_read")).await.expect("list").len(), 3);
    assert_eq!(store.delete_audit_before(25).await.expect("retention"), 2);
    assert_eq!(store.list_audit(None).await.expect("list").len(), 1);
    // A full batch of the writer (500 events, 3,500 parameters) fits both databases.
    let full: Vec<AuditEvent> =
        (0..500).map(|at| AuditEvent { at: 100 + at, kind: "unlink".into(), ..Default::default() }).collect();
    store.record_audits(&full).await.expect("a full batch");
    assert_eq!(store.list_audit(Some("unlink")).await.expect("list").len(), 500);
});

/// Table name to its column names.
type Schema = BTreeMap<String, BTreeSet<String>>;

fn schema(pairs: Vec<(String, String)>) -> Schema {
    let mut schema = Schema::new();
    for (table, column) in pairs {
        schema.entry(table).or_default().insert(column);
    }
    schema
}

#[tokio::test]
async fn both_migration_trees_give_the_same_tables_and_columns() {
    let (postgres_db, sqlite_db) = (TestDb::new(Backend::Postgres).await, TestDb::new(Backend::Sqlite).await);
    store(&postgres_db).await;
    store(&sqlite_db).await;

    let mut postgres = sqlx::PgConnection::connect(&postgres_db.url).await.expect("connect");
    let postgres = schema(
        sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_catalog = current_database() AND table_schema = 'public' AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut postgres)
        .await
        .expect("Postgres columns"),
    );
    let mut sqlite = sqlx::SqliteConnection::connect(&sqlite_db.url).await.expect("connect");
    let sqlite = schema(
        sqlx::query_as(
            "SELECT m.name, c.name FROM sqlite_master m JOIN pragma_table_info(m.name) c
             WHERE m.type = 'table' AND m.name <> '_sqlx_migrations' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .fetch_all(&mut sqlite)
        .await
        .expect("SQLite columns"),
    );

    assert!(postgres.contains_key("auth_requests") && sqlite.contains_key("auth_requests"), "both schemas were read");
    let tables: BTreeSet<&String> = postgres.keys().chain(sqlite.keys()).collect();
    let differing: Vec<_> = tables
        .into_iter()
        .filter(|table| postgres.get(*table) != sqlite.get(*table))
        .map(|table| (table, postgres.get(table), sqlite.get(table)))
        .collect();
    assert!(differing.is_empty(), "tables whose columns differ (Postgres, SQLite): {differing:?}");
}
