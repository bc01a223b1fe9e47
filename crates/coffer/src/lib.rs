//! The `coffer` command. `main.rs` only calls [`cli::main`]; everything it
//! does lives here so that tests can drive the same code.

pub mod bench;
pub mod cli;
pub mod config_file;
mod fresh_server;
pub mod journal_tools;
pub mod workload;
