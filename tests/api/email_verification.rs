//! send-verify-email for real: messages through a real SMTP server (aiosmtpd, started by each
//! test), the link opened through a real socket, and every refusal sending and storing nothing.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use identity_broker::store::{ProfileUpdate, Table};
use identity_broker::verification::VerifyEmailError;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::both_backends;
use crate::helpers::*;
use crate::python::{python_env, target_dir};

const SINK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/smtp_sink.py");
const USER: &str = "6b1c0f2e-0000-4000-8000-00000000ada1";
const EMAIL: &str = "ada@example.com";
const SENDER: &str = "noreply@app.test";

/// aiosmtpd on a free port, writing each message it takes to a directory of its own.
struct SmtpSink {
    port: u16,
    dir: PathBuf,
    _process: tokio::process::Child,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let dir = target_dir().join("tmp").join(format!("smtp-sink-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("the sink's directory");
        let mut process = tokio::process::Command::new(python_env().await.python())
            .arg(SINK)
            .arg(&dir)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("aiosmtpd starts");
        let stdout = process.stdout.take().expect("stdout");
        let mut first = String::new();
        tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).read_line(&mut first))
            .await
            .expect("aiosmtpd says where it listens within 30 s")
            .expect("its stdout");
        let port = first.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("`PORT <n>`");
        SmtpSink { port, dir, _process: process }
    }

    /// The messages taken so far, oldest first.
    fn messages(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("the sink's directory")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("JSON"))
            .collect()
    }

    /// The one message taken: the server writes it before it answers `250`, which the broker
    /// waits for before it returns.
    fn only_message(&self) -> Value {
        let messages = self.messages();
        assert_eq!(messages.len(), 1, "exactly one message: {messages:?}");
        messages.into_iter().next().expect("one")
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `[smtp]` for a server on this host's `port`, with `security` and no login.
fn smtp_table(port: u16, security: &str) -> String {
    format!(
        "\n[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"OpenHands <{SENDER}>\"\nsecurity = \"{security}\"\n"
    )
}

/// A broker mailing to `sink`, with the user `USER` (address `EMAIL`).
async fn spawn_mailing_app(backend: Backend, sink: &SmtpSink) -> TestApp {
    spawn_app_mailing_to(backend, sink.port, "none").await
}

/// A broker whose `[smtp]` names this host's `port`, with the user `USER` (address `EMAIL`).
async fn spawn_app_mailing_to(backend: Backend, port: u16, security: &str) -> TestApp {
    let table = smtp_table(port, security);
    let app = TestApp::builder(backend).edited(|text| text + &table).spawn().await;
    save_user(&app, USER, Some(EMAIL)).await;
    app
}

/// The main client's link for `USER`, straight from the service (no admin API in between).
async fn send_link(app: &TestApp) -> Result<(), VerifyEmailError> {
    app.state.email_verification.send_verify_email(USER, Some(CLIENT_ID), Some(REDIRECT_URI), None).await
}

/// Creates or updates the user as a sign-in would, e-mail unverified.
async fn save_user(app: &TestApp, id: &str, email: Option<&str>) {
    let profile = ProfileUpdate {
        user_id: id.to_owned(),
        username: format!("user-{id}"),
        email: email.map(str::to_owned),
        email_verified: false,
        first_name: None,
        last_name: None,
        full_name: None,
        alias: "azure_devops".to_owned(),
        subject: format!("subject-{id}"),
        identity_username: None,
        tenant_id: None,
        object_id: None,
        attributes: Vec::new(),
        roles: Vec::new(),
    };
    app.store.save_sign_in(&profile, None, 1).await.expect("user saved");
}

async fn verified(app: &TestApp, id: &str) -> bool {
    app.store.email_verified_for_tests(id).await.expect("read").expect("the user exists")
}

/// The link of a message, from its plain-text body.
fn link_in(message: &Value) -> String {
    let text = message["text"].as_str().expect("a plain-text body");
    text.split_whitespace().find(|word| word.contains("/login-actions/action-token?key=")).expect("a link").to_owned()
}

async fn open(app: &TestApp, link: &str) -> reqwest::Response {
    app.api.get(link).send().await.expect("the link opens")
}

both_backends!(the_link_verifies_the_address_once_and_goes_to_the_redirect_uri, |backend| async move {
    // Arrange: http.hostname names the public listener by another name than its address, so
    // that the link can only have been built from it.
    let sink = SmtpSink::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let table = smtp_table(sink.port, "none");
    let app = TestApp::builder(backend)
        .edited(|text| {
            let bind = "\nbind = \"127.0.0.1:0\"";
            assert!(text.contains(bind));
            text.replacen(bind, &format!("\nhostname = \"http://localhost:{port}\"\nbind = \"127.0.0.1:{port}\""), 1)
                + &table
        })
        .spawn()
        .await;
    save_user(&app, USER, Some(EMAIL)).await;

    // Act
    send_link(&app).await.expect("the message is sent");

    // Assert: the message, as another MIME implementation reads it.
    let message = sink.only_message();
    assert_eq!(message["rcpt_tos"], serde_json::json!([EMAIL]), "{message}");
    assert_eq!(message["mail_from"], SENDER);
    assert_eq!(message["subject"], "Verify email", "Keycloak's subject");
    assert_eq!(message["from"], format!("OpenHands <{SENDER}>"));
    assert_eq!(message["to"], EMAIL);
    assert_eq!(message["helo"], "localhost", "EHLO names the public hostname's host");
    assert_eq!(message["content_type"], "multipart/alternative");
    let link = link_in(&message);
    let expected = format!("http://localhost:{port}/realms/{REALM_NAME}/login-actions/action-token?key=");
    assert!(link.starts_with(&expected), "the link is built from http.hostname: {link}");
    assert!(message["text"].as_str().unwrap().contains("within 12 hours"), "Keycloak's default lifespan");
    let html = message["html"].as_str().expect("an HTML body");
    assert!(html.contains(&format!("href=\"{}\"", link.replace('&', "&amp;"))), "{html}");
    let key = link.split("key=").nth(1).expect("key");
    assert_eq!(app.count(Table::VerifyEmailTokens).await, 1);
    let stored = app.store.dump_table(Table::VerifyEmailTokens).await.expect("dump");
    assert!(stored.iter().all(|cell| !String::from_utf8_lossy(cell).contains(key)), "only the key's hash is stored");
    assert!(!verified(&app, USER).await, "sending verifies nothing");

    // Act: the person opens the link.
    let response = open(&app, &link).await;

    // Assert
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(location(&response), REDIRECT_URI);
    assert!(verified(&app, USER).await, "the address is verified");

    // A replay changes nothing, even after a sign-in unverified the address again.
    save_user(&app, USER, Some(EMAIL)).await;
    let replay = open(&app, &link).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert!(replay.text().await.unwrap().contains("already been used"));
    assert!(!verified(&app, USER).await, "a used link verifies nothing");

    // An unknown key, or none, is refused alike.
    let forged = open(&app, &format!("{expected}{}", "A".repeat(43))).await;
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert!(forged.text().await.unwrap().contains("not valid"));
    let bare = open(&app, expected.trim_end_matches("?key=")).await;
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);
    assert!(!verified(&app, USER).await);

    app.state.audit.flush().await;
    let sent = app.store.list_audit(Some("send_verify_email")).await.expect("audit");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!((sent[0].outcome.as_str(), sent[0].client_id.as_deref()), ("success", Some(CLIENT_ID)));
    let opened = app.store.list_audit(Some("verify_email")).await.expect("audit");
    let outcomes: Vec<&str> = opened.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["success", "refused", "refused"], "{opened:?}");
    assert!(opened.iter().all(|e| !e.detail.contains(key)), "no key in the audit trail");
});

