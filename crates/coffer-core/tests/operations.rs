//! One test per operation and per rejection code.

mod common;

use coffer_core::{
    AccountId, Amount, Balance, CoreError, EngineLimits, HoldStatus, Metadata, Operation, Outcome, RejectionCode,
    Transaction, TransactionId, Unit, Verdict,
};
use common::{transaction, Ledger};
use serde_json::json;
use RejectionCode::*;

fn funded() -> Ledger {
    let mut ledger = Ledger::new();
    ledger.open("alice", "USD/2");
    ledger.open("bob", "USD/2");
    ledger.open("eve", "EUR/2");
    ledger.deposit("alice", 100);
    ledger
}

#[test]
fn open_creates_an_empty_account_and_its_world() {
    let mut ledger = Ledger::new();
    ledger.ok(json!([{"type": "open", "account": "alice", "unit": "USD/2", "metadata": {"tier": "gold"}}]));
    let view = ledger.engine.account(&"alice".parse().unwrap()).unwrap();
    assert_eq!((view.available, view.frozen, view.total, view.version), (0, 0, 0, 1));
    assert_eq!(view.metadata.unwrap().as_str(), r#"{"tier":"gold"}"#);
    assert!(ledger.engine.world_account(&Unit::parse("USD/2").unwrap()).is_some());
    ledger.rejects(
        json!([{"type": "open", "account": "alice", "unit": "USD/2"}]),
        AccountExists,
        0,
    );
}

#[test]
fn open_with_limits_outside_zero_is_rejected() {
    let mut ledger = Ledger::new();
    ledger.rejects(
        json!([{"type": "open", "account": "a", "unit": "X", "min_available": 5}]),
        LimitsViolated,
        0,
    );
    ledger.rejects(
        json!([{"type": "open", "account": "a", "unit": "X", "max_total": -1}]),
        LimitsViolated,
        0,
    );
    assert!(
        ledger.engine.units().is_empty(),
        "a rejected open leaves no unit behind"
    );
}

#[test]
fn deposit_transfer_and_withdrawal_move_money() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 30}]));
    ledger.ok(json!([{"type": "transfer", "from": "bob", "to": "@world", "amount": "10"}]));
    assert_eq!(ledger.balance("alice"), (70, 0));
    assert_eq!(ledger.balance("bob"), (20, 0));
    assert_eq!(ledger.engine.unit_sum(&Unit::parse("USD/2").unwrap()), Some(0));
}

#[test]
fn transfer_rejections() {
    let mut ledger = funded();
    let transfer =
        |from: &str, to: &str, amount: u64| json!([{"type": "transfer", "from": from, "to": to, "amount": amount}]);
    ledger.rejects(transfer("alice", "bob", 101), InsufficientFunds, 0);
    ledger.rejects(transfer("alice", "alice", 1), SameAccount, 0);
    ledger.rejects(transfer("@world", "@world", 1), SameAccount, 0);
    ledger.rejects(transfer("alice", "nobody", 1), AccountNotFound, 0);
    ledger.rejects(transfer("nobody", "alice", 1), AccountNotFound, 0);
    ledger.rejects(transfer("alice", "eve", 1), UnitMismatch, 0);
    let huge = json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": u128::MAX.to_string()}]);
    ledger.rejects(huge, AmountOverflow, 0);
}

#[test]
fn floor_allows_overdraft_down_to_it() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "set_limits", "account": "alice", "min_available": -50}]));
    ledger.ok(json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 150}]));
    assert_eq!(ledger.balance("alice"), (-50, 0));
    ledger.rejects(
        json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 1}]),
        InsufficientFunds,
        0,
    );
}

#[test]
fn ceiling_limits_the_total() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "set_limits", "account": "bob", "max_total": 10}]));
    ledger.ok(json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 10}]));
    ledger.rejects(
        json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 1}]),
        LimitExceeded,
        0,
    );
    ledger.ok(json!([{"type": "set_limits", "account": "bob", "max_total": null}]));
    ledger.ok(json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 1}]));
}

