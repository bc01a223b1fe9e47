//! Linked chains: transactions of one batch, each linked to the next, that
//! apply all or none, each under its own id.

mod common;

use coffer_core::{Engine, Outcome, Rejection, RejectionCode, Transaction, Verdict};
use common::{transaction, Ledger};
use serde_json::json;

fn transfer(id: &str, from: &str, to: &str, amount: u64) -> Transaction {
    transaction(
        id,
        json!([{"type": "transfer", "from": from, "to": to, "amount": amount}]),
    )
}

fn funded() -> Ledger {
    let mut ledger = Ledger::new();
    ledger.open("a", "X");
    ledger.open("b", "X");
    ledger.ok(json!([{"type": "transfer", "from": "@world", "to": "a", "amount": 100}]));
    ledger
}

fn apply(ledger: &mut Ledger, batch: &[Transaction]) -> Vec<Outcome> {
    ledger.now_ms += 1;
    let outcome = ledger.engine.apply_batch(ledger.now_ms, batch);
    ledger.engine.check_invariants().expect("invariants hold");
    outcome.outcomes
}

fn verdict(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::New { record, .. } => record.verdict,
        other => panic!("expected a new outcome, got {other:?}"),
    }
}

fn rejected(code: RejectionCode, op_index: u16) -> Verdict {
    Verdict::Rejected(Rejection { code, op_index })
}

#[test]
fn a_chain_commits_each_transaction_under_its_own_id_with_its_own_effects() {
    let mut ledger = funded();
    let batch = Transaction::chain(vec![
        transfer("c1", "a", "b", 10),
        transfer("c2", "a", "b", 20),
        transfer("c3", "b", "a", 5),
    ]);
    let outcomes = apply(&mut ledger, &batch);
    let sequences: Vec<u64> = outcomes.iter().map(|outcome| outcome.record().sequence).collect();
    assert_eq!(sequences, vec![sequences[0], sequences[0] + 1, sequences[0] + 2]);
    for outcome in &outcomes {
        let Outcome::New { record, effects } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(record.verdict, Verdict::Committed);
        assert_eq!(effects.len(), 2, "each transfer reports its own two balances");
    }
    assert_eq!((ledger.balance("a"), ledger.balance("b")), ((75, 0), (25, 0)));
    for id in ["c1", "c2", "c3"] {
        let record = ledger.engine.transaction(&id.parse().unwrap()).expect("remembered");
        assert_eq!(record.verdict, Verdict::Committed);
    }
}

#[test]
fn a_rejection_anywhere_in_the_chain_applies_none_of_it() {
    let mut ledger = funded();
    let batch = Transaction::chain(vec![
        transfer("r1", "a", "b", 10),
        transfer("r2", "a", "b", 20),
        transfer("r3", "a", "b", 500),
    ]);
    let outcomes = apply(&mut ledger, &batch);
    let verdicts: Vec<Verdict> = outcomes.iter().map(verdict).collect();
    assert_eq!(
        verdicts,
        vec![
            rejected(RejectionCode::LinkedEventFailed, 0),
            rejected(RejectionCode::LinkedEventFailed, 0),
            rejected(RejectionCode::InsufficientFunds, 0),
        ]
    );
    assert_eq!((ledger.balance("a"), ledger.balance("b")), ((100, 0), (0, 0)));
    let versions: Vec<u64> = ledger.engine.accounts().map(|account| account.version).collect();
    // The retried chain answers the same, from what was remembered.
    let again = apply(&mut ledger, &batch);
    for (first, second) in outcomes.iter().zip(&again) {
        assert_eq!(second, &Outcome::Replayed(*first.record()));
    }
    assert_eq!(
        versions,
        ledger
            .engine
            .accounts()
            .map(|account| account.version)
            .collect::<Vec<_>>(),
        "nothing changed, versions included"
    );
}

