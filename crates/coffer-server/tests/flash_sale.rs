//! Flash sales against the real server: no overselling under a stampede,
//! per-buyer limits, reservations that expire and return their stock,
//! per-user rate limits (in-process, and shared by two instances through
//! Redis when COFFER_TEST_REDIS_URL is set).

mod support;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use support::TestServer;

async fn purchase(client: &reqwest::Client, base: &str, product: &str, body: Value) -> (u16, Value) {
    let response = client
        .post(format!("{base}/v1/products/{product}/purchase"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_buyers_never_oversell_a_hundred_items() {
    let mut server = TestServer::start(&[]).await;
    let (status, body, _) = server
        .post(
            "/v1/products",
            json!({"id": "console", "stock": 100, "per_buyer_limit": 1}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["stock"].as_i64(), body["sold"].as_i64()), (Some(100), Some(0)));

    const BUYERS: usize = 1_000;
    let client = reqwest::Client::new();
    let base = Arc::new(server.base.clone());
    let tasks: Vec<_> = (0..BUYERS)
        .map(|buyer| {
            let (client, base) = (client.clone(), Arc::clone(&base));
            tokio::spawn(async move {
                // Most buyers try 3 times; every tenth hammers 8 times (the
                // limit is 5 purchases a minute).
                let attempts = if buyer % 10 == 0 { 8 } else { 3 };
                let mut answers = Vec::new();
                for attempt in 0..attempts {
                    let body = json!({"user": format!("buyer-{buyer}"), "order_id": format!("o-{buyer}-{attempt}")});
                    answers.push(purchase(&client, &base, "console", body).await);
                }
                answers
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut bought_by: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for (status, body) in task.await.unwrap() {
            let outcome = match status {
                201 => {
                    *bought_by.entry(body["user"].as_str().unwrap().to_owned()).or_default() += 1;
                    "bought".to_owned()
                }
                422 | 429 => {
                    let code = body["error"]["code"].as_str().unwrap().to_owned();
                    if status == 422 {
                        // The result inside names the refusal as the error does.
                        assert_eq!(body["error"]["details"]["transaction"]["code"], code.as_str(), "{body}");
                    }
                    code
                }
                other => panic!("unexpected {other}: {body}"),
            };
            *counts.entry(outcome).or_default() += 1;
        }
    }
    assert_eq!(counts.get("bought"), Some(&100), "{counts:?}");
    assert!(bought_by.values().all(|count| *count == 1), "nobody above the limit");
    let allowed = ["bought", "sold_out", "limit_exceeded", "rate_limited"];
    assert!(
        counts.keys().all(|outcome| allowed.contains(&outcome.as_str())),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("rate_limited"),
        Some(&300),
        "100 hammering buyers × 3 beyond the burst of 5"
    );

    let (_, product) = server.get("/v1/products/console").await;
    assert_eq!(
        (
            product["stock"].as_i64(),
            product["sold"].as_i64(),
            product["reserved"].as_i64()
        ),
        (Some(0), Some(100), Some(0)),
        "{product}"
    );
    let (status, orders) = server.get("/v1/orders?product=console&limit=1000").await;
    assert_eq!(status, 200, "{orders}");
    let orders = orders["data"].as_array().unwrap();
    assert_eq!(orders.len(), 100);
    assert!(orders
        .iter()
        .all(|order| order["status"] == "completed" && order["quantity"] == 1));
    for buyer in bought_by.keys() {
        let (_, holding) = server.get(&format!("/v1/accounts/holding:console:{buyer}")).await;
        assert_eq!(holding["available"], 1, "{buyer}: {holding}");
    }
    server.stop().await;
}

#[tokio::test]
async fn reservations_expire_and_their_stock_sells_again() {
    let mut server = TestServer::start(&[]).await;
    server.open("shop", "USD/2").await;
    for buyer in 0..30 {
        server.open(&format!("u{buyer}"), "USD/2").await;
        server.deposit(&format!("u{buyer}"), 1_000).await;
    }
    let product =
        json!({"id": "lamp", "stock": 10, "per_buyer_limit": 1, "price": 250, "unit": "USD/2", "merchant": "shop"});
    let (status, body, _) = server.post("/v1/products", product).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["per_buyer_limit"].as_u64(), body["price"].as_u64()),
        (Some(1), Some(250)),
        "{body}"
    );
    let client = reqwest::Client::new();
    let mut reserved = 0;
    for buyer in 0..20 {
        let body = json!({"user": format!("u{buyer}"), "order_id": format!("r{buyer}"), "reserve_ttl_ms": 300});
        let (status, answer) = purchase(&client, &server.base, "lamp", body).await;
        match status {
            201 => {
                assert_eq!(answer["status"], "reserved");
                // Counts and amounts are numbers, as every amount is.
                assert_eq!(
                    (answer["quantity"].as_u64(), answer["amount"].as_u64()),
                    (Some(1), Some(250)),
                    "{answer}"
                );
                reserved += 1;
            }
            422 => assert_eq!(answer["error"]["code"], "sold_out", "{answer}"),
            other => panic!("{other}: {answer}"),
        }
    }
    assert_eq!(reserved, 10);
    let (_, product) = server.get("/v1/products/lamp").await;
    assert_eq!(
        (product["stock"].as_i64(), product["reserved"].as_i64()),
        (Some(0), Some(10))
    );
    assert_eq!(server.balance("u0").await, (750, 250), "the price is held too");
    // Confirm one reservation before the rest expire.
    let (status, body, _) = server.post("/v1/orders/r0/confirm", json!({})).await;
    assert_eq!(status, 201, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (_, product) = server.get("/v1/products/lamp").await;
    assert_eq!(
        (
            product["stock"].as_i64(),
            product["reserved"].as_i64(),
            product["sold"].as_i64()
        ),
        (Some(9), Some(0), Some(1)),
        "{product}"
    );
    assert_eq!(
        server.balance("u1").await,
        (1_000, 0),
        "an expired reservation returns the money"
    );
    assert_eq!(server.balance("shop").await, (250, 0));
    let (status, body, _) = server.post("/v1/orders/r1/confirm", json!({})).await;
    assert_eq!(status, 409, "too late: {body}");
    assert_eq!(body["error"]["code"], "order_not_reserved");
    // The returned stock sells again, to the buyers who missed out.
    let mut bought = 0;
    for buyer in 10..30 {
        let body = json!({"user": format!("u{buyer}"), "order_id": format!("b{buyer}")});
        if purchase(&client, &server.base, "lamp", body).await.0 == 201 {
            bought += 1;
        }
    }
    assert_eq!(bought, 9);
    let (_, expired) = server.get("/v1/orders?product=lamp&status=expired").await;
    assert_eq!(expired["data"].as_array().unwrap().len(), 9, "{expired}");
    let (_, confirmed) = server.get("/v1/orders/r0").await;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    server.stop().await;
    // The orders and holds tables, updated in place by confirmations and
    // expiries, equal a fresh projection of the journal.
    let data = server.data.path();
    let database = coffer_history::Database::parse("index", data, "unused").unwrap();
    let limits = coffer_core::EngineLimits::default();
    let report = coffer_history::verify(&data.join("journal"), &database, limits).unwrap();
    assert!(report.orders >= 19 && report.holds >= 10, "{report:?}");
}

#[tokio::test]
async fn purchase_requests_are_validated_and_change_nothing() {
    let mut server = TestServer::start(&[]).await;
    let (status, _, _) = server.post("/v1/products", json!({"id": "pen", "stock": 5})).await;
    assert_eq!(status, 201);
    for (path, body, status) in [
        ("/v1/products", json!({"id": "x", "stock": 1, "price": 5}), 422),
        ("/v1/products", json!({"id": "bad id", "stock": 1}), 400),
        ("/v1/products", json!({"id": "y", "stock": -1}), 400),
        ("/v1/products/pen/purchase", json!({"user": "bad user"}), 400),
        ("/v1/products/pen/purchase", json!({"user": "u", "quantity": 0}), 400),
        (
            "/v1/products/pen/purchase",
            json!({"user": "u", "quantity": 2_000_000}),
            400,
        ),
        ("/v1/products/pen/purchase", json!({"user": "u", "colour": "red"}), 400),
        ("/v1/products/none/purchase", json!({"user": "u"}), 404),
        ("/v1/orders/nothing/confirm", json!({}), 404),
    ] {
        let (got, answer, _) = server.post(path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert!(answer["error"]["code"].is_string());
    }
    let (_, product) = server.get("/v1/products/pen").await;
    assert_eq!(
        (product["stock"].as_i64(), product["sold"].as_i64()),
        (Some(5), Some(0))
    );
    let (status, _, headers) = server
        .post(
            "/v1/products/pen/purchase",
            json!({"user": "u", "quantity": 2, "order_id": "same"}),
        )
        .await;
    assert_eq!(status, 201);
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, _, headers) = server
        .post(
            "/v1/products/pen/purchase",
            json!({"user": "u", "quantity": 2, "order_id": "same"}),
        )
        .await;
    assert_eq!(
        (status, headers["idempotent-replayed"].to_str().unwrap()),
        (200, "true")
    );
    let (_, product) = server.get("/v1/products/pen").await;
    assert_eq!(product["stock"], 3, "an order id buys once");
    let (status, _) = server.get("/v1/orders?status=lost").await;
    assert_eq!(status, 400);
    server.stop().await;
}

/// Two instances sharing Redis admit, together, what one would.
#[tokio::test]
async fn instances_sharing_redis_share_the_rate_limit() {
    let Ok(url) = std::env::var("COFFER_TEST_REDIS_URL") else {
        support::skipped("shared rate limits (set COFFER_TEST_REDIS_URL)");
        return;
    };
    let flags = ["--redis-url", url.as_str(), "--purchase-rate-per-minute", "5"];
    let mut first = TestServer::start(&flags).await;
    let mut second = TestServer::start(&flags).await;
    for server in [&first, &second] {
        let (status, body, _) = server.post("/v1/products", json!({"id": "mug", "stock": 1000})).await;
        assert_eq!(status, 201, "{body}");
    }
    // Redis keeps its state between runs: a user of this run only.
    let user = format!("shared-{}-{}", std::process::id(), support::unique());
    let client = reqwest::Client::new();
    let mut admitted = 0;
    for attempt in 0..20 {
        let base = if attempt % 2 == 0 { &first.base } else { &second.base };
        let (status, body) = purchase(&client, base, "mug", json!({"user": user})).await;
        match status {
            201 => admitted += 1,
            429 => assert!(body["error"]["details"]["retry_after_seconds"].as_u64().unwrap() >= 1),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(admitted, 5, "5 a minute across both instances, not 5 each");
    first.stop().await;
    second.stop().await;
}

/// With Redis unreachable, each instance still limits on its own.
#[tokio::test]
async fn an_unreachable_redis_falls_back_to_local_limits() {
    let flags = ["--redis-url", "redis://127.0.0.1:1", "--purchase-rate-per-minute", "3"];
    let mut server = TestServer::start(&flags).await;
    let (status, _, _) = server.post("/v1/products", json!({"id": "cup", "stock": 100})).await;
    assert_eq!(status, 201);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(purchase(&client, &server.base, "cup", json!({"user": "solo"})).await.0);
    }
    assert_eq!(statuses, [201, 201, 201, 429, 429]);
    server.stop().await;
}