both_backends!(an_expired_link_verifies_nothing, |backend| async move {
    let sink = SmtpSink::start().await;
    let app = spawn_mailing_app(backend, &sink).await;
    app.state
        .email_verification
        .send_verify_email(USER, Some(CLIENT_ID), Some(REDIRECT_URI), Some(60))
        .await
        .expect("sent");
    let message = sink.only_message();
    assert!(message["text"].as_str().unwrap().contains("within 1 minute"), "{message}");

    app.state.clock.advance(61);
    let response = open(&app, &link_in(&message)).await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("expired"));
    assert!(!verified(&app, USER).await);
});

both_backends!(a_link_verifies_only_the_address_it_was_sent_to, |backend| async move {
    let sink = SmtpSink::start().await;
    let app = spawn_mailing_app(backend, &sink).await;
    app.state.email_verification.send_verify_email(USER, None, None, None).await.expect("sent");
    let link = link_in(&sink.only_message());

    // The address changes before the link is opened.
    save_user(&app, USER, Some("grace@example.com")).await;
    let response = open(&app, &link).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("changed"));
    assert!(!verified(&app, USER).await, "the new address is not verified by the old one's link");

    // Back to the address it was sent to: the link, unused so far, works, and without a
    // redirect URI it ends on the broker's own page.
    save_user(&app, USER, Some(EMAIL)).await;
    let response = open(&app, &link).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("Your e-mail address is verified"));
    assert!(verified(&app, USER).await);
});