#[test]
fn a_chain_with_a_reused_id_applies_nothing_and_leaves_its_new_ids_free() {
    let mut ledger = funded();
    apply(&mut ledger, &[transfer("old", "a", "b", 1)]);
    let batch = Transaction::chain(vec![transfer("fresh", "a", "b", 10), transfer("old", "a", "b", 2)]);
    let outcomes = apply(&mut ledger, &batch);
    assert!(matches!(outcomes[0], Outcome::NotApplied(_)), "{outcomes:?}");
    assert!(matches!(outcomes[1], Outcome::IdReused(_)), "{outcomes:?}");
    assert_eq!(ledger.balance("a"), (99, 0));
    assert!(ledger.engine.transaction(&"fresh".parse().unwrap()).is_none());
    // The id is still free: a corrected batch applies.
    let outcomes = apply(
        &mut ledger,
        &Transaction::chain(vec![transfer("fresh", "a", "b", 10), transfer("new", "a", "b", 2)]),
    );
    assert!(outcomes.iter().all(|outcome| verdict(outcome) == Verdict::Committed));
    assert_eq!(ledger.balance("a"), (87, 0));
}

#[test]
fn a_chain_left_open_at_the_end_of_its_batch_is_rejected_whole() {
    let mut ledger = funded();
    let batch = vec![transfer("o1", "a", "b", 10).linked_to_next(true)];
    let outcomes = apply(&mut ledger, &batch);
    assert_eq!(verdict(&outcomes[0]), rejected(RejectionCode::LinkedEventChainOpen, 0));
    assert_eq!(ledger.balance("a"), (100, 0));
}

#[test]
fn chains_and_single_transactions_mix_in_one_batch() {
    let mut ledger = funded();
    let mut batch = vec![transfer("s1", "a", "b", 1)];
    batch.extend(Transaction::chain(vec![
        transfer("m1", "a", "b", 2),
        transfer("m2", "a", "b", 1_000),
    ]));
    batch.push(transfer("s2", "a", "b", 3));
    batch.extend(Transaction::chain(vec![
        transfer("m3", "a", "b", 4),
        transfer("m4", "b", "a", 1),
    ]));
    // Enough singles after the chains that the prefetch ring wraps.
    batch.extend((0..40).map(|n| transfer(&format!("tail{n}"), "a", "b", 1)));
    let outcomes = apply(&mut ledger, &batch);
    assert_eq!(verdict(&outcomes[0]), Verdict::Committed);
    assert_eq!(verdict(&outcomes[2]), rejected(RejectionCode::InsufficientFunds, 0));
    assert_eq!(verdict(&outcomes[1]), rejected(RejectionCode::LinkedEventFailed, 0));
    assert!(outcomes[3..]
        .iter()
        .all(|outcome| verdict(outcome) == Verdict::Committed));
    assert_eq!(ledger.balance("a"), (100 - 1 - 3 - 4 + 1 - 40, 0));
    // Every id is found again where it was remembered.
    let again = apply(&mut ledger, &batch);
    assert!(
        again.iter().all(|outcome| matches!(outcome, Outcome::Replayed(_))),
        "{again:?}"
    );
}

#[test]
fn a_chain_replays_to_the_same_state_from_a_snapshot() {
    let mut ledger = funded();
    let mut copy = Engine::decode_snapshot(&snapshot(&ledger.engine), Default::default()).unwrap();
    let batch = Transaction::chain(vec![
        transfer("d1", "a", "b", 10),
        transaction(
            "d2",
            json!([{"type": "hold", "hold": "h", "account": "a", "amount": 5, "ttl_ms": 60_000}]),
        ),
        transfer("d3", "a", "b", 1_000),
    ]);
    let timestamp = ledger.now_ms + 1;
    apply(&mut ledger, &batch);
    assert_eq!(
        ledger.balance("a"),
        (100, 0),
        "the hold of a failed chain is undone too"
    );
    copy.apply_batch(timestamp, &batch);
    assert_eq!(copy.digest(), ledger.engine.digest());
}

fn snapshot(engine: &Engine) -> Vec<u8> {
    let mut bytes = Vec::new();
    engine.encode_snapshot(&mut bytes);
    bytes
}
