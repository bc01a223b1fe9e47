//! The client against the real server on a random port: the README's
//! example, rejections returned at once, a write whose answer is lost
//! retried under its key and applied once, and a 429 waited out by its
//! Retry-After.

use clap::Parser;
use coffer_client::{Client, Command, Error, Operation, RetryPolicy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    config: coffer_server::ServerConfig,
}

async fn server(data: &std::path::Path, extra: &[&str]) -> coffer_server::RunningServer {
    let mut arguments = vec![
        "coffer",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    arguments.extend_from_slice(extra);
    coffer_server::start(Wrapper::parse_from(arguments).config)
        .await
        .expect("server starts")
}

#[tokio::test]
async fn the_readme_example_runs_against_the_server() {
    let data = tempfile::tempdir().unwrap();
    let running = server(data.path(), &[]).await;
    let coffer = Client::new(&format!("http://{}", running.address)).unwrap();

    let alice = coffer.open_account("alice", "USD/2").await.unwrap();
    assert_eq!((alice.unit.as_str(), alice.available), ("USD/2", 0));
    coffer.open_account("bob", "USD/2").await.unwrap();
    coffer.deposit("alice", 10_000).await.unwrap();
    let transfer = coffer.transfer("alice", "bob", 2_500).await.unwrap();
    assert_eq!(transfer.status, "committed");
    let bob_after = transfer.effects.iter().find(|effect| effect.account == "bob").unwrap();
    assert_eq!(bob_after.available, 2_500);
    assert_eq!(coffer.account("alice").await.unwrap().available, 7_500);
    assert_eq!(coffer.transaction(&transfer.id).await.unwrap().status, "committed");

    // 128-bit amounts pass exactly.
    coffer.open_account("whale", "WEI/18").await.unwrap();
    let huge: u128 = 10_u128.pow(30) + 7;
    coffer.deposit("whale", huge).await.unwrap();
    assert_eq!(coffer.account("whale").await.unwrap().available, huge as i128);

    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = coffer.history("alice", 10, None).await.unwrap();
        if page.data.len() == 3 || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let balances: Vec<i128> = page.data.iter().map(|entry| entry.available).collect();
    assert_eq!(balances, [7_500, 10_000, 0], "newest first, back to the opening");

    let rejected = coffer.transfer("bob", "alice", 1_000_000).await.unwrap_err();
    assert_eq!(rejected.code(), Some("insufficient_funds"), "{rejected}");
    assert!(matches!(rejected, Error::Api { status: 422, .. }));
    let missing = coffer.account("nobody").await.unwrap_err();
    assert!(matches!(missing, Error::Api { status: 404, .. }), "{missing}");

    // A command with its own id: a second submit is the same transaction.
    let command = Command {
        id: Some(coffer_client::TransactionId::parse("order-42").unwrap()),
        ops: vec![transfer_op("alice", "bob", 100)],
        metadata: None,
    };
    let first = coffer.submit(command.clone()).await.unwrap();
    let again = coffer.submit(command.clone()).await.unwrap();
    assert_eq!((first.seq, first.status.as_str()), (again.seq, "committed"));
    assert_eq!(coffer.account("alice").await.unwrap().available, 7_400, "applied once");
    let reused = Command {
        ops: vec![transfer_op("alice", "bob", 200)],
        ..command
    };
    let conflict = coffer.submit(reused).await.unwrap_err();
    assert!(matches!(conflict, Error::Api { status: 409, .. }), "{conflict}");

    let items = vec![
        Command {
            id: None,
            ops: vec![transfer_op("alice", "bob", 1)],
            metadata: None,
        },
        Command {
            id: None,
            ops: vec![transfer_op("alice", "bob", 1_000_000)],
            metadata: None,
        },
        Command {
            id: None,
            ops: vec![transfer_op("bob", "alice", 1)],
            metadata: None,
        },
    ];
    let minimal = Client::builder(&format!("http://{}", running.address))
        .minimal_answers(true)
        .build()
        .unwrap();
    let results = minimal.batch(items).await.unwrap();
    let statuses: Vec<&str> = results.iter().map(|result| result.status.as_str()).collect();
    assert_eq!(statuses, ["committed", "rejected", "committed"]);
    assert_eq!(results[1].code.as_deref(), Some("insufficient_funds"));
    assert!(
        results.iter().all(|result| result.effects.is_empty()),
        "minimal answers carry no balances"
    );
    assert_eq!(coffer.account("alice").await.unwrap().available, 7_400);
    running.stop().await.unwrap();
}

fn transfer_op(from: &str, to: &str, amount: u128) -> Operation {
    Operation::Transfer {
        from: coffer_client::AccountId::parse(from).unwrap(),
        to: coffer_client::AccountId::parse(to).unwrap(),
        amount: coffer_client::Amount::new(amount).unwrap(),
    }
}

/// Forwards connections to `upstream`; for the first `drops` of them it
/// passes the request on and then closes the connection without the
/// answer, as a network that fails after the server acted would.
async fn answer_dropping_proxy(
    upstream: std::net::SocketAddr,
    drops: usize,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&dropped);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            if counter.load(Ordering::SeqCst) < drops {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0_u8; 64 * 1024];
                    let read = client.read(&mut buffer).await.unwrap_or(0);
                    server.write_all(&buffer[..read]).await.unwrap();
                    // Wait for the answer, then lose it.
                    let _ = server.read(&mut buffer).await;
                    drop(client);
                });
            } else {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        }
    });
    (address, dropped)
}

