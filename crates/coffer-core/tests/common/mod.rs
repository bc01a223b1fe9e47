#![allow(dead_code)]
use coffer_core::{
    Engine, EngineLimits, Operation, Outcome, Rejection, RejectionCode, Transaction, TransactionId, Verdict,
};
use serde_json::Value;

pub fn transaction(id: &str, ops: Value) -> Transaction {
    let ops: Vec<Operation> = serde_json::from_value(ops).expect("test ops are valid JSON operations");
    Transaction::new(TransactionId::parse(id).unwrap(), ops, None).unwrap()
}

/// A small harness: one engine, a clock that advances one millisecond per
/// batch, and an invariant check after every step.
pub struct Ledger {
    pub engine: Engine,
    pub now_ms: u64,
    counter: u64,
}

impl Ledger {
    pub fn new() -> Self {
        Self::with_limits(EngineLimits::default())
    }

    pub fn with_limits(limits: EngineLimits) -> Self {
        Ledger {
            engine: Engine::new(limits),
            now_ms: 1_000,
            counter: 0,
        }
    }

    pub fn submit_as(&mut self, id: &str, ops: Value) -> Outcome {
        self.now_ms += 1;
        let mut batch = self.engine.apply_batch(self.now_ms, &[transaction(id, ops)]);
        self.engine
            .check_invariants()
            .expect("invariants hold after every batch");
        batch.outcomes.pop().unwrap()
    }

    pub fn submit(&mut self, ops: Value) -> Outcome {
        self.counter += 1;
        let id = format!("t{}", self.counter);
        self.submit_as(&id, ops)
    }

    pub fn ok(&mut self, ops: Value) {
        let outcome = self.submit(ops.clone());
        assert!(
            matches!(outcome, Outcome::New { record, .. } if record.verdict == Verdict::Committed),
            "expected commit of {ops}, got {outcome:?}"
        );
    }

    /// Asserts a rejection with `code` at `op_index` and that nothing changed.
    pub fn rejects(&mut self, ops: Value, code: RejectionCode, op_index: u16) {
        let before = self.state_without_idempotency();
        let outcome = self.submit(ops.clone());
        let expected = Verdict::Rejected(Rejection { code, op_index });
        assert!(
            matches!(&outcome, Outcome::New { record, effects } if record.verdict == expected && effects.is_empty()),
            "expected {code} at {op_index} for {ops}, got {outcome:?}"
        );
        assert_eq!(before, self.state_without_idempotency(), "a rejection changes nothing");
    }

    fn state_without_idempotency(&self) -> Vec<coffer_core::AccountView> {
        self.engine.accounts().collect()
    }

    pub fn balance(&self, id: &str) -> (i128, i128) {
        let view = self.engine.account(&id.parse().unwrap()).expect("account exists");
        (view.available, view.frozen)
    }

    pub fn open(&mut self, id: &str, unit: &str) {
        self.ok(serde_json::json!([{"type": "open", "account": id, "unit": unit}]));
    }

    pub fn deposit(&mut self, id: &str, amount: u64) {
        self.ok(serde_json::json!([{"type": "transfer", "from": "@world", "to": id, "amount": amount}]));
    }
}
