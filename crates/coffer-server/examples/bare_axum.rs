//! The HTTP ceiling for benchmarks: an axum handler that reads a JSON body
//! and answers a fixed JSON body, with no engine, no journal, no fsync.
//! `cargo run --release -p coffer-server --example bare_axum -- 127.0.0.1:8091`

// The same allocator as the coffer binary, so the comparison is fair.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8091".into());
    let app = Router::new().route(
        "/v1/transfers",
        post(|Json(_body): Json<Value>| async {
            Json(json!({"id": "fixed", "status": "committed", "seq": 1, "timestamp": "2026-01-01T00:00:00.000Z"}))
        }),
    );
    let listener = tokio::net::TcpListener::bind(&address).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
