//! Kafka end to end against a real broker (COFFER_TEST_KAFKA_BROKERS;
//! `.ci/run` starts tansu): 10,000 commands with duplicates, commands
//! without ids and malformed ones; every valid command applied exactly
//! once, one result per id, malformed ones in the dead-letter topic, and
//! the events topic rebuilds the same balances.

mod support;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::TestServer;

const ACCOUNTS: u64 = 50;

fn brokers() -> Option<String> {
    let brokers = std::env::var("COFFER_TEST_KAFKA_BROKERS").ok();
    if brokers.is_none() {
        support::skipped("Kafka tests (set COFFER_TEST_KAFKA_BROKERS)");
    }
    brokers
}

struct Received {
    key: String,
    payload: Vec<u8>,
    headers: HashMap<String, String>,
}

/// Reads a topic from its start until `enough` says so (or 60 s pass).
async fn read_topic(brokers: &str, topic: &str, enough: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", support::unique()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut received = Vec::new();
    while !enough(&received) && Instant::now() < deadline {
        let Ok(message) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else {
            continue;
        };
        let message = message.unwrap();
        let mut headers = HashMap::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                let value = header.value.map(|value| String::from_utf8_lossy(value).into_owned());
                headers.insert(header.key.to_owned(), value.unwrap_or_default());
            }
        }
        received.push(Received {
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned())
                .unwrap_or_default(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    eprintln!("read {} messages of {topic} in {:?}", received.len(), started.elapsed());
    received
}

fn deposit(account: u64, amount: u64) -> Value {
    json!([{"type": "transfer", "from": "@world", "to": format!("k{account}"), "amount": amount}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_commands_apply_exactly_once_and_events_rebuild_the_balances() {
    let Some(brokers) = brokers() else { return };
    let prefix = format!("t{}.", support::unique());
    let flags = [
        "--kafka-brokers",
        brokers.as_str(),
        "--kafka-topic-prefix",
        prefix.as_str(),
        "--kafka-partitions",
        "3",
    ];
    let mut server = TestServer::start(&flags).await;
    for account in 0..ACCOUNTS {
        server.open(&format!("k{account}"), "USD/2").await;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let topic = format!("{prefix}commands");
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut messages: Vec<(String, String)> = Vec::new();
    let mut valid_ids = Vec::new();
    for index in 0..9_700u64 {
        let (account, amount) = (index % ACCOUNTS, index % 7 + 1);
        let id = format!("c-{index}");
        messages.push((
            id.clone(),
            json!({"id": id, "ops": deposit(account, amount)}).to_string(),
        ));
        *expected.entry(format!("k{account}")).or_default() += amount as i64;
        valid_ids.push(id);
    }
    for index in 0..200u64 {
        // A duplicate: the same command delivered again.
        let original = messages[(index * 37) as usize].clone();
        messages.push(original);
    }
    for index in 0..50u64 {
        // No id: one is derived from topic, partition and offset.
        messages.push((
            format!("anonymous-{index}"),
            json!({"ops": deposit(index, 100)}).to_string(),
        ));
        *expected.entry(format!("k{index}")).or_default() += 100;
    }
    let malformed = [
        "not json".to_owned(),
        json!({"id": "m", "ops": []}).to_string(),
        json!({"id": "m", "ops": [{"type": "teleport"}]}).to_string(),
        json!({"id": "bad id!", "ops": deposit(1, 1)}).to_string(),
        json!({"id": "m", "ops": deposit(1, 1), "colour": "red"}).to_string(),
    ];
    for index in 0..50 {
        messages.push((format!("malformed-{index}"), malformed[index % malformed.len()].clone()));
    }
    assert_eq!(messages.len(), 10_000);
    // `send_result` enqueues at once; awaiting `send` one by one would
    // make a round trip per message.
    let sends: Vec<_> = messages
        .iter()
        .map(|(key, payload)| {
            producer
                .send_result(FutureRecord::to(&topic).key(key).payload(payload))
                .map_err(|(error, _)| error)
                .expect("the local queue takes the command")
        })
        .collect();
    for send in sends {
        send.await.unwrap().expect("the broker takes the command");
    }

    // Every valid command applied exactly once: the balances say so.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        let mut matches = true;
        for (account, amount) in &expected {
            if server.balance(account).await.0 != *amount {
                matches = false;
                break;
            }
        }
        if matches {
            break;
        }
        assert!(Instant::now() < deadline, "commands not applied in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "10,000 commands applied {:?} after the last was produced",
        started.elapsed()
    );
    for id in valid_ids.iter().step_by(97) {
        let (status, body) = server.get(&format!("/v1/transactions/{id}")).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("committed")), "{id}");
    }

    // One result per id.
    let results = read_topic(&brokers, &format!("{prefix}results"), |received| {
        let count = |prefix: &str| {
            received
                .iter()
                .filter(|message| message.key.starts_with(prefix))
                .count()
        };
        count("c-") >= 9_700 && count("kafka:") >= 50
    })
    .await;
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for result in &results {
        *per_id.entry(result.key.as_str()).or_default() += 1;
        let body: Value = serde_json::from_slice(&result.payload).unwrap();
        assert_eq!(body["id"], result.key.as_str());
    }
    for id in &valid_ids {
        assert_eq!(per_id.get(id.as_str()), Some(&1), "{id}");
    }
    assert_eq!(
        per_id.keys().filter(|id| id.starts_with("kafka:")).count(),
        50,
        "derived ids"
    );

    // Malformed commands in the dead-letter topic, with the reason.
    let dead = read_topic(&brokers, &format!("{prefix}dead-letter"), |received| {
        received.len() >= 50
    })
    .await;
    assert_eq!(dead.len(), 50);
    assert!(dead.iter().all(|message| message.key.starts_with("malformed-")));
    assert!(dead.iter().all(|message| !message.headers["coffer-error"].is_empty()));

    // The events topic, read from the start, rebuilds every balance: the
    // latest event of each account (deduplicated by event_id) has it.
    // A balance change per deposit, and one per opening (balances 0).
    let expected_events = 9_750 + ACCOUNTS as usize;
    let events = read_topic(&brokers, &format!("{prefix}events"), |received| {
        let distinct: std::collections::HashSet<&str> = received
            .iter()
            .filter(|message| message.key.starts_with('k'))
            .filter_map(|message| message.headers.get("coffer-event-id").map(String::as_str))
            .collect();
        distinct.len() >= expected_events
    })
    .await;
    let mut latest: HashMap<String, (i64, i64)> = HashMap::new();
    for event in &events {
        let body: Value = serde_json::from_slice(&event.payload).unwrap();
        assert!(event.headers.contains_key("coffer-sequence"));
        if body["type"] != "balance_changed" {
            continue;
        }
        let event_id = body["event_id"].as_i64().unwrap();
        let available: i64 = body["available"].as_str().unwrap().parse().unwrap();
        let entry = latest
            .entry(body["account"].as_str().unwrap().to_owned())
            .or_insert((-1, 0));
        if event_id > entry.0 {
            *entry = (event_id, available);
        }
    }
    for (account, amount) in &expected {
        assert_eq!(latest.get(account).map(|latest| latest.1), Some(*amount), "{account}");
    }
    server.stop().await;
}

#[tokio::test]
async fn async_http_goes_through_kafka() {
    let Some(brokers) = brokers() else { return };
    let prefix = format!("a{}.", support::unique());
    let flags = [
        "--kafka-brokers",
        brokers.as_str(),
        "--kafka-topic-prefix",
        prefix.as_str(),
    ];
    let mut server = TestServer::start(&flags).await;
    server.open("k1", "USD/2").await;
    let (status, body, _) = server
        .post(
            "/v1/transactions?mode=async",
            json!({"id": "via-kafka", "ops": deposit(1, 42)}),
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (202, Some("pending")), "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.get("/v1/transactions/via-kafka").await;
        if body["status"] == "committed" {
            break;
        }
        assert_eq!(body["status"], "pending", "pending until processed: {body}");
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.balance("k1").await, (42, 0));
    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("coffer_kafka_publish_lag_transactions"));
    server.stop().await;
}
