//! Startup in one place: check the configuration, recover the journal,
//! start the engine thread, bind, serve, and shut down in order.

use crate::api::router;
use crate::auth::Auth;
use crate::backend::local::Local;
use crate::backend::Backend;
use crate::cluster::{Cluster, ClusterSettings};
use crate::config::ServerConfig;
use crate::flash_sale::{FlashSale, Naming};
use crate::history::History;
use crate::jobs::{FileStore, JobStore, Jobs, PostgresJobStore};
use crate::kafka::KafkaLink;
use crate::ledger::Ledger;
use crate::rate_limit::{redis_client, RateLimiter};
use crate::sequencer::{Sequencer, SequencerSettings};
use crate::state::AppState;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// A server that is recovered, bound and serving.
pub struct RunningServer {
    pub address: SocketAddr,
    pub state: Arc<AppState>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl RunningServer {
    /// Graceful stop: no new connections, in-flight requests finish, the
    /// engine drains, snapshots and closes the journal.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("server task")?
    }
}

pub fn check_config(config: &ServerConfig, auth: &Auth) -> anyhow::Result<()> {
    if !auth.enabled() && !config.listen.ip().is_loopback() {
        anyhow::ensure!(
            config.insecure_no_auth,
            "refusing to serve {} without API keys: set --api-key ROLE:KEY, or --insecure-no-auth to accept anyone",
            config.listen
        );
        tracing::warn!(listen = %config.listen, "serving WITHOUT authentication on a non-loopback address");
    }
    anyhow::ensure!(config.batch_transactions_max >= 1, "batch size must be at least 1");
    // One HTTP batch goes to the engine as one batch: it must fit.
    anyhow::ensure!(
        (1..=coffer_core::limits::BATCH_TRANSACTIONS_MAX).contains(&config.http_batch_max),
        "--http-batch-max must be 1 to {}",
        coffer_core::limits::BATCH_TRANSACTIONS_MAX
    );
    anyhow::ensure!(config.queue_capacity >= 1, "--queue-capacity must be at least 1");
    anyhow::ensure!(
        config.journal_segment_bytes >= 1 << 20,
        "--journal-segment-bytes must be at least 1 MiB"
    );
    anyhow::ensure!(config.snapshots_kept >= 1, "--snapshots-kept must be at least 1");
    anyhow::ensure!(
        config.purchase_rate_per_minute >= 1,
        "--purchase-rate-per-minute must be at least 1"
    );
    anyhow::ensure!(
        config.batch_transactions_max <= coffer_core::limits::BATCH_TRANSACTIONS_MAX,
        "batch size at most {}",
        coffer_core::limits::BATCH_TRANSACTIONS_MAX
    );
    Ok(())
}

/// What applies the writes, and how to stop it once the server has
/// stopped taking requests.
struct Backing {
    ledger: Arc<Ledger>,
    journal_stats: Arc<coffer_journal::JournalStats>,
    kafka: Option<Arc<KafkaLink>>,
    /// Where balance jobs are kept, and this node's name as their runner.
    jobs: (Arc<dyn JobStore>, String),
    /// How products' accounts are named: with their shard key in a cluster.
    naming: Naming,
    stop: Box<dyn FnOnce() + Send>,
}

/// One node on its own disk: recover the journal, start the history and
/// the engine thread, and Kafka if configured.
async fn start_local(config: &ServerConfig) -> anyhow::Result<Backing> {
    let directory = config.journal_directory();
    let (options, limits) = (config.journal_options(), config.engine_limits());
    let (engine, journal, report) =
        tokio::task::spawn_blocking(move || coffer_journal::open(&directory, options, limits))
            .await
            .context("recovery task")?
            .with_context(|| format!("recovering {}", config.journal_directory().display()))?;
    tracing::info!(
        entries = report.entries_replayed,
        millis = report.duration.as_millis() as u64,
        accounts = engine.account_count(),
        "recovered"
    );
    let journal_stats = Arc::clone(journal.stats());
    // The index takes the engine's effects as it applies them.
    let (feed_sender, feed_receiver) = match History::takes_feed(config)? {
        true => {
            let (sender, receiver) = coffer_history::feed(&engine, journal.end_position());
            (Some(sender), Some(receiver))
        }
        false => (None, None),
    };
    // Blocking: it connects to the database (PostgreSQL's client runs its own runtime).
    let history = {
        let (config, journal_stats) = (config.clone(), Arc::clone(&journal_stats));
        tokio::task::spawn_blocking(move || History::start(&config, journal_stats, feed_receiver))
            .await
            .context("history startup task")??
    };
    let settings = SequencerSettings {
        queue_capacity: config.queue_capacity,
        batch_transactions_max: config.batch_transactions_max,
        snapshot_every_entries: config.snapshot_every_entries,
    };
    let sequencer = Sequencer::start(engine, journal, settings, feed_sender);
    let ledger = Ledger::new(Arc::new(Local::new(Arc::clone(&sequencer), history.clone())));
    let kafka = KafkaLink::start_local(config, Arc::clone(&journal_stats), Arc::clone(&ledger)).await?;
    let stopped_kafka = kafka.clone();
    // The engine first (its last records and snapshot), then the history,
    // which projects everything the engine left durable.
    let stop = Box::new(move || {
        sequencer.shut_down();
        if let Some(history) = history {
            history.stop();
        }
        if let Some(kafka) = stopped_kafka {
            kafka.stop();
        }
    });
    Ok(Backing {
        ledger,
        journal_stats,
        kafka,
        jobs: (Arc::new(FileStore::open(config.data_dir.join("jobs"))?), "local".into()),
        naming: Naming::Plain,
        stop,
    })
}

