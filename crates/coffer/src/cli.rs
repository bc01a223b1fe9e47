use clap::{Parser, Subcommand};
use coffer_server::config::LogFormat;
use coffer_server::ServerConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "coffer",
    version,
    about = "coffer: balances kept exactly right under heavy concurrency"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A TOML file of settings (keys are the flag names in snake_case).
    /// Precedence: flags, then COFFER_* variables, then this file.
    #[arg(long, env = "COFFER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, `coffer` serves with these settings.
    #[command(flatten)]
    pub serve: ServerConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server (the default when no subcommand is given).
    Serve(Box<ServerConfig>),
    /// Operator tools for a data directory's journal (offline).
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Operator tools for the history store.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Load generator: drives a running server (--url), or a fresh one it
    /// starts on a temporary directory (--fresh-server), with a scenario and
    /// reports throughput and latency percentiles. Scenarios: transfers
    /// (uniform accounts), transfers-zipf (skewed to hot accounts),
    /// deposits, hold-capture (a hold then its capture), batches
    /// (--batch-size transfers per request), purchases (a flash sale),
    /// balance-job (one bulk job), kafka-ingest (commands through Kafka).
    /// Every answer is checked; any wrong or failed answer makes the exit
    /// status non-zero.
    Bench(crate::bench::BenchOptions),
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

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Re-projects the journal and compares every row of the history store
    /// with it (offline: stop the server first). Needs the journal from its
    /// first record. Exit status 0: equal; 1: different or unreadable.
    Verify {
        /// Data directory.
        data_dir: PathBuf,
        /// The store, as for `serve`: index, index:PATH, sqlite, sqlite:PATH or a postgres:// URL.
        #[arg(long, env = "COFFER_HISTORY_URL", default_value = "index")]
        history_url: String,
        #[arg(long, env = "COFFER_HISTORY_SCHEMA", default_value = "coffer")]
        history_schema: String,
    },
}

pub fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().collect();
    if let Some(path) = crate::config_file::path_from(&arguments) {
        if let Err(error) =
            crate::config_file::apply(std::path::Path::new(&path), &<Cli as clap::CommandFactory>::command())
        {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    }
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Some(Command::Serve(config)) => config.log_format,
        _ => cli.serve.log_format,
    };
    init_logging(log_format);
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(config)) => serve(*config),
        Some(Command::Bench(options)) => crate::bench::run(options),
        Some(Command::Journal(JournalCommand::Verify { directory })) => crate::journal_tools::verify(&directory),
        Some(Command::Journal(JournalCommand::Dump { directory, from, limit })) => {
            crate::journal_tools::dump(&directory, from, limit, &mut std::io::stdout().lock())
        }
        Some(Command::History(HistoryCommand::Verify {
            data_dir,
            history_url,
            history_schema,
        })) => crate::journal_tools::verify_history(&data_dir, &history_url, &history_schema),
        Some(Command::Journal(JournalCommand::Load {
            directory,
            batch_size,
            batches,
        })) => crate::journal_tools::load(&directory, batch_size, batches),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_worker_count())
        .enable_all()
        .build()?;
    runtime.block_on(coffer_server::serve(config, coffer_server::shutdown_signal()))
}
