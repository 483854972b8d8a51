//! The internal API's OpenAPI document driven through schemathesis, a schema-driven fuzzer:
//! every generated request must get a documented status and body, and never a 500.

use crate::helpers::*;
use crate::python::python_env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let app = spawn_app(Backend::Postgres).await;
    let _ = app.tokens().await;
    let service = app.service_token(SERVICE_ID, SERVICE_SECRET).await;
    let schema = format!("{}{}", app.internal, paths::INTERNAL_OPENAPI);

    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,\
                  response_schema_conformance,ignored_auth";
    schemathesis(&schema, &app.internal, &service, &["--checks", checks, "--workers", "2"]).await;
}

/// Runs schemathesis over the OpenAPI document `schema` (a URL or a file) against `url` as
/// `bearer`, with what every run here shares (a fixed seed, 40 examples per operation, nothing
/// remembered between runs) and `options`; any problem fails the test with its report.
pub(crate) async fn schemathesis(schema: &str, url: &str, bearer: &str, options: &[&str]) {
    let output = tokio::process::Command::new(python_env().await.tool("schemathesis"))
        .args(["run", schema, "--url", url])
        .args(["--header", &format!("Authorization: Bearer {bearer}")])
        .args(["--max-examples", "40", "--seed", "7", "--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "10"])
        .args(options)
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache of crashes goes to the working directory: keep it out of the repository.
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("the environment's schemathesis runs");

    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