/// One node of a cluster: its shards' log is in Kafka and their state in
/// PostgreSQL, so nothing of the ledger lives on this node's disk.
async fn start_cluster(settings: ClusterSettings) -> anyhow::Result<Backing> {
    let jobs: Arc<dyn JobStore> = {
        let (url, schema) = (settings.database_url.clone(), settings.schema.clone());
        Arc::new(tokio::task::spawn_blocking(move || PostgresJobStore::open(&url, &schema)).await??)
    };
    let runner = settings.node_id.clone();
    let kafka_settings = settings.events.clone();
    let cluster = Cluster::start(settings).await.context("joining the cluster")?;
    let ledger = Ledger::new(Arc::clone(&cluster) as Arc<dyn Backend>);
    let consumes = {
        let cluster = Arc::clone(&cluster);
        Box::new(move || cluster.serves(0))
    };
    let kafka = KafkaLink::start_in_cluster(kafka_settings, Arc::clone(&ledger), consumes).await?;
    let stopped_kafka = Arc::clone(&kafka);
    Ok(Backing {
        ledger,
        journal_stats: Arc::default(),
        kafka: Some(kafka),
        jobs: (jobs, runner),
        naming: Naming::Sharded,
        stop: Box::new(move || {
            cluster.stop();
            stopped_kafka.stop();
        }),
    })
}

pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let auth = Auth::from_config(&config.api_keys)?;
    check_config(&config, &auth)?;
    let backing = match config.cluster_settings()? {
        Some(settings) => start_cluster(settings).await?,
        None => start_local(&config).await?,
    };
    let Backing {
        ledger,
        journal_stats,
        kafka,
        jobs: (job_store, runner),
        naming,
        stop: stop_backing,
    } = backing;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let (purchase_limiter, transaction_limiter) = rate_limiters(&config).await?;
    let (jobs, unfinished_jobs) = Jobs::open(job_store, runner, Arc::clone(&ledger)).context("opening balance jobs")?;
    let state = Arc::new(AppState {
        config,
        auth,
        ledger: Arc::clone(&ledger),
        journal_stats,
        purchase_limiter,
        transaction_limiter,
        flash_sale: FlashSale::new(ledger, naming),
        jobs: Arc::clone(&jobs),
        kafka: kafka.clone(),
        metrics: crate::telemetry::handle(),
    });
    if let Some(kafka) = &kafka {
        kafka.spawn();
    }
    for job in unfinished_jobs {
        jobs.start(job);
    }
    jobs.claim_abandoned();
    let app = router(Arc::clone(&state));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .context("serving")?;
        tokio::task::spawn_blocking(stop_backing)
            .await
            .context("engine shutdown")?;
        Ok(())
    });
    tracing::info!(%address, "coffer is serving");
    Ok(RunningServer {
        address,
        state,
        task,
        stop,
    })
}

/// The per-user limits, shared through Redis when configured.
async fn rate_limiters(config: &ServerConfig) -> anyhow::Result<(RateLimiter, Option<RateLimiter>)> {
    let client = match &config.redis_url {
        Some(url) => Some(redis_client(url, &config.redis_tls()).await.context("--redis-url")?),
        None => None,
    };
    let share = |limiter: RateLimiter| match &client {
        Some(client) => limiter.with_redis(client.clone()),
        None => Ok(limiter),
    };
    let purchases = share(RateLimiter::new("purchases", config.purchase_rate_per_minute))?;
    let transactions = match config.transaction_rate_per_minute {
        0 => None,
        per_minute => Some(share(RateLimiter::new("transactions", per_minute))?),
    };
    if config.redis_url.is_some() {
        tracing::info!("rate limits are shared through Redis");
    }
    Ok((purchases, transactions))
}

/// Serves until `shutdown` resolves (SIGINT/SIGTERM in the binary).
pub async fn serve(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    // One poll before starting installs the signal handlers, so a SIGTERM
    // that arrives as soon as the server announces itself stops it
    // gracefully instead of killing it.
    tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        () = std::future::ready(()) => {}
    }
    let server = start(config).await?;
    shutdown.await;
    tracing::info!("shutting down: draining requests, syncing, snapshotting");
    server.stop().await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
