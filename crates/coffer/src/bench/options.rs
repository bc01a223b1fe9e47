//! What `coffer bench` is asked to do: its command-line options and bounds.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// One transfer per request between uniformly chosen accounts.
    Transfers,
    /// Transfers whose accounts follow a Zipf distribution (s = 1.1): a few
    /// hot accounts take most of the traffic.
    TransfersZipf,
    /// One deposit (from @world) per request.
    Deposits,
    /// A hold, then its capture: two requests per operation.
    HoldCapture,
    /// POST /v1/transactions/batch with --batch-size transfers per request.
    Batches,
    /// Flash sale: every request a new buyer purchasing one item of one hot
    /// product (created first with ample stock).
    Purchases,
    /// One bulk job setting --accounts balances (PUT /v1/balances/batch),
    /// timed from the request until the job reports completed.
    BalanceJob,
    /// --count transfer commands produced to Kafka (the server must run
    /// with --kafka-brokers), timed until applied and until their results
    /// and events are published.
    KafkaIngest,
}

#[derive(Debug, Clone, Args)]
pub struct BenchOptions {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Start a server of this binary on a temporary data directory and a
    /// free loopback port, run against it, then stop it and delete the
    /// directory (instead of --url).
    #[arg(long, conflicts_with = "url")]
    pub fresh_server: bool,
    /// A flag for the fresh server, e.g. `--server-option=--history-url=off`
    /// (repeatable, at most 64).
    #[arg(
        long = "server-option",
        value_name = "FLAG",
        allow_hyphen_values = true,
        requires = "fresh_server"
    )]
    pub server_options: Vec<String>,
    #[arg(long, value_enum, default_value_t = Scenario::Transfers)]
    pub scenario: Scenario,
    /// Concurrent connections (each runs requests back to back).
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// How long to run, in seconds (ignored with --count).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many operations instead of after --duration.
    #[arg(long)]
    pub count: Option<u64>,
    /// Target operations per second across all connections (0: as fast as
    /// possible). Latency at a fixed rate is the figure that matters; it
    /// counts from each operation's intended send time, so a stall that
    /// delays the operations behind it shows in their latencies too.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Accounts to spread the load over (opened and funded first).
    #[arg(long, default_value_t = 1_000)]
    pub accounts: u64,
    /// Name accounts `bench:{k}:N` with one of this many shard keys, and
    /// keep each transfer within one key: a cluster's transactions stay
    /// within a shard (0: plain `bench:N` names).
    #[arg(long, default_value_t = 0)]
    pub shard_keys: u64,
    /// With --shard-keys: send each transfer to an account of the next
    /// shard key instead, so that in a cluster most transfers cross shards
    /// (and run as sagas).
    #[arg(long, requires = "shard_keys")]
    pub across_keys: bool,
    /// Transfers per request in the batches scenario.
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: u64,
    /// Transfers, deposits and batches: ask for id, status and sequence
    /// only (`Prefer: return=minimal`), not balances, as a Redis client
    /// gets.
    #[arg(long)]
    pub minimal_answers: bool,
    /// Bearer API key (writer or admin).
    #[arg(long, env = "COFFER_BENCH_API_KEY")]
    pub api_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Kafka brokers of the server under test (kafka-ingest).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// The server's --kafka-topic-prefix (kafka-ingest).
    #[arg(long, default_value = "coffer.")]
    pub kafka_topic_prefix: String,
}

impl BenchOptions {
    /// The id of account number `n`.
    pub fn account_name(&self, n: u64) -> String {
        match self.shard_keys {
            0 => format!("bench:{n}"),
            keys => format!("bench:{{{}}}:{n}", n % keys),
        }
    }

    /// A transfer's destination: `to`, moved to an account of `from`'s
    /// shard key when keys are used (every key has at least two accounts).
    pub fn partner(&self, from: u64, to: u64) -> u64 {
        let keys = self.shard_keys;
        if keys == 0 {
            return to;
        }
        assert!(self.accounts >= 2 * keys, "checked with the options");
        let key = match self.across_keys {
            true => (from + 1) % keys,
            false => from % keys,
        };
        let mut partner = to - to % keys + key;
        if partner >= self.accounts {
            partner -= keys;
        }
        if partner == from {
            partner = if from + keys < self.accounts {
                from + keys
            } else {
                from % keys
            };
        }
        partner
    }
}

pub const CONNECTIONS_MAX: u32 = 4_096;
pub const ACCOUNTS_MAX: u64 = 10_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        options: BenchOptions,
    }

    #[test]
    fn a_partner_is_another_account_of_the_same_shard_key_or_the_next() {
        for across in [false, true] {
            for (accounts, keys) in [(20, 6), (12, 6), (13, 6), (2, 1), (1_000, 7)] {
                let (accounts_text, keys_text) = (accounts.to_string(), keys.to_string());
                let mut arguments = vec!["bench", "--accounts", &accounts_text, "--shard-keys", &keys_text];
                if across {
                    arguments.push("--across-keys");
                }
                let options = Wrapper::try_parse_from(arguments).unwrap().options;
                for from in 0..accounts {
                    for to in 0..accounts {
                        let partner = options.partner(from, to);
                        assert!(
                            partner < accounts && partner != from,
                            "{accounts} {keys}: {from} {to} → {partner}"
                        );
                        let key = if across { (from + 1) % keys } else { from % keys };
                        assert_eq!(partner % keys, key);
                    }
                }
            }
        }
        assert!(
            Wrapper::try_parse_from(["bench", "--across-keys"]).is_err(),
            "it needs --shard-keys"
        );
    }
}
