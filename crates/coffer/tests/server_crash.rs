//! The real `coffer` process under concurrent HTTP load, killed with SIGKILL
//! at varying moments and restarted on the same data directory, round after
//! round. Every acknowledged transaction is found by id with its original
//! outcome; every unacknowledged one is absent or applied once; balances
//! equal the initial funding plus exactly the committed transfers.

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Seen, Server, Transfer};

const ACCOUNTS: u64 = 20;
const FUNDING: i64 = 1_000;
const CLIENTS: u64 = 16;

fn rounds() -> u64 {
    std::env::var("COFFER_CRASH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20)
}

async fn load(
    base: String,
    client: reqwest::Client,
    round: u64,
    number: u64,
    log: Arc<Mutex<HashMap<String, Transfer>>>,
) {
    let mut state = round * 1_000 + number * 17 + 3;
    for step in 0.. {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let from = format!("k:{}", (state >> 33) % ACCOUNTS);
        let to = format!("k:{}", ((state >> 40) + 1 + (state >> 33)) % ACCOUNTS);
        let amount = ((state >> 20) % 300) as i64 + 1;
        let id = format!("r{round}-c{number}-s{step}");
        log.lock().unwrap().insert(
            id.clone(),
            Transfer {
                from: from.clone(),
                to: to.clone(),
                amount,
                seen: Seen::Unknown,
            },
        );
        let body = json!({"id": id, "from": from, "to": to, "amount": amount});
        let Ok(response) = client.post(format!("{base}/v1/transfers")).json(&body).send().await else {
            return;
        };
        let seen = match response.status().as_u16() {
            201 => Seen::Committed,
            422 => Seen::Rejected,
            // 409 cannot happen (ids are unique); anything else is a failure.
            other => panic!("unexpected status {other}"),
        };
        log.lock().unwrap().get_mut(&id).unwrap().seen = seen;
    }
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(url).send().await.expect("server answers after restart");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    // The default history (the index) and a SQL copy beside it, both
    // killed mid-write every round.
    let flags = ["--history-export".to_owned(), "sqlite".to_owned()];
    crash_rounds(&flags, &[("index", "unused"), ("sqlite", "unused")], rounds()).await;
}

/// The same with the history in PostgreSQL, fewer rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_with_the_history_in_postgres() {
    let Ok(url) = std::env::var("COFFER_TEST_POSTGRES_URL") else {
        support::skipped("crash test with the PostgreSQL history (set COFFER_TEST_POSTGRES_URL)");
        return;
    };
    let schema = format!("crash_{}", std::process::id());
    let flags = [
        "--history-url".to_owned(),
        url.clone(),
        "--history-schema".to_owned(),
        schema.clone(),
    ];
    crash_rounds(&flags, &[(&url, &schema)], rounds().div_ceil(4)).await;
}