#[test]
fn set_limits_cannot_strand_the_current_balance() {
    let mut ledger = funded();
    ledger.rejects(
        json!([{"type": "set_limits", "account": "alice", "min_available": 101}]),
        LimitsViolated,
        0,
    );
    ledger.rejects(
        json!([{"type": "set_limits", "account": "alice", "max_total": 99}]),
        LimitsViolated,
        0,
    );
    ledger.rejects(
        json!([{"type": "set_limits", "account": "@world", "max_total": 99}]),
        WorldAccount,
        0,
    );
}

#[test]
fn transactions_are_atomic() {
    let mut ledger = funded();
    let ops = json!([
        {"type": "transfer", "from": "alice", "to": "bob", "amount": 60},
        {"type": "open", "account": "carol", "unit": "GBP/2"},
        {"type": "hold", "hold": "h1", "account": "bob", "amount": 10},
        {"type": "transfer", "from": "alice", "to": "bob", "amount": 60}
    ]);
    ledger.rejects(ops, InsufficientFunds, 3);
    assert!(ledger.engine.account(&"carol".parse().unwrap()).is_none());
    assert!(ledger.engine.hold(&"h1".parse().unwrap()).is_none());
    assert_eq!(ledger.engine.units().len(), 2, "GBP/2 was rolled back");
    // The hold id is free again: nothing of the rejected transaction remains.
    ledger.ok(json!([{"type": "hold", "hold": "h1", "account": "alice", "amount": 10}]));
}

#[test]
fn commit_effects_list_each_touched_account_once() {
    let mut ledger = funded();
    let tx = transaction(
        "pair",
        json!([
            {"type": "transfer", "from": "alice", "to": "bob", "amount": 5},
            {"type": "transfer", "from": "bob", "to": "alice", "amount": 2}
        ]),
    );
    let batch = ledger.engine.apply_batch(ledger.now_ms + 1, &[tx]);
    let effects = batch.effects_of(&batch.outcomes[0]);
    let names: Vec<_> = effects
        .iter()
        .map(|effect| ledger.engine.account_id(effect.account).to_string())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!((effects[0].available, effects[1].available), (97, 3));
    assert_eq!(
        effects[0].version, 3,
        "open, deposit, then one version for this transaction"
    );
}

#[test]
fn hold_capture_and_release() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "hold", "hold": "h1", "account": "alice", "amount": 40, "to": "bob"}]));
    assert_eq!(ledger.balance("alice"), (60, 40));
    ledger.ok(json!([{"type": "capture", "hold": "h1", "amount": 15}]));
    assert_eq!(ledger.balance("alice"), (60, 25));
    assert_eq!(ledger.balance("bob"), (15, 0));
    ledger.ok(json!([{"type": "release", "hold": "h1"}]));
    assert_eq!(ledger.balance("alice"), (85, 0));
    let hold = ledger.engine.hold(&"h1".parse().unwrap()).unwrap();
    assert_eq!(
        (hold.status, hold.captured, hold.remaining),
        (HoldStatus::Released, 15, 0)
    );
    ledger.rejects(json!([{"type": "capture", "hold": "h1"}]), HoldNotActive, 0);
    ledger.rejects(json!([{"type": "release", "hold": "h1"}]), HoldNotActive, 0);
}

#[test]
fn full_capture_defaults_to_the_remainder_and_to_world() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "hold", "hold": "h1", "account": "alice", "amount": 40}]));
    ledger.ok(json!([{"type": "capture", "hold": "h1"}]));
    assert_eq!(ledger.balance("alice"), (60, 0));
    assert_eq!(
        ledger.engine.hold(&"h1".parse().unwrap()).unwrap().status,
        HoldStatus::Captured
    );
    ledger.ok(json!([{"type": "hold", "hold": "h2", "account": "alice", "amount": 10}]));
    ledger.ok(json!([{"type": "capture", "hold": "h2", "to": "bob"}]));
    assert_eq!(ledger.balance("bob"), (10, 0));
}

