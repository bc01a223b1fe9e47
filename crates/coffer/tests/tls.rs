//! TLS to the services coffer uses, against the real services on loopback
//! with a throwaway CA (`.ci/tls-services.sh` makes it, switches
//! PostgreSQL to its certificate and starts a TLS-only Redis):
//!
//! - PostgreSQL (`sslmode=verify-full&sslrootcert=…` in the URL): the
//!   history store over TLS, and the server's own connection shown as TLS
//!   by `pg_stat_ssl`;
//! - Redis (`rediss://` and `--redis-ca-file`): two servers share a rate
//!   limit through it, and through one that demands client certificates
//!   (`--redis-cert-file`, `--redis-key-file`);
//! - Kafka (`--kafka-ca-file`): tansu has no TLS listener, so a TLS proxy
//!   written here stands in front of a tansu of this test's own, which
//!   advertises the proxy; events are published and read through it.
//!
//! Each also starts with a CA that signed nothing of the server's, and the
//! server must refuse to start, saying that the certificate did not verify.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Server;

/// The certificates' directory: `ca.pem` signed `server.pem`
/// (127.0.0.1 and localhost); `other-ca.pem` signed nothing of ours.
fn tls_dir(what: &str, services: &[&str]) -> Option<PathBuf> {
    let dir = std::env::var_os("COFFER_TEST_TLS_DIR").map(PathBuf::from);
    let missing: Vec<&str> = services
        .iter()
        .copied()
        .filter(|name| std::env::var_os(name).is_none())
        .collect();
    if dir.is_none() || !missing.is_empty() {
        support::skipped(&format!(
            "{what} (set COFFER_TEST_TLS_DIR and {}: eval \"$(bash .ci/tls-services.sh)\")",
            services.join(", ")
        ));
        return None;
    }
    dir
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

/// Runs `coffer` with `extra` and expects it to stop during startup;
/// returns what it printed.
fn refused_start(extra: &[String]) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start coffer");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("coffer started although {extra:?} cannot verify its service");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut printed).unwrap();
    assert!(!status.success(), "{printed}");
    printed
}

fn assert_names_the_certificate(printed: &str) {
    assert!(
        printed.contains("certificate verify failed"),
        "the refusal names the certificate check: {printed}"
    );
    assert!(!printed.contains("panicked"), "{printed}");
}

