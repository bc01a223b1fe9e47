//! The API's description: `/openapi.json` and Swagger UI at `/docs`.

/// The API description, written by hand (the request types are core types,
/// which carry no OpenAPI derives) and checked against the router by tests.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// `/openapi.json` and Swagger UI at `/docs`, served from files compiled in.
pub(super) fn documentation() -> utoipa_swagger_ui::SwaggerUi {
    let document: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is valid JSON");
    utoipa_swagger_ui::SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", document)
}