/// `stores`: the history stores the server keeps with `flags`, as
/// (`--history-url`, schema), each checked against the journal at the end.
async fn crash_rounds(flags: &[String], stores: &[(&str, &str)], rounds: u64) {
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut server = Server::start_with(data.path(), flags);
    for n in 0..ACCOUNTS {
        let response = client
            .post(format!("{}/v1/accounts", server.base))
            .json(&json!({"id": format!("k:{n}"), "unit": "USD/2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let deposit = json!({"id": format!("fund-{n}"), "account": format!("k:{n}"), "amount": FUNDING});
        assert_eq!(
            client
                .post(format!("{}/v1/deposits", server.base))
                .json(&deposit)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }
    let mut expected: HashMap<String, i64> = (0..ACCOUNTS).map(|n| (format!("k:{n}"), FUNDING)).collect();
    let mut committed = 0;
    for round in 0..rounds {
        let log: Arc<Mutex<HashMap<String, Transfer>>> = Arc::default();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|number| {
                tokio::spawn(load(
                    server.base.clone(),
                    client.clone(),
                    round,
                    number,
                    Arc::clone(&log),
                ))
            })
            .collect();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(150 + (round * 137) % 500)).await;
        server.kill();
        for task in tasks {
            task.await.unwrap();
        }
        let killed_after = started.elapsed();
        server = Server::start_with(data.path(), flags);
        committed += check(&client, &server.base, &log, &mut expected).await;
        eprintln!("round {round}: killed after {killed_after:?}; {committed} transfers committed so far");
    }
    // The history (and its SQL copy) was killed mid-write every round too:
    // once caught up, each must equal a fresh projection of the journal,
    // row for row.
    let (status, page) = get(&client, format!("{}/v1/accounts/k:0/history?limit=1", server.base)).await;
    assert_eq!(status, 200, "{page}");
    server.terminate();
    for (url, schema) in stores {
        let database = coffer_history::Database::parse(url, data.path(), schema).unwrap();
        let journal = data.path().join("journal");
        // Blocking database clients: off the async threads.
        let report = tokio::task::spawn_blocking(move || {
            coffer_history::verify(&journal, &database, coffer_core::EngineLimits::default())
        })
        .await
        .unwrap()
        .expect("history equals the journal");
        assert!(report.transactions as usize >= committed, "{url}: {report:?}");
        eprintln!("history verified ({url}): {report:?}");
    }
}

/// Checks the restarted server against what the clients of one round saw,
/// adds the round's commits to `expected`, and checks every balance (which
/// also proves that no earlier round's commit went missing or doubled).
/// Returns how many of the round's transfers are committed.
async fn check(
    client: &reqwest::Client,
    base: &str,
    log: &Mutex<HashMap<String, Transfer>>,
    expected: &mut HashMap<String, i64>,
) -> usize {
    let mut committed = 0;
    let mut entries: Vec<(String, Seen, String, String, i64)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(id, t)| (id.clone(), t.seen, t.from.clone(), t.to.clone(), t.amount))
        .collect();
    entries.sort_by(|left, right| left.0.cmp(&right.0));
    for (id, seen, from, to, amount) in entries {
        let (status, record) = get(client, format!("{base}/v1/transactions/{id}")).await;
        let found = match (status, record["status"].as_str()) {
            (200, Some("committed")) => Seen::Committed,
            (200, Some("rejected")) => Seen::Rejected,
            (404, _) => Seen::Unknown,
            other => panic!("{id}: unexpected {other:?}"),
        };
        if seen != Seen::Unknown {
            assert_eq!(
                found, seen,
                "{id}: an acknowledged outcome survives the crash unchanged"
            );
        }
        if found == Seen::Committed {
            committed += 1;
            *expected.get_mut(&from).unwrap() -= amount;
            *expected.get_mut(&to).unwrap() += amount;
        }
    }
    let mut total = 0;
    for (account, balance) in expected.iter() {
        let (status, body) = get(client, format!("{base}/v1/accounts/{account}")).await;
        assert_eq!(status, 200);
        let available = body["available"].as_i64().unwrap();
        assert_eq!(
            available, *balance,
            "{account}: exactly the committed transfers, each once"
        );
        assert!(available >= 0);
        total += available;
    }
    assert_eq!(total, FUNDING * ACCOUNTS as i64, "conservation");
    committed
}

/// `mode=async` without Kafka: 200 writes, each answered 202, then SIGKILL
/// at once. After a restart every one of them is found with the outcome
/// its 202 gave, and the balances hold exactly the committed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_writes_acknowledged_before_kill_9_are_all_found() {
    const WRITES: u64 = 200;
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut server = Server::start(data.path());
    for account in ["payer", "payee"] {
        let response = client
            .post(format!("{}/v1/accounts", server.base))
            .json(&json!({"id": account, "unit": "EUR/2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let deposit = json!({"id": "fund", "account": "payer", "amount": 100 * 50});
    let response = client
        .post(format!("{}/v1/deposits", server.base))
        .json(&deposit)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // 200 transfers of 50 from a payer holding 100 × 50: about half are
    // rejected (insufficient funds), whichever order they apply in.
    let writes: Vec<_> = (0..WRITES)
        .map(|number| {
            let (client, base) = (client.clone(), server.base.clone());
            tokio::spawn(async move {
                let id = format!("async-{number}");
                let ops = json!([{"type": "transfer", "from": "payer", "to": "payee", "amount": 50}]);
                let response = client
                    .post(format!("{base}/v1/transactions?mode=async"))
                    .json(&json!({"id": id, "ops": ops}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                let body: Value = response.json().await.unwrap();
                (id, body["status"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for write in writes {
        accepted.push(write.await.unwrap());
    }
    server.kill();
    let server = Server::start(data.path());
    let mut committed = 0;
    for (id, status) in &accepted {
        let (code, record) = get(&client, format!("{}/v1/transactions/{id}", server.base)).await;
        assert_eq!(code, 200, "{id} was accepted, so it survives the crash: {record}");
        assert_eq!(record["status"].as_str(), Some(status.as_str()), "{id}: {record}");
        committed += u64::from(status == "committed");
    }
    assert_eq!(committed, 100, "exactly the payer's funds were transferred");
    let (_, payee) = get(&client, format!("{}/v1/accounts/payee", server.base)).await;
    assert_eq!(payee["available"].as_u64(), Some(committed * 50));
}