#[test]
fn hold_rejections() {
    let mut ledger = funded();
    let hold = |extra: serde_json::Value| {
        let mut op = json!({"type": "hold", "hold": "h1", "account": "alice", "amount": 10});
        op.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!([op])
    };
    ledger.rejects(hold(json!({"amount": 101})), InsufficientFunds, 0);
    ledger.rejects(hold(json!({"account": "@world"})), WorldAccount, 0);
    ledger.rejects(hold(json!({"account": "ghost"})), AccountNotFound, 0);
    ledger.rejects(hold(json!({"to": "eve"})), UnitMismatch, 0);
    ledger.rejects(hold(json!({"to": "alice"})), SameAccount, 0);
    ledger.rejects(hold(json!({"expires_at_ms": 5})), InvalidExpiry, 0);
    ledger.ok(hold(json!({})));
    ledger.rejects(hold(json!({})), HoldExists, 0);
    ledger.rejects(
        json!([{"type": "capture", "hold": "h1", "amount": 11}]),
        CaptureExceedsHold,
        0,
    );
    ledger.rejects(json!([{"type": "capture", "hold": "h1", "to": "eve"}]), UnitMismatch, 0);
    ledger.rejects(
        json!([{"type": "capture", "hold": "h1", "to": "alice"}]),
        SameAccount,
        0,
    );
    ledger.rejects(json!([{"type": "capture", "hold": "nope"}]), HoldNotFound, 0);
    ledger.rejects(json!([{"type": "release", "hold": "nope"}]), HoldNotFound, 0);
}

#[test]
fn capture_respects_the_destination_ceiling() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "set_limits", "account": "bob", "max_total": 5}]));
    ledger.ok(json!([{"type": "hold", "hold": "h1", "account": "alice", "amount": 10, "to": "bob"}]));
    ledger.rejects(json!([{"type": "capture", "hold": "h1"}]), LimitExceeded, 0);
    ledger.ok(json!([{"type": "capture", "hold": "h1", "amount": 5}]));
}

#[test]
fn holds_expire_by_batch_time_in_order() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "hold", "hold": "late", "account": "alice", "amount": 10, "ttl_ms": 100}]));
    ledger.ok(json!([{"type": "hold", "hold": "early", "account": "alice", "amount": 20, "ttl_ms": 50}]));
    ledger.ok(json!([{"type": "hold", "hold": "never", "account": "alice", "amount": 5}]));
    assert_eq!(ledger.balance("alice"), (65, 35));
    let batch = ledger.engine.apply_batch(ledger.now_ms + 1_000, &[]);
    let expired: Vec<_> = batch.expired.iter().map(|expired| expired.hold.to_string()).collect();
    assert_eq!(expired, ["early", "late"]);
    assert_eq!(batch.expired[1].effect.available, 95);
    assert_eq!(ledger.balance("alice"), (95, 5));
    ledger.engine.check_invariants().unwrap();
    let hold = ledger.engine.hold(&"late".parse().unwrap()).unwrap();
    assert_eq!(hold.status, HoldStatus::Expired);
}

#[test]
fn capture_before_expiry_stops_the_expiry() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "hold", "hold": "h", "account": "alice", "amount": 10, "ttl_ms": 10}]));
    ledger.ok(json!([{"type": "capture", "hold": "h"}]));
    let batch = ledger.engine.apply_batch(ledger.now_ms + 1_000, &[]);
    assert!(batch.expired.is_empty());
}

#[test]
fn set_balance_moves_the_difference_from_world() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "set_balance", "account": "alice", "available": 500}]));
    assert_eq!(ledger.balance("alice"), (500, 0));
    ledger.ok(json!([{"type": "set_balance", "account": "alice", "available": "7"}]));
    assert_eq!(ledger.balance("alice"), (7, 0));
    ledger.rejects(
        json!([{"type": "set_balance", "account": "alice", "available": -1}]),
        InsufficientFunds,
        0,
    );
    ledger.ok(json!([{"type": "set_limits", "account": "alice", "max_total": 10}]));
    ledger.rejects(
        json!([{"type": "set_balance", "account": "alice", "available": 11}]),
        LimitExceeded,
        0,
    );
    ledger.rejects(
        json!([{"type": "set_balance", "account": "@world", "available": 1}]),
        WorldAccount,
        0,
    );
    ledger.rejects(
        json!([{"type": "set_balance", "account": "ghost", "available": 1}]),
        AccountNotFound,
        0,
    );
}

