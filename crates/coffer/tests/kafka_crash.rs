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

/// The broker goes away mid-stream and comes back: coffer reports not ready
/// while it is gone, then reconnects and resumes. The test's own tansu is
/// reached through a proxy that the test stops and restarts (a restarted
/// tansu would come back empty — it keeps topics in memory — where a real
/// broker keeps them; and it cannot listen again on its port while old
/// connections linger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_survived() {
    if !own_broker_possible("broker outage test") {
        return;
    }
    // Below the ephemeral range: a connection to a port nobody listens on
    // can otherwise connect to itself.
    let broker_port = 20_000 + (std::process::id() % 4_000) as u16 * 2;
    let proxy_port = broker_port + 1;
    let mut broker = support::start_broker(broker_port, proxy_port);
    let mut proxy = Proxy::start(proxy_port, broker_port).await;
    let brokers = format!("127.0.0.1:{proxy_port}");
    let data = tempfile::tempdir().unwrap();
    let flags = vec!["--kafka-brokers".to_owned(), brokers.clone()];
    let mut server = Server::start_with(data.path(), &flags);
    let client = reqwest::Client::new();
    open_k0(&client, &server.base).await;
    let ready = |expected: bool| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let response = client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .expect("coffer answers");
                if (response.status() == 200) == expected {
                    return;
                }
                assert!(Instant::now() < deadline, "readiness never became {expected}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    ready(true).await;
    produce_deposits(&brokers, 0..100).await;
    wait_for_balance(&client, &server.base, 100).await;

    proxy.stop();
    ready(false).await;
    // Commands written while coffer cannot reach the broker.
    let direct = format!("127.0.0.1:{proxy_port}");
    proxy = Proxy::start(proxy_port, broker_port).await;
    produce_deposits(&direct, 100..300).await;
    ready(true).await;
    wait_for_balance(&client, &server.base, 300).await;
    assert!(server.child.try_wait().unwrap().is_none());
    proxy.stop();
    broker.kill().unwrap();
    let _ = broker.wait();
}

/// A real broker restart: tansu killed and started again — empty, as its
/// storage is in memory, and on the second address of the bootstrap list,
/// as it cannot listen again on its old port while old connections
/// linger. coffer replaces its clients (librdkafka crashed on a stale
/// metadata cache here before), recreates the topics and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_is_reconnected_to() {
    if !own_broker_possible("broker restart test") {
        return;
    }
    let first = 24_000 + (std::process::id() % 4_000) as u16 * 2;
    let second = first + 1;
    let mut broker = support::start_broker(first, first);
    let data = tempfile::tempdir().unwrap();
    let flags = vec![
        "--kafka-brokers".to_owned(),
        format!("127.0.0.1:{first},127.0.0.1:{second}"),
    ];
    let mut server = Server::start_with(data.path(), &flags);
    let client = reqwest::Client::new();
    open_k0(&client, &server.base).await;
    produce_deposits(&format!("127.0.0.1:{first}"), 0..100).await;
    wait_for_balance(&client, &server.base, 100).await;
    broker.kill().unwrap();
    broker.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut broker = support::start_broker(second, second);
    produce_deposits(&format!("127.0.0.1:{second}"), 100..300).await;
    wait_for_balance(&client, &server.base, 300).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "coffer survived the restart"
    );
    broker.kill().unwrap();
    let _ = broker.wait();
}

/// Whether the test can run a broker of its own; says SKIPPED if not.
fn own_broker_possible(what: &str) -> bool {
    let possible = std::env::var("COFFER_TEST_KAFKA_BROKERS").is_ok() && support::which_tansu().is_some();
    if !possible {
        support::skipped(&format!("{what} (set COFFER_TEST_KAFKA_BROKERS, install tansu)"));
    }
    possible
}

async fn open_k0(client: &reqwest::Client, base: &str) {
    let response = client
        .post(format!("{base}/v1/accounts"))
        .json(&json!({"id": "k0", "unit": "USD/2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn wait_for_balance(client: &reqwest::Client, base: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: Value = client
            .get(format!("{base}/v1/accounts/k0"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["available"].as_i64() == Some(expected) {
            return;
        }
        assert!(Instant::now() < deadline, "balance {expected} not reached: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy whose stop drops every connection, like a dead broker.
struct Proxy {
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(port: u16, target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the proxy");
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepting = {
            let tasks = std::sync::Arc::clone(&tasks);
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let connection = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    tasks.lock().unwrap().push(connection);
                }
            })
        };
        tasks.lock().unwrap().push(accepting);
        Proxy { tasks }
    }

    fn stop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Deposits of 1 to k0, ids from `range`.
async fn produce_deposits(brokers: &str, range: std::ops::Range<u64>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let deliveries: Vec<_> = range
        .map(|index| {
            let payload = json!({"id": format!("b-{index}"), "ops": [{"type": "transfer", "from": "@world", "to": "k0", "amount": 1}]}).to_string();
            producer
                .send_result(FutureRecord::to("coffer.commands").key("k0").payload(&payload))
                .map_err(|(error, _)| error)
                .unwrap()
        })
        .collect();
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
}
