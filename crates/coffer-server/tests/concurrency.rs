//! 64 concurrent clients doing random transfers, holds, captures and
//! releases among 100 accounts for several seconds. Afterwards every
//! balance equals what the acknowledged outcomes imply, money is conserved
//! and no account is below its floor.

mod support;

use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::TestServer;

const ACCOUNTS: u64 = 100;
const CLIENTS: u64 = 64;
const FUNDING: i64 = 10_000;
const RUN: Duration = Duration::from_secs(4);

/// (available, frozen) changes per account implied by acknowledged commits.
type Ledger = Arc<Mutex<HashMap<String, (i64, i64)>>>;

fn apply(ledger: &Ledger, account: &str, available: i64, frozen: i64) {
    let mut ledger = ledger.lock().unwrap();
    let entry = ledger.entry(account.to_owned()).or_default();
    entry.0 += available;
    entry.1 += frozen;
}

struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

async fn client(server: Arc<TestServer>, ledger: Ledger, number: u64) -> (u64, u64) {
    let mut random = Random(number * 7_919 + 1);
    let (mut committed, mut rejected) = (0, 0);
    let mut step = 0;
    let started = Instant::now();
    while started.elapsed() < RUN {
        step += 1;
        let from = format!("c:{}", random.below(ACCOUNTS));
        let to = format!("c:{}", random.below(ACCOUNTS));
        let amount = random.below(400) as i64 + 1;
        if random.below(3) > 0 {
            let (status, body, _) = server
                .post(
                    "/v1/transfers",
                    json!({"id": format!("t-{number}-{step}"), "from": from, "to": to, "amount": amount}),
                )
                .await;
            match status {
                201 => {
                    apply(&ledger, &from, -amount, 0);
                    apply(&ledger, &to, amount, 0);
                    committed += 1;
                }
                422 => rejected += 1,
                other => panic!("transfer answered {other}: {body}"),
            }
            continue;
        }
        let hold = format!("h-{number}-{step}");
        let (status, body, _) = server
            .post(
                "/v1/holds",
                json!({"id": format!("th-{number}-{step}"), "hold": hold, "account": from, "amount": amount, "to": to}),
            )
            .await;
        match status {
            201 => {
                apply(&ledger, &from, -amount, amount);
                committed += 1;
            }
            422 => {
                rejected += 1;
                continue;
            }
            other => panic!("hold answered {other}: {body}"),
        }
        let capture = random.below(2) == 0;
        let path = format!("/v1/holds/{hold}/{}", if capture { "capture" } else { "release" });
        let (status, body, _) = server.post(&path, json!({"id": format!("tc-{number}-{step}")})).await;
        match (status, capture) {
            (201, true) => {
                apply(&ledger, &from, 0, -amount);
                apply(&ledger, &to, amount, 0);
                committed += 1;
            }
            (201, false) => {
                apply(&ledger, &from, amount, -amount);
                committed += 1;
            }
            // A capture into an account... of the same owner is refused.
            (422, true) => {
                assert_eq!(body["error"]["code"], "same_account", "{body}");
                let (status, body, _) = server.post(&format!("/v1/holds/{hold}/release"), json!({})).await;
                assert_eq!(status, 201, "{body}");
                apply(&ledger, &from, amount, -amount);
            }
            (other, _) => panic!("{path} answered {other}: {body}"),
        }
    }
    (committed, rejected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_keep_every_balance_exact() {
    let server = TestServer::start(&[]).await;
    for n in 0..ACCOUNTS {
        server.open(&format!("c:{n}"), "USD/2").await;
        server.deposit(&format!("c:{n}"), FUNDING as u64).await;
    }
    let server = Arc::new(server);
    let ledger: Ledger = Arc::default();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|number| tokio::spawn(client(Arc::clone(&server), Arc::clone(&ledger), number)))
        .collect();
    let (mut committed, mut rejected) = (0, 0);
    for task in tasks {
        let (c, r) = task.await.unwrap();
        committed += c;
        rejected += r;
    }
    assert!(committed > 1_000, "load ran: {committed} commits");
    assert!(rejected > 0, "some requests met the floor");
    let ledger = ledger.lock().unwrap().clone();
    let mut total = 0;
    for n in 0..ACCOUNTS {
        let id = format!("c:{n}");
        let (available, frozen) = server.balance(&id).await;
        let (delta_available, delta_frozen) = ledger.get(&id).copied().unwrap_or_default();
        assert_eq!(
            (available, frozen),
            (FUNDING + delta_available, delta_frozen),
            "{id}: balances equal the acknowledged outcomes"
        );
        assert!(available >= 0, "{id} is above its floor");
        total += available + frozen;
    }
    assert_eq!(total, FUNDING * ACCOUNTS as i64, "money is conserved");
    eprintln!("{committed} commits, {rejected} rejections from {CLIENTS} clients in {RUN:?}");
}
