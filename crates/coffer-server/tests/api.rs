//! Every endpoint and every error status, against the real server.

mod support;

use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn walkthrough_open_deposit_transfer_hold_capture_release() {
    let mut server = TestServer::start(&[]).await;
    server.open("alice", "USD/2").await;
    server.open("bob", "USD/2").await;
    server.deposit("alice", 1_000).await;
    let (status, body, _) = server
        .post("/v1/transfers", json!({"from": "alice", "to": "bob", "amount": "250"}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "committed");
    assert_eq!(body["effects"][0]["account"], "alice");
    assert_eq!(body["effects"][0]["available"], 750);
    let (status, body, _) = server
        .post(
            "/v1/holds",
            json!({"hold": "h1", "account": "alice", "amount": 100, "to": "bob", "ttl_ms": 60000}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["hold"]["status"], "active");
    let (status, body, _) = server.post("/v1/holds/h1/capture", json!({"amount": 40})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["hold"]["remaining"], 60);
    let (status, body, _) = server.post("/v1/holds/h1/release", json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["hold"]["status"], "released");
    let (status, hold) = server.get("/v1/holds/h1").await;
    assert_eq!((status, hold["captured"].as_i64()), (200, Some(40)));
    assert_eq!(server.balance("alice").await, (710, 0));
    assert_eq!(server.balance("bob").await, (290, 0));
    let (status, body, _) = server
        .post("/v1/withdrawals", json!({"account": "bob", "amount": 90}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.balance("bob").await, (200, 0));
    // Durable across a restart.
    server.restart(&[]).await;
    assert_eq!(server.balance("alice").await, (710, 0));
    assert_eq!(server.balance("bob").await, (200, 0));
    server.stop().await;
}

#[tokio::test]
async fn transactions_endpoint_is_atomic_and_queryable() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "EUR/2").await;
    server.open("b", "EUR/2").await;
    server.deposit("a", 100).await;
    let ops = json!([
        {"type": "transfer", "from": "a", "to": "b", "amount": 60},
        {"type": "transfer", "from": "a", "to": "b", "amount": 60}
    ]);
    let (status, body, _) = server
        .post("/v1/transactions", json!({"id": "two-step", "ops": ops}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_funds");
    assert_eq!(body["error"]["details"]["op_index"], 1);
    assert_eq!(server.balance("a").await, (100, 0), "nothing applied");
    let (status, record) = server.get("/v1/transactions/two-step").await;
    assert_eq!((status, record["status"].as_str()), (200, Some("rejected")));
    assert_eq!(record["code"], "insufficient_funds");
    let (status, _) = server.get("/v1/transactions/never-seen").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn idempotent_replay_and_id_reuse() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "USD/2").await;
    let body = json!({"account": "a", "amount": 5});
    let (first, original, headers) = server.post_keyed("/v1/deposits", "pay-1", body.clone()).await;
    assert_eq!(first, 201);
    assert!(headers.get("idempotent-replayed").is_none());
    let (second, replay, headers) = server.post_keyed("/v1/deposits", "pay-1", body.clone()).await;
    assert_eq!(second, 200);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        (replay["id"].clone(), replay["seq"].clone()),
        (original["id"].clone(), original["seq"].clone())
    );
    assert_eq!(server.balance("a").await, (5, 0), "applied once");
    let (status, conflict, _) = server
        .post_keyed("/v1/deposits", "pay-1", json!({"account": "a", "amount": 6}))
        .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "id_reused");
    // A body id works the same as the header.
    let (status, _, _) = server
        .post("/v1/deposits", json!({"id": "pay-2", "account": "a", "amount": 1}))
        .await;
    assert_eq!(status, 201);
    let (status, _, headers) = server
        .post("/v1/deposits", json!({"id": "pay-2", "account": "a", "amount": 1}))
        .await;
    assert_eq!((status, headers.get("idempotent-replayed").is_some()), (200, true));
    assert_eq!(server.balance("a").await, (6, 0));
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_a_clear_400_and_changes_nothing() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "USD/2").await;
    server.open("b", "USD/2").await;
    server.deposit("a", 50).await;
    let before = server.all_accounts().await;
    let cases = [
        ("/v1/transfers", "{not json"),
        ("/v1/transfers", r#"{"from": "a", "to": "b", "amount": "ten"}"#),
        ("/v1/transfers", r#"{"from": "a", "to": "b", "amount": -5}"#),
        ("/v1/transfers", r#"{"from": "a", "to": "b", "amount": 0}"#),
        ("/v1/transfers", r#"{"from": "a", "to": "b", "amount": 1.5}"#),
        (
            "/v1/transfers",
            r#"{"from": "a", "to": "b", "amount": "340282366920938463463374607431768211456"}"#,
        ),
        ("/v1/transfers", r#"{"from": "a b", "to": "b", "amount": 1}"#),
        (
            "/v1/transfers",
            r#"{"from": "a", "to": "b", "amount": 1, "memo": "unknown field"}"#,
        ),
        ("/v1/transfers", r#"{"from": "a", "amount": 1}"#),
        ("/v1/transactions", r#"{"ops": []}"#),
        ("/v1/transactions", r#"{"ops": [{"type": "teleport", "account": "a"}]}"#),
        ("/v1/accounts", r#"{"id": "c", "unit": "usd//2"}"#),
        ("/v1/transfers", r#"{"from": "a", "to": "b", "amount": "007"}"#),
    ];
    for (path, body) in cases {
        let (status, answer) = server.post_raw(path, body).await;
        assert_eq!(status, 400, "{path} {body} -> {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    // Fields each well formed that cannot go together: 422, and the same no-op.
    let unprocessable = [
        (
            "/v1/holds",
            r#"{"hold": "h", "account": "a", "amount": 1, "ttl_ms": 5, "expires_at": "2030-01-01T00:00:00Z"}"#,
        ),
        (
            "/v1/transactions",
            r#"{"ops": [{"type": "open", "account": "@world", "unit": "USD/2"}]}"#,
        ),
        ("/v1/products", r#"{"id": "p", "price": 5}"#),
    ];
    for (path, body) in unprocessable {
        let (status, answer) = server.post_raw(path, body).await;
        assert_eq!(status, 422, "{path} {body} -> {answer}");
        assert_eq!(answer["error"]["code"], "unprocessable_request", "{answer}");
    }
    let mismatched = server
        .client
        .post(format!("{}/v1/transfers", server.base))
        .header("idempotency-key", "one")
        .json(&json!({"id": "other", "from": "a", "to": "b", "amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        mismatched.status(),
        422,
        "the Idempotency-Key header and the body id differ"
    );
    let (_, answer) = server
        .post_raw("/v1/transfers", r#"{"from": "a", "to": "b", "amount": 1, "memo": "x"}"#)
        .await;
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("memo"),
        "names the unknown field: {answer}"
    );
    let (status, _) = server.get("/v1/accounts/bad%20id").await;
    assert_eq!(status, 400);
    let (status, body) = server.get("/v1/nowhere").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("no_route")));
    let (status, _) = server.get("/v1/accounts/ghost").await;
    assert_eq!(status, 404);
    assert_eq!(server.all_accounts().await, before, "state unchanged");
    server.stop().await;
}

#[tokio::test]
async fn ledger_rules_answer_422_with_their_code() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "USD/2").await;
    server.open("b", "USD/2").await;
    server.open("e", "EUR/2").await;
    let cases = [
        (json!({"from": "a", "to": "b", "amount": 1}), "insufficient_funds"),
        (json!({"from": "a", "to": "ghost", "amount": 1}), "account_not_found"),
        (json!({"from": "a", "to": "e", "amount": 1}), "unit_mismatch"),
        (json!({"from": "a", "to": "a", "amount": 1}), "same_account"),
    ];
    for (body, code) in cases {
        let (status, answer, _) = server.post("/v1/transfers", body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some(code)),
            "{answer}"
        );
    }
    let (status, answer, _) = server.post("/v1/accounts", json!({"id": "a", "unit": "USD/2"})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("account_exists"))
    );
    let (status, answer, _) = server.post("/v1/holds/none/capture", json!({})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("hold_not_found"))
    );
    server.stop().await;
}

#[tokio::test]
async fn body_limit_answers_413() {
    let mut server = TestServer::start(&["--body-bytes-max", "1024"]).await;
    let big = "x".repeat(2_000);
    let (status, body, _) = server
        .post("/v1/transactions", json!({"ops": [], "metadata": {"k": big}}))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "body_too_large");
    server.stop().await;
}

#[tokio::test]
async fn api_keys_and_roles() {
    let keys = "admin:admin-key-0123456789,writer:writer-key-0123456789,reader:reader-key-0123456789";
    let mut server = TestServer::start(&["--api-key", keys]).await;
    let (status, body) = server.get("/v1/accounts").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    server.token = Some("wrong-key-0123456789".into());
    assert_eq!(server.get("/v1/accounts").await.0, 401);
    server.token = Some("reader-key-0123456789".into());
    assert_eq!(server.get("/v1/accounts").await.0, 200);
    let (status, body, _) = server.post("/v1/accounts", json!({"id": "a", "unit": "X"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    server.token = Some("writer-key-0123456789".into());
    server.open("a", "X").await;
    let set = json!({"ops": [{"type": "set_balance", "account": "a", "available": 5}]});
    assert_eq!(
        server.post("/v1/transactions", set.clone()).await.0,
        403,
        "balances are an admin's"
    );
    server.token = Some("admin-key-0123456789".into());
    assert_eq!(server.post("/v1/transactions", set).await.0, 201);
    assert_eq!(server.balance("a").await, (5, 0));
    server.token = None;
    assert_eq!(server.get("/healthz").await.0, 200, "health needs no key");
    server.stop().await;
}

#[tokio::test]
async fn refuses_a_public_address_without_keys() {
    let data = tempfile::tempdir().unwrap();
    let mut config = support::config(data.path(), &[]);
    config.listen = "0.0.0.0:0".parse().unwrap();
    let error = coffer_server::start(config.clone()).await.err().expect("refused");
    assert!(error.to_string().contains("--insecure-no-auth"), "{error}");
    config.insecure_no_auth = true;
    coffer_server::start(config)
        .await
        .expect("allowed when told")
        .stop()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let server = TestServer::start(&["--queue-capacity", "1", "--batch-transactions-max", "1"]).await;
    server.open("a", "X").await;
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for n in 0..400 {
        let server = std::sync::Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let (status, body, headers) = server
                .post(
                    "/v1/deposits",
                    json!({"id": format!("d{n}"), "account": "a", "amount": 1}),
                )
                .await;
            if status == 503 {
                assert_eq!(body["error"]["code"], "overloaded");
                assert!(headers.get("retry-after").is_some());
            } else {
                assert_eq!(status, 201, "{body}");
            }
            status
        }));
    }
    let mut committed = 0;
    let mut overloaded = 0;
    for task in tasks {
        match task.await.unwrap() {
            201 => committed += 1,
            _ => overloaded += 1,
        }
    }
    assert!(overloaded > 0, "a queue of one overflows under 400 concurrent requests");
    assert_eq!(
        server.balance("a").await,
        (committed, 0),
        "exactly the acknowledged deposits"
    );
}

/// Without Kafka, `mode=async` answers 202 once the write is durable (the
/// journal holds applied batches), with how it ended; retries (200, or 422
/// for a rejection, marked) and reused ids (409) answer as in sync mode.
#[tokio::test]
async fn async_mode_answers_202_once_durable() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "X").await;
    let ops = json!([{"type": "transfer", "from": "@world", "to": "a", "amount": 7}]);
    let (status, body, headers) = server
        .post("/v1/transactions?mode=async", json!({"id": "later", "ops": ops}))
        .await;
    assert_eq!((status, body["status"].as_str()), (202, Some("committed")), "{body}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (_, record) = server.get("/v1/transactions/later").await;
    assert_eq!(record["status"], "committed");
    assert_eq!(server.balance("a").await, (7, 0));

    // A retry answers as in sync mode: 200, the original outcome, marked.
    let (status, body, headers) = server
        .post("/v1/transactions?mode=async", json!({"id": "later", "ops": ops}))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("committed")), "{body}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(server.balance("a").await, (7, 0), "a retry applies nothing");

    let other = json!([{"type": "transfer", "from": "@world", "to": "a", "amount": 8}]);
    let (status, body, _) = server
        .post("/v1/transactions?mode=async", json!({"id": "later", "ops": other}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("id_reused")),
        "{body}"
    );

    let overdraw = json!([{"type": "transfer", "from": "a", "to": "@world", "amount": 100}]);
    let (status, body, _) = server
        .post("/v1/transactions?mode=async", json!({"id": "short", "ops": overdraw}))
        .await;
    assert_eq!(
        (status, body["status"].as_str(), body["code"].as_str()),
        (202, Some("rejected"), Some("insufficient_funds")),
        "{body}"
    );
    assert_eq!(server.balance("a").await, (7, 0));
    let (status, body, headers) = server
        .post("/v1/transactions?mode=async", json!({"id": "short", "ops": overdraw}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("insufficient_funds")),
        "{body}"
    );
    assert_eq!(headers["idempotent-replayed"], "true");

    let (status, _, _) = server.post("/v1/transactions?mode=later", json!({"ops": ops})).await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn batches_independent_and_atomic() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "X").await;
    server.open("b", "X").await;
    server.deposit("a", 10).await;
    let item = |id: &str, amount: u64| json!({"id": id, "ops": [{"type": "transfer", "from": "a", "to": "b", "amount": amount}]});
    let (status, body, _) = server
        .post(
            "/v1/transactions/batch",
            json!({"transactions": [item("i1", 4), item("i2", 40), item("i3", 4)]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<_> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["committed", "rejected", "committed"]);
    assert_eq!(server.balance("b").await, (8, 0));
    let only_ops = |amount: u64| json!({"ops": [{"type": "transfer", "from": "a", "to": "b", "amount": amount}]});
    let atomic = json!({"atomic": true, "id": "all-or-none", "transactions": [only_ops(1), only_ops(100)]});
    let (status, body, headers) = server.post("/v1/transactions/batch", atomic).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("insufficient_funds")),
        "{body}"
    );
    assert_eq!(headers.get("coffer-failed-item").unwrap(), "1");
    assert_eq!(server.balance("b").await, (8, 0), "nothing of the atomic batch applied");
    let atomic = json!({"atomic": true, "transactions": [only_ops(1), only_ops(1)]});
    assert_eq!(server.post("/v1/transactions/batch", atomic).await.0, 201);
    assert_eq!(server.balance("b").await, (10, 0));
    let (status, _, _) = server.post("/v1/transactions/batch", json!({"transactions": []})).await;
    assert_eq!(status, 400);
    server.stop().await;
}

/// `Prefer: return=minimal` (RFC 7240, among other preferences): per-item
/// id, status, code and sequence, no balances; the same outcomes.
#[tokio::test]
async fn batches_answer_minimally_when_asked() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "X").await;
    server.open("b", "X").await;
    server.deposit("a", 10).await;
    let item = |id: &str, amount: u64| json!({"id": id, "ops": [{"type": "transfer", "from": "a", "to": "b", "amount": amount}]});
    let batch = json!({"transactions": [item("m1", 4), item("m2", 40)]});
    let prefer = ("prefer", "respond-async, RETURN = minimal; x=1");
    let (status, body, headers) = server.post_with_header("/v1/transactions/batch", prefer, batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("preference-applied").unwrap(), "return=minimal");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "committed");
    assert_eq!(results[0]["replayed"], false);
    assert!(results[0]["seq"].is_u64());
    assert!(results[0].get("effects").is_none() && results[0].get("timestamp").is_none());
    assert_eq!(
        (
            results[1]["status"].as_str(),
            results[1]["code"].as_str(),
            results[1]["op_index"].as_u64()
        ),
        (Some("rejected"), Some("insufficient_funds"), Some(0))
    );
    // A retry is marked; a reused id is a conflict; the full answer is the default.
    let again = json!({"transactions": [item("m1", 4), item("m2", 5)]});
    let (_, body, _) = server.post_with_header("/v1/transactions/batch", prefer, again).await;
    let results = body["results"].as_array().unwrap();
    assert_eq!(
        (results[0]["status"].as_str(), results[0]["replayed"].as_bool()),
        (Some("committed"), Some(true))
    );
    assert_eq!(
        (results[1]["status"].as_str(), results[1]["code"].as_str()),
        (Some("conflict"), Some("id_reused"))
    );
    let (_, body, headers) = server
        .post("/v1/transactions/batch", json!({"transactions": [item("m3", 1)]}))
        .await;
    assert!(headers.get("preference-applied").is_none());
    assert!(body["results"][0]["effects"].is_array(), "{body}");
    assert_eq!(server.balance("b").await, (5, 0));
    server.stop().await;
}

