//! Every session's start and end reaches the audit trail through the one batched writer, with
//! who, which client, which provider and why; never a token.

use identity_broker::http::paths;
use identity_broker::store::AuditEvent;
use reqwest::StatusCode;

use crate::both_backends;
use crate::helpers::*;

async fn audited(app: &TestApp, kind: &str) -> Vec<AuditEvent> {
    app.state.audit.flush().await;
    app.store.list_audit(Some(kind)).await.expect("audit events")
}

both_backends!(sign_ins_and_every_kind_of_session_end_are_audited, |backend| async move {
    let app = spawn_app(backend).await;

    // A sign-in, then the back-channel logout OpenHands posts.
    let tokens = app.tokens().await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let form = [("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET), ("refresh_token", refresh)];
    assert_eq!(app.post_form(paths::LOGOUT, &form).await.status(), StatusCode::NO_CONTENT);

    // A client that rotates refresh tokens, whose old refresh token comes back.
    let other = app.tokens_for((OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, OTHER_REDIRECT_URI), &[]).await;
    let first = other["refresh_token"].as_str().unwrap();
    let grant = [
        ("client_id", OTHER_CLIENT_ID),
        ("client_secret", OTHER_CLIENT_SECRET),
        ("grant_type", "refresh_token"),
        ("refresh_token", first),
    ];
    assert_eq!(app.post_form(paths::TOKEN, &grant).await.status(), StatusCode::OK);
    assert_eq!(app.post_form(paths::TOKEN, &grant).await.status(), StatusCode::BAD_REQUEST, "reuse is refused");

    let sign_ins = audited(&app, "sign_in").await;
    assert_eq!(sign_ins.len(), 2, "{sign_ins:?}");
    assert!(sign_ins.iter().all(|e| e.outcome == "success" && e.alias.as_deref() == Some("azure_devops")));
    let logouts = audited(&app, "logout").await;
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert_eq!(logouts[0].client_id.as_deref(), Some(CLIENT_ID));
    assert!(logouts[0].detail.contains("back_channel"), "{}", logouts[0].detail);
    let revoked = audited(&app, "session_revoked").await;
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(revoked[0].detail.contains("refresh_token_reused"), "{}", revoked[0].detail);
    for event in sign_ins.iter().chain(&logouts).chain(&revoked) {
        assert!(!event.detail.contains(refresh) && !event.detail.contains(first), "no token in {event:?}");
    }
});