async fn post(client: &reqwest::Client, url: String, user: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = client.post(url).json(&body);
    if let Some(user) = user {
        request = request.header("Coffer-User", user);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_store_connects_to_postgresql_over_verified_tls() {
    let Some(dir) = tls_dir("PostgreSQL TLS test", &["COFFER_TEST_POSTGRES_URL"]) else {
        return;
    };
    let database = std::env::var("COFFER_TEST_POSTGRES_URL").unwrap();
    let schema = format!("tls_{}", std::process::id());
    let application = format!("coffer-tls-{}", std::process::id());
    let with_ca = |ca: &str| {
        format!(
            "{database}?sslmode=verify-full&sslrootcert={}&application_name={application}",
            path(&dir, ca)
        )
    };
    let store = |ca: &str| {
        vec![
            "--history-url".to_owned(),
            with_ca(ca),
            "--history-schema".to_owned(),
            schema.clone(),
        ]
    };

    assert_names_the_certificate(&refused_start(&store("other-ca.pem")));

    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), &store("ca.pem"));
    let client = reqwest::Client::new();
    let base = &server.base;
    let (status, body) = post(
        &client,
        format!("{base}/v1/accounts"),
        None,
        json!({"id": "a", "unit": "USD/2"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(
        &client,
        format!("{base}/v1/deposits"),
        None,
        json!({"account": "a", "amount": 250}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = get(&client, format!("{base}/v1/accounts/a/history")).await;
        if history["data"].as_array().is_some_and(|entries| !entries.is_empty()) {
            assert_eq!(history["data"][0]["available"], 250, "{history}");
            break;
        }
        assert!(Instant::now() < deadline, "no history over TLS: {history}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let encrypted = tokio::task::spawn_blocking(move || {
        let mut admin = postgres::Client::connect(&database, postgres::NoTls).unwrap();
        let encrypted: Vec<bool> = admin
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
                &[&application],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        drop(server);
        admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).unwrap();
        encrypted
    })
    .await
    .unwrap();
    assert!(!encrypted.is_empty(), "the server's connection is listed");
    assert!(
        encrypted.iter().all(|ssl| *ssl),
        "every coffer connection is TLS: {encrypted:?}"
    );
}

/// Statuses of two transactions on one server and a third on another, for
/// one user, under a limit of 2 a minute shared through Redis.
async fn shared_limit_statuses(flags: &[String]) -> Vec<u16> {
    let limit = ["--transaction-rate-per-minute".to_owned(), "2".to_owned()];
    let flags = [flags, &limit].concat();
    let (first_data, second_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Server::start_with(first_data.path(), &flags);
    let second = Server::start_with(second_data.path(), &flags);
    let client = reqwest::Client::new();
    let user = format!("tls-user-{}-{}", std::process::id(), flags.len());
    // Transfers between accounts that do not exist: rejected (422), but
    // counted by the limit before the ledger sees them.
    let transfer = json!({"ops": [{"type": "transfer", "from": "nobody", "to": "none", "amount": 1}]});
    let mut statuses = Vec::new();
    for server in [&first, &first, &second] {
        let url = format!("{}/v1/transactions", server.base);
        statuses.push(post(&client, url, Some(&user), transfer.clone()).await.0);
    }
    statuses
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_share_rate_limits_through_redis_over_verified_tls() {
    let Some(dir) = tls_dir("Redis TLS test", &["COFFER_TEST_REDIS_TLS_URL"]) else {
        return;
    };
    let url = std::env::var("COFFER_TEST_REDIS_TLS_URL").unwrap();
    let flags = |ca: &str| {
        vec![
            "--redis-url".to_owned(),
            url.clone(),
            "--redis-ca-file".to_owned(),
            path(&dir, ca),
        ]
    };

    assert_names_the_certificate(&refused_start(&flags("other-ca.pem")));
    assert_eq!(
        shared_limit_statuses(&flags("ca.pem")).await,
        [422, 422, 429],
        "the second server sees the first's use through Redis"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_demands_client_certificates_gets_coffers() {
    let Some(dir) = tls_dir("Redis client-certificate test", &["COFFER_TEST_REDIS_MTLS_URL"]) else {
        return;
    };
    let url = std::env::var("COFFER_TEST_REDIS_MTLS_URL").unwrap();
    let mut flags = vec![
        "--redis-url".to_owned(),
        url,
        "--redis-ca-file".to_owned(),
        path(&dir, "ca.pem"),
    ];
    flags.extend(["--redis-cert-file".to_owned(), path(&dir, "client.pem")]);
    flags.extend(["--redis-key-file".to_owned(), path(&dir, "client.key")]);
    assert_eq!(
        shared_limit_statuses(&flags).await,
        [422, 422, 429],
        "shared through a Redis that only takes clients with a certificate"
    );
}

/// Decrypts TLS on a port of its own and forwards the bytes to
/// `upstream`: a Kafka listener with TLS in front of a broker without.
struct TlsProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    async fn start(dir: &Path, upstream: u16) -> TlsProxy {
        use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod};
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor.set_certificate_chain_file(dir.join("server.pem")).unwrap();
        acceptor
            .set_private_key_file(dir.join("server.key"), SslFiletype::PEM)
            .unwrap();
        let acceptor = Arc::new(acceptor.build());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = Arc::clone(&acceptor);
                tokio::spawn(async move {
                    let ssl = Ssl::new(acceptor.context()).unwrap();
                    let mut client = tokio_openssl::SslStream::new(ssl, socket).unwrap();
                    if Pin::new(&mut client).accept().await.is_err() {
                        return;
                    }
                    let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                });
            }
        });
        TlsProxy { port, task }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_kafka_over_verified_tls() {
    let Some(dir) = tls_dir("Kafka TLS test", &["COFFER_TEST_KAFKA_BROKERS"]) else {
        return;
    };
    if support::which_tansu().is_none() {
        support::skipped("Kafka TLS test (install tansu: see .ci/run)");
        return;
    }
    let broker_port = support::free_port();
    let proxy = TlsProxy::start(&dir, broker_port).await;
    let storage = tempfile::tempdir().unwrap();
    let _broker = support::start_broker_on(broker_port, proxy.port, "memory://tansu/", storage.path());
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let flags = |ca: &str| {
        vec![
            "--kafka-brokers".to_owned(),
            brokers.clone(),
            "--kafka-ca-file".to_owned(),
            path(&dir, ca),
        ]
    };

    assert_names_the_certificate(&refused_start(&flags("other-ca.pem")));

    let data = tempfile::tempdir().unwrap();
    let server = Server::start_with(data.path(), &flags("ca.pem"));
    let client = reqwest::Client::new();
    let (status, body) = post(
        &client,
        format!("{}/v1/accounts", server.base),
        None,
        json!({"id": "tls", "unit": "USD/2"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let deposit = json!({"account": "tls", "amount": 5});
    let (status, body) = post(&client, format!("{}/v1/deposits", server.base), None, deposit).await;
    assert_eq!(status, 201, "{body}");

    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", path(&dir, "ca.pem"))
        .set("group.id", format!("tls-reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["coffer.events"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no event read over TLS");
        let Ok(message) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else {
            continue;
        };
        let message = message.unwrap();
        if message.key() == Some(b"tls".as_slice()) {
            break;
        }
    }
}
