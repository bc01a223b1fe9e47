//! The same input through two engines, one snapshotted and restored midway,
//! must give identical outcomes and identical state digests.

use coffer_core::{AccountId, Amount, Engine, EngineLimits, HoldId, Operation, Transaction, TransactionId, Unit};

/// A small deterministic generator, so the workload is reproducible without
/// a random source.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn account(n: u64) -> AccountId {
    AccountId::parse(&format!("acct:{n}")).unwrap()
}

fn workload(batches: usize) -> Vec<(u64, Vec<Transaction>)> {
    let mut random = SplitMix(42);
    let mut timestamp = 1_700_000_000_000u64;
    let mut counter = 0u64;
    let mut next_id = || {
        counter += 1;
        TransactionId::parse(&format!("tx-{counter}")).unwrap()
    };
    let opens: Vec<Transaction> = (0..300)
        .map(|n| {
            let unit = Unit::parse(if n % 3 == 0 { "ITEM" } else { "USD/2" }).unwrap();
            let ops = vec![
                Operation::Open {
                    account: account(n),
                    unit,
                    min_available: None,
                    max_total: None,
                    metadata: None,
                },
                Operation::deposit(account(n), Amount::new(10_000).unwrap()),
            ];
            Transaction::new(next_id(), ops, None).unwrap()
        })
        .collect();
    let mut result = vec![(timestamp, opens)];
    for batch_number in 0..batches {
        timestamp += random.below(40);
        let mut batch = Vec::new();
        for _ in 0..random.below(64) {
            let (from, to) = (account(random.below(310)), account(random.below(310)));
            let amount = Amount::new(u128::from(random.below(200) + 1)).unwrap();
            let hold = HoldId::parse(&format!("h{}", random.below(400))).unwrap();
            let op = match random.below(10) {
                0..=4 => Operation::Transfer { from, to, amount },
                5 | 6 => Operation::Hold {
                    hold,
                    account: from,
                    amount,
                    to: Some(to),
                    expires_at_ms: None,
                    ttl_ms: Some(random.below(500) + 1),
                },
                7 => Operation::Capture {
                    hold,
                    amount: None,
                    to: None,
                },
                8 => Operation::Release { hold },
                _ => Operation::SetBalance {
                    account: from,
                    available: coffer_core::Balance::new(random.below(5_000) as i128),
                },
            };
            // Every tenth transaction retries an id from earlier in the batch.
            let id = if batch_number % 10 == 0 && !batch.is_empty() {
                let earlier: &Transaction = &batch[0];
                earlier.id().clone()
            } else {
                next_id()
            };
            batch.push(Transaction::new(id, vec![op], None).unwrap());
        }
        result.push((timestamp, batch));
    }
    result
}

#[test]
fn snapshot_and_restore_midway_gives_the_same_state() {
    let limits = EngineLimits {
        idempotency_window_ms: 5_000,
        idempotency_entries_max: 4_000,
        ..EngineLimits::default()
    };
    let workload = workload(3_000);
    let mut straight = Engine::new(limits);
    let mut restored = Engine::new(limits);
    for (index, (timestamp, batch)) in workload.iter().enumerate() {
        if index == workload.len() / 2 {
            let mut bytes = Vec::new();
            restored.encode_snapshot(&mut bytes);
            restored = Engine::decode_snapshot(&bytes, limits).expect("snapshot decodes");
            assert_eq!(restored.digest(), straight.digest());
        }
        let first = straight.apply_batch(*timestamp, batch);
        let second = restored.apply_batch(*timestamp, batch);
        assert_eq!(first, second, "batch {index} diverged");
    }
    assert_eq!(straight.digest(), restored.digest());
    straight.check_invariants().unwrap();
    assert!(straight.open_hold_count() > 0 && straight.account_count() > 300);
}

#[test]
fn digests_differ_when_states_differ() {
    let limits = EngineLimits::default();
    let workload = workload(50);
    let mut first = Engine::new(limits);
    let mut second = Engine::new(limits);
    for (timestamp, batch) in &workload {
        first.apply_batch(*timestamp, batch);
        second.apply_batch(*timestamp, batch);
    }
    assert_eq!(first.digest(), second.digest());
    let extra = Operation::deposit(account(1), Amount::new(1).unwrap());
    second.apply_batch(
        0,
        &[Transaction::new(TransactionId::parse("extra").unwrap(), vec![extra], None).unwrap()],
    );
    assert_ne!(first.digest(), second.digest());
}

