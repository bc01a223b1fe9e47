//! `coffer bench --scenario kafka-ingest`: commands through the broker.

use super::client::Client;
use super::options::BenchOptions;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::json;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);
const WAIT_MAX: Duration = Duration::from_secs(600);

pub async fn run(client: &Client, options: &BenchOptions) -> anyhow::Result<()> {
    let count = options.count.unwrap_or(100_000);
    let applied_before = client.metric("coffer_kafka_commands_applied_total").await?;
    let published_before = client.metric("coffer_kafka_messages_published_total").await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &options.kafka_brokers)
        .set("enable.idempotence", "true")
        .create()?;
    let topic = format!("{}commands", options.kafka_topic_prefix);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let started = Instant::now();
    let mut deliveries = VecDeque::new();
    for number in 0..count {
        let from = number % options.accounts;
        let to = options.partner(from, (number + 1) % options.accounts);
        let (from, to) = (options.account_name(from), options.account_name(to));
        let ops = json!([{"type": "transfer", "from": from, "to": to, "amount": 1}]);
        let payload = json!({"id": format!("kafka-bench-{run:x}-{number}"), "ops": ops}).to_string();
        let mut record = FutureRecord::to(&topic).key("").payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    if let Some(oldest) = deliveries.pop_front() {
                        oldest.await?.map_err(|(error, _)| error)?;
                    }
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }
    while let Some(delivery) = deliveries.pop_front() {
        delivery.await?.map_err(|(error, _)| error)?;
    }
    let produced = started.elapsed();
    while client.metric("coffer_kafka_commands_applied_total").await? < applied_before + count as f64 {
        anyhow::ensure!(started.elapsed() < WAIT_MAX, "commands not applied within {WAIT_MAX:?}");
        tokio::time::sleep(POLL).await;
    }
    let applied = started.elapsed();
    while client.metric("coffer_kafka_publish_lag_transactions").await? > 0.0 {
        anyhow::ensure!(
            started.elapsed() < WAIT_MAX,
            "results and events not published within {WAIT_MAX:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let published = started.elapsed();
    let messages = client.metric("coffer_kafka_messages_published_total").await? - published_before;
    let report = json!({
        "scenario": "kafka-ingest",
        "commands": count,
        "produced_seconds": produced.as_secs_f64(),
        "applied_seconds": applied.as_secs_f64(),
        "published_seconds": published.as_secs_f64(),
        "commands_per_second": count as f64 / applied.as_secs_f64(),
        "messages_published": messages,
        "messages_published_per_second": messages / published.as_secs_f64(),
    });
    if options.json {
        println!("{report}");
    } else {
        println!("scenario      kafka-ingest (broker {})", options.kafka_brokers);
        println!(
            "commands      {count} produced in {:.2} s, applied after {:.2} s: {:.0} commands/s end to end",
            produced.as_secs_f64(),
            applied.as_secs_f64(),
            count as f64 / applied.as_secs_f64()
        );
        println!(
            "published     {messages:.0} results and events after {:.2} s: {:.0} messages/s",
            published.as_secs_f64(),
            messages / published.as_secs_f64()
        );
    }
    Ok(())
}
