//! The HTTP ceiling for benchmarks: axum handlers that parse the JSON body
//! and answer as coffer would (201 `committed`; one result per batch item),
//! with no engine, no journal, no fsync. `coffer bench` drives it unchanged.
//! `cargo run --release -p coffer-server --example bare_axum -- 127.0.0.1:8091`

// The same allocator as the coffer binary, so the comparison is fair.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

async fn answer(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    match body["transactions"].as_array() {
        Some(items) => {
            let results: Vec<Value> = items.iter().map(|_| json!({"status": "committed"})).collect();
            (StatusCode::OK, Json(json!({ "results": results })))
        }
        None => (
            StatusCode::CREATED,
            Json(json!({"id": "fixed", "status": "committed", "seq": 1, "timestamp": "2026-01-01T00:00:00.000Z"})),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8091".into());
    let app = Router::new().route("/healthz", get(|| async { "ok" })).fallback(answer);
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
