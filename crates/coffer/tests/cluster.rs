//! The cluster under faults, Jepsen-style: three real `coffer` nodes with
//! six shards on their own tansu broker and the test PostgreSQL run a bank
//! workload (transfers, half of them between shards, which run as sagas;
//! reads on every node) while a fault
//! injector kills a random node with SIGKILL every few seconds and restarts
//! it, and once pauses a node (SIGSTOP) past its lease. A checker records
//! every operation and its acknowledgement, then verifies:
//!
//! - every acknowledged transfer is present exactly once, with the outcome
//!   it was acknowledged with; every unacknowledged one is absent or once;
//! - balances equal the funding plus exactly the committed transfers; every
//!   shard's accounts, with its transit accounts, sum to what was deposited
//!   into that shard; every transit pair nets to zero; nothing is left
//!   frozen (no saga left a hold open);
//! - no balance is below its floor (0);
//! - an account's version never goes backwards between two reads that did
//!   not overlap in time, whichever nodes served them;
//! - each account's history (written by the shards' owners to PostgreSQL,
//!   through every failover) holds its opening, its funding and each of its
//!   committed transfers exactly once, nothing else, and ends at its
//!   balance.
//!
//! A second test restarts the in-memory broker empty: the shards must
//! refuse writes rather than start a new history.

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Seen, Server, Transfer};

const NODES: usize = 3;
const SHARDS: u32 = 6;
/// Shard keys: each group's accounts share a shard.
const GROUPS: u64 = 12;
const ACCOUNTS_PER_GROUP: u64 = 4;
const FUNDING: i64 = 1_000;
const WRITERS: u64 = 6;
const READERS: u64 = 2;
const LEASE_TTL_MS: u64 = 2_000;

fn workload_seconds() -> u64 {
    std::env::var("COFFER_CLUSTER_TEST_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(45)
}

fn account(group: u64, index: u64) -> String {
    format!("bank:{{g{group}}}:a{index}")
}

/// A cluster of `NODES` processes on one broker and one schema.
struct Cluster {
    nodes: Vec<Option<Server>>,
    ports: Vec<u16>,
    data: tempfile::TempDir,
    flags: Vec<String>,
    /// The database and the cluster's schema, dropped with the cluster.
    database: String,
    name: String,
}

impl Drop for Cluster {
    /// Stops the nodes, then drops the cluster's schemas (its own and each
    /// shard's history), so that test runs leave nothing behind.
    fn drop(&mut self) {
        for node in 0..NODES {
            self.kill(node);
        }
        let (database, name) = (self.database.clone(), self.name.clone());
        // The synchronous client runs a runtime of its own: not on a test's.
        let dropped = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&database, postgres::NoTls)?;
            let mut statement = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE;");
            for shard in 0..SHARDS {
                statement.push_str(&format!("DROP SCHEMA IF EXISTS \"{name}_history_{shard}\" CASCADE;"));
            }
            client.batch_execute(&statement)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the schemas of cluster {}: {dropped:?}", self.name);
        }
    }
}

impl Cluster {
    fn start(database: &str, broker_port: u16, name: &str, extra_flags: &[&str]) -> Cluster {
        let mut flags: Vec<String> = vec![
            "--cluster".into(),
            database.into(),
            "--cluster-schema".into(),
            name.into(),
            "--kafka-brokers".into(),
            format!("127.0.0.1:{broker_port}"),
            "--kafka-topic-prefix".into(),
            format!("{name}."),
            "--shards".into(),
            SHARDS.to_string(),
            "--lease-ttl-ms".into(),
            LEASE_TTL_MS.to_string(),
        ];
        flags.extend(extra_flags.iter().map(|flag| flag.to_string()));
        let mut cluster = Cluster {
            nodes: (0..NODES).map(|_| None).collect(),
            ports: (0..NODES).map(|_| support::free_port()).collect(),
            data: tempfile::tempdir().unwrap(),
            flags,
            database: database.to_owned(),
            name: name.to_owned(),
        };
        for node in 0..NODES {
            cluster.restart(node);
        }
        cluster
    }

