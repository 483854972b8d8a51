//! The internal API's hand-written OpenAPI document held against the router that serves it:
//! every documented operation is served, no other method is, and every internal route is
//! documented.

use identity_broker::http::paths;
use reqwest::{Method, StatusCode};

use crate::helpers::*;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_exactly_the_internal_routes() {
    let app = spawn_app(Backend::Sqlite).await;
    let document: serde_json::Value =
        app.api.get(format!("{}{}", app.internal, paths::INTERNAL_OPENAPI)).send().await.unwrap().json().await.unwrap();
    let documented = document["paths"].as_object().expect("the document has paths");

    for route in [paths::INTERNAL_USER_TOKEN, paths::INTERNAL_USERS] {
        assert!(documented.contains_key(route), "{route} is served but not documented");
    }
    for (template, operations) in documented {
        let url = format!("{}{}", app.internal, template.replace("{user_id}", "u1").replace("{alias}", "azure_devops"));
        for method in METHODS {
            let response = app
                .api
                .request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &url)
                .send()
                .await
                .unwrap();
            let served = route_answered(&response);
            let is_documented = operations.get(method).is_some();
            assert_eq!(served, is_documented, "{method} {template}: served {served}, documented {is_documented}");
        }
    }
}

/// Whether a route is there to answer `response`: anything but 404 and 405, or a 404 in JSON,
/// which is a documented answer of the route (`not_linked`, `User not found`), not a missing one.
pub(crate) fn route_answered(response: &reqwest::Response) -> bool {
    !matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
        || response.headers().get("content-type").is_some_and(|v| v.to_str().unwrap().contains("json"))
}