both_backends!(refused_requests_send_nothing_and_store_nothing, |backend| async move {
    // Arrange
    let sink = SmtpSink::start().await;
    let app = spawn_mailing_app(backend, &sink).await;
    let without_email = "6b1c0f2e-0000-4000-8000-0000000000e0";
    save_user(&app, without_email, None).await;
    let disabled = "6b1c0f2e-0000-4000-8000-0000000000d0";
    save_user(&app, disabled, Some("disabled@example.com")).await;
    app.store.set_user_enabled(disabled, false, 0).await.expect("disabled");
    let unknown_user = "6b1c0f2e-0000-4000-8000-000000000404";
    let foreign = format!("{REDIRECT_URI}/../../evil");
    let prefixed = format!("{REDIRECT_URI}x");
    // Why, user, client_id, redirect_uri, lifespan, Keycloak's message.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, Option<u64>, &'a str);
    let cases: &[Case<'_>] = &[
        ("an unknown user", unknown_user, Some(CLIENT_ID), Some(REDIRECT_URI), None, "User not found"),
        ("a user without e-mail", without_email, Some(CLIENT_ID), Some(REDIRECT_URI), None, "User email missing"),
        ("a disabled user", disabled, Some(CLIENT_ID), Some(REDIRECT_URI), None, "User is disabled"),
        ("an unknown client", USER, Some("nobody"), Some(REDIRECT_URI), None, "Client doesn't exist"),
        (
            "a redirect URI of no client",
            USER,
            Some(CLIENT_ID),
            Some("https://evil.test/cb"),
            None,
            "Invalid redirect uri.",
        ),
        (
            "another client's redirect URI",
            USER,
            Some(CLIENT_ID),
            Some(OTHER_REDIRECT_URI),
            None,
            "Invalid redirect uri.",
        ),
        ("a path escaping the registered one", USER, Some(CLIENT_ID), Some(&foreign), None, "Invalid redirect uri."),
        ("a registered URI with more after it", USER, Some(CLIENT_ID), Some(&prefixed), None, "Invalid redirect uri."),
        ("a redirect URI without its client", USER, None, Some(REDIRECT_URI), None, "Client id missing"),
        ("a lifespan of 0", USER, Some(CLIENT_ID), Some(REDIRECT_URI), Some(0), "lifespan must be between"),
        (
            "a lifespan beyond a year",
            USER,
            Some(CLIENT_ID),
            Some(REDIRECT_URI),
            Some(u64::MAX),
            "lifespan must be between",
        ),
    ];

    for (why, user, client_id, redirect_uri, lifespan, expected) in cases {
        // Act
        let err = app
            .state
            .email_verification
            .send_verify_email(user, *client_id, *redirect_uri, *lifespan)
            .await
            .expect_err(why);

        // Assert
        assert!(err.to_string().starts_with(expected), "{why}: `{err}` is not `{expected}`");
        let user_not_found = matches!(err, VerifyEmailError::UserNotFound);
        assert_eq!(user_not_found, *user == unknown_user, "{why}: only an unknown user is 404's variant");
        assert_eq!(app.count(Table::VerifyEmailTokens).await, 0, "{why}: nothing stored");
        assert!(sink.messages().is_empty(), "{why}: nothing sent");
    }
    for user in [USER, without_email, disabled] {
        assert!(!verified(&app, user).await);
    }
});