    fn base(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[node])
    }

    fn restart(&mut self, node: usize) {
        let mut flags = self.flags.clone();
        flags.extend(["--node-id".into(), format!("n{node}")]);
        let listen = format!("127.0.0.1:{}", self.ports[node]);
        self.nodes[node] = Some(Server::start_on(
            &listen,
            &self.data.path().join(format!("n{node}")),
            &flags,
        ));
    }

    fn kill(&mut self, node: usize) {
        if let Some(mut server) = self.nodes[node].take() {
            server.kill();
        }
    }

    fn signal(&self, node: usize, name: &str) {
        self.nodes[node].as_ref().expect("running").signal(name);
    }

    async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(90);
        for node in 0..NODES {
            loop {
                let ready = client
                    .get(format!("{}/readyz", self.base(node)))
                    .send()
                    .await
                    .is_ok_and(|response| response.status() == 200);
                if ready {
                    break;
                }
                assert!(Instant::now() < deadline, "node {node} not ready within 90 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Retries a request until it gets an answer that is not a 503, the way a
/// client of the cluster does (the ids make retries safe).
async fn settled(request: impl Fn() -> reqwest::RequestBuilder) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = request().send().await {
            let status = response.status().as_u16();
            if status != 503 {
                return (status, response.json().await.unwrap_or(Value::Null));
            }
        }
        assert!(Instant::now() < deadline, "no answer but 503 within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Read {
    account: String,
    version: u64,
    started: Instant,
    ended: Instant,
}

#[derive(Default)]
struct History {
    transfers: Mutex<HashMap<String, Transfer>>,
    reads: Mutex<Vec<Read>>,
}

fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

async fn write_load(client: reqwest::Client, bases: Vec<String>, number: u64, history: Arc<History>, until: Instant) {
    let mut state = number * 7_919 + 1;
    let mut step = 0;
    while Instant::now() < until {
        step += 1;
        let group = next(&mut state) % GROUPS;
        let from_index = next(&mut state) % ACCOUNTS_PER_GROUP;
        let to_index = (from_index + 1 + next(&mut state) % (ACCOUNTS_PER_GROUP - 1)) % ACCOUNTS_PER_GROUP;
        // Every other transfer goes to a group in another shard: a saga.
        let to_group = match step % 2 {
            0 => group,
            _ => (1..GROUPS)
                .map(|offset| (group + offset + next(&mut state) % GROUPS) % GROUPS)
                .find(|other| shard_of(&account(*other, 0)) != shard_of(&account(group, 0)))
                .expect("groups in other shards"),
        };
        let (from, to) = (account(group, from_index), account(to_group, to_index));
        let amount = (next(&mut state) % 300) as i64 + 1;
        let id = format!("w{number}-{step}");
        history.transfers.lock().unwrap().insert(
            id.clone(),
            Transfer {
                from: from.clone(),
                to: to.clone(),
                amount,
                seen: Seen::Unknown,
            },
        );
        let base = &bases[(next(&mut state) % bases.len() as u64) as usize];
        let body = json!({"id": id, "from": from, "to": to, "amount": amount});
        let Ok(response) = client.post(format!("{base}/v1/transfers")).json(&body).send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let seen = match response.status().as_u16() {
            201 => Seen::Committed,
            422 => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!(body["error"]["code"], "insufficient_funds", "{id}: {body}");
                Seen::Rejected
            }
            503 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Seen::Unknown
            }
            other => panic!("{id}: unexpected status {other}"),
        };
        history.transfers.lock().unwrap().get_mut(&id).unwrap().seen = seen;
    }
}

async fn read_load(client: reqwest::Client, bases: Vec<String>, number: u64, history: Arc<History>, until: Instant) {
    let mut state = number * 104_729 + 5;
    while Instant::now() < until {
        let name = account(next(&mut state) % GROUPS, next(&mut state) % ACCOUNTS_PER_GROUP);
        let base = &bases[(next(&mut state) % bases.len() as u64) as usize];
        let started = Instant::now();
        let Ok(response) = client.get(format!("{base}/v1/accounts/{name}")).send().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if response.status() != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let body: Value = response.json().await.unwrap();
        let ended = Instant::now();
        assert!(
            body["available"].as_i64().unwrap() >= 0,
            "{name} below its floor: {body}"
        );
        history.reads.lock().unwrap().push(Read {
            account: name,
            version: body["version"].as_u64().unwrap(),
            started,
            ended,
        });
    }
}

/// Kills a random node every few seconds and restarts it; once, pauses one
/// past its lease. Returns (kills, pauses).
async fn inject_faults(cluster: Arc<tokio::sync::Mutex<Cluster>>, until: Instant) -> (u32, u32) {
    let (mut kills, mut pauses) = (0, 0);
    let mut state = 424_242;
    let pause_at = Instant::now() + (until - Instant::now()) / 2;
    while Instant::now() + Duration::from_secs(8) < until {
        tokio::time::sleep(Duration::from_millis(2_500 + next(&mut state) % 2_000)).await;
        let node = (next(&mut state) % NODES as u64) as usize;
        if pauses == 0 && Instant::now() >= pause_at {
            cluster.lock().await.signal(node, "STOP");
            tokio::time::sleep(Duration::from_millis(LEASE_TTL_MS * 2 + 1_000)).await;
            cluster.lock().await.signal(node, "CONT");
            pauses += 1;
            continue;
        }
        cluster.lock().await.kill(node);
        kills += 1;
        tokio::time::sleep(Duration::from_millis(500 + next(&mut state) % 1_500)).await;
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || cluster.blocking_lock().restart(node))
            .await
            .unwrap();
    }
    (kills, pauses)
}

fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One cluster test at a time: each runs a broker, three nodes and a load
/// on the machine's two cores, and a starved node loses its leases.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running cluster on a broker of its own, all nodes ready.
struct Running {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    broker: support::Broker,
    broker_port: u16,
    client: reqwest::Client,
    cluster: Cluster,
    /// The cluster's schema and topic prefix.
    name: String,
}

async fn running(what: &str) -> Option<Running> {
    running_with(what, &[]).await
}

async fn running_with(what: &str, extra_flags: &[&str]) -> Option<Running> {
    let (database, name) = environment(what)?;
    let turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let broker_port = support::free_port();
    let broker = support::start_broker(broker_port, broker_port);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let cluster = Cluster::start(&database, broker_port, &name, extra_flags);
    cluster.wait_ready(&client).await;
    Some(Running {
        _turn: turn,
        broker,
        broker_port,
        client,
        cluster,
        name,
    })
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The test's own broker (it restarts it) and a schema of its own.
fn environment(what: &str) -> Option<(String, String)> {
    let database = std::env::var("COFFER_TEST_POSTGRES_URL").ok();
    let broker = std::env::var("COFFER_TEST_KAFKA_BROKERS").is_ok() && support::which_tansu().is_some();
    match (database, broker) {
        (Some(database), true) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            Some((database, format!("cluster_{}_{nanos}", std::process::id())))
        }
        _ => {
            support::skipped(&format!(
                "{what} (set COFFER_TEST_POSTGRES_URL and COFFER_TEST_KAFKA_BROKERS, install tansu)"
            ));
            None
        }
    }
}

