//! Writes seed inputs for every fuzz target into DIR/<target>/: valid
//! records, snapshots, operations and commands made by the real encoders,
//! so that the fuzzer starts from inputs that reach deep into each decoder.
//! Usage: seeds DIR

use coffer_core::{
    AccountId, Amount, Command, Engine, EngineLimits, HoldId, Operation, Transaction, TransactionId, Unit,
};
use coffer_journal::format::{encode_record, HEADER_BYTES};
use std::path::Path;

fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("valid account id")
}

fn transaction(name: &str, ops: Vec<Operation>) -> Transaction {
    Transaction::new(TransactionId::parse(name).expect("valid id"), ops, None).expect("valid transaction")
}

fn amount(value: u128) -> Amount {
    Amount::new(value).expect("positive")
}

fn workload() -> Vec<Transaction> {
    let unit = Unit::parse("USD/2").expect("valid unit");
    vec![
        transaction("open-a", vec![Operation::open(id("a"), unit.clone())]),
        transaction("open-b", vec![Operation::open(id("b"), unit)]),
        transaction("fund", vec![Operation::deposit(id("a"), amount(1_000))]),
        transaction("pay", vec![Operation::transfer(id("a"), id("b"), amount(250))]),
        transaction(
            "hold",
            vec![Operation::Hold {
                hold: HoldId::parse("h1").expect("valid hold id"),
                account: id("a"),
                amount: amount(100),
                to: Some(id("b")),
                expires_at_ms: None,
                ttl_ms: Some(60_000),
            }],
        ),
        transaction("short", vec![Operation::transfer(id("b"), id("a"), amount(1_000_000))]),
    ]
}

fn write(directory: &Path, target: &str, name: &str, bytes: &[u8]) {
    let folder = directory.join(target);
    std::fs::create_dir_all(&folder).expect("create the corpus folder");
    std::fs::write(folder.join(name), bytes).expect("write a seed");
}

fn main() {
    let directory = std::env::args().nth(1).expect("usage: seeds DIR");
    let directory = Path::new(&directory);
    let mut engine = Engine::new(EngineLimits::default());
    let transactions = workload();
    let outcome = engine.apply_batch(1_700_000_000_000, &transactions);
    let batch = coffer_journal::journal_batch(transactions.clone(), &outcome);
    let mut record = Vec::new();
    encode_record(&batch, &mut record);
    let count = (transactions.len() as u16).to_le_bytes();
    write(
        directory,
        "journal_record",
        "batch",
        &[&count[..], &record[HEADER_BYTES..]].concat(),
    );
    write(directory, "journal_record", "record", &record);

    let mut state = Vec::new();
    engine.encode_snapshot(&mut state);
    write(directory, "snapshot", "engine", &state);
    write(
        directory,
        "snapshot",
        "file",
        &coffer_journal::format::encode_snapshot_file(7, &state),
    );

    for (number, transaction) in transactions.iter().enumerate() {
        let command = serde_json::to_vec(&Command::of(transaction)).expect("serializes");
        write(directory, "command", &format!("command-{number}"), &command);
        for (index, op) in transaction.ops().iter().enumerate() {
            let json = serde_json::to_vec(op).expect("serializes");
            write(directory, "operation_json", &format!("op-{number}-{index}"), &json);
        }
    }
}