#[test]
fn closed_accounts_take_no_movements() {
    let mut ledger = funded();
    ledger.ok(json!([{"type": "hold", "hold": "h", "account": "alice", "amount": 10}]));
    ledger.ok(json!([{"type": "close", "account": "alice"}]));
    ledger.rejects(json!([{"type": "close", "account": "alice"}]), AccountClosed, 0);
    ledger.rejects(
        json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 1}]),
        AccountClosed,
        0,
    );
    ledger.rejects(
        json!([{"type": "transfer", "from": "bob", "to": "alice", "amount": 1}]),
        AccountClosed,
        0,
    );
    ledger.rejects(
        json!([{"type": "hold", "hold": "h2", "account": "alice", "amount": 1}]),
        AccountClosed,
        0,
    );
    ledger.rejects(
        json!([{"type": "set_balance", "account": "alice", "available": 1}]),
        AccountClosed,
        0,
    );
    ledger.ok(json!([{"type": "capture", "hold": "h", "to": "bob"}]));
    ledger.ok(json!([{"type": "close", "account": "bob"}]));
    ledger.rejects(
        json!([{"type": "hold", "hold": "h3", "account": "@world", "amount": 1}]),
        WorldAccount,
        0,
    );
    ledger.ok(json!([{"type": "reopen", "account": "alice"}]));
    ledger.rejects(json!([{"type": "reopen", "account": "alice"}]), AccountNotClosed, 0);
    ledger.rejects(json!([{"type": "close", "account": "@world"}]), WorldAccount, 0);
}

#[test]
fn capacity_limits_reject_new_accounts_and_holds() {
    let limits = EngineLimits {
        accounts_max: 3,
        holds_max: 1,
        ..EngineLimits::default()
    };
    let mut ledger = Ledger::with_limits(limits);
    ledger.open("a", "X");
    ledger.open("b", "X");
    ledger.rejects(
        json!([{"type": "open", "account": "c", "unit": "X"}]),
        CapacityExceeded,
        0,
    );
    ledger.rejects(
        json!([{"type": "open", "account": "c", "unit": "Y"}]),
        CapacityExceeded,
        0,
    );
    ledger.deposit("a", 10);
    ledger.ok(json!([{"type": "hold", "hold": "h1", "account": "a", "amount": 1}]));
    ledger.rejects(
        json!([{"type": "hold", "hold": "h2", "account": "a", "amount": 1}]),
        CapacityExceeded,
        0,
    );
}

#[test]
fn idempotent_replay_and_reused_id() {
    let mut ledger = funded();
    let ops = json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 10}]);
    let first = ledger.submit_as("pay-1", ops.clone());
    let Outcome::New { record, .. } = first else { panic!() };
    assert_eq!(ledger.submit_as("pay-1", ops.clone()), Outcome::Replayed(record));
    assert_eq!(ledger.balance("alice"), (90, 0), "applied once");
    let other = json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 11}]);
    assert_eq!(ledger.submit_as("pay-1", other), Outcome::IdReused(record));
    // Rejections are remembered too.
    let too_much = json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 1000}]);
    let rejected = ledger.submit_as("pay-2", too_much.clone());
    ledger.deposit("alice", 10_000);
    assert_eq!(
        ledger.submit_as("pay-2", too_much),
        Outcome::Replayed(*rejected.record())
    );
}

