//! Operations: health, metrics, the command line and start-up validation.

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;
use crate::support::process::BINARY;

both_backends!(health_checks_answer_in_keycloaks_shape, |backend| async move {
    let app = spawn_app(backend).await;
    for path in [paths::HEALTH, paths::HEALTH_LIVE, paths::HEALTH_READY, paths::HEALTH_STARTED] {
        let response = app.api.get(format!("{}{path}", app.management)).send().await.expect("health");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "UP", "{path}");
        assert!(
            body["checks"].as_array().is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["status"] == "UP")),
            "{path}: {body}"
        );
    }
    let public_health = app.api.get(app.url(paths::HEALTH)).send().await.expect("request");
    assert_eq!(public_health.status(), StatusCode::NOT_FOUND, "health lives on the management listener only");

    let issuer = app.url(&realm_path(paths::REALM));
    let realm: Value = app.api.get(&issuer).send().await.expect("realm").json().await.expect("json");
    assert_eq!(realm["realm"], REALM_NAME);
    assert!(realm["public_key"].as_str().is_some_and(|k| k.starts_with("MII")), "base64 SubjectPublicKeyInfo");
    assert_eq!(realm["token-service"], format!("{issuer}/protocol/openid-connect"));
    let unknown = app.api.get(app.url("/realms/master")).send().await.expect("realm");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let discovery: Value = app
        .api
        .get(app.url(&realm_path(paths::DISCOVERY)))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(discovery["issuer"], issuer);
    let certs: Value = app
        .api
        .get(discovery["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("certs")
        .json()
        .await
        .expect("json");
    assert_eq!(certs["keys"][0]["kty"], "RSA");
    assert_eq!(certs["keys"][0]["alg"], "RS256");

    app.sign_in().await.code();
    let metrics = app.metrics().await;
    let auth_requests = format!(
        "identity_broker_http_requests_total{{listener=\"public\",method=\"GET\",route=\"{}\",status=\"302\"}}",
        paths::AUTH
    );
    for name in [
        "identity_broker_sign_ins_total{provider=\"azure_devops\",outcome=\"success\"} 1",
        &auth_requests,
        "identity_broker_http_request_duration_seconds_bucket",
        "identity_broker_upstream_request_duration_seconds_count{operation=\"token_code\"} 1",
    ] {
        assert!(metrics.contains(name), "metrics lack `{name}`:\n{metrics}");
    }
    let responses = app.api.get(&issuer).send().await.expect("realm");
    assert!(responses.headers().get("x-request-id").is_some(), "every response carries a request id");
});

fn binary() -> std::process::Command {
    std::process::Command::new(BINARY)
}

#[test]
fn start_refuses_to_run_without_essentials_and_names_the_keys() {
    let output = binary()
        .arg("start")
        .env_remove("DATABASE_URL")
        .env_remove("BROKER_ENCRYPTION_KEYS")
        .env_remove("BROKER_HOSTNAME")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in ["http.hostname", "database.url", "vault.encryption_keys"] {
        assert!(stderr.contains(key), "stderr should name {key}: {stderr}");
    }
}

#[test]
fn start_refuses_an_organization_url_with_the_fix() {
    let output = binary()
        .arg("start")
        .env("BROKER_HOSTNAME", "https://auth.example.com")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/none")
        .env("BROKER_ENCRYPTION_KEYS", VAULT_KEY)
        .env("AZURE_DEVOPS_TENANT_ID", "organizations")
        .env("AZURE_DEVOPS_CLIENT_ID", "x")
        .env("AZURE_DEVOPS_CLIENT_SECRET", "y")
        .env("AZURE_DEVOPS_ORGANIZATION", "https://dev.azure.com/contoso")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("providers.azure_devops.organization") && stderr.contains("`contoso`"), "{stderr}");
    assert!(!stderr.contains("AAECAwQF"), "no key material in errors");
}

#[tokio::test]
async fn migrate_applies_migrations_and_exits() {
    let db = TestDb::new(Backend::Postgres).await;
    let url = db.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        binary()
            .arg("migrate")
            .env("DATABASE_URL", url)
            .env("BROKER_HOSTNAME", "https://auth.example.com")
            .env("BROKER_ENCRYPTION_KEYS", VAULT_KEY)
            .output()
            .expect("runs")
    })
    .await
    .expect("joined");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let store =
        identity_broker::store::Store::connect(&secrecy::SecretString::from(db.url.clone()), 1).await.expect("connect");
    assert_eq!(store.count_rows(identity_broker::store::Table::Users).await.expect("table exists"), 0);
    store.close().await;
}

/// The one place the tests spell the routes out: Keycloak clients (python-keycloak, OpenHands)
/// build these URLs themselves, so renaming a route in `paths` must be a decision taken here.
#[test]
fn routes_keep_keycloaks_layout() {
    let routes = [
        (paths::REALM, "/realms/{realm}"),
        (paths::DISCOVERY, "/realms/{realm}/.well-known/openid-configuration"),
        (paths::CERTS, "/realms/{realm}/protocol/openid-connect/certs"),
        (paths::AUTH, "/realms/{realm}/protocol/openid-connect/auth"),
        (paths::TOKEN, "/realms/{realm}/protocol/openid-connect/token"),
        (paths::USERINFO, "/realms/{realm}/protocol/openid-connect/userinfo"),
        (paths::INTROSPECT, "/realms/{realm}/protocol/openid-connect/token/introspect"),
        (paths::REVOKE, "/realms/{realm}/protocol/openid-connect/revoke"),
        (paths::LOGOUT, "/realms/{realm}/protocol/openid-connect/logout"),
        (paths::BROKER_LOGIN, "/realms/{realm}/broker/{alias}/login"),
        (paths::BROKER_ENDPOINT, "/realms/{realm}/broker/{alias}/endpoint"),
        (paths::BROKER_TOKEN, "/realms/{realm}/broker/{alias}/token"),
        (paths::INTERNAL_USER_TOKEN, "/internal/v1/users/{user_id}/tokens/{alias}"),
        (paths::INTERNAL_USERS, "/internal/v1/users"),
        (paths::INTERNAL_OPENAPI, "/internal/v1/openapi.json"),
        (paths::HEALTH, "/health"),
        (paths::HEALTH_LIVE, "/health/live"),
        (paths::HEALTH_READY, "/health/ready"),
        (paths::HEALTH_STARTED, "/health/started"),
        (paths::METRICS, "/metrics"),
    ];
    for (route, expected) in routes {
        assert_eq!(route, expected, "a route clients and probes rely on moved");
    }
}
