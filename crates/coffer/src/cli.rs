use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "coffer",
    version,
    about = "coffer: balances kept exactly right under heavy concurrency"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Operator tools for a data directory's journal (offline).
    #[command(subcommand)]
    Journal(JournalCommand),
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Checks every record and snapshot and replays the whole journal,
    /// without writing anything. Exit status 0: sound (a torn tail is
    /// reported; startup would truncate it); 1: corrupt or unreadable.
    Verify {
        /// Data directory (or its `journal` subdirectory).
        directory: PathBuf,
    },
    /// Prints records in human-readable form.
    Dump {
        directory: PathBuf,
        /// First sequence number to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most entries to print.
        #[arg(long, default_value_t = 1_000)]
        limit: u64,
    },
    /// Appends a deterministic stream of transfer batches as fast as the disk
    /// allows, printing `durable N` whenever everything below N is on disk.
    /// Used by the crash tests; stops after `--batches`.
    #[command(hide = true)]
    Load {
        directory: PathBuf,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[arg(long, default_value_t = 1_000_000)]
        batches: u64,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let result = match cli.command {
        Command::Journal(JournalCommand::Verify { directory }) => crate::journal_tools::verify(&directory),
        Command::Journal(JournalCommand::Dump { directory, from, limit }) => {
            crate::journal_tools::dump(&directory, from, limit, &mut std::io::stdout().lock())
        }
        Command::Journal(JournalCommand::Load {
            directory,
            batch_size,
            batches,
        }) => crate::journal_tools::load(&directory, batch_size, batches),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
