//! python-keycloak's `KeycloakOpenID`, a client nobody here wrote, against the real server,
//! with each `realm.signature_algorithm`.

use crate::both_backends;
use crate::helpers::*;
use crate::python::python_env;

/// Runs the python-keycloak script against `app`, whose realm signs with `algorithm`.
async fn python_keycloak_signs_in(app: &TestApp, algorithm: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/keycloak_client.py");
    let server_url = format!("{}/", app.public);
    let output = tokio::process::Command::new(python_env().await.python())
        .args([script, "--server-url", &server_url, "--realm", REALM_NAME, "--client-id", CLIENT_ID])
        .args(["--client-secret", CLIENT_SECRET, "--redirect-uri", REDIRECT_URI, "--idp-hint", "azure_devops"])
        .args(["--expect-username", "alice@contoso.onmicrosoft.com", "--signature-algorithm", algorithm])
        .output()
        .await
        .expect("the environment's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python-keycloak failed with {algorithm}:\n{stdout}\n{stderr}");
}

/// The test application with `[realm] signature_algorithm = algorithm`.
async fn spawn_app_signing_with(backend: Backend, algorithm: &str) -> TestApp {
    TestApp::builder(backend)
        .settings(|entra| {
            settings_toml(entra, &ProviderSetup::default())
                + &format!("\n[realm]\nsignature_algorithm = \"{algorithm}\"\n")
        })
        .spawn()
        .await
}

both_backends!(python_keycloak_signs_in_unchanged, |backend| async move {
    let app = spawn_app(backend).await;
    python_keycloak_signs_in(&app, "RS256").await;
});

both_backends!(python_keycloak_signs_in_unchanged_with_es256, |backend| async move {
    let app = spawn_app_signing_with(backend, "ES256").await;
    python_keycloak_signs_in(&app, "ES256").await;
});

both_backends!(python_keycloak_signs_in_unchanged_with_eddsa, |backend| async move {
    let app = spawn_app_signing_with(backend, "EdDSA").await;
    python_keycloak_signs_in(&app, "EdDSA").await;
});
