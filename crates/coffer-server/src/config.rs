//! Every server setting, as flags with `COFFER_*` environment variables.
//! docs/CONFIGURATION.md lists them with their defaults.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Transactions in one HTTP batch unless configured otherwise (the API
/// document states this bound).
pub const HTTP_BATCH_MAX_DEFAULT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityMode {
    /// fdatasync before acknowledging (default).
    Fsync,
    /// UNSAFE: no sync; a crash loses acknowledged writes. Benchmarks only.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaSecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KafkaSaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "COFFER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Data directory: the journal and snapshots live in `DIR/journal`.
    #[arg(long, env = "COFFER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// API keys as ROLE:KEY (roles: admin, writer, reader), comma-separated
    /// in the environment variable. Without keys, only a loopback address
    /// may be used unless --insecure-no-auth is given.
    #[arg(long = "api-key", env = "COFFER_API_KEYS", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// Serve without authentication on a non-loopback address.
    #[arg(long, env = "COFFER_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Journal durability.
    #[arg(long, env = "COFFER_DURABILITY", value_enum, default_value_t = DurabilityMode::Fsync)]
    pub durability: DurabilityMode,
    /// Threads serving HTTP (0: twice the cores). More than the cores: the
    /// engine, journal and history threads take their CPU share per thread,
    /// and a worker they preempt stalls the requests queued on it.
    #[arg(long, env = "COFFER_HTTP_WORKERS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=HTTP_WORKERS_MAX))]
    pub http_workers: u16,
    /// Commands waiting for the engine; beyond it requests get 503.
    #[arg(long, env = "COFFER_QUEUE_CAPACITY", default_value_t = 16_384)]
    pub queue_capacity: usize,
    /// Transactions the engine applies as one batch (one journal record).
    #[arg(long, env = "COFFER_BATCH_TRANSACTIONS_MAX", default_value_t = 8_192)]
    pub batch_transactions_max: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "COFFER_BODY_BYTES_MAX", default_value_t = 4 * 1024 * 1024)]
    pub body_bytes_max: usize,
    /// Transactions in one POST /v1/transactions/batch.
    #[arg(long, env = "COFFER_HTTP_BATCH_MAX", default_value_t = HTTP_BATCH_MAX_DEFAULT)]
    pub http_batch_max: usize,
    /// A snapshot is written after this many journal entries.
    #[arg(long, env = "COFFER_SNAPSHOT_EVERY_ENTRIES", default_value_t = 2_000_000)]
    pub snapshot_every_entries: u64,
    /// Journal segment size in bytes: a segment is closed once it is full.
    #[arg(long, env = "COFFER_JOURNAL_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub journal_segment_bytes: u64,
    /// Snapshots kept on disk; older ones are deleted.
    #[arg(long, env = "COFFER_SNAPSHOTS_KEPT", default_value_t = 2)]
    pub snapshots_kept: u32,
    /// Keep every journal segment, even those the snapshots cover (a full
    /// audit trail on disk); by default they are deleted.
    #[arg(long, env = "COFFER_KEEP_ALL_SEGMENTS")]
    pub keep_all_segments: bool,
    /// How long transaction ids are remembered, in seconds.
    #[arg(long, env = "COFFER_IDEMPOTENCY_WINDOW_SECONDS", default_value_t = 86_400)]
    pub idempotency_window_seconds: u64,
    /// How many transaction ids are remembered at most.
    #[arg(long, env = "COFFER_IDEMPOTENCY_ENTRIES_MAX", default_value_t = 20_000_000)]
    pub idempotency_entries_max: u32,
    /// Accounts the engine may hold.
    #[arg(long, env = "COFFER_ACCOUNTS_MAX", default_value_t = 20_000_000)]
    pub accounts_max: u32,
    /// Open holds the engine may hold.
    #[arg(long, env = "COFFER_HOLDS_MAX", default_value_t = 10_000_000)]
    pub holds_max: u32,
    /// History store: `index` (coffer's own files in the data directory's
    /// `history/`), `index:PATH`, `sqlite` (a file in the data directory),
    /// `sqlite:PATH`, a `postgres://` URL, or `off` (no history, no store
    /// lookups). A
    /// single node's only: a cluster keeps each shard's history in its
    /// coordination database.
    #[arg(long, env = "COFFER_HISTORY_URL", default_value = "index")]
    pub history_url: String,
    /// PostgreSQL schema of the history tables (created when missing).
    #[arg(long, env = "COFFER_HISTORY_SCHEMA", default_value = "coffer")]
    pub history_schema: String,
    /// A SQL copy of the history index for your own tools, following it
    /// with a cursor of its own: `sqlite` (`history.sqlite` in the data
    /// directory), `sqlite:PATH` or a `postgres://` URL (tables in
    /// `--history-schema`). It never slows writes, never answers retries
    /// and holds no journal segment back;
    /// `coffer_history_export_lag_transactions` says how far behind it is.
    /// Needs `--history-url index`; a single node's only.
    #[arg(long, env = "COFFER_HISTORY_EXPORT")]
    pub history_export: Option<String>,
    /// Transactions the history may lag behind the journal before writes
    /// get 503 (past half of it, writes first wait up to 1 s each for the
    /// projector): it must stay well inside the idempotency window, because
    /// ids that left the window are checked against the history.
    #[arg(long, env = "COFFER_HISTORY_LAG_MAX", default_value_t = 1_000_000)]
    pub history_lag_max: u64,
    /// Redis for rate limits shared by every instance (`redis://host:6379`).
    /// Without it each instance limits on its own; if it becomes
    /// unreachable, instances fall back to their own state and log it.
    #[arg(long, env = "COFFER_REDIS_URL")]
    pub redis_url: Option<String>,
    /// PEM file of the CA that signed Redis's certificate (`rediss://`
    /// URLs; default: the system's CAs).
    #[arg(long, env = "COFFER_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate for a Redis that asks for one (with
    /// --redis-key-file).
    #[arg(long, env = "COFFER_REDIS_CERT_FILE")]
    pub redis_cert_file: Option<PathBuf>,
    /// PEM private key of --redis-cert-file.
    #[arg(long, env = "COFFER_REDIS_KEY_FILE")]
    pub redis_key_file: Option<PathBuf>,
    /// Purchases per minute per user (GCRA; bursts of as many); 429 beyond.
    #[arg(long, env = "COFFER_PURCHASE_RATE_PER_MINUTE", default_value_t = 5)]
    pub purchase_rate_per_minute: u32,
    /// Transactions per minute per user, keyed by the `Coffer-User` header
    /// (requests without it are not limited); 0 turns the limit off.
    #[arg(long, env = "COFFER_TRANSACTION_RATE_PER_MINUTE", default_value_t = 0)]
    pub transaction_rate_per_minute: u32,
    /// Kafka brokers (`host:port,…`): commands are consumed from
    /// `{prefix}commands`, results and change events published to
    /// `{prefix}results` and `{prefix}events`, malformed commands sent to
    /// `{prefix}dead-letter`; `mode=async` HTTP goes through Kafka.
    #[arg(long, env = "COFFER_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Prefix of the four topic names.
    #[arg(long, env = "COFFER_KAFKA_TOPIC_PREFIX", default_value = "coffer.")]
    pub kafka_topic_prefix: String,
    /// Consumer group of the commands topic.
    #[arg(long, env = "COFFER_KAFKA_GROUP_ID", default_value = "coffer")]
    pub kafka_group_id: String,
    /// Partitions of the topics coffer creates when missing.
    #[arg(long, env = "COFFER_KAFKA_PARTITIONS", default_value_t = 4)]
    pub kafka_partitions: i32,
    /// Partitions of the commands topic this instance consumes, e.g.
    /// `0,1` (its shard: instances own disjoint partitions and the accounts
    /// their commands touch); all of them by default.
    #[arg(
        long = "kafka-owned-partitions",
        env = "COFFER_KAFKA_OWNED_PARTITIONS",
        value_delimiter = ','
    )]
    pub kafka_owned_partitions: Vec<i32>,
    /// librdkafka options passed through, `key=value` (repeatable;
    /// comma-separated in the environment variable).
    #[arg(long = "kafka-option", env = "COFFER_KAFKA_OPTIONS", value_delimiter = ',')]
    pub kafka_options: Vec<String>,
    /// How to talk to the brokers (default: `ssl` when a certificate file
    /// is given, `sasl-ssl` when a SASL mechanism is, else `plaintext`).
    #[arg(long, env = "COFFER_KAFKA_SECURITY_PROTOCOL", value_enum)]
    pub kafka_security_protocol: Option<KafkaSecurityProtocol>,
    /// PEM file of the CA that signed the brokers' certificates (default:
    /// the system's CAs).
    #[arg(long, env = "COFFER_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<PathBuf>,
    /// PEM client certificate for brokers that ask for one (with
    /// --kafka-key-file).
    #[arg(long, env = "COFFER_KAFKA_CERT_FILE")]
    pub kafka_cert_file: Option<PathBuf>,
    /// PEM private key of --kafka-cert-file.
    #[arg(long, env = "COFFER_KAFKA_KEY_FILE")]
    pub kafka_key_file: Option<PathBuf>,
    /// SASL mechanism (with --kafka-sasl-username and the password).
    #[arg(long, env = "COFFER_KAFKA_SASL_MECHANISM", value_enum)]
    pub kafka_sasl_mechanism: Option<KafkaSaslMechanism>,
    #[arg(long, env = "COFFER_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// The SASL password; prefer the environment variable to the flag,
    /// which other users of the machine can read in the process list.
    #[arg(long, env = "COFFER_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
    /// Log format.
    #[arg(long, env = "COFFER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Cluster mode: the PostgreSQL URL of the cluster's coordination
    /// (leases, snapshots). Needs --kafka-brokers: the shards' log. The
    /// first node creates the cluster; later nodes join it (docs/CLUSTER.md).
    #[arg(long, env = "COFFER_CLUSTER")]
    pub cluster: Option<String>,
    /// This node's name in the cluster (default: its listen address).
    #[arg(long, env = "COFFER_NODE_ID")]
    pub node_id: Option<String>,
    /// Shards of a cluster this node creates (ignored when joining).
    #[arg(long, env = "COFFER_SHARDS", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::cluster::SHARDS_MAX)))]
    pub shards: u32,
    /// PostgreSQL schema of the cluster's tables; each shard's history is
    /// in `{schema}_history_{shard}`.
    #[arg(long, env = "COFFER_CLUSTER_SCHEMA", default_value = "coffer_cluster")]
    pub cluster_schema: String,
    /// How long a shard's owner keeps its lease without renewing it: a dead
    /// owner's shards move after about this long.
    #[arg(long, env = "COFFER_LEASE_TTL_MS", default_value_t = 3_000,
          value_parser = clap::value_parser!(u64).range(500..=60_000))]
    pub lease_ttl_ms: u64,
    /// The URL other nodes and operators reach this node at (default:
    /// `http://` and the listen address).
    #[arg(long, env = "COFFER_ADVERTISED_URL")]
    pub advertised_url: Option<String>,
}

