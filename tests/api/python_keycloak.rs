//! python-keycloak's `KeycloakOpenID`, a client nobody here wrote, against the real server.

use crate::both_backends;
use crate::helpers::*;
use crate::python::python_env;

both_backends!(python_keycloak_signs_in_unchanged, |backend| async move {
    let app = spawn_app(backend).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/keycloak_client.py");
    let server_url = format!("{}/", app.public);
    let output = tokio::process::Command::new(python_env().await.python())
        .args([script, "--server-url", &server_url, "--realm", REALM_NAME, "--client-id", CLIENT_ID])
        .args(["--client-secret", CLIENT_SECRET, "--redirect-uri", REDIRECT_URI, "--idp-hint", "azure_devops"])
        .args(["--expect-username", "alice@contoso.onmicrosoft.com"])
        .output()
        .await
        .expect("the environment's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python-keycloak failed:\n{stdout}\n{stderr}");
});