async fn open_and_fund(client: &reqwest::Client, base: &str, groups: std::ops::Range<u64>) {
    for group in groups {
        for index in 0..ACCOUNTS_PER_GROUP {
            let id = account(group, index);
            let (status, body) = settled(|| {
                client
                    .post(format!("{base}/v1/accounts"))
                    .json(&json!({"id": id, "unit": "USD/2"}))
            })
            .await;
            assert!(status == 201 || status == 200 || status == 409, "{id}: {status} {body}");
            let deposit = json!({"id": format!("fund-g{group}-a{index}"), "account": id, "amount": FUNDING});
            let (status, body) = settled(|| client.post(format!("{base}/v1/deposits")).json(&deposit)).await;
            assert!(status == 201 || status == 200, "{id}: {status} {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bank_keeps_every_acknowledged_transfer_through_kills_and_pauses() {
    let Some(Running {
        _turn,
        mut broker,
        broker_port,
        client,
        cluster,
        name: cluster_name,
    }) = running("cluster fault test").await
    else {
        return;
    };
    let bases: Vec<String> = (0..NODES).map(|node| cluster.base(node)).collect();
    let view = get_json(&client, format!("{}/v1/cluster?account=bank:%7Bg0%7D:a0", bases[2])).await;
    assert_eq!(view["shard_count"], SHARDS, "{view}");
    assert_eq!(view["nodes"].as_array().unwrap().len(), NODES, "{view}");
    assert!(
        view["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|shard| shard["owner"].is_string()),
        "{view}"
    );
    assert_eq!(view["account"]["shard"], shard_of(&account(0, 0)), "{view}");
    open_and_fund(&client, &bases[0], 0..GROUPS).await;

    // Only transfers run across shards: a hold whose accounts span shards
    // is refused, and changes nothing.
    let (from, to) = (0..GROUPS)
        .flat_map(|left| (0..GROUPS).map(move |right| (left, right)))
        .map(|(left, right)| (account(left, 0), account(right, 0)))
        .find(|(from, to)| shard_of(from) != shard_of(to))
        .expect("two groups in different shards");
    let hold = json!({"id": "across", "ops": [{"type": "hold", "hold": format!("h{from}"), "account": from,
        "amount": 1, "to": to}]});
    let (status, body) = settled(|| client.post(format!("{}/v1/transactions", bases[1])).json(&hold)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("cross_shard")),
        "{body}"
    );

    let until = Instant::now() + Duration::from_secs(workload_seconds());
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let (history, (kills, pauses)) =
        bank_load(&client, &bases, until, inject_faults(Arc::clone(&cluster), until)).await;
    let cluster = Arc::into_inner(cluster).unwrap().into_inner();
    cluster.wait_ready(&client).await;
    let checked = check_bank(&client, &bases, &history, broker_port, &cluster_name).await;
    report(&format!(
        "cluster fault test: {} s of load, {kills} kills (SIGKILL and restart), {pauses} pause (SIGSTOP past the \
         lease); {checked}",
        workload_seconds()
    ));
    assert!(kills >= 3 && pauses == 1, "the faults happened");
    drop(cluster);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// The bank workload: writers and readers on random nodes until `until`,
/// while `faults` runs. What they saw, and what `faults` returned.
async fn bank_load<T>(
    client: &reqwest::Client,
    bases: &[String],
    until: Instant,
    faults: impl std::future::Future<Output = T>,
) -> (Arc<History>, T) {
    let history = Arc::new(History::default());
    let mut tasks = Vec::new();
    for number in 0..WRITERS {
        tasks.push(tokio::spawn(write_load(
            client.clone(),
            bases.to_vec(),
            number,
            Arc::clone(&history),
            until,
        )));
    }
    for number in 0..READERS {
        tasks.push(tokio::spawn(read_load(
            client.clone(),
            bases.to_vec(),
            number,
            Arc::clone(&history),
            until,
        )));
    }
    let faulted = faults.await;
    for task in tasks {
        task.await.unwrap();
    }
    (history, faulted)
}

/// Every check of the bank after its load (the module's list), on a
/// cluster whose nodes are all ready: a report of what was checked.
async fn check_bank(
    client: &reqwest::Client,
    bases: &[String],
    history: &History,
    broker_port: u16,
    cluster_name: &str,
) -> String {
    // Every transfer's final outcome, asked of a random node.
    let mut expected: HashMap<String, i64> = (0..GROUPS)
        .flat_map(|group| (0..ACCOUNTS_PER_GROUP).map(move |index| (account(group, index), FUNDING)))
        .collect();
    let transfers = std::mem::take(&mut *history.transfers.lock().unwrap());
    let outcomes = final_outcomes(client, bases, transfers.keys().cloned().collect()).await;
    let (mut acknowledged, mut unknown, mut committed) = (0, 0, 0);
    let mut committed_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, transfer) in &transfers {
        let found = outcomes[id];
        match transfer.seen {
            Seen::Unknown => unknown += 1,
            seen => {
                acknowledged += 1;
                assert_eq!(found, seen, "{id}: an acknowledged outcome is kept as acknowledged");
            }
        }
        if found == Seen::Committed {
            committed += 1;
            committed_of.entry(&transfer.from).or_default().push(id);
            committed_of.entry(&transfer.to).or_default().push(id);
            *expected.get_mut(&transfer.from).unwrap() -= transfer.amount;
            *expected.get_mut(&transfer.to).unwrap() += transfer.amount;
        }
    }
    // A saga's steps carry ids made from a digest of its transaction id.
    let saga_of: HashMap<String, &str> = transfers.keys().map(|id| (saga_prefix(id), id.as_str())).collect();
    let amount_of = |id: &str, name: &str| {
        let transfer = &transfers[id];
        match transfer.from == name {
            true => -transfer.amount,
            false => transfer.amount,
        }
    };
    // Balances: each committed transfer applied exactly once; per shard,
    // the accounts and the transit accounts hold exactly what was
    // deposited into the shard.
    let mut shard_totals: HashMap<u32, (i64, i64)> = HashMap::new();
    let mut history_entries = 0;
    for (number, (name, balance)) in expected.iter().enumerate() {
        let base = &bases[number % NODES];
        let (status, body) = settled(|| client.get(format!("{base}/v1/accounts/{name}"))).await;
        assert_eq!(status, 200, "{name}: {body}");
        let available = body["available"].as_i64().unwrap();
        assert_eq!(
            available, *balance,
            "{name}: exactly the committed transfers, each once"
        );
        assert!(available >= 0, "{name} below its floor");
        assert_eq!(body["frozen"].as_i64(), Some(0), "{name}: no hold left open: {body}");
        let in_history = account_history(client, base, name).await;
        history_entries += in_history.len();
        let newest = in_history.first().map_or(0, |entry| entry.2);
        assert_eq!(newest, available, "{name}: the history ends at the balance");
        let changed: i64 = in_history.iter().map(|entry| entry.1).sum();
        assert_eq!(
            changed, available,
            "{name}: the history's changes add up to the balance"
        );
        // The opening, under a generated id, changed nothing.
        let openings: Vec<_> = in_history.iter().filter(|entry| entry.0.starts_with("gen-")).collect();
        assert!(
            openings.len() == 1 && openings[0].1 == 0,
            "{name}: one opening in its history: {openings:?}"
        );
        let mut entry_ids: Vec<&str> = in_history.iter().map(|entry| entry.0.as_str()).collect();
        entry_ids.sort();
        let before = entry_ids.len();
        entry_ids.dedup();
        assert_eq!(
            entry_ids.len(),
            before,
            "{name}: every transaction or step once in its history"
        );
        // Entries by the transfer they belong to: a saga's steps together.
        let mut net: HashMap<&str, i64> = HashMap::new();
        for (id, change, _) in in_history.iter().filter(|entry| !entry.0.starts_with("gen-")) {
            let transfer = match id.starts_with("@saga:") {
                true => *saga_of
                    .get(&id[..SAGA_PREFIX_BYTES])
                    .unwrap_or_else(|| panic!("{name}: a step {id} of no transfer")),
                false => id.as_str(),
            };
            *net.entry(transfer).or_default() += change;
        }
        let (group, index) = name.trim_start_matches("bank:{g").split_once("}:a").unwrap();
        let funding = format!("fund-g{group}-a{index}");
        assert_eq!(net.remove(funding.as_str()), Some(FUNDING), "{name}: its funding once");
        let mut ids: Vec<&str> = net
            .iter()
            .filter(|(id, change)| {
                // A saga that ended rejected may have held and released.
                **change != 0 || outcomes[**id] == Seen::Committed
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        let mut expected_ids: Vec<&str> = committed_of.get(name.as_str()).into_iter().flatten().copied().collect();
        expected_ids.sort();
        assert_eq!(ids, expected_ids, "{name}: each committed transfer once in its history");
        for id in ids {
            assert_eq!(net[id], amount_of(id, name), "{name}: {id} moved its amount once");
        }
        let totals = shard_totals.entry(shard_of(name)).or_default();
        totals.0 += available;
        totals.1 += FUNDING;
    }
    let transit = transit_accounts(client, &bases[0]).await;
    let mut pairs: HashMap<(u32, u32), i64> = HashMap::new();
    for (id, available, frozen) in &transit {
        assert_eq!(*frozen, 0, "{id}: nothing frozen in transit");
        let shard = shard_of(id);
        let peer: u32 = id.split(':').nth(2).unwrap().parse().unwrap();
        shard_totals.entry(shard).or_default().0 += available;
        *pairs.entry((shard.min(peer), shard.max(peer))).or_default() += available;
    }
    for ((one, other), net) in &pairs {
        assert_eq!(*net, 0, "the transit accounts of shards {one} and {other} net to zero");
    }
    for (shard, (held, deposited)) in &shard_totals {
        assert_eq!(held, deposited, "shard {shard}: conservation");
    }
    // The change events, published by the shards' owners through every
    // failover: each history entry once (after deduplication by shard and
    // event id), and each account's newest event at its balance.
    let events = balance_events(broker_port, &format!("{cluster_name}.events"), history_entries).await;
    assert_eq!(events.len(), history_entries, "one event per history entry");
    let mut newest: HashMap<&str, (i64, i64)> = HashMap::new();
    for ((_, event_id), event) in &events {
        let available: i64 = event["available"].as_str().unwrap().parse().unwrap();
        let account = event["account"].as_str().unwrap();
        let seen = newest.entry(account).or_insert((*event_id, available));
        if *event_id > seen.0 {
            *seen = (*event_id, available);
        }
    }
    for (name, balance) in &expected {
        assert_eq!(
            newest[name.as_str()].1,
            *balance,
            "{name}: its newest event holds its balance"
        );
    }
    // Versions never go backwards between reads that did not overlap.
    let mut reads = std::mem::take(&mut *history.reads.lock().unwrap());
    reads.sort_by_key(|read| read.started);
    let mut newest_finished: HashMap<&str, Vec<(Instant, u64)>> = HashMap::new();
    for read in &reads {
        for (ended, version) in newest_finished.get(read.account.as_str()).into_iter().flatten() {
            assert!(
                *ended >= read.started || read.version >= *version,
                "{}: a read saw version {} after an earlier read had seen {version}",
                read.account,
                read.version
            );
        }
        newest_finished
            .entry(&read.account)
            .or_default()
            .push((read.ended, read.version));
    }
    // Idempotency across shards: a cross-shard transfer retried on every
    // node gets its outcome again; with another amount, 409.
    let retried = transfers
        .iter()
        .filter(|(id, transfer)| shard_of(&transfer.from) != shard_of(&transfer.to) && outcomes[*id] != Seen::Unknown)
        .take(4);
    for (id, transfer) in retried {
        for base in bases {
            let body = json!({"id": id, "from": transfer.from, "to": transfer.to, "amount": transfer.amount});
            let (status, answer) = settled(|| client.post(format!("{base}/v1/transfers")).json(&body)).await;
            let expected = match outcomes[id] {
                Seen::Committed => 200,
                _ => 422,
            };
            assert_eq!(status, expected, "{id} retried on {base}: {answer}");
            let body = json!({"id": id, "from": transfer.from, "to": transfer.to, "amount": transfer.amount + 1});
            let (status, answer) = settled(|| client.post(format!("{base}/v1/transfers")).json(&body)).await;
            assert_eq!(status, 409, "{id} with another amount on {base}: {answer}");
        }
    }
    assert!(acknowledged > 100, "the workload made progress through the faults");
    let across = transfers
        .values()
        .filter(|transfer| shard_of(&transfer.from) != shard_of(&transfer.to))
        .count();
    assert!(across * 2 >= transfers.len() - 1, "half the transfers cross shards");
    format!(
        "{} transfers ({across} across shards; {acknowledged} acknowledged, {unknown} unacknowledged), {committed} \
         committed; {} transit accounts net to zero; {} reads checked for monotonic versions; {history_entries} \
         history entries and as many events checked",
        transfers.len(),
        transit.len(),
        reads.len()
    )
}

/// What the cluster says of each transfer id, asked of the nodes in turn,
/// many at a time.
async fn final_outcomes(client: &reqwest::Client, bases: &[String], ids: Vec<String>) -> HashMap<String, Seen> {
    const CONCURRENT: usize = 32;
    let mut tasks = tokio::task::JoinSet::new();
    let mut outcomes = HashMap::new();
    for (number, id) in ids.into_iter().enumerate() {
        if tasks.len() == CONCURRENT {
            let (id, seen) = tasks.join_next().await.unwrap().unwrap();
            outcomes.insert(id, seen);
        }
        let (client, base) = (client.clone(), bases[number % bases.len()].clone());
        tasks.spawn(async move {
            // A saga still running its steps is `pending`: ask again.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (status, record) = settled(|| client.get(format!("{base}/v1/transactions/{id}"))).await;
                let seen = match (status, record["status"].as_str()) {
                    (200, Some("committed")) => Seen::Committed,
                    (200, Some("rejected")) => Seen::Rejected,
                    (200, Some("pending")) => {
                        assert!(Instant::now() < deadline, "{id}: still pending after 60 s: {record}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    (404, _) => Seen::Unknown,
                    other => panic!("{id}: unexpected {other:?}"),
                };
                return (id, seen);
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        let (id, seen) = result.unwrap();
        outcomes.insert(id, seen);
    }
    outcomes
}

/// The balance events of a topic by (shard, event id), but `@world`'s, read
/// from its start until there are `expected` (or 60 s pass). A message seen
/// twice (an owner that died before it committed its history sends its
/// events again) must be the same message.
async fn balance_events(broker_port: u16, topic: &str, expected: usize) -> HashMap<(u64, i64), Value> {
    // `@world`'s entries (each shard's source of deposits) are not in the
    // accounts' histories the test counted.
    fn counted(event: &Value) -> bool {
        event["type"] == "balance_changed" && !event["account"].as_str().unwrap().starts_with('@')
    }
    let mut events: HashMap<(u64, i64), Value> = HashMap::new();
    for (event, _) in topic_messages(broker_port, topic, expected, counted).await {
        if !counted(&event) {
            continue;
        }
        let key = (event["shard"].as_u64().unwrap(), event["event_id"].as_i64().unwrap());
        if let Some(earlier) = events.insert(key, event.clone()) {
            assert_eq!(earlier, event, "{key:?}: a message sent twice is the same message");
        }
    }
    events
}

/// A topic's messages from its start, each with its `coffer-error` header,
/// read until `expected` of them pass `counted` and the topic has been
/// quiet for 2 s since (extra messages then fail the caller's checks), or
/// until 60 s pass.
async fn topic_messages(
    broker_port: u16,
    topic: &str,
    expected: usize,
    counted: fn(&Value) -> bool,
) -> Vec<(Value, Option<String>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{broker_port}"))
            .set("group.id", "cluster-test-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "20")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            partitions
                .add_partition_offset(&topic, partition.id(), rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&partitions).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut messages, mut seen) = (Vec::new(), 0);
        let mut last_message = Instant::now();
        while (seen < expected || last_message.elapsed() < Duration::from_secs(2)) && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            last_message = Instant::now();
            let message = message.unwrap();
            let payload: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            let error = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|header| header.key == "coffer-error")
                    .and_then(|header| header.value)
                    .map(|value| String::from_utf8_lossy(value).into_owned())
            });
            seen += usize::from(counted(&payload));
            messages.push((payload, error));
        }
        messages
    })
    .await
    .unwrap()
}

/// An account's whole history, newest first: (transaction id, change of
/// available, available after).
async fn account_history(client: &reqwest::Client, base: &str, name: &str) -> Vec<(String, i64, i64)> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_url = match &cursor {
            Some(cursor) => format!("{base}/v1/accounts/{name}/history?limit=1000&cursor={cursor}"),
            None => format!("{base}/v1/accounts/{name}/history?limit=1000"),
        };
        let (status, page) = settled(|| client.get(&page_url)).await;
        assert_eq!(status, 200, "{name}: {page}");
        for entry in page["data"].as_array().unwrap() {
            entries.push((
                entry["transaction_id"].as_str().unwrap().to_owned(),
                entry["available_change"].as_i64().unwrap(),
                entry["available"].as_i64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return entries,
        }
    }
}

/// `@saga:` and the digest of a transaction id: how its saga's step ids
/// begin.
fn saga_prefix(id: &str) -> String {
    format!("@saga:{:032x}:", xxhash_rust::xxh3::xxh3_128(id.as_bytes()))
}

const SAGA_PREFIX_BYTES: usize = "@saga:".len() + 32 + 1;

/// Every transit account of the cluster: (id, available, frozen).
async fn transit_accounts(client: &reqwest::Client, base: &str) -> Vec<(String, i64, i64)> {
    let mut found = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("{base}/v1/accounts?prefix=%40transit%3A&limit=1000{cursor}");
        let (status, page) = settled(|| client.get(&url)).await;
        assert_eq!(status, 200, "{page}");
        for account in page["data"].as_array().unwrap() {
            found.push((
                account["id"].as_str().unwrap().to_owned(),
                account["available"].as_i64().unwrap(),
                account["frozen"].as_i64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return found,
        }
    }
}

/// The shard of an account, as the cluster computes it.
fn shard_of(name: &str) -> u32 {
    coffer_core::AccountId::parse(name).unwrap().shard(SHARDS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_comes_back_empty_makes_the_shards_refuse_writes() {
    let Some(Running {
        _turn,
        broker,
        broker_port,
        client,
        mut cluster,
        name,
    }) = running("cluster broker-loss test").await
    else {
        return;
    };
    let base = cluster.base(0);
    open_and_fund(&client, &base, 0..2).await;
    let before = get_json(&client, format!("{base}/v1/accounts/{}", account(0, 0))).await;
    assert_eq!(before["available"], FUNDING);
    // Let every shard write a snapshot past its genesis entry.
    tokio::time::sleep(Duration::from_secs(12)).await;

    let mut broker = broker;
    broker.kill().unwrap();
    broker.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut broker = support::start_broker(broker_port, broker_port);
    // Recreated topics (an operator, or an automatic creation) hold none
    // of the shards' entries.
    let admin = std::process::Command::new(support::which_tansu().unwrap())
        .args([
            "topic",
            "create",
            &format!("{name}.log"),
            "--partitions",
            &SHARDS.to_string(),
        ])
        .args(["--broker", &format!("tcp://127.0.0.1:{broker_port}")])
        .output()
        .unwrap();
    assert!(admin.status.success(), "{admin:?}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        assert!(Instant::now() < deadline, "no refusal within 60 s");
        if let Some(exit) = cluster.nodes[0].as_mut().unwrap().child.try_wait().unwrap() {
            panic!("node 0 died: {exit}");
        }
        let sent = client
            .post(format!("{base}/v1/deposits"))
            .json(&json!({"id": "after-loss", "account": account(0, 0), "amount": 5}))
            .send()
            .await;
        // A connection the node closed while the broker was away.
        let Ok(response) = sent else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 201, "a shard whose log was lost must not take writes: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default().to_owned();
        if message.contains("rather than fork") {
            break message;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for node in cluster.nodes.iter_mut().flatten() {
        assert_eq!(
            node.child.try_wait().unwrap(),
            None,
            "every node keeps running, refusing"
        );
    }
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while shards refuse");
    let view = get_json(&client, format!("{base}/v1/cluster")).await;
    let refusing = view["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|shard| shard["serving"] == false)
        .count();
    assert!(refusing >= 1, "{view}");
    report(&format!(
        "broker loss: {refusing} of {SHARDS} shards refuse writes: {refusal}"
    ));
    drop(cluster);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// A shard's idempotency window that forgets (20 ids here) leaves retries
/// to its history in PostgreSQL: a retry of a forgotten id, on any node,
/// returns the original outcome and applies nothing; the id with another
/// payload is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_beyond_a_shards_window_is_answered_from_its_history() {
    let Some(Running {
        _turn,
        mut broker,
        client,
        cluster,
        ..
    }) = running_with("cluster idempotency test", &["--idempotency-entries-max", "20"]).await
    else {
        return;
    };
    let bases: Vec<String> = (0..NODES).map(|node| cluster.base(node)).collect();
    open_and_fund(&client, &bases[0], 0..1).await;
    let (from, to) = (account(0, 0), account(0, 1));
    let first = json!({"id": "first", "from": from, "to": to, "amount": 5});
    let (status, original) = settled(|| client.post(format!("{}/v1/transfers", bases[0])).json(&first)).await;
    assert_eq!(status, 201, "{original}");
    for number in 0..30 {
        let filler = json!({"id": format!("filler-{number}"), "from": to, "to": account(0, 2), "amount": 1});
        let (status, body) = settled(|| client.post(format!("{}/v1/transfers", bases[1])).json(&filler)).await;
        assert_eq!(status, 201, "{body}");
    }
    // The owner reports the forgetting window with its lease, and every
    // node learns it from the lease table (a real window's margin, half
    // of its ids, covers that delay; these 20 ids do not).
    let shard = shard_of(&from) as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    for base in &bases {
        loop {
            let view = get_json(&client, format!("{base}/v1/cluster")).await;
            if view["shards"][shard]["forgotten"] == true {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "shard {shard} never reported forgetting: {view}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for base in &bases {
        let (status, replayed) = settled(|| client.post(format!("{base}/v1/transfers")).json(&first)).await;
        assert_eq!(status, 200, "a replay, from the history: {replayed}");
        assert_eq!(replayed["seq"], original["seq"], "{replayed}");
        let reused = json!({"id": "first", "from": from, "to": to, "amount": 6});
        let (status, body) = settled(|| client.post(format!("{base}/v1/transfers")).json(&reused)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("id_reused")),
            "{body}"
        );
    }
    let (status, body) = settled(|| client.get(format!("{}/v1/accounts/{from}", bases[2]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["available"], FUNDING - 5, "the transfer applied once: {body}");
    let (status, stored) = settled(|| client.get(format!("{}/v1/transactions/first", bases[1]))).await;
    assert_eq!(
        (status, stored["status"].as_str()),
        (200, Some("committed")),
        "{stored}"
    );
    report("cluster idempotency test: a retry of an id the shard's window forgot, on each of 3 nodes, replayed");
    drop(cluster);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// A balance job whose accepting node is killed as soon as it has accepted
/// the job is finished by another node (its state is in PostgreSQL, not on
/// the dead node's disk), every item applied, and any node answers for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_node_dies_is_finished_by_another() {
    const ITEMS: u64 = 10_000;
    let Some(Running {
        _turn,
        mut broker,
        client,
        mut cluster,
        ..
    }) = running("cluster job test").await
    else {
        return;
    };
    let balances: serde_json::Map<String, Value> = (0..ITEMS)
        .map(|item| (format!("job:{{g{}}}:u{item}", item % GROUPS), json!(item)))
        .collect();
    let body = json!({"id": "takeover", "unit": "USD/2", "balances": balances, "create_missing": true});
    let accepted = client
        .put(format!("{}/v1/balances/batch", cluster.base(0)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    cluster.kill(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let job = loop {
        let (status, job) = settled(|| client.get(format!("{}/v1/jobs/takeover", cluster.base(1)))).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "completed" {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        job["totals"],
        json!({"items": ITEMS, "completed": ITEMS, "failed": 0, "pending": 0}),
        "{job}"
    );
    let (status, on_other) = settled(|| client.get(format!("{}/v1/jobs/takeover", cluster.base(2)))).await;
    assert_eq!((status, &on_other["totals"]), (200, &job["totals"]), "{on_other}");
    for item in (0..ITEMS).step_by(97) {
        let name = format!("job:%7Bg{}%7D:u{item}", item % GROUPS);
        let (status, account) = settled(|| client.get(format!("{}/v1/accounts/{name}", cluster.base(2)))).await;
        assert_eq!((status, account["available"].as_u64()), (200, Some(item)), "{account}");
    }
    let took = started.elapsed();
    // Listing accounts walks the shards one after the other, in pages.
    let mut listed = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/accounts?prefix=job:&limit=1000", cluster.base(2));
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = settled(|| client.get(&url)).await;
        assert_eq!(status, 200, "{page}");
        for account in page["data"].as_array().unwrap() {
            assert!(
                listed.insert(account["id"].as_str().unwrap().to_owned()),
                "listed twice: {account}"
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed.len() as u64, ITEMS, "every account listed once");
    report(&format!(
        "cluster job test: a {ITEMS}-item job finished by another node {:.1} s after its node was killed; its \
         accounts listed across the shards",
        took.as_secs_f64()
    ));
    drop(cluster);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// With a durable broker (tansu on its SQLite engine), a broker killed and
/// restarted under load loses nothing the cluster acknowledged: the bank's
/// checks hold, and every shard serves again on the log it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_broker_restarted_under_load_loses_nothing() {
    let Some((database, name)) = environment("durable broker test") else {
        return;
    };
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let storage = tempfile::tempdir().unwrap();
    let broker_port = support::free_port();
    let start = |port| support::start_broker_on(port, port, "sqlite://tansu.db", storage.path());
    let Some(mut broker) = support::try_start_broker_on(broker_port, broker_port, "sqlite://tansu.db", storage.path())
    else {
        support::skipped("durable broker test (a tansu built with its libsql feature: see .ci/run)");
        return;
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let cluster = Cluster::start(&database, broker_port, &name, &[]);
    cluster.wait_ready(&client).await;
    let bases: Vec<String> = (0..NODES).map(|node| cluster.base(node)).collect();
    open_and_fund(&client, &bases[0], 0..GROUPS).await;
    let seconds = workload_seconds().min(20);
    let until = Instant::now() + Duration::from_secs(seconds);
    let restart = async {
        tokio::time::sleep(Duration::from_secs(seconds / 3)).await;
        let _ = broker.kill();
        let _ = broker.wait();
        tokio::time::sleep(Duration::from_secs(1)).await;
        broker = start(broker_port);
    };
    let (history, ()) = bank_load(&client, &bases, until, restart).await;
    cluster.wait_ready(&client).await;
    let view = get_json(&client, format!("{}/v1/cluster", bases[1])).await;
    let refusing: Vec<&Value> = view["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|shard| !shard["refusing"].is_null())
        .collect();
    assert!(refusing.is_empty(), "every shard serves on its log: {refusing:?}");
    let checked = check_bank(&client, &bases, &history, broker_port, &name).await;
    report(&format!(
        "durable broker test: {seconds} s of load, the broker (tansu, SQLite storage) killed and restarted once; \
         {checked}"
    ));
    drop(cluster);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// Retries a request until it gets an answer that is not a 503, moving to
/// the next node whenever one does not answer (it may have been killed).
async fn settled_on_any(
    client: &reqwest::Client,
    bases: &[String],
    first: usize,
    request: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in first.. {
        if let Ok(response) = request(client, &bases[attempt % bases.len()]).send().await {
            let status = response.status().as_u16();
            if status != 503 {
                return (status, response.json().await.unwrap_or(Value::Null));
            }
        }
        assert!(Instant::now() < deadline, "no answer but 503 within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!("the attempts never end")
}

/// Every order a listing returns, page after page of `limit`.
async fn listed_orders(client: &reqwest::Client, base: &str, filters: &str, limit: u32) -> Vec<Value> {
    let (mut orders, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let mut url = format!("{base}/v1/orders?{filters}&limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = settled(|| client.get(&url)).await;
        assert_eq!(status, 200, "{url}: {page}");
        orders.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return orders,
        }
    }
}

/// The number of the node that owns `shard` now.
async fn owner_of(client: &reqwest::Client, base: &str, shard: u32) -> usize {
    let view = get_json(client, format!("{base}/v1/cluster")).await;
    let owner = view["shards"][shard as usize]["owner"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    owner.trim_start_matches('n').parse().unwrap_or(0)
}

/// Flash sales in a cluster: a product's stock, its buyers' accounts and
/// its reservations' holds share its shard, so purchases taken by every
/// node never oversell nor pass the per-buyer limit, even when the
/// product's owner is killed mid-sale; reservations expire or are
/// confirmed in the shard; orders are found and listed from any node,
/// across shards. A priced purchase, which pays from the buyer's account
/// in another shard, is refused as cross-shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flash_sale_on_every_node_never_oversells_through_a_kill() {
    const STOCK: u64 = 60;
    const PER_BUYER: u64 = 2;
    const BUYERS: u64 = 50;
    const ATTEMPTS: u64 = 3;
    let Some(Running {
        _turn,
        mut broker,
        client,
        cluster,
        ..
    }) = running("cluster flash sale test").await
    else {
        return;
    };
    let bases: Vec<String> = (0..NODES).map(|node| cluster.base(node)).collect();
    let phone_shard = shard_of("product:{phone}");
    let case = (0..)
        .map(|number| format!("case{number}"))
        .find(|name| shard_of(&format!("product:{{{name}}}")) != phone_shard)
        .unwrap();
    for (product, stock) in [("phone", STOCK), (case.as_str(), 5)] {
        let body = json!({"id": product, "stock": stock, "per_buyer_limit": PER_BUYER});
        let (status, created) = settled(|| client.post(format!("{}/v1/products", bases[0])).json(&body)).await;
        assert_eq!(status, 201, "{created}");
    }

    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let buyers: Vec<_> = (0..BUYERS)
        .map(|buyer| {
            let (client, bases) = (client.clone(), bases.clone());
            tokio::spawn(async move {
                // Buyers arrive over 2 s and try every 500 ms, so the sale
                // lasts past the kill below.
                tokio::time::sleep(Duration::from_millis(40 * buyer)).await;
                let mut answers = Vec::new();
                for attempt in 0..ATTEMPTS {
                    let body = json!({"user": format!("u{buyer}"), "order_id": format!("o-{buyer}-{attempt}")});
                    let first = (buyer + attempt) as usize;
                    let answer = settled_on_any(&client, &bases, first, |client, base| {
                        client.post(format!("{base}/v1/products/phone/purchase")).json(&body)
                    })
                    .await;
                    answers.push((answer, Instant::now()));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                answers
            })
        })
        .collect();
    // The product's owner dies mid-sale and comes back.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let victim = owner_of(&client, &bases[0], phone_shard).await;
    cluster.lock().await.kill(victim);
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.lock().await.restart(victim);
    let mut bought_by: HashMap<String, u64> = HashMap::new();
    let mut refusals: HashMap<String, u64> = HashMap::new();
    let mut sold_after_kill = 0;
    for buyer in buyers {
        for ((status, body), answered_at) in buyer.await.unwrap() {
            match status {
                201 | 200 => {
                    *bought_by.entry(body["user"].as_str().unwrap().to_owned()).or_default() += 1;
                    sold_after_kill += u64::from(answered_at > killed_at);
                }
                422 => {
                    *refusals
                        .entry(body["error"]["code"].as_str().unwrap().to_owned())
                        .or_default() += 1
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
    }
    let sold: u64 = bought_by.values().sum();
    assert_eq!(sold, STOCK, "every item sold, none twice: {refusals:?}");
    assert!(sold_after_kill > 0, "the sale went on after the kill");
    assert!(bought_by.values().all(|count| *count <= PER_BUYER), "{bought_by:?}");
    assert!(
        refusals
            .keys()
            .all(|code| code == "sold_out" || code == "limit_exceeded"),
        "{refusals:?}"
    );
    cluster.lock().await.wait_ready(&client).await;
    for base in &bases {
        let (status, product) = settled(|| client.get(format!("{base}/v1/products/phone"))).await;
        assert_eq!(status, 200, "{product}");
        assert_eq!(
            (product["stock"].as_u64(), product["sold"].as_u64()),
            (Some(0), Some(STOCK)),
            "{product}"
        );
    }
    for buyer in 0..BUYERS {
        let user = format!("u{buyer}");
        let name = format!("holding:%7Bphone%7D:{user}");
        let (status, holding) =
            settled(|| client.get(format!("{}/v1/accounts/{name}", bases[buyer as usize % NODES]))).await;
        let bought = bought_by.get(&user).copied().unwrap_or(0);
        match bought {
            0 => assert!(status == 200 || status == 404, "{holding}"),
            _ => assert_eq!(
                (status, holding["available"].as_u64()),
                (200, Some(bought)),
                "{holding}"
            ),
        }
    }
    let completed = listed_orders(&client, &bases[1], "product=phone&status=completed", 7).await;
    assert_eq!(completed.len() as u64, STOCK, "each sold item's order listed once");
    let ids: std::collections::HashSet<&str> = completed
        .iter()
        .map(|order| order["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, STOCK);

    // Reservations in the other product's shard: one expires, one is confirmed.
    for (order, ttl_ms) in [("r-expires", 1_000), ("r-confirmed", 60_000)] {
        let body = json!({"user": "u0", "order_id": order, "reserve_ttl_ms": ttl_ms});
        let (status, reserved) = settled(|| {
            client
                .post(format!("{}/v1/products/{case}/purchase", bases[2]))
                .json(&body)
        })
        .await;
        assert_eq!(
            (status, reserved["status"].as_str()),
            (201, Some("reserved")),
            "{reserved}"
        );
    }
    let (status, confirmed) = settled(|| client.post(format!("{}/v1/orders/r-confirmed/confirm", bases[0]))).await;
    assert_eq!(
        (status, confirmed["status"].as_str()),
        (201, Some("confirmed")),
        "{confirmed}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, order) = settled(|| client.get(format!("{}/v1/orders/r-expires", bases[1]))).await;
        assert_eq!(status, 200, "{order}");
        if order["status"] == "expired" {
            break;
        }
        assert!(Instant::now() < deadline, "the reservation never expired: {order}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, product) = settled(|| client.get(format!("{}/v1/products/{case}", bases[1]))).await;
    assert_eq!(
        (
            product["stock"].as_u64(),
            product["reserved"].as_u64(),
            product["sold"].as_u64()
        ),
        (Some(4), Some(0), Some(1)),
        "the expired reservation's item is back: {product}"
    );
    // A buyer's orders lie in two shards; the listing walks them.
    let of_u0 = listed_orders(&client, &bases[2], "user=u0", 1).await;
    let expected = bought_by.get("u0").copied().unwrap_or(0) + 2;
    assert_eq!(of_u0.len() as u64, expected, "{of_u0:?}");
    assert!(of_u0.iter().all(|order| order["user"] == "u0"), "{of_u0:?}");

    // A priced purchase pays from the buyer's own account, in another shard.
    let merchant = (0..)
        .map(|number| format!("m{number}"))
        .find(|name| shard_of(name) != shard_of("product:{gold}"))
        .unwrap();
    let body = json!({"id": "gold", "stock": 5, "price": 10, "unit": "USD/2", "merchant": merchant});
    let (status, created) = settled(|| client.post(format!("{}/v1/products", bases[0])).json(&body)).await;
    assert_eq!(status, 201, "{created}");
    let body = json!({"user": merchant, "order_id": "g-1"});
    let (status, refused) = settled(|| {
        client
            .post(format!("{}/v1/products/gold/purchase", bases[1]))
            .json(&body)
    })
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("cross_shard")),
        "{refused}"
    );

    report(&format!(
        "cluster flash sale test: {} purchases on 3 nodes, product owner n{victim} killed mid-sale; {STOCK} sold \
         ({sold_after_kill} after the kill) to {} buyers, {refusals:?}; a reservation expired, one confirmed; orders \
         listed across shards",
        BUYERS * ATTEMPTS,
        bought_by.len()
    ));
    drop(cluster);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// Transfers of 1 to the commands topic, each between two accounts of one
/// group, ids `{prefix}-{n}` for `n` in `range`; the net change each makes
/// is added to `changes`.
async fn produce_transfers(
    broker_port: u16,
    topic: &str,
    prefix: &str,
    range: std::ops::Range<u64>,
    changes: &mut HashMap<String, i64>,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{broker_port}"))
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for number in range {
        let (group, index) = (number % GROUPS, (number / GROUPS) % ACCOUNTS_PER_GROUP);
        let (from, to) = (account(group, index), account(group, (index + 1) % ACCOUNTS_PER_GROUP));
        *changes.entry(from.clone()).or_default() -= 1;
        *changes.entry(to.clone()).or_default() += 1;
        let payload = json!({"id": format!("{prefix}-{number}"), "ops": [{"type": "transfer", "from": from, "to": to, "amount": 1}]});
        let payload = payload.to_string();
        let record = FutureRecord::to(topic).key(&from).payload(&payload);
        deliveries.push(producer.send_result(record).map_err(|(error, _)| error).unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
}

/// Kafka ingestion in a cluster: the node that owns shard 0 reads the
/// commands topic and routes each command to its shard; when it is killed,
/// the next owner of shard 0 goes on from the committed offsets. Every
/// command is applied exactly once (a command read again, or produced
/// twice, is replayed by its id); a transfer across shards runs as a saga,
/// and a hold whose accounts lie in two shards goes to the dead-letter
/// topic with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_from_kafka_are_applied_once_through_a_kill_of_their_reader() {
    const COMMANDS: u64 = 2_000;
    let Some(Running {
        _turn,
        mut broker,
        broker_port,
        client,
        mut cluster,
        name,
    }) = running("cluster Kafka ingestion test").await
    else {
        return;
    };
    let bases: Vec<String> = (0..NODES).map(|node| cluster.base(node)).collect();
    open_and_fund(&client, &bases[0], 0..GROUPS).await;
    let topic = format!("{name}.commands");
    let mut changes = HashMap::new();
    produce_transfers(broker_port, &topic, "k", 0..COMMANDS / 2, &mut changes).await;
    let (near, far) = (0..GROUPS)
        .flat_map(|one| (0..GROUPS).map(move |other| (one, other)))
        .find(|(one, other)| shard_of(&account(*one, 0)) != shard_of(&account(*other, 0)))
        .unwrap();
    {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{broker_port}"))
            .create()
            .unwrap();
        // A hold across shards is dead-lettered; a transfer across shards
        // runs as a saga.
        let hold = json!({"id": "across", "ops": [{"type": "hold", "hold": "across", "account": account(near, 0),
            "to": account(far, 0), "amount": 1}]});
        let transfer = json!({"id": "across-transfer", "ops": [{"type": "transfer", "from": account(near, 0),
            "to": account(far, 0), "amount": 7}]});
        *changes.entry(account(near, 0)).or_insert(0) -= 7;
        *changes.entry(account(far, 0)).or_insert(0) += 7;
        for payload in [hold, transfer] {
            producer
                .send(
                    FutureRecord::<str, str>::to(&topic).payload(&payload.to_string()),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
        }
    }
    let reader = owner_of(&client, &bases[0], 0).await;
    cluster.kill(reader);
    produce_transfers(broker_port, &topic, "k", COMMANDS / 2..COMMANDS, &mut changes).await;
    // Produced twice: the second copy is replayed, never applied.
    produce_transfers(broker_port, &topic, "k", 0..100, &mut HashMap::new()).await;
    cluster.restart(reader);
    cluster.wait_ready(&client).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut wrong = Vec::new();
        for group in 0..GROUPS {
            for index in 0..ACCOUNTS_PER_GROUP {
                let id = account(group, index);
                let encoded = id.replace('{', "%7B").replace('}', "%7D");
                let (status, body) =
                    settled(|| client.get(format!("{}/v1/accounts/{encoded}", bases[(group as usize) % NODES]))).await;
                let expected = FUNDING + changes.get(&id).copied().unwrap_or(0);
                if status != 200 || body["available"].as_i64() != Some(expected) {
                    wrong.push(format!("{id}: {} (expected {expected})", body["available"]));
                }
            }
        }
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "balances never matched the commands: {wrong:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, first) = settled(|| client.get(format!("{}/v1/transactions/k-0", bases[2]))).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("committed")), "{first}");
    let dead = topic_messages(broker_port, &format!("{name}.dead-letter"), 1, |_| true).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0["id"], "across", "{dead:?}");
    let reason = dead[0].1.clone().unwrap_or_default();
    assert!(reason.contains("shard"), "the reason names the shards: {reason}");
    report(&format!(
        "cluster Kafka ingestion test: {COMMANDS} commands (100 produced twice) applied once each through a kill of \
         their reader n{reader}, and a transfer across shards (a saga); a hold across shards dead-lettered: \
         {reason}"
    ));
    drop(cluster);
    let _ = broker.kill();
    let _ = broker.wait();
}
