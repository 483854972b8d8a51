//! The Helm chart, checked without a cluster: `tests/python/chart_check.py` renders it with the
//! real Helm engine, lints and validates it; then the broker's own configuration loader reads every
//! rendered `config.toml` with the environment the pods get, and the migration Job's environment
//! alone, as `start` and `migrate` would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use identity_broker::config::{Mode, Settings};
use identity_broker::telemetry::{HttpLabels, Metrics};
use serde_json::Value;

use crate::python::{python_env, target_dir};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/identity-broker");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/chart_check.py");
/// Stand-ins for what the Secrets hold: the loader checks their shape, never their truth.
const DATABASE_URL: &str = "postgres://broker:chart-check@postgres:5432/broker";
const VAULT_KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test]
async fn chart_renders_validates_and_configures_the_broker() {
    // Arrange: a scratch directory under target/, and the broker's metric names for the dashboard.
    let out = target_dir().join(format!("chart-check-{}", std::process::id()));
    drop(std::fs::remove_dir_all(&out));
    std::fs::create_dir_all(&out).expect("target/ is writable");
    let metrics = out.join("metrics.txt");
    std::fs::write(&metrics, exposition()).expect("the exposition is written");

    // Act
    let output = tokio::process::Command::new(python_env().await.python())
        .arg(SCRIPT)
        .args(["--chart", CHART])
        .arg("--out")
        .arg(&out)
        .arg("--metrics")
        .arg(&metrics)
        .output()
        .await
        .expect("the environment's python runs");

    // Assert
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chart_check.py failed (output in {}):\n{stdout}\n{stderr}", out.display());
    let scenarios = rendered_scenarios(&out);
    assert!(scenarios.len() >= 6, "the default values and the ci/ values files rendered: {scenarios:?}\n{stdout}");
    for (scenario, path) in &scenarios {
        let broker: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("broker.json is readable"))
            .expect("broker.json is JSON");
        check_pods_configuration(scenario, &broker);
        check_migration_environment(scenario, &broker);
    }
    drop(std::fs::remove_dir_all(&out));
}

/// `start` in a pod: the ConfigMap's file and the Deployment's environment are enough, and the
/// listeners bind the container ports.
fn check_pods_configuration(scenario: &str, broker: &Value) {
    let toml = broker["config_toml"].as_str().expect("config_toml");
    let env = environment(&broker["env"]);
    let settings = match Settings::from_toml(Mode::Production, toml, |name| env_lookup(&env, name)) {
        Ok(settings) => settings,
        Err(err) => {
            panic!("{scenario}: `start` would refuse the chart's configuration:\n{err}\n--- config.toml\n{toml}")
        }
    };
    let port = |listener: &str| broker["ports"][listener].as_u64().expect("a port");
    assert_eq!(u64::from(settings.http.bind.port()), port("public"), "{scenario}: public listener");
    assert_eq!(u64::from(settings.http.internal_bind.port()), port("internal"), "{scenario}: internal listener");
    assert_eq!(u64::from(settings.http.management_bind.port()), port("management"), "{scenario}: management listener");
    let has_job = !broker["job_env"].is_null();
    assert_eq!(settings.database.migrate, !has_job, "{scenario}: the pods migrate exactly when no Job does");
}

/// `migrate` in the hook Job, which runs before this release's ConfigMap exists: its environment
/// alone must be a complete production configuration.
fn check_migration_environment(scenario: &str, broker: &Value) {
    if broker["job_env"].is_null() {
        return;
    }
    let env = environment(&broker["job_env"]);
    if let Err(err) = Settings::from_toml(Mode::Production, "", |name| env_lookup(&env, name)) {
        panic!("{scenario}: `identity-broker migrate` would refuse the Job's environment:\n{err}");
    }
}

/// (name, value) pairs; a variable read from a Secret gets a stand-in of the right shape.
fn environment(entries: &Value) -> Vec<(String, String)> {
    let entries = entries.as_array().expect("an environment list");
    entries
        .iter()
        .filter_map(|entry| {
            let name = entry["name"].as_str().expect("a variable name").to_owned();
            let value = if let Some(value) = entry["value"].as_str() {
                value.to_owned()
            } else if entry.get("secret").is_some() {
                match name.as_str() {
                    "DATABASE_URL" => DATABASE_URL.to_owned(),
                    "BROKER_ENCRYPTION_KEYS" => VAULT_KEYS.to_owned(),
                    _ => format!("chart-check-{}", name.to_lowercase()),
                }
            } else {
                return None;
            };
            Some((name, value))
        })
        .collect()
}

fn env_lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone())
}

fn rendered_scenarios(out: &Path) -> Vec<(String, PathBuf)> {
    let mut scenarios: Vec<(String, PathBuf)> = std::fs::read_dir(out)
        .expect("the output directory is readable")
        .filter_map(Result::ok)
        .map(|entry| (entry.file_name().to_string_lossy().into_owned(), entry.path().join("broker.json")))
        .filter(|(_, path)| path.exists())
        .collect();
    scenarios.sort();
    scenarios
}

/// The broker's /metrics text with one sample of each family, so their names and labels show.
fn exposition() -> String {
    let metrics = Metrics::new();
    let provider = "azure_devops";
    metrics.count_sign_in(provider, "success");
    metrics.count_token_read("internal", provider, "reauth_required");
    metrics.observe_refresh(provider, "refreshed", Duration::from_millis(120));
    metrics.count_unlink(provider, "ok");
    metrics.observe_upstream("token", Duration::from_millis(80));
    let labels = HttpLabels { listener: "public", method: "GET", route: "/realms/{realm}", status: 200 };
    metrics.observe_http(labels, Duration::from_millis(3));
    metrics.render()
}
