//! The real process consuming commands from Kafka (COFFER_TEST_KAFKA_BROKERS),
//! killed with SIGKILL mid-stream and restarted, three times: every command
//! is applied, none twice.

mod support;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::Server;

const ACCOUNTS: u64 = 20;
const COMMANDS: u64 = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let Ok(brokers) = std::env::var("COFFER_TEST_KAFKA_BROKERS") else {
        support::skipped("Kafka crash test (set COFFER_TEST_KAFKA_BROKERS)");
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let prefix = format!("crash{}.", std::process::id());
    let flags = vec![
        "--kafka-brokers".to_owned(),
        brokers.clone(),
        "--kafka-topic-prefix".to_owned(),
        prefix.clone(),
    ];
    let client = reqwest::Client::new();
    let mut server = Server::start_with(data.path(), &flags);
    for account in 0..ACCOUNTS {
        let response = client
            .post(format!("{}/v1/accounts", server.base))
            .json(&json!({"id": format!("k{account}"), "unit": "USD/2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    // Commands arrive steadily while the server is killed and restarted.
    let producing = tokio::spawn(produce(brokers, format!("{prefix}commands")));
    for round in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(300 + round * 250)).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server = Server::start_with(data.path(), &flags);
    }
    producing.await.unwrap();
    let mut expected = vec![0i64; ACCOUNTS as usize];
    for index in 0..COMMANDS {
        expected[(index % ACCOUNTS) as usize] += (index % 9 + 1) as i64;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    'waiting: loop {
        assert!(Instant::now() < deadline, "commands not all applied in time");
        for (account, amount) in expected.iter().enumerate() {
            let body: Value = client
                .get(format!("{}/v1/accounts/k{account}", server.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let available = body["available"].as_i64().unwrap();
            assert!(
                available <= *amount,
                "k{account}: {available} > {amount}: a command applied twice"
            );
            if available < *amount {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'waiting;
            }
        }
        break;
    }
    drop(server);
}

async fn produce(brokers: String, topic: String) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for chunk in 0..(COMMANDS / 200) {
        let deliveries: Vec<_> = (chunk * 200..(chunk + 1) * 200)
            .map(|index| {
                let ops = json!([{"type": "transfer", "from": "@world", "to": format!("k{}", index % ACCOUNTS), "amount": index % 9 + 1}]);
                let payload = json!({"id": format!("d-{index}"), "ops": ops}).to_string();
                let key = format!("d-{index}");
                producer
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                    .map_err(|(error, _)| error)
                    .unwrap()
            })
            .collect();
        for delivery in deliveries {
            delivery.await.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}
