//! # coffer-server
//!
//! The single-node coffer service: an HTTP API (axum) in front of one
//! engine thread, whose batches the journal makes durable before any answer
//! leaves. `app::start` is the one place where the pieces are put together.

pub mod api;
pub mod app;
pub mod auth;
pub mod backend;
mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod flash_sale;
pub mod history;
pub mod jobs;
pub mod kafka;
pub mod ledger;
pub mod queries;
pub mod rate_limit;
pub mod sequencer;
pub mod state;
pub mod telemetry;

pub use app::{serve, shutdown_signal, start, RunningServer};
pub use config::ServerConfig;