#[test]
fn corrupt_snapshots_are_refused_not_panicked_on() {
    let mut engine = Engine::new(EngineLimits::default());
    for (timestamp, batch) in workload(20) {
        engine.apply_batch(timestamp, &batch);
    }
    let mut bytes = Vec::new();
    engine.encode_snapshot(&mut bytes);
    for cut in (0..bytes.len()).step_by(7) {
        assert!(Engine::decode_snapshot(&bytes[..cut], EngineLimits::default()).is_err());
    }
    let mut refused = 0;
    for position in (0..bytes.len()).step_by(13) {
        let mut flipped = bytes.clone();
        flipped[position] ^= 0x5a;
        // Either refused, or (a flip inside a free-form value such as a
        // balance that keeps every invariant) a different, valid state.
        match Engine::decode_snapshot(&flipped, EngineLimits::default()) {
            Err(_) => refused += 1,
            Ok(decoded) => decoded.check_invariants().unwrap(),
        }
    }
    assert!(refused > 0);
}

/// Fingerprints are stored in snapshots and history stores and compared
/// with those of retries years later: their definition (xxh3-128 of the
/// body encoding) must never change. The constants were computed by the
/// byte-at-a-time encoder the format was defined with.
#[test]
fn fingerprints_are_stable_across_versions() {
    let transfer = Transaction::new(
        TransactionId::parse("payment-1").unwrap(),
        vec![Operation::Transfer {
            from: account(1),
            to: account(2),
            amount: Amount::new(12_345).unwrap(),
        }],
        None,
    )
    .unwrap();
    let hold = Transaction::new(
        TransactionId::parse("hold-1").unwrap(),
        vec![Operation::Hold {
            hold: HoldId::parse("order:1").unwrap(),
            account: account(1),
            amount: Amount::new(u128::MAX >> 1).unwrap(),
            to: Some(account(2)),
            expires_at_ms: None,
            ttl_ms: Some(60_000),
        }],
        None,
    )
    .unwrap();
    assert_eq!(
        format!("{:032x}", transfer.fingerprint()),
        "7e7498b7b4fe67228a96f0a27608367c"
    );
    assert_eq!(
        format!("{:032x}", hold.fingerprint()),
        "802fddb98aaa18cbb0421fb26cf42b8c"
    );
}

/// A snapshot source is taken on the engine thread and encoded later, on
/// another thread, while the engine goes on: its bytes must be the state at
/// the moment it was taken. The window (small here, so it crosses many of
/// its chunks, pops included) goes on growing and evicting meanwhile.
#[test]
fn a_snapshot_source_encodes_the_state_it_was_taken_at() {
    let limits = EngineLimits {
        idempotency_entries_max: 70_000,
        ..EngineLimits::default()
    };
    let mut engine = Engine::new(limits);
    let mut taken = Vec::new();
    let mut counter = 0u64;
    for (round, (timestamp, batch)) in workload(120).into_iter().enumerate() {
        engine.apply_batch(timestamp, &batch);
        // Many unique ids, so the window passes chunk boundaries and evicts.
        let deposits: Vec<Transaction> = (0..2_000)
            .map(|_| {
                counter += 1;
                let id = TransactionId::parse(&format!("bulk-{counter}")).unwrap();
                Transaction::new(id, vec![Operation::deposit(account(1), Amount::new(1).unwrap())], None).unwrap()
            })
            .collect();
        engine.apply_batch(timestamp, &deposits);
        if round % 10 == 0 {
            let mut expected = Vec::new();
            engine.encode_snapshot(&mut expected);
            taken.push((engine.snapshot_source(), expected));
        }
    }
    let encoder = std::thread::spawn(move || {
        for (source, expected) in taken {
            let mut bytes = Vec::new();
            source.encode(&mut bytes);
            assert!(bytes == expected, "the bytes of the state when taken");
        }
    });
    encoder.join().unwrap();
}