#[tokio::test]
async fn a_write_whose_answer_is_lost_is_retried_under_its_key_and_applied_once() {
    let data = tempfile::tempdir().unwrap();
    let running = server(data.path(), &[]).await;
    let direct = Client::new(&format!("http://{}", running.address)).unwrap();
    direct.open_account("alice", "USD/2").await.unwrap();
    direct.open_account("bob", "USD/2").await.unwrap();
    direct.deposit("alice", 1_000).await.unwrap();

    let (proxy, dropped) = answer_dropping_proxy(running.address, 2).await;
    let flaky = Client::builder(&format!("http://{proxy}"))
        .retry(RetryPolicy {
            backoff_initial: Duration::from_millis(10),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let transfer = flaky.transfer("alice", "bob", 300).await.unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 2, "two answers were lost");
    assert_eq!(transfer.status, "committed");
    assert_eq!(
        direct.account("alice").await.unwrap().available,
        700,
        "applied once, not three times"
    );
    assert_eq!(direct.account("bob").await.unwrap().available, 300);

    // Without retries, the lost answer is the caller's to handle.
    let (proxy, _) = answer_dropping_proxy(running.address, 1).await;
    let fragile = Client::builder(&format!("http://{proxy}"))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let lost = fragile.transfer("alice", "bob", 1).await.unwrap_err();
    assert!(matches!(lost, Error::Transport(_)), "{lost}");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_rate_limited_write_waits_for_retry_after() {
    let data = tempfile::tempdir().unwrap();
    let running = server(data.path(), &["--transaction-rate-per-minute", "60"]).await;
    let base = format!("http://{}", running.address);
    Client::new(&base)
        .unwrap()
        .open_account("alice", "USD/2")
        .await
        .unwrap();
    let limited = Client::builder(&base).user("u-1").build().unwrap();
    // A burst of 60, then one a second: the 61st waits for its turn.
    for _ in 0..60 {
        limited.deposit("alice", 1).await.unwrap();
    }
    let started = Instant::now();
    limited.deposit("alice", 1).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the client waited for Retry-After: {:?}",
        started.elapsed()
    );
    let impatient = Client::builder(&base)
        .user("u-1")
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let refused = impatient.deposit("alice", 1).await.unwrap_err();
    assert!(matches!(refused, Error::Api { status: 429, .. }), "{refused}");
    assert_eq!(
        Client::new(&base).unwrap().account("alice").await.unwrap().available,
        61
    );
    running.stop().await.unwrap();
}
