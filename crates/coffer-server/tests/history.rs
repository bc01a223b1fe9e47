//! History endpoints and idempotency beyond the engine's window, against
//! the real server, once per history store: the index (the default) and
//! SQLite always, PostgreSQL when COFFER_TEST_POSTGRES_URL is set.

mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use support::TestServer;

/// Server flags for each store under test.
fn stores() -> Vec<(&'static str, Vec<String>)> {
    let mut stores = vec![
        ("index", Vec::new()),
        ("sqlite", vec!["--history-url".into(), "sqlite".into()]),
    ];
    match std::env::var("COFFER_TEST_POSTGRES_URL") {
        Ok(url) => {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let schema = format!("test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            let flags = vec!["--history-url".into(), url, "--history-schema".into(), schema];
            stores.push(("postgres", flags));
        }
        Err(_) => support::skipped("history tests on PostgreSQL (set COFFER_TEST_POSTGRES_URL)"),
    }
    stores
}

async fn start(flags: &[String], extra: &[&str]) -> TestServer {
    let mut arguments: Vec<&str> = flags.iter().map(String::as_str).collect();
    arguments.extend_from_slice(extra);
    TestServer::start(&arguments).await
}

/// Every history entry of an account, newest first, page by page.
async fn full_history(server: &TestServer, account: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/accounts/{account}/history?limit=2"),
            Some(cursor) => format!("/v1/accounts/{account}/history?limit=2&cursor={cursor}"),
        };
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        entries.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return entries,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn history_sums_to_the_balance_and_answers_balances_in_the_past() {
    for (store, flags) in stores() {
        let mut server = start(&flags, &[]).await;
        server.open("alice", "USD/2").await;
        server.open("bob", "USD/2").await;
        server.deposit("alice", 1_000).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let between = now_ms();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (status, body, _) = server
            .post("/v1/transfers", json!({"from": "alice", "to": "bob", "amount": 300}))
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body, _) = server
            .post(
                "/v1/holds",
                json!({"hold": "h1", "account": "alice", "amount": 50, "ttl_ms": 30}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        // The idle tick expires the hold; wait until the engine shows it.
        for _ in 0..100 {
            if server.balance("alice").await.1 == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(server.balance("alice").await, (700, 0), "{store}");

        let entries = full_history(&server, "alice").await;
        let kinds: Vec<&str> = entries.iter().map(|entry| entry["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "hold_expired",
                "transaction",
                "transaction",
                "transaction",
                "transaction"
            ],
            "{store}: {entries:?}"
        );
        assert_eq!(entries[0]["hold_id"], "h1");
        let sum = |field: &str| entries.iter().map(|entry| entry[field].as_i64().unwrap()).sum::<i64>();
        assert_eq!((sum("available_change"), sum("frozen_change")), (700, 0), "{store}");
        assert_eq!(entries[0]["available"], 700);

        let (status, past) = server.get(&format!("/v1/accounts/alice/balance?at={between}")).await;
        assert_eq!(status, 200, "{past}");
        assert_eq!(
            (past["available"].as_i64(), past["frozen"].as_i64()),
            (Some(1_000), Some(0)),
            "{store}"
        );
        let (_, before_anything) = server.get("/v1/accounts/bob/balance?at=1000").await;
        assert_eq!(before_anything["total"], 0);
        assert!(before_anything["history_id"].is_null());
        let (_, now) = server.get("/v1/accounts/bob/balance").await;
        assert_eq!(now["available"], 300);

        let (status, range) = server.get(&format!("/v1/accounts/alice/history?to={between}")).await;
        assert_eq!(status, 200, "{range}");
        assert_eq!(
            range["data"].as_array().unwrap().len(),
            2,
            "open and deposit only: {range}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn a_retry_beyond_the_idempotency_window_returns_the_original_outcome() {
    for (store, flags) in stores() {
        // The window remembers 3 ids: the first ones fall out quickly.
        let mut server = start(&flags, &["--idempotency-entries-max", "3"]).await;
        server.open("a", "USD/2").await;
        let deposit = json!({"id": "first", "account": "a", "amount": 10});
        let (status, _, _) = server.post("/v1/deposits", deposit.clone()).await;
        assert_eq!(status, 201);
        let rejected = json!({"id": "too-much", "account": "a", "amount": 1_000_000});
        let (status, _, _) = server.post("/v1/withdrawals", rejected.clone()).await;
        assert_eq!(status, 422);
        for index in 0..10 {
            server.deposit("a", 1).await;
            let _ = index;
        }
        assert_eq!(server.balance("a").await, (20, 0));

        let (status, stored) = server.get("/v1/transactions/first").await;
        assert_eq!(status, 200, "{store}: {stored}");
        assert_eq!(stored["status"], "committed");
        assert_eq!(stored["ops"][0]["type"], "transfer", "{stored}");
        assert_eq!(stored["effects"][1]["available"], 10, "{stored}");

        let (status, body, headers) = server.post("/v1/deposits", deposit.clone()).await;
        assert_eq!(status, 200, "{store}: {body}");
        assert_eq!(headers["idempotent-replayed"], "true");
        assert_eq!(body["seq"], stored["seq"]);
        let (status, body, _) = server
            .post("/v1/deposits", json!({"id": "first", "account": "a", "amount": 11}))
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "id_reused");
        let (status, body, _) = server.post("/v1/withdrawals", rejected).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "insufficient_funds");
        let async_retry =
            json!({"id": "first", "ops": [{"type": "transfer", "from": "@world", "to": "a", "amount": 10}]});
        let (status, body, _) = server.post("/v1/transactions?mode=async", async_retry).await;
        assert_eq!(status, 200, "stored outcome, not queued again: {body}");
        let (status, body, _) = server
            .post("/v1/transactions/batch", json!({"transactions": [deposit.clone(), {"id": "fresh", "ops": [{"type": "transfer", "from": "@world", "to": "a", "amount": 1}]}]}))
            .await;
        // Batch items are transactions, not deposit shortcuts.
        assert_eq!(status, 400, "{body}");
        let (status, body, _) = server
            .post(
                "/v1/transactions/batch",
                json!({"transactions": [
                    {"id": "first", "ops": [{"type": "transfer", "from": "@world", "to": "a", "amount": 10}]},
                    {"id": "fresh", "ops": [{"type": "transfer", "from": "@world", "to": "a", "amount": 1}]}
                ]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][0]["replayed"], true, "{body}");
        assert_eq!(body["results"][1]["replayed"], false, "{body}");
        assert_eq!(
            server.balance("a").await,
            (21, 0),
            "{store}: only the fresh item applied"
        );
        server
            .restart(
                &flags
                    .iter()
                    .map(String::as_str)
                    .chain(["--idempotency-entries-max", "3"])
                    .collect::<Vec<_>>(),
            )
            .await;
        let (status, _, _) = server.post("/v1/deposits", deposit).await;
        assert_eq!(status, 200, "{store}: still recognised after a restart");
        assert_eq!(server.balance("a").await, (21, 0));
        server.stop().await;
    }
}

#[tokio::test]
async fn history_requests_are_validated() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "USD/2").await;
    for (path, status) in [
        ("/v1/accounts/a/history?limit=0", 400),
        ("/v1/accounts/a/history?limit=1001", 400),
        ("/v1/accounts/a/history?cursor=zzz", 400),
        ("/v1/accounts/a/history?from=yesterday", 400),
        ("/v1/accounts/a/history?colour=red", 400),
        ("/v1/accounts/nobody/history", 404),
        ("/v1/accounts/bad%20id/history", 400),
        ("/v1/accounts/a/balance?at=soon", 400),
        ("/v1/accounts/nobody/balance?at=0", 404),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: JSON error body, got {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn with_history_off_the_history_endpoints_say_so() {
    let mut server = TestServer::start(&["--history-url", "off"]).await;
    server.open("a", "USD/2").await;
    let (status, body) = server.get("/v1/accounts/a/history").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "history_unavailable");
    let (status, _) = server.get("/v1/accounts/a/balance").await;
    assert_eq!(status, 200, "the current balance needs no history");
    for path in ["/v1/orders", "/v1/orders?product=p", "/v1/orders/o-1"] {
        let (status, body) = server.get(path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("history_unavailable")),
            "{path}: {body}"
        );
    }
    server.stop().await;
}

/// `--history-lag-max` 8: past half of it (4 transactions behind) a write
/// first waits up to 1 s for the projector, past it a write gets 503 with
/// `Retry-After` and changes nothing; once the store takes rows again,
/// writes flow at once. SQLite's write lock, held by another connection,
/// stalls the projector (the pacing is the same for every store).
#[tokio::test]
async fn a_lagging_history_slows_writes_then_refuses_them() {
    let mut server = TestServer::start(&["--history-lag-max", "8", "--history-url", "sqlite"]).await;
    server.open("a", "USD/2").await;
    assert_eq!(server.get("/v1/accounts/a/history").await.0, 200, "caught up");
    let lock = rusqlite::Connection::open(server.data.path().join("history.sqlite")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut waits = Vec::new();
    let refused = loop {
        let deposit = json!({"id": format!("lagging-{}", waits.len()), "account": "a", "amount": 1});
        let started = std::time::Instant::now();
        let (status, body, headers) = server.post("/v1/deposits", deposit).await;
        if status != 201 {
            break (status, body, headers);
        }
        waits.push(started.elapsed());
        assert!(waits.len() <= 9, "never refused: {waits:?}");
    };
    assert_eq!(
        (refused.0, refused.1["error"]["code"].as_str()),
        (503, Some("history_unavailable"))
    );
    assert_eq!(refused.2.get("retry-after").unwrap(), "1");
    assert_eq!(waits.len(), 9, "behind by 0 to 8, accepted: {waits:?}");
    let second = std::time::Duration::from_millis(900);
    assert!(
        waits[..5].iter().all(|wait| *wait < second),
        "not slowed up to half: {waits:?}"
    );
    assert!(
        waits[5..].iter().all(|wait| *wait >= second),
        "slowed past half: {waits:?}"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("coffer_history_write_slowdowns_total 4"),
        "{metrics}"
    );
    drop(lock);
    assert_eq!(server.get("/v1/accounts/a/history").await.0, 200, "caught up again");
    let started = std::time::Instant::now();
    let (status, _, _) = server
        .post("/v1/deposits", json!({"id": "after", "account": "a", "amount": 1}))
        .await;
    assert!(status == 201 && started.elapsed() < second);
    assert_eq!(
        server.balance("a").await,
        (10, 0),
        "nine, the refused one not, then one"
    );
    server.stop().await;
}

/// `--history-export`: a SQL copy of the index, with its own cursor.
/// Once its lag metric reads 0 it equals a fresh projection of the journal,
/// row for row (holds and orders, reserved, confirmed and expired,
/// included), on SQLite (and on PostgreSQL when configured).
#[tokio::test]
async fn the_sql_export_follows_the_index() {
    let mut exports = vec![(vec!["--history-export".to_owned(), "sqlite".to_owned()], None)];
    if let Ok(url) = std::env::var("COFFER_TEST_POSTGRES_URL") {
        let schema = format!("export_{}", std::process::id());
        let flags = vec![
            "--history-export".to_owned(),
            url.clone(),
            "--history-schema".to_owned(),
            schema.clone(),
        ];
        exports.push((flags, Some((url, schema))));
    }
    for (flags, postgres) in exports {
        let mut server = start(&flags, &[]).await;
        server.open("alice", "USD/2").await;
        server.open("bob", "USD/2").await;
        server.deposit("alice", 1_000).await;
        for n in 0..20 {
            let transfer = json!({"id": format!("x-{n}"), "from": "alice", "to": "bob", "amount": 7});
            assert_eq!(server.post("/v1/transfers", transfer).await.0, 201);
        }
        let product = json!({"id": "lamp", "stock": 5, "price": 10, "unit": "USD/2", "merchant": "bob"});
        assert_eq!(server.post("/v1/products", product).await.0, 201);
        for (order, ttl_ms) in [("o-1", 60_000), ("o-2", 60_000), ("o-3", 200)] {
            let body = json!({"user": "alice", "order_id": order, "reserve_ttl_ms": ttl_ms});
            let (status, answer, _) = server.post("/v1/products/lamp/purchase", body).await;
            assert_eq!(status, 201, "{answer}");
        }
        assert_eq!(server.post("/v1/orders/o-1/confirm", json!({})).await.0, 201);
        // o-3's reservation expires (an expiry record, no transaction).
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        server.deposit("bob", 1).await;
        let mut caught_up = false;
        for _ in 0..200 {
            let (_, metrics) = server.get("/metrics").await;
            if metrics
                .as_str()
                .unwrap()
                .contains("coffer_history_export_lag_transactions 0\n")
            {
                caught_up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(caught_up, "the export caught up");
        server.stop().await;
        let data = server.data.path().to_owned();
        let database = match &postgres {
            None => coffer_history::Database::parse("sqlite", &data, "unused"),
            Some((url, schema)) => coffer_history::Database::parse(url, &data, schema),
        }
        .unwrap();
        let report = tokio::task::spawn_blocking(move || {
            coffer_history::verify(&data.join("journal"), &database, coffer_core::EngineLimits::default())
        })
        .await
        .unwrap()
        .expect("the export equals the journal");
        assert!(report.transactions >= 28 && report.orders == 3, "{report:?}");
    }
}

/// The export copies the index: with another history store it is refused
/// at startup, saying why.
#[tokio::test]
async fn an_export_beside_a_sql_history_store_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let flags = ["--history-url", "sqlite", "--history-export", "sqlite:copy.sqlite"];
    let error = coffer_server::start(support::config(data.path(), &flags))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("--history-export copies the history index"), "{error}");
}