/// Longest topic prefix: the commands topic name goes into derived
/// transaction ids (`kafka:{topic}:{partition}:{offset}`, ≤ 128 bytes).
pub const KAFKA_TOPIC_PREFIX_BYTES_MAX: usize = 64;

/// Upper bound of `--http-workers`.
pub const HTTP_WORKERS_MAX: i64 = 256;

impl ServerConfig {
    /// HTTP worker threads: as configured, or twice the cores.
    pub fn http_worker_count(&self) -> usize {
        match self.http_workers {
            0 => 2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            workers => usize::from(workers),
        }
    }

    /// The Kafka settings, when Kafka is configured.
    pub fn kafka_settings(&self) -> anyhow::Result<Option<coffer_kafka::KafkaSettings>> {
        let Some(brokers) = &self.kafka_brokers else {
            return Ok(None);
        };
        let prefix = &self.kafka_topic_prefix;
        anyhow::ensure!(
            prefix.len() <= KAFKA_TOPIC_PREFIX_BYTES_MAX
                && prefix
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte)),
            "--kafka-topic-prefix: at most {KAFKA_TOPIC_PREFIX_BYTES_MAX} of A-Z a-z 0-9 . _ -"
        );
        anyhow::ensure!(
            (1..=1_000).contains(&self.kafka_partitions),
            "--kafka-partitions must be 1 to 1000"
        );
        let mut options = self.kafka_security_options()?;
        for option in &self.kafka_options {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--kafka-option {option:?}: expected key=value"))?;
            options.push((key.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(Some(coffer_kafka::KafkaSettings {
            brokers: brokers.clone(),
            commands_topic: format!("{prefix}commands"),
            results_topic: format!("{prefix}results"),
            events_topic: format!("{prefix}events"),
            dead_letter_topic: format!("{prefix}dead-letter"),
            group_id: self.kafka_group_id.clone(),
            partitions: self.kafka_partitions,
            owned_partitions: (!self.kafka_owned_partitions.is_empty()).then(|| self.kafka_owned_partitions.clone()),
            options,
        }))
    }

    /// librdkafka's TLS and SASL options from the dedicated flags (the
    /// `--kafka-option` passthrough comes after them and can override).
    fn kafka_security_options(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut options = Vec::new();
        let files = [
            ("--kafka-ca-file", "ssl.ca.location", &self.kafka_ca_file),
            ("--kafka-cert-file", "ssl.certificate.location", &self.kafka_cert_file),
            ("--kafka-key-file", "ssl.key.location", &self.kafka_key_file),
        ];
        for (flag, key, path) in files {
            if let Some(path) = path {
                std::fs::File::open(path).map_err(|error| anyhow::anyhow!("{flag} {}: {error}", path.display()))?;
                options.push((key.to_owned(), path.display().to_string()));
            }
        }
        anyhow::ensure!(
            self.kafka_cert_file.is_some() == self.kafka_key_file.is_some(),
            "--kafka-cert-file and --kafka-key-file go together"
        );
        let sasl = (
            self.kafka_sasl_mechanism,
            &self.kafka_sasl_username,
            &self.kafka_sasl_password,
        );
        let sasl = match sasl {
            (None, None, None) => None,
            (Some(mechanism), Some(username), Some(password)) => Some((mechanism, username, password)),
            _ => anyhow::bail!("--kafka-sasl-mechanism, --kafka-sasl-username and the password go together"),
        };
        let protocol = self
            .kafka_security_protocol
            .unwrap_or(match (sasl.is_some(), options.is_empty()) {
                (true, _) => KafkaSecurityProtocol::SaslSsl,
                (false, false) => KafkaSecurityProtocol::Ssl,
                (false, true) => KafkaSecurityProtocol::Plaintext,
            });
        let uses_sasl = matches!(
            protocol,
            KafkaSecurityProtocol::SaslPlaintext | KafkaSecurityProtocol::SaslSsl
        );
        anyhow::ensure!(
            uses_sasl == sasl.is_some(),
            "--kafka-security-protocol sasl-* and the SASL flags go together"
        );
        let protocol_name = match protocol {
            KafkaSecurityProtocol::Plaintext => "plaintext",
            KafkaSecurityProtocol::Ssl => "ssl",
            KafkaSecurityProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaSecurityProtocol::SaslSsl => "sasl_ssl",
        };
        options.push(("security.protocol".into(), protocol_name.into()));
        if let Some((mechanism, username, password)) = sasl {
            let mechanism = match mechanism {
                KafkaSaslMechanism::Plain => "PLAIN",
                KafkaSaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                KafkaSaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            };
            options.push(("sasl.mechanisms".into(), mechanism.into()));
            options.push(("sasl.username".into(), username.clone()));
            options.push(("sasl.password".into(), password.clone()));
        }
        Ok(options)
    }

    /// TLS to Redis, from the flags.
    pub fn redis_tls(&self) -> crate::rate_limit::RedisTls {
        crate::rate_limit::RedisTls {
            ca_file: self.redis_ca_file.clone(),
            cert_file: self.redis_cert_file.clone(),
            key_file: self.redis_key_file.clone(),
        }
    }

    /// The cluster settings, in cluster mode.
    pub fn cluster_settings(&self) -> anyhow::Result<Option<crate::cluster::ClusterSettings>> {
        let Some(database_url) = &self.cluster else {
            return Ok(None);
        };
        let Some(kafka) = self.kafka_settings()? else {
            anyhow::bail!("--cluster needs --kafka-brokers: the shards' log is a Kafka topic");
        };
        let schema_len_max = 63 - crate::cluster::history::SCHEMA_SUFFIX_LEN_MAX;
        anyhow::ensure!(
            crate::cluster::coordinator::valid_schema(&self.cluster_schema)
                && self.cluster_schema.len() <= schema_len_max,
            "--cluster-schema: 1 to {schema_len_max} of a-z 0-9 _, not starting with a digit (each shard's \
             history schema adds a suffix)"
        );
        if self.history_url != "index" {
            tracing::warn!("--history-url is a single node's: a cluster keeps each shard's history in its database");
        }
        anyhow::ensure!(
            self.history_export.is_none(),
            "--history-export is a single node's: a cluster keeps each shard's history in PostgreSQL already"
        );
        let node_id = self.node_id.clone().unwrap_or_else(|| self.listen.to_string());
        anyhow::ensure!(
            (1..=128).contains(&node_id.len()) && !node_id.chars().any(char::is_control),
            "--node-id: 1 to 128 printable characters"
        );
        let prefix = &self.kafka_topic_prefix;
        Ok(Some(crate::cluster::ClusterSettings {
            database_url: database_url.clone(),
            schema: self.cluster_schema.clone(),
            advertised_url: self
                .advertised_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", self.listen)),
            node_id,
            shards: self.shards,
            log: crate::cluster::log::LogSettings {
                brokers: kafka.brokers.clone(),
                options: kafka.options.clone(),
                log_topic: format!("{prefix}log"),
                replies_topic: format!("{prefix}replies"),
            },
            events: kafka,
            limits: self.engine_limits(),
            lease_ttl: std::time::Duration::from_millis(self.lease_ttl_ms),
            snapshot_every_entries: self.snapshot_every_entries.clamp(1, 100_000),
        }))
    }

    pub fn journal_directory(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    pub fn engine_limits(&self) -> coffer_core::EngineLimits {
        coffer_core::EngineLimits {
            accounts_max: self.accounts_max,
            holds_max: self.holds_max,
            idempotency_window_ms: self.idempotency_window_seconds.saturating_mul(1_000),
            idempotency_entries_max: self.idempotency_entries_max.max(1),
            ..coffer_core::EngineLimits::default()
        }
    }

    pub fn journal_options(&self) -> coffer_journal::JournalOptions {
        coffer_journal::JournalOptions {
            durability: match self.durability {
                DurabilityMode::Fsync => coffer_journal::Durability::Fsync,
                DurabilityMode::None => coffer_journal::Durability::None,
            },
            segment_bytes_max: self.journal_segment_bytes,
            snapshots_kept: self.snapshots_kept,
            retention: if self.keep_all_segments {
                coffer_journal::Retention::KeepAll
            } else {
                coffer_journal::Retention::AfterSnapshot
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ServerConfig;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        config: ServerConfig,
    }

    fn parse(arguments: &[&str]) -> Result<ServerConfig, clap::Error> {
        Wrapper::try_parse_from([&["coffer"], arguments].concat()).map(|wrapper| wrapper.config)
    }

    #[test]
    fn http_workers_default_to_twice_the_cores_and_are_bounded() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(parse(&[]).unwrap().http_worker_count(), 2 * cores);
        assert_eq!(parse(&["--http-workers", "3"]).unwrap().http_worker_count(), 3);
        assert!(parse(&["--http-workers", "257"]).is_err());
    }

    fn kafka_options(arguments: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
        let config = parse(&[&["--kafka-brokers", "b:9092"], arguments].concat()).unwrap();
        Ok(config.kafka_settings()?.unwrap().options)
    }

    fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
        options
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn kafka_tls_and_sasl_flags_become_librdkafka_settings() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let ca_path = ca.path().to_str().unwrap();
        assert_eq!(
            option(&kafka_options(&[]).unwrap(), "security.protocol"),
            Some("plaintext")
        );

        let tls = kafka_options(&["--kafka-ca-file", ca_path]).unwrap();
        assert_eq!(option(&tls, "security.protocol"), Some("ssl"));
        assert_eq!(option(&tls, "ssl.ca.location"), Some(ca_path));

        let sasl = ["--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-username", "u"];
        let with_password = [&sasl[..], &["--kafka-sasl-password", "p"]].concat();
        let sasl_options = kafka_options(&with_password).unwrap();
        assert_eq!(option(&sasl_options, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(option(&sasl_options, "sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(option(&sasl_options, "sasl.password"), Some("p"));

        // The passthrough comes last, so it can override.
        let overridden = kafka_options(&[
            "--kafka-ca-file",
            ca_path,
            "--kafka-option",
            "security.protocol=plaintext",
        ])
        .unwrap();
        let protocols: Vec<&str> = overridden
            .iter()
            .filter(|(key, _)| key == "security.protocol")
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(protocols, ["ssl", "plaintext"]);
    }

    #[test]
    fn inconsistent_kafka_security_flags_are_refused() {
        for arguments in [
            &["--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "u"][..],
            &["--kafka-security-protocol", "sasl-ssl"],
            &["--kafka-cert-file", "/etc/hostname"],
            &["--kafka-ca-file", "/nonexistent/ca.pem"],
        ] {
            assert!(kafka_options(arguments).is_err(), "{arguments:?}");
        }
    }
}