/// Single writes honour `Prefer: return=minimal` too: id, status and
/// sequence; a replay keeps its 200 and header; a rejection keeps its
/// full error; without the preference the answer is full.
#[tokio::test]
async fn single_writes_answer_minimally_when_asked() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "X").await;
    server.open("b", "X").await;
    let prefer = ("prefer", "return=minimal");
    let deposit = json!({"id": "s0", "account": "a", "amount": 10});
    let (status, body, headers) = server.post_with_header("/v1/deposits", prefer, deposit).await;
    assert_eq!((status, body["status"].as_str()), (201, Some("committed")), "{body}");
    assert_eq!(headers.get("preference-applied").unwrap(), "return=minimal");
    let transfer = json!({"id": "s1", "from": "a", "to": "b", "amount": 4});
    let (status, body, _) = server.post_with_header("/v1/transfers", prefer, transfer.clone()).await;
    assert_eq!(status, 201, "{body}");
    let fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["id", "seq", "status"], "{body}");
    assert_eq!(body["id"], "s1");
    let (status, replay, headers) = server.post_with_header("/v1/transfers", prefer, transfer).await;
    assert_eq!((status, &replay), (200, &body));
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    let too_much = json!({"id": "s2", "ops": [{"type": "transfer", "from": "a", "to": "b", "amount": 100}]});
    let (status, body, headers) = server.post_with_header("/v1/transactions", prefer, too_much).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("insufficient_funds"))
    );
    assert!(headers.get("preference-applied").is_none());
    let (status, body, _) = server
        .post(
            "/v1/transfers",
            json!({"id": "s3", "from": "a", "to": "b", "amount": 1}),
        )
        .await;
    assert_eq!(status, 201);
    assert!(body["effects"].is_array(), "{body}");
    assert_eq!(server.balance("b").await, (5, 0));
    server.stop().await;
}

