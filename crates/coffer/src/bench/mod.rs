//! `coffer bench`: drives a running coffer (or any server with the same
//! API), or a fresh one it starts, and reports throughput and latency.
//! Every request has a unique id, and every answer is checked: a wrong
//! answer is an error, not a success.

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod client;
mod kafka;
mod options;

use client::Client;
use coffer_client::Command;
pub use options::{BenchOptions, Scenario, ACCOUNTS_MAX, CONNECTIONS_MAX};

/// Latencies are recorded in microseconds, at three significant digits,
/// up to an hour (longer ones count as an hour): an HDR histogram of a
/// few tens of KiB per connection, however long the run.
const LATENCY_MICROS_MAX: u64 = 3_600_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_max(LATENCY_MICROS_MAX, LATENCY_SIGNIFICANT_DIGITS).expect("valid histogram bounds")
}

/// What the batch scenario checks of an answer: every item committed.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

#[derive(serde::Deserialize)]
struct BatchItem {
    status: ItemStatus,
}

/// An enum rather than a string: reading a thousand answers a request then
/// allocates nothing per item, and the client keeps less of the two cores
/// it shares with the server it measures.
#[derive(serde::Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum ItemStatus {
    Committed,
    #[serde(other)]
    Other,
}

/// A small deterministic generator per connection (no shared state).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf sampling by inverting a precomputed cumulative distribution.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(accounts: u64, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=accounts)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|value| value / total).collect();
        Zipf { cumulative }
    }

    fn sample(&self, random: &mut Random) -> u64 {
        let target = random.unit();
        self.cumulative.partition_point(|value| *value < target) as u64
    }
}

struct Shared {
    options: BenchOptions,
    client: Client,
    zipf: Option<Zipf>,
    run: String,
    started: Instant,
    issued: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn account(&self, random: &mut Random) -> u64 {
        match &self.zipf {
            Some(zipf) => zipf.sample(random),
            None => random.below(self.options.accounts),
        }
    }

    /// Two different account numbers.
    fn pair(&self, random: &mut Random) -> (u64, u64) {
        let from = self.account(random);
        let mut to = self.account(random);
        if to == from {
            to = (from + 1) % self.options.accounts;
        }
        (from, to)
    }

    fn pair_names(&self, random: &mut Random) -> (String, String) {
        let (from, to) = self.pair(random);
        let to = self.options.partner(from, to);
        (self.options.account_name(from), self.options.account_name(to))
    }

    /// Claims the next operation number, or None when the run is over.
    fn claim(&self) -> Option<u64> {
        let number = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.options.count {
            Some(count) if number >= count => None,
            None if self.started.elapsed() >= Duration::from_secs(self.options.duration) => None,
            _ => Some(number),
        }
    }

    /// Waits for the operation's slot when a target rate is set, and
    /// returns when its latency starts. A connection still busy with an
    /// earlier answer when the slot passed counts from the slot: the wait
    /// is the server's doing (no coordinated omission). One that waited
    /// for its slot counts from when its timer fired: the timer's own
    /// lateness (tokio's resolution is a millisecond) is the load
    /// generator's, not the server's.
    async fn pace(&self, number: u64) -> Instant {
        let Some(due) = slot(self.started, number, self.options.rate) else {
            return Instant::now();
        };
        if Instant::now() >= due {
            return due;
        }
        tokio::time::sleep_until(due.into()).await;
        Instant::now()
    }
}

/// When operation `number` is due at `rate` per second from `started`
/// (none when unpaced).
fn slot(started: Instant, number: u64, rate: u64) -> Option<Instant> {
    (rate > 0).then(|| started + Duration::from_secs_f64(number as f64 / rate as f64))
}