both_backends!(without_smtp_the_error_names_the_key_and_nothing_is_stored, |backend| async move {
    let app = spawn_app(backend).await;
    save_user(&app, USER, Some(EMAIL)).await;

    let err = send_link(&app).await.expect_err("no [smtp]");

    assert!(matches!(err, VerifyEmailError::SmtpNotConfigured), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("Failed to send execute actions email"), "Keycloak's words first: {message}");
    assert!(message.contains("[smtp]"), "names the table to set: {message}");
    assert_eq!(app.count(Table::VerifyEmailTokens).await, 0);

    // Client mistakes are still reported as such.
    let err =
        app.state.email_verification.send_verify_email(USER, Some("nobody"), None, None).await.expect_err("no client");
    assert!(matches!(err, VerifyEmailError::UnknownClient), "{err:?}");
});

both_backends!(a_server_that_is_down_fails_the_send_and_leaves_nothing, |backend| async move {
    // Arrange: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let app = spawn_app_mailing_to(backend, port, "none").await;

    // Act
    let err = send_link(&app).await.expect_err("nobody takes the message");

    // Assert
    assert!(matches!(err, VerifyEmailError::Send(_)), "{err:?}");
    assert_eq!(err.to_string(), "Failed to send execute actions email");
    let cause = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
    assert!(cause.contains(&format!("127.0.0.1:{port}")), "the cause names the server: {cause}");
    assert_eq!(app.count(Table::VerifyEmailTokens).await, 0, "the link went with the message that never left");
    app.state.audit.flush().await;
    let sent = app.store.list_audit(Some("send_verify_email")).await.expect("audit");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].outcome, "failure");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_not_hoped_for() {
    // aiosmtpd here offers no STARTTLS: a message must not go out in the clear.
    let sink = SmtpSink::start().await;
    let app = spawn_app_mailing_to(Backend::Sqlite, sink.port, "starttls").await;

    let err = send_link(&app).await.expect_err("no STARTTLS offered");

    assert!(matches!(err, VerifyEmailError::Send(_)), "{err:?}");
    assert!(sink.messages().is_empty(), "nothing was sent in the clear");
    assert_eq!(app.count(Table::VerifyEmailTokens).await, 0);
}

both_backends!(the_admin_api_sends_the_link_as_python_keycloak_asks_for_it, |backend| async move {
    // Arrange: the administrator, a view-users account, a mailing broker and a user.
    let sink = SmtpSink::start().await;
    let table = smtp_table(sink.port, "none") + &crate::admin::admin_toml(300);
    let app = TestApp::builder(backend).edited(|text| text + &table).spawn().await;
    save_user(&app, USER, Some(EMAIL)).await;
    let admin = crate::admin::admin_token(&app).await;
    let path = paths::ADMIN_USER_SEND_VERIFY_EMAIL.replace("{realm}", REALM_NAME).replace("{user_id}", USER);
    // python-keycloak's bytes: PUT, a JSON content type, an empty body, the query encoded.
    let send = |bearer: String, query: String| {
        app.api
            .put(format!("{}{path}?{query}", app.public))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .send()
    };
    let query = |redirect: &str| {
        let encoded: String = url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect();
        format!("client_id={CLIENT_ID}&redirect_uri={encoded}")
    };

    // Act and assert: refusals send nothing.
    let viewer = app.service_token(crate::admin::VIEWER_ID, crate::admin::VIEWER_SECRET).await;
    assert_eq!(send(viewer, query(REDIRECT_URI)).await.unwrap().status(), StatusCode::FORBIDDEN, "view-users");
    let open_redirect = send(admin.clone(), query("https://evil.example/")).await.unwrap();
    assert_eq!(open_redirect.status(), StatusCode::BAD_REQUEST);
    let body: Value = open_redirect.json().await.expect("json");
    assert_eq!(body["errorMessage"], "Invalid redirect uri.");
    let bad_lifespan = send(admin.clone(), format!("{}&lifespan=soon", query(REDIRECT_URI))).await.unwrap();
    assert_eq!(bad_lifespan.status(), StatusCode::BAD_REQUEST);
    assert!(sink.messages().is_empty(), "nothing sent for a refused request");

    // Act: the request OpenHands' routes/email.py makes.
    let sent = send(admin, query(REDIRECT_URI)).await.unwrap();

    // Assert
    assert_eq!(sent.status(), StatusCode::NO_CONTENT);
    let response = open(&app, &link_in(&sink.only_message())).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(location(&response), REDIRECT_URI);
    assert!(verified(&app, USER).await, "the address is verified");
});