#[test]
fn idempotency_window_forgets_by_time_and_by_count() {
    let limits = EngineLimits {
        idempotency_window_ms: 1_000,
        idempotency_entries_max: 3,
        ..EngineLimits::default()
    };
    let mut ledger = Ledger::with_limits(limits);
    ledger.open("a", "X");
    for _ in 0..5 {
        ledger.deposit("a", 1);
    }
    assert_eq!(ledger.engine.idempotency_entry_count(), 3, "count bound");
    ledger.engine.apply_batch(ledger.now_ms + 2_000, &[]);
    assert_eq!(ledger.engine.idempotency_entry_count(), 0, "time bound");
}

#[test]
fn finished_holds_are_forgotten_after_the_window() {
    let limits = EngineLimits {
        idempotency_window_ms: 1_000,
        ..EngineLimits::default()
    };
    let mut ledger = Ledger::with_limits(limits);
    ledger.open("a", "X");
    ledger.deposit("a", 5);
    ledger.ok(json!([{"type": "hold", "hold": "h", "account": "a", "amount": 1}]));
    ledger.ok(json!([{"type": "release", "hold": "h"}]));
    ledger.engine.apply_batch(ledger.now_ms + 500, &[]);
    assert!(ledger.engine.hold(&"h".parse().unwrap()).is_some());
    ledger.engine.apply_batch(ledger.now_ms + 2_000, &[]);
    assert!(ledger.engine.hold(&"h".parse().unwrap()).is_none());
    assert_eq!(ledger.engine.open_hold_count(), 0);
}

#[test]
fn batch_timestamps_never_run_backwards() {
    let mut ledger = funded();
    let batch = ledger.engine.apply_batch(1, &[]);
    assert_eq!(batch.timestamp_ms, ledger.now_ms);
}

#[test]
fn every_rejection_code_has_a_stable_name() {
    let names: Vec<_> = RejectionCode::ALL.iter().map(|code| code.as_str()).collect();
    let json: Vec<String> = RejectionCode::ALL
        .iter()
        .map(|code| serde_json::to_value(code).unwrap().as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, json);
    for code in RejectionCode::ALL {
        assert_eq!(RejectionCode::from_u8(code as u8), Some(code));
    }
}

#[test]
fn identifiers_validate_on_parse() {
    assert!(AccountId::parse("user:42@shop-1.eu_west").is_ok());
    assert!(AccountId::parse("").is_err());
    assert!(AccountId::parse(&"a".repeat(129)).is_err());
    assert!(AccountId::parse(&"a".repeat(128)).is_ok());
    let error = AccountId::parse("bad id").unwrap_err();
    assert!(error.to_string().contains("' '"), "{error}");
    assert!(AccountId::parse("ünï").is_err());
    assert!(AccountId::parse("@world").unwrap().is_world());
}

#[test]
fn identifiers_allow_exactly_their_documented_bytes() {
    for byte in 0..=u8::MAX {
        let documented = byte.is_ascii_alphanumeric() || b"_.:@-".contains(&byte);
        let text = format!("a{}", char::from(byte));
        assert_eq!(AccountId::parse(&text).is_ok(), documented, "byte {byte}");
    }
}

