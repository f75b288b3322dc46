//! The OpenAPI document (`docs/openapi.json`) and the router stay in step: every `/_consulta/v1` route
//! is documented with exactly the methods it serves, and the document is valid OpenAPI 3.1 JSON.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use consulta_appservice::api::openapi::OPENAPI_JSON;
use consulta_appservice::{AppState, app};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::offline_state;

/// The router's source: every REST route is a string literal in it.
const ROUTER_SOURCE: &str = include_str!("../../src/api/mod.rs");

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("docs/openapi.json is JSON")
}

fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let doc = document();
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

fn routed_paths() -> BTreeSet<String> {
    ROUTER_SOURCE
        .split('"')
        .filter(|s| s.starts_with("/_consulta/v1/"))
        .map(str::to_owned)
        .collect()
}

/// Answers `method path` unauthenticated: the route exists unless the router says "no such path" or
/// "not this method".
async fn is_routed(state: &AppState, method: &str, path: &str) -> bool {
    let uri = path
        .replace("{user_id}", "@someone:clinic.example")
        .replace("{room_id}", "!room:clinic.example")
        .replace("{id}", "01900000-0000-7000-8000-000000000001");
    let request = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(uri.replace('@', "%40").replace('!', "%21"))
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    !(status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND && body["errcode"] == "M_UNRECOGNIZED"))
}

#[test]
fn the_document_is_openapi_3_1_with_problem_errors() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("matrixAccessToken") && schemes.contains_key("matrixOpenId"));
    // Every reference resolves.
    let text = OPENAPI_JSON;
    for reference in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    // Every operation has an id and a success response.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["operationId"].is_string(), "{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_exists() {
    let (state, _dir) = offline_state().await;
    let documented = documented();
    let routed = routed_paths();
    assert!(
        routed.len() > 10,
        "the router's REST paths were found: {routed:?}"
    );
    let documented_paths: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(
        routed, documented_paths,
        "routes in src/api/mod.rs and paths in docs/openapi.json differ"
    );
    for (path, methods) in &documented {
        for method in METHODS {
            let served = is_routed(&state, method, path).await;
            assert_eq!(
                served,
                methods.contains(method),
                "{} {path}: served by the router = {served}, documented = {}",
                method.to_uppercase(),
                methods.contains(method)
            );
        }
    }
}

#[tokio::test]
async fn the_appservice_serves_the_document() {
    let (state, _dir) = offline_state().await;
    let response = app(state)
        .oneshot(
            Request::get("/_consulta/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "served as JSON"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let served: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(served, document());
}