#[tokio::test]
async fn accounts_list_pages_with_cursors() {
    let mut server = TestServer::start(&[]).await;
    for n in 0..25 {
        server.open(&format!("user:{n:02}"), "X").await;
    }
    server.open("other", "X").await;
    let mut seen = Vec::new();
    let mut path = "/v1/accounts?prefix=user:&limit=10".to_owned();
    loop {
        let (status, page) = server.get(&path).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|account| account["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/accounts?prefix=user:&limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.iter().all(|id| id.starts_with("user:")));
    assert_eq!(server.get("/v1/accounts?limit=0").await.0, 400);
    assert_eq!(server.get("/v1/accounts?cursor=zzz").await.0, 400);
    server.stop().await;
}

#[tokio::test]
async fn operations_endpoints() {
    let mut server = TestServer::start(&[]).await;
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    server.open("a", "X").await;
    // Methods outside the standard set share one label value, so clients
    // cannot grow the metrics without bound.
    for method in ["BREW", "PROPFIND"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = server
            .client
            .request(method, format!("{}/healthz", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_owned();
    for metric in [
        "coffer_http_requests_total",
        "coffer_http_request_duration_seconds_bucket",
        "coffer_journal_fsync_seconds_last",
        "coffer_journal_fsync_seconds_bucket",
        "coffer_journal_written_bytes_total",
        "coffer_queue_depth",
        "coffer_engine_batch_transactions_bucket",
        "coffer_accounts",
        "coffer_open_holds",
        "coffer_idempotency_entries",
    ] {
        assert!(text.contains(metric), "missing {metric}");
    }
    // Every metric exported is in the server's table, of its kind, with
    // its HELP text.
    let mut typed = 0;
    for line in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').unwrap();
        let listed = coffer_server::telemetry::METRICS
            .iter()
            .find(|metric| metric.name == name)
            .unwrap_or_else(|| panic!("{name} is not in telemetry::METRICS"));
        assert_eq!(format!("{:?}", listed.kind).to_lowercase(), kind, "{name}");
        assert!(
            text.contains(&format!("# HELP {name} {}", listed.help)),
            "{name} has no HELP"
        );
        typed += 1;
    }
    assert!(typed >= 15, "{text}");
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(!text.contains("BREW") && !text.contains("PROPFIND"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn holds_expire_without_traffic() {
    let mut server = TestServer::start(&[
        "--keep-all-segments",
        "--snapshots-kept",
        "1",
        "--journal-segment-bytes",
        "1048576",
    ])
    .await;
    server.open("a", "X").await;
    server.deposit("a", 10).await;
    let (status, _, _) = server
        .post(
            "/v1/holds",
            json!({"hold": "short", "account": "a", "amount": 4, "ttl_ms": 100}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(server.balance("a").await, (6, 4));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(server.balance("a").await, (10, 0));
    assert_eq!(server.get("/v1/holds/short").await.1["status"], "expired");
    // The expiry was journaled: it survives a restart identically.
    server.restart(&[]).await;
    assert_eq!(server.get("/v1/holds/short").await.1["status"], "expired");
    assert_eq!(server.balance("a").await, (10, 0));
    server.stop().await;
}

#[tokio::test]
async fn a_single_node_says_it_is_not_in_a_cluster() {
    let mut server = TestServer::start(&[]).await;
    let (status, body) = server.get("/v1/cluster").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_cluster")),
        "{body}"
    );
    let (status, body) = server.get("/v1/cluster?account=a%20b").await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn openapi_document_and_swagger_ui() {
    let mut server = TestServer::start(&[]).await;
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], "3.1.0");
    let (status, page) = server.get("/docs/").await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap_or_default().contains("swagger"), "Swagger UI page");
    let methods = ["get", "post", "put", "patch", "delete"];
    let mut operation_ids = std::collections::HashSet::new();
    let operation_ids_all: std::collections::HashSet<&str> = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    for (path, item) in document["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", "doc-check");
        for method in methods {
            let request = server.client.request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{concrete}", server.base),
            );
            let response = request
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let unrouted = status == 405 || body["error"]["code"] == "no_route";
            match item.get(method) {
                // Every documented operation is served...
                Some(operation) => {
                    assert!(!unrouted, "{method} {path} is documented but not served: {status}");
                    let id = operation["operationId"].as_str().unwrap_or_default();
                    assert!(
                        !id.is_empty() && operation_ids.insert(id.to_owned()),
                        "{method} {path}: operationId {id:?}"
                    );
                    assert!(
                        operation["summary"].is_string() && operation["tags"].is_array(),
                        "{method} {path}"
                    );
                    for (code, answer) in operation["responses"].as_object().unwrap() {
                        let error = code.starts_with('4') || code.starts_with('5');
                        let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                        assert!(
                            !error || schema == "#/components/schemas/Error",
                            "{method} {path} {code}"
                        );
                        // Links name their target as OpenAPI spells it.
                        for link in answer["links"].as_object().into_iter().flat_map(|links| links.values()) {
                            let target = link["operationId"].as_str().unwrap_or_default();
                            assert!(operation_ids_all.contains(target), "{method} {path} {code}: {link}");
                        }
                    }
                }
                // ...and every method a documented path answers is documented.
                None => assert!(unrouted, "{method} {path} is served ({status}) but not documented"),
            }
        }
    }
    // Every schema a document refers to is in it.
    let text = document.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            document["components"]["schemas"][name].is_object(),
            "{name} is referred to, not defined"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn listing_a_rare_prefix_is_bounded_and_resumable() {
    let mut server = TestServer::start(&[]).await;
    let items: Vec<_> = (0..12_000)
        .map(|n| json!({"id": format!("open-{n}"), "ops": [{"type": "open", "account": format!("bulk:{n}"), "unit": "X"}]}))
        .collect();
    let (status, _, _) = server
        .post("/v1/transactions/batch", json!({"transactions": items[..6_000]}))
        .await;
    assert_eq!(status, 200);
    let (status, _, _) = server
        .post("/v1/transactions/batch", json!({"transactions": items[6_000..]}))
        .await;
    assert_eq!(status, 200);
    server.open("zz-rare", "X").await;
    // The first page examines at most 10,000 accounts: empty, with a cursor.
    let (status, page) = server.get("/v1/accounts?prefix=zz-&limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 0);
    let cursor = page["next_cursor"].as_str().expect("a cursor to continue").to_owned();
    let (_, page) = server
        .get(&format!("/v1/accounts?prefix=zz-&limit=10&cursor={cursor}"))
        .await;
    assert_eq!(page["data"][0]["id"], "zz-rare");
    assert!(page["next_cursor"].is_null());
    server.stop().await;
}

#[tokio::test]
async fn amounts_beyond_64_bits_are_answered_exactly() {
    // The raw text is checked: a JSON tree (the test client's, too) would
    // turn these numbers into floats.
    let mut server = TestServer::start(&[]).await;
    let raw = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let request = server
            .client
            .request(method.parse().unwrap(), format!("{}{path}", server.base));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let big = "340282366920938463463374607431768211455"; // u128::MAX: parses, cannot be held
    let huge = "100000000000000000000000000000"; // 10^29, well past 2^64
    let (status, text) = raw(
        "POST",
        "/v1/accounts",
        Some(json!({"id": "whale", "unit": "ETH/18", "max_total": huge})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert!(text.contains(&format!("\"max_total\":{huge}")), "{text}");
    raw("POST", "/v1/accounts", Some(json!({"id": "minnow", "unit": "ETH/18"}))).await;
    let (status, text) = raw(
        "POST",
        "/v1/deposits",
        Some(json!({"account": "whale", "amount": huge})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert!(text.contains(&format!("\"available\":{huge}")), "{text}");
    let hold = json!({"hold": "h", "account": "whale", "amount": huge, "to": "minnow"});
    let (status, text) = raw("POST", "/v1/holds", Some(hold)).await;
    assert_eq!(status, 201, "{text}");
    assert!(text.contains(&format!("\"remaining\":{huge}")), "{text}");
    let (status, text) = raw("GET", "/v1/accounts/whale", None).await;
    assert_eq!(status, 200);
    assert!(text.contains(&format!("\"frozen\":{huge}")), "{text}");
    let (status, text) = raw("GET", "/v1/accounts", None).await;
    assert_eq!(status, 200);
    assert!(text.contains(&format!("\"max_total\":{huge}")), "{text}");
    let capture = json!({"transactions": [{"ops": [{"type": "capture", "hold": "h"}]}]});
    let (status, text) = raw("POST", "/v1/transactions/batch", Some(capture)).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(&format!(
            "\"account\":\"minnow\",\"unit\":\"ETH/18\",\"available\":{huge}"
        )),
        "{text}"
    );
    let (status, text) = raw(
        "POST",
        "/v1/deposits",
        Some(json!({"account": "minnow", "amount": big})),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("amount_overflow"), "{text}");
    server.stop().await;
}

/// One `{…}` pair in an account id is its shard key; the id works in
/// bodies and in URL paths, percent-encoded or raw. Names that become
/// parts of other ids (products, jobs) keep the plain alphabet.
#[tokio::test]
async fn account_ids_carry_a_shard_key_in_braces() {
    let mut server = TestServer::start(&[]).await;
    server.open("user:{42}:wallet", "EUR/2").await;
    server.open("user:{42}:savings", "EUR/2").await;
    server.deposit("user:{42}:wallet", 500).await;
    let (status, body, _) = server
        .post(
            "/v1/transfers",
            json!({"from": "user:{42}:wallet", "to": "user:{42}:savings", "amount": 200}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, account) = server.get("/v1/accounts/user:%7B42%7D:wallet").await;
    assert_eq!(
        (status, account["id"].as_str()),
        (200, Some("user:{42}:wallet")),
        "{account}"
    );
    assert_eq!(account["available"], 300);
    let (status, page) = server.get("/v1/accounts/user:%7B42%7D:savings/history").await;
    assert_eq!(
        (status, page["data"][0]["available"].as_i64()),
        (200, Some(200)),
        "{page}"
    );

    // A raw request line, as some clients send it.
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request =
        format!("GET /v1/accounts/user:{{42}}:savings HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""id":"user:{42}:savings""#), "{answer}");

    for (path, body) in [
        ("/v1/accounts", json!({"id": "a{b", "unit": "X"})),
        ("/v1/accounts", json!({"id": "{}", "unit": "X"})),
        ("/v1/accounts", json!({"id": "{a}{b}", "unit": "X"})),
        ("/v1/products", json!({"id": "p{1}", "stock": 1})),
    ] {
        let (status, answer, _) = server.post(path, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, answer, _) = server
        .put(
            "/v1/balances/batch",
            json!({"id": "job{1}", "unit": "X", "balances": {"a": 1}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    server.stop().await;
}

/// An atomic batch whose items carry ids is a linked chain: all or none,
/// each item its own idempotency key, found by its id, retried safely.
#[tokio::test]
async fn linked_batches_apply_all_or_none_under_their_own_ids() {
    let mut server = TestServer::start(&[]).await;
    server.open("a", "X").await;
    server.open("b", "X").await;
    server.deposit("a", 100).await;
    let item = |id: &str, from: &str, to: &str, amount: u64| json!({"id": id, "ops": [{"type": "transfer", "from": from, "to": to, "amount": amount}], "metadata": {"item": id}});
    let failing = json!({"atomic": true, "transactions": [
        item("l1", "a", "b", 10), item("l2", "a", "b", 20), item("l3", "a", "b", 500)
    ]});
    let (status, body, headers) = server.post("/v1/transactions/batch", failing.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("insufficient_funds")),
        "{body}"
    );
    assert_eq!(
        (
            headers["coffer-failed-item"].to_str().unwrap(),
            headers["coffer-failed-item-op"].to_str().unwrap()
        ),
        ("2", "0")
    );
    assert_eq!(body["error"]["details"]["transaction"]["item"], 2, "{body}");
    assert_eq!(
        (server.balance("a").await, server.balance("b").await),
        ((100, 0), (0, 0)),
        "nothing applied"
    );
    let (_, l1) = server.get("/v1/transactions/l1").await;
    assert_eq!(
        (l1["status"].as_str(), l1["code"].as_str()),
        (Some("rejected"), Some("linked_event_failed")),
        "{l1}"
    );
    let (_, l3) = server.get("/v1/transactions/l3").await;
    assert_eq!(l3["code"], "insufficient_funds", "{l3}");
    // The whole batch again: the same answer, marked as a replay.
    let (status, again, headers) = server.post("/v1/transactions/batch", failing).await;
    assert_eq!((status, &again["error"]["code"]), (422, &body["error"]["code"]));
    assert_eq!(headers["idempotent-replayed"], "true");

    let committing = json!({"atomic": true, "transactions": [item("k1", "a", "b", 10), item("k2", "b", "a", 5)]});
    let (status, body, _) = server.post("/v1/transactions/batch", committing.clone()).await;
    assert_eq!(status, 201, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["committed", "committed"]);
    assert_eq!(
        (server.balance("a").await, server.balance("b").await),
        ((95, 0), (5, 0))
    );
    let (_, k2) = server.get("/v1/transactions/k2").await;
    assert_eq!(k2["status"], "committed", "{k2}");
    // The history follows the journal: each item is its own entry.
    let (status, page) = server.get("/v1/accounts/b/history").await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["transaction_id"].as_str())
        .collect();
    assert_eq!(ids[..2], ["k2", "k1"], "{page}");
    let (status, again, headers) = server.post("/v1/transactions/batch", committing).await;
    assert_eq!(
        (status, &again["results"][0]["replayed"]),
        (200, &json!(true)),
        "{again}"
    );
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(server.balance("a").await, (95, 0), "a retry applies nothing");

    // An id reused with another payload: 409, nothing applied, the new id stays free.
    let reusing = json!({"atomic": true, "transactions": [item("k9", "a", "b", 1), item("k1", "a", "b", 99)]});
    let (status, body, _) = server.post("/v1/transactions/batch", reusing).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("id_reused")),
        "{body}"
    );
    assert_eq!(server.balance("a").await, (95, 0));
    assert_eq!(server.get("/v1/transactions/k9").await.0, 404);
    let (status, _, _) = server
        .post(
            "/v1/transactions/batch",
            json!({"atomic": true, "transactions": [item("k9", "a", "b", 1)]}),
        )
        .await;
    assert_eq!(status, 201);

    for bad in [
        json!({"atomic": true, "transactions": [item("m1", "a", "b", 1), {"ops": [{"type": "transfer", "from": "a", "to": "b", "amount": 1}]}]}),
        json!({"atomic": true, "id": "whole", "transactions": [item("m2", "a", "b", 1)]}),
        json!({"atomic": true, "transactions": [item("m3", "a", "b", 1), item("m3", "a", "b", 1)]}),
    ] {
        let (status, body, _) = server.post("/v1/transactions/batch", bad.clone()).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "unprocessable_request", "{body}");
    }
    assert_eq!(server.balance("a").await, (94, 0), "no bad batch changed anything");
    server.stop().await;
}