#[test]
fn identifiers_and_units_read_from_json_as_they_parse() {
    let id: TransactionId = serde_json::from_str(r#""tx-1""#).unwrap();
    assert_eq!(id.as_str(), "tx-1");
    // An escaped string is unescaped first, then checked like any other.
    let account: AccountId = serde_json::from_str(r#""acct\u003a7""#).unwrap();
    assert_eq!(account.as_str(), "acct:7");
    let unit: Unit = serde_json::from_slice(br#""USD/2""#).unwrap();
    assert_eq!(unit.to_string(), "USD/2");
    let error = serde_json::from_str::<AccountId>(r#""bad id""#).unwrap_err();
    assert!(error.to_string().contains("' '"), "{error}");
    let error = serde_json::from_str::<TransactionId>("42").unwrap_err();
    assert!(error.to_string().contains("expected a string"), "{error}");
    assert!(serde_json::from_str::<Unit>(r#""USD/99""#).is_err());
}

#[test]
fn units_validate_on_parse() {
    for good in ["USD/2", "BTC/8", "ITEM", "X/0", "GAS/38"] {
        assert!(Unit::parse(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "/2",
        "USD/",
        "USD/02",
        "USD/39",
        "USD/-1",
        "US D",
        "USD/2/3",
        "A234567890123456789",
    ] {
        assert!(Unit::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn amounts_accept_numbers_and_decimal_strings_only() {
    let parse = |json: &str| serde_json::from_str::<Amount>(json);
    assert_eq!(parse("5").unwrap().value(), 5);
    assert_eq!(
        parse("\"340282366920938463463374607431768211455\"").unwrap().value(),
        u128::MAX
    );
    for bad in [
        "0",
        "-1",
        "1.5",
        "\"1.5\"",
        "\"\"",
        "\"12a\"",
        "true",
        "null",
        "\"340282366920938463463374607431768211456\"",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    assert_eq!(serde_json::from_str::<Balance>("\"-7\"").unwrap().value(), -7);
    // Beyond 64 bits, written as the decimal string it reads back from.
    assert_eq!(
        serde_json::to_string(&Amount::new(u128::MAX).unwrap()).unwrap(),
        format!("\"{}\"", u128::MAX)
    );
}

#[test]
fn operations_refuse_unknown_fields_and_bad_shapes() {
    let parse = |json: serde_json::Value| serde_json::from_value::<Operation>(json);
    assert!(parse(json!({"type": "transfer", "from": "a", "to": "b", "amount": 1, "memo": "x"})).is_err());
    assert!(parse(json!({"type": "teleport", "account": "a"})).is_err());
    assert!(parse(json!({"type": "transfer", "from": "a", "to": "b"})).is_err());
    assert!(parse(json!({"type": "transfer", "from": "a b", "to": "b", "amount": 1})).is_err());
    let both =
        parse(json!({"type": "hold", "hold": "h", "account": "a", "amount": 1, "ttl_ms": 5, "expires_at_ms": 9}));
    let id = TransactionId::parse("t").unwrap();
    assert!(Transaction::new(id.clone(), vec![both.unwrap()], None).is_err());
    assert!(Transaction::new(id.clone(), vec![], None).is_err());
    let open_world = parse(json!({"type": "open", "account": "@world", "unit": "X"})).unwrap();
    assert!(matches!(
        Transaction::new(id, vec![open_world], None),
        Err(CoreError::Unprocessable { .. })
    ));
}

#[test]
fn whole_numbers_read_as_integers_and_fractions_are_refused() {
    let amount = |json: serde_json::Value| serde_json::from_value::<Amount>(json).map(Amount::value);
    assert_eq!(amount(json!(5.0)).unwrap(), 5);
    assert_eq!(amount(json!(9_007_199_254_740_992.0)).unwrap(), 1 << 53);
    assert!(amount(json!(1.5)).is_err());
    assert!(amount(json!(0.0)).is_err(), "zero is no amount");
    assert!(
        amount(json!(18_014_398_509_481_984.0)).is_err(),
        "2^54 as a float: beyond exact doubles"
    );
    assert!(serde_json::from_str::<Amount>("1e3").is_ok_and(|amount| amount.value() == 1_000));
    assert_eq!(serde_json::from_value::<Balance>(json!(-7.0)).unwrap().value(), -7);
    // Decimal strings: one spelling per value.
    for text in ["\"007\"", "\"-0\"", "\"+1\"", "\"1.0\""] {
        assert!(serde_json::from_str::<Balance>(text).is_err(), "{text}");
    }
    let hold = |ttl: serde_json::Value| {
        serde_json::from_value::<Operation>(
            json!({"type": "hold", "hold": "h", "account": "a", "amount": 1, "ttl_ms": ttl}),
        )
    };
    assert!(matches!(
        hold(json!(60_000.0)).unwrap(),
        Operation::Hold {
            ttl_ms: Some(60_000),
            ..
        }
    ));
    assert!(matches!(
        hold(json!(null)).unwrap(),
        Operation::Hold { ttl_ms: None, .. }
    ));
    assert!(hold(json!(0.5)).is_err() && hold(json!(-1)).is_err() && hold(json!("5")).is_err());
    // An absolute expiry answers show as RFC 3339 ends with the year 9999.
    let at = |at: u64| {
        let op = serde_json::from_value::<Operation>(
            json!({"type": "hold", "hold": "h", "account": "a", "amount": 1, "expires_at_ms": at}),
        )
        .unwrap();
        Transaction::new(TransactionId::parse("t").unwrap(), vec![op], None)
    };
    assert!(at(coffer_core::limits::INSTANT_MS_MAX).is_ok());
    assert!(matches!(
        at(coffer_core::limits::INSTANT_MS_MAX + 1),
        Err(CoreError::Invalid { .. })
    ));
}

#[test]
fn metadata_is_a_small_canonical_object() {
    let metadata = Metadata::parse(r#"{"b": 1, "a": [true]}"#).unwrap();
    assert_eq!(metadata.as_str(), r#"{"a":[true],"b":1}"#);
    assert!(Metadata::parse("[1]").is_err());
    assert!(Metadata::parse(&format!(r#"{{"k": "{}"}}"#, "x".repeat(3000))).is_err());
}

#[test]
fn transaction_codec_round_trips() {
    let tx = transaction(
        "t-1",
        json!([
            {"type": "open", "account": "a", "unit": "USD/2", "min_available": -5, "max_total": 10, "metadata": {"k": 1}},
            {"type": "transfer", "from": "@world", "to": "a", "amount": 3},
            {"type": "hold", "hold": "h", "account": "a", "amount": 1, "to": "@world", "ttl_ms": 9},
            {"type": "capture", "hold": "h", "amount": 1, "to": "@world"},
            {"type": "release", "hold": "h"},
            {"type": "set_balance", "account": "a", "available": -3},
            {"type": "set_limits", "account": "a", "min_available": -9, "max_total": null},
            {"type": "set_limits", "account": "a", "max_total": 4},
            {"type": "close", "account": "a"},
            {"type": "reopen", "account": "a"}
        ]),
    );
    let mut buffer = Vec::new();
    tx.encode(&mut coffer_core::codec::Writer::new(&mut buffer));
    let mut reader = coffer_core::codec::Reader::new(&buffer);
    assert_eq!(coffer_core::Transaction::decode(&mut reader).unwrap(), tx);
    assert!(reader.is_empty());
    for cut in 0..buffer.len() {
        assert!(coffer_core::Transaction::decode(&mut coffer_core::codec::Reader::new(&buffer[..cut])).is_err());
    }
}

#[test]
fn verdicts_are_comparable() {
    let mut ledger = funded();
    let outcome = ledger.submit(json!([{"type": "transfer", "from": "alice", "to": "bob", "amount": 1}]));
    assert_eq!(outcome.record().verdict, Verdict::Committed);
}

#[test]
fn retained_finished_holds_never_block_new_holds() {
    let limits = EngineLimits {
        holds_max: 2,
        finished_holds_max: 3,
        ..EngineLimits::default()
    };
    let mut ledger = Ledger::with_limits(limits);
    ledger.open("a", "X");
    ledger.deposit("a", 1_000);
    for n in 0..10 {
        ledger.ok(json!([{"type": "hold", "hold": format!("h{n}"), "account": "a", "amount": 1}]));
        ledger.ok(json!([{"type": "capture", "hold": format!("h{n}")}]));
    }
    let remembered: Vec<_> = (0..10)
        .filter(|n| ledger.engine.hold(&format!("h{n}").parse().unwrap()).is_some())
        .collect();
    assert_eq!(remembered, [7, 8, 9], "the three most recent finished holds are kept");
    ledger.ok(json!([{"type": "hold", "hold": "open1", "account": "a", "amount": 1}]));
    ledger.ok(json!([{"type": "hold", "hold": "open2", "account": "a", "amount": 1}]));
    ledger.rejects(
        json!([{"type": "hold", "hold": "open3", "account": "a", "amount": 1}]),
        CapacityExceeded,
        0,
    );
}

/// Batches longer than the engine's prefetch pipeline (ids and accounts
/// hashed once, a dozen transactions ahead), with retries at every distance
/// inside a batch and across batches, and accounts opened inside the batch
/// that later transactions of it move money from: every outcome must be the
/// one a plain in-order application gives.
#[test]
fn long_batches_with_retries_at_every_distance_apply_in_order() {
    let mut ledger = Ledger::new();
    ledger.open("source", "USD/2");
    ledger.deposit("source", 1_000_000);
    let unit = Unit::parse("USD/2").unwrap();
    let account = |n: u64| AccountId::parse(&format!("holder:{n}")).unwrap();
    let transfer = |id: String, from: AccountId, to: AccountId| {
        let op = Operation::Transfer {
            from,
            to,
            amount: Amount::new(1).unwrap(),
        };
        Transaction::new(TransactionId::parse(&id).unwrap(), vec![op], None).unwrap()
    };
    let mut first_seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let (mut replayed, mut committed) = (0, 0);
    let mut timestamp_ms = 10;
    for round in 0..4u64 {
        let mut batch = Vec::new();
        for n in 0..300u64 {
            let index = round * 300 + n;
            let transaction = match n % 5 {
                // Open an account, then fund it from `source` two slots later.
                0 => Transaction::new(
                    TransactionId::parse(&format!("open-{index}")).unwrap(),
                    vec![Operation::open(account(index), unit.clone())],
                    None,
                )
                .unwrap(),
                2 => transfer(
                    format!("fund-{index}"),
                    AccountId::parse("source").unwrap(),
                    account(index - 2),
                ),
                // A retry of an id seen `n % 37` transactions earlier (maybe in an earlier batch).
                3 if index >= 40 => {
                    let earlier = index - 3 - (n % 37);
                    batch_id_of(earlier)
                        .map(|id| transfer(id, AccountId::parse("source").unwrap(), account(earlier - earlier % 5)))
                        .unwrap_or_else(|| transfer(format!("fresh-{index}"), account(index - 3), account(index - 3)))
                }
                _ => transfer(
                    format!("move-{index}"),
                    AccountId::parse("source").unwrap(),
                    account(index - n % 5),
                ),
            };
            batch.push(transaction);
        }
        timestamp_ms += 1;
        let outcome = ledger.engine.apply_batch(timestamp_ms, &batch);
        for (transaction, result) in batch.iter().zip(&outcome.outcomes) {
            let id = transaction.id().as_str().to_string();
            match result {
                Outcome::New { record, .. } => {
                    committed += usize::from(record.verdict == Verdict::Committed);
                    assert!(
                        !first_seen.contains_key(&id),
                        "{id} applied twice (first at {:?})",
                        first_seen.get(&id)
                    );
                    first_seen.insert(id, record.sequence);
                }
                Outcome::Replayed(record) => {
                    replayed += 1;
                    assert_eq!(
                        first_seen.get(&id),
                        Some(&record.sequence),
                        "{id} answered from another record"
                    );
                }
                Outcome::IdReused(_) => panic!("{id}: every retry here carries its original payload"),
                Outcome::NotApplied(_) => panic!("{id}: nothing here is linked"),
            }
        }
    }
    assert!(
        replayed >= 150 && committed >= 800,
        "{replayed} replayed, {committed} committed"
    );
    for (id, sequence) in &first_seen {
        let record = ledger.engine.transaction(&TransactionId::parse(id).unwrap());
        assert_eq!(
            record.map(|record| record.sequence),
            Some(*sequence),
            "{id} is remembered"
        );
    }
    ledger.engine.check_invariants().unwrap();
}

/// The id of transaction `index` of the test above, when it is a fund or
/// move transfer (the kinds that are retried).
fn batch_id_of(index: u64) -> Option<String> {
    match index % 300 % 5 {
        2 => Some(format!("fund-{index}")),
        1 | 4 => Some(format!("move-{index}")),
        _ => None,
    }
}