/// A batch request of `size` transfers, item `k` with id `{id}-{k}`,
/// written straight into one buffer: ids and account names are plain
/// identifiers, so nothing needs escaping.
fn batch_body(id: &str, size: u64, mut pair: impl FnMut() -> (u64, u64)) -> String {
    let mut body = String::with_capacity(size as usize * 110 + 32);
    let mut digits = itoa::Buffer::new();
    body.push_str(r#"{"transactions":["#);
    for k in 0..size {
        let (from, to) = pair();
        body.push_str(if k == 0 { r#"{"id":""# } else { r#",{"id":""# });
        body.push_str(id);
        body.push('-');
        body.push_str(digits.format(k));
        body.push_str(r#"","ops":[{"type":"transfer","from":"bench:"#);
        body.push_str(digits.format(from));
        body.push_str(r#"","to":"bench:"#);
        body.push_str(digits.format(to));
        body.push_str(r#"","amount":1}]}"#);
    }
    body.push_str("]}");
    body
}

fn committed(status: u16, body: &Value) -> bool {
    status == 201 && body["status"] == "committed"
}

/// A first commit through the client library.
fn first_commit(result: &Result<coffer_client::TransactionResult, coffer_client::Error>) -> bool {
    let committed = matches!(result, Ok(result) if result.status == "committed");
    if !committed {
        show_wrong(&format!("{result:?}"));
    }
    committed
}

/// Prints the first few wrong answers: the count alone does not say why.
fn show_wrong(answer: &str) {
    const SHOWN_MAX: u64 = 5;
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < SHOWN_MAX {
        eprintln!("a wrong answer: {answer}");
    }
}

/// One operation; Ok(true) when every answer was the expected one.
async fn operation(shared: &Shared, random: &mut Random, number: u64) -> anyhow::Result<bool> {
    let client = &shared.client;
    let minimal = shared.options.minimal_answers;
    let id = format!("{}-{number}", shared.run);
    match shared.options.scenario {
        Scenario::Transfers | Scenario::TransfersZipf => {
            let (from, to) = shared.pair_names(random);
            Ok(first_commit(&client.api().transfer_as(&id, &from, &to, 1).await))
        }
        Scenario::Deposits => {
            let account = shared.options.account_name(shared.account(random));
            Ok(first_commit(&client.api().deposit_as(&id, &account, 1).await))
        }
        Scenario::HoldCapture => {
            let (from, to) = shared.pair_names(random);
            let hold =
                json!({"id": format!("{id}-h"), "hold": id, "account": from, "amount": 1, "to": to, "ttl_ms": 600_000});
            let (status, body) = client.post("/v1/holds", &hold).await?;
            if !committed(status, &body) {
                return Ok(false);
            }
            let (status, body) = client
                .post(&format!("/v1/holds/{id}/capture"), &json!({"id": format!("{id}-c")}))
                .await?;
            Ok(committed(status, &body) && body["hold"]["status"] == "captured")
        }
        Scenario::Purchases => {
            let body = json!({"user": format!("u{number}"), "order_id": id});
            let (status, body) = client
                .post(&format!("/v1/products/{}/purchase", shared.run), &body)
                .await?;
            Ok(status == 201 && body["status"] == "completed")
        }
        Scenario::BalanceJob | Scenario::KafkaIngest => unreachable!("run by balance_job and bench_kafka"),
        Scenario::Batches => {
            let body = batch_body(&id, shared.options.batch_size, || shared.pair(random));
            let (status, answer) = client
                .post_text::<BatchAnswer>("/v1/transactions/batch", body, minimal)
                .await?;
            Ok(status == 200
                && answer.is_some_and(|answer| {
                    answer.results.len() as u64 == shared.options.batch_size
                        && answer.results.iter().all(|item| item.status == ItemStatus::Committed)
                }))
        }
    }
}

async fn connection(shared: Arc<Shared>, index: u32) -> Histogram<u64> {
    let mut random = Random(u64::from(index) * 0x9E37_79B9 + 7);
    let mut latencies = latency_histogram();
    while let Some(number) = shared.claim() {
        let intended = shared.pace(number).await;
        let correct = matches!(operation(&shared, &mut random, number).await, Ok(true));
        latencies.saturating_record(intended.elapsed().as_micros().min(u128::from(u64::MAX)) as u64);
        if !correct {
            shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
    latencies
}

/// Opens and funds the accounts (idempotent: ids are fixed per account).
async fn prepare(client: &Client, options: &BenchOptions) -> anyhow::Result<()> {
    let (accounts, mut start) = (options.accounts, 0);
    while start < accounts {
        let end = (start + 1_000).min(accounts);
        let opening: Vec<Command> = (start..end)
            .map(|n| json!({"id": format!("bench-open-{n}"), "ops": [{"type": "open", "account": options.account_name(n), "unit": "BENCH"}]}))
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()?;
        client.api().batch(opening).await.context("opening accounts")?;
        let funding: Vec<Command> = (start..end)
            .map(|n| json!({"ops": [{"type": "transfer", "from": "@world", "to": options.account_name(n), "amount": 1_000_000_000_000u64}]}))
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()?;
        client.api().batch(funding).await.context("funding accounts")?;
        start = end;
    }
    Ok(())
}

/// Milliseconds at `quantile` (0 with no samples).
fn percentile(latencies: &Histogram<u64>, quantile: f64) -> f64 {
    latencies.value_at_quantile(quantile) as f64 / 1_000.0
}

pub fn run(options: BenchOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=CONNECTIONS_MAX).contains(&options.connections),
        "connections must be 1 to {CONNECTIONS_MAX}"
    );
    anyhow::ensure!(
        (2..=ACCOUNTS_MAX).contains(&options.accounts),
        "accounts must be 2 to {ACCOUNTS_MAX}"
    );
    anyhow::ensure!(
        options.shard_keys <= options.accounts / 2,
        "--shard-keys at most half of --accounts (every key needs two accounts)"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&options.batch_size),
        "batch size must be 1 to 10000"
    );
    anyhow::ensure!(
        options.duration >= 1 || options.count.is_some(),
        "duration must be at least 1 second"
    );
    anyhow::ensure!(
        options.server_options.len() <= crate::fresh_server::SERVER_OPTIONS_MAX,
        "at most {} --server-option flags",
        crate::fresh_server::SERVER_OPTIONS_MAX
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run_async(options))
}

async fn run_async(mut options: BenchOptions) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections as usize)
        .timeout(Duration::from_secs(60))
        .build()?;
    if !options.fresh_server {
        return drive(options, http).await;
    }
    // Dropping the server stops it and deletes its directory, so Ctrl-C
    // ends the run here instead of killing the process first.
    let server = crate::fresh_server::FreshServer::start(&options.server_options, &http).await?;
    options.url.clone_from(&server.url);
    let outcome = tokio::select! {
        outcome = drive(options, http) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop(server);
    outcome
}

/// Runs the scenario against `options.url`.
async fn drive(options: BenchOptions, http: reqwest::Client) -> anyhow::Result<()> {
    let client = Client::new(http, &options.url, options.api_key.clone(), options.minimal_answers)?;
    let health = client.get("/healthz").send().await;
    health
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("the server at {} is not reachable or not healthy", client.base()))?;
    if options.scenario == Scenario::BalanceJob {
        return balance_job(&client, &options).await;
    }
    prepare(&client, &options).await?;
    if options.scenario == Scenario::KafkaIngest {
        return kafka::run(&client, &options).await;
    }
    let zipf = (options.scenario == Scenario::TransfersZipf).then(|| Zipf::new(options.accounts, 1.1));
    let run = format!(
        "bench{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    if options.scenario == Scenario::Purchases {
        let product = json!({"id": run, "stock": 1_000_000_000_000_000u64});
        let (status, body) = client.post("/v1/products", &product).await?;
        anyhow::ensure!(status == 201, "creating the product failed: {status} {body}");
    }
    let shared = Arc::new(Shared {
        options: options.clone(),
        client,
        zipf,
        run,
        started: Instant::now(),
        issued: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let progress = tokio::spawn(progress(Arc::clone(&shared)));
    let tasks: Vec<_> = (0..options.connections)
        .map(|index| tokio::spawn(connection(Arc::clone(&shared), index)))
        .collect();
    let mut latencies = latency_histogram();
    for task in tasks {
        latencies.add(task.await?).expect("histograms of the same bounds");
    }
    let elapsed = shared.started.elapsed();
    progress.abort();
    report(&options, &shared, &latencies, elapsed);
    let errors = shared.errors.load(Ordering::Relaxed);
    anyhow::ensure!(errors == 0, "{errors} operations got a wrong or failed answer");
    Ok(())
}

/// Sets `--accounts` balances in one job and times it to completion.
async fn balance_job(client: &Client, options: &BenchOptions) -> anyhow::Result<()> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let balances: serde_json::Map<String, Value> = (0..options.accounts)
        .map(|n| (format!("job{run:x}-{n}"), json!(n)))
        .collect();
    let job = format!("bench-{run:x}");
    let body = json!({"id": job, "unit": "BENCH", "balances": balances, "create_missing": true});
    let started = Instant::now();
    let response = client.put("/v1/balances/batch").json(&body).send().await?;
    anyhow::ensure!(
        response.status() == 202,
        "job refused: {} {}",
        response.status(),
        response.text().await?
    );
    let accepted = started.elapsed();
    let job = loop {
        let request = client.get(&format!("/v1/jobs/{job}"));
        let state: Value = request.send().await?.json().await?;
        if state["status"] == "completed" {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed();
    let report = json!({
        "scenario": "balance-job",
        "items": options.accounts,
        "seconds": elapsed.as_secs_f64(),
        "accepted_after_seconds": accepted.as_secs_f64(),
        "balances_per_second": options.accounts as f64 / elapsed.as_secs_f64(),
        "totals": job["totals"],
    });
    if options.json {
        println!("{report}");
    } else {
        println!("scenario      balance-job");
        println!(
            "items         {} set in {:.3} s ({:.0} balances/s); accepted (202) after {:.3} s",
            options.accounts,
            elapsed.as_secs_f64(),
            options.accounts as f64 / elapsed.as_secs_f64(),
            accepted.as_secs_f64()
        );
        println!("totals        {}", job["totals"]);
    }
    anyhow::ensure!(job["totals"]["failed"] == 0, "items failed: {}", job["totals"]);
    Ok(())
}

async fn progress(shared: Arc<Shared>) {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let completed = shared.completed.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0}s] {:>9} ops/s  {:>10} done  {} errors",
            shared.started.elapsed().as_secs_f64(),
            completed - last,
            completed,
            shared.errors.load(Ordering::Relaxed)
        );
        last = completed;
    }
}

fn report(options: &BenchOptions, shared: &Shared, latencies: &Histogram<u64>, elapsed: Duration) {
    let completed = shared.completed.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let operations_per_second = completed as f64 / elapsed.as_secs_f64();
    let transfers_per_operation = if options.scenario == Scenario::Batches {
        options.batch_size
    } else {
        1
    };
    let report = json!({
        "scenario": format!("{:?}", options.scenario).to_lowercase(),
        "connections": options.connections,
        "accounts": options.accounts,
        "rate_target": options.rate,
        "seconds": elapsed.as_secs_f64(),
        "operations": completed,
        "errors": errors,
        "operations_per_second": operations_per_second,
        // Only operations answered as expected count as transfers: a fast
        // error (503 under back-pressure) must not read as throughput.
        "transfers_per_second": completed.saturating_sub(errors) as f64 * transfers_per_operation as f64
            / elapsed.as_secs_f64(),
        // From each operation's intended send time at a fixed rate.
        "latency_from": if options.rate > 0 { "intended send time" } else { "request start" },
        "latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99),
            "p999": percentile(latencies, 0.999),
            "max": latencies.max() as f64 / 1_000.0,
        },
    });
    if options.json {
        println!("{report}");
        return;
    }
    let latency = &report["latency_ms"];
    println!("scenario      {}", report["scenario"].as_str().unwrap_or_default());
    println!(
        "connections   {}   accounts {}   rate target {}",
        options.connections, options.accounts, options.rate
    );
    println!(
        "operations    {completed} in {:.1} s, {errors} errors",
        elapsed.as_secs_f64()
    );
    println!(
        "throughput    {operations_per_second:.0} ops/s ({:.0} transfers/s)",
        report["transfers_per_second"].as_f64().unwrap_or(0.0)
    );
    println!(
        "latency ms    p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (from the {})",
        latency["p50"].as_f64().unwrap_or(0.0),
        latency["p90"].as_f64().unwrap_or(0.0),
        latency["p99"].as_f64().unwrap_or(0.0),
        latency["p999"].as_f64().unwrap_or(0.0),
        latency["max"].as_f64().unwrap_or(0.0),
        report["latency_from"].as_str().unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_is_the_json_it_means() {
        let mut pairs = [(3, 7), (12, 0)].into_iter();
        let body = batch_body("run-5", 2, || pairs.next().unwrap());
        let expected = serde_json::json!({"transactions": [
            {"id": "run-5-0", "ops": [{"type": "transfer", "from": "bench:3", "to": "bench:7", "amount": 1}]},
            {"id": "run-5-1", "ops": [{"type": "transfer", "from": "bench:12", "to": "bench:0", "amount": 1}]},
        ]});
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), expected);
    }

    /// At a fixed rate the slots are fixed in advance: a stall delays
    /// every slot behind it, and a connection busy past a slot counts the
    /// operation's latency from the slot (`Shared::pace`).
    #[test]
    fn latency_counts_from_the_slot_an_operation_was_due_in() {
        let started = Instant::now();
        assert_eq!(
            slot(started, 1_500, 1_000),
            Some(started + Duration::from_millis(1_500))
        );
        assert_eq!(slot(started, 0, 1_000), Some(started));
        assert_eq!(slot(started, 7, 0), None);
    }

    /// A latency beyond the histogram's range counts as its maximum,
    /// never vanishes.
    #[test]
    fn an_overlong_latency_is_kept_at_the_bound() {
        let mut latencies = latency_histogram();
        latencies.saturating_record(1_000);
        latencies.saturating_record(LATENCY_MICROS_MAX * 2);
        assert_eq!(latencies.len(), 2);
        assert_eq!(latencies.max(), latencies.highest_equivalent(LATENCY_MICROS_MAX));
        assert!((percentile(&latencies, 0.5) - 1.0).abs() < 0.01);
    }

    #[test]
    fn only_committed_batch_items_count_as_correct() {
        let answer: BatchAnswer = serde_json::from_str(
            r#"{"results": [{"id": "a", "status": "committed", "seq": 1}, {"id": "b", "status": "rejected", "code": "insufficient_funds"}]}"#,
        )
        .unwrap();
        let statuses: Vec<bool> = answer
            .results
            .iter()
            .map(|item| item.status == ItemStatus::Committed)
            .collect();
        assert_eq!(statuses, [true, false]);
    }
}
