//! Memory per account, per open hold and per remembered id, measured with a
//! counting allocator (budget: ≤ 256 bytes per account and per
//! open hold). Memory is deterministic, unlike time, so it is asserted.

use coffer_core::{AccountId, Amount, Engine, EngineLimits, HoldId, Operation, Transaction, TransactionId, Unit};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(pointer, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const COUNT: u64 = 200_000;

fn transaction(id: String, op: Operation) -> Transaction {
    Transaction::new(TransactionId::parse(&id).unwrap(), vec![op], None).unwrap()
}

/// Bytes the engine allocates per transaction of `make(n)`, for n in
/// 0..COUNT, applied in batches of 8,192 (the transactions themselves are
/// built before counting).
fn bytes_per_item(engine: &mut Engine, timestamp_ms: u64, make: impl Fn(u64) -> Transaction) -> f64 {
    let numbers: Vec<u64> = (0..COUNT).collect();
    let batches: Vec<Vec<Transaction>> = numbers
        .chunks(8_192)
        .map(|chunk| chunk.iter().map(|n| make(*n)).collect())
        .collect();
    let before = ALLOCATED.load(Ordering::Relaxed);
    for batch in &batches {
        drop(engine.apply_batch(timestamp_ms, batch));
    }
    (ALLOCATED.load(Ordering::Relaxed) - before) as f64 / COUNT as f64
}

fn customer(n: u64) -> AccountId {
    AccountId::parse(&format!("customer:{n:08}")).unwrap()
}

#[test]
fn bytes_per_account_hold_and_remembered_id() {
    let unit = Unit::parse("USD/2").unwrap();
    let open = |n: u64| transaction(format!("open-{n}"), Operation::open(customer(n), unit.clone()));

    // Ids are forgotten at once here, so these figures are accounts and holds alone.
    let mut engine = Engine::new(EngineLimits {
        idempotency_entries_max: 1,
        ..EngineLimits::default()
    });
    engine.apply_batch(1, &[open(u64::MAX)]);
    let per_account = bytes_per_item(&mut engine, 2, open);

    let fund = Operation::SetBalance {
        account: customer(1),
        available: coffer_core::Balance::new(1 << 40),
    };
    engine.apply_batch(3, &[transaction("fund".into(), fund)]);
    let per_hold = bytes_per_item(&mut engine, 4, |n| {
        let hold = HoldId::parse(&format!("order:{n:08}")).unwrap();
        let amount = Amount::new(1).unwrap();
        let op = Operation::Hold {
            hold,
            account: customer(1),
            amount,
            to: None,
            expires_at_ms: None,
            ttl_ms: Some(600_000),
        };
        transaction(format!("hold-{n}"), op)
    });
    assert_eq!(engine.open_hold_count(), COUNT as usize);

    let mut window = Engine::new(EngineLimits::default());
    window.apply_batch(1, &[open(0)]);
    let per_id = bytes_per_item(&mut window, 2, |n| {
        transaction(
            format!("payment:{n:012}"),
            Operation::deposit(customer(0), Amount::new(1).unwrap()),
        )
    });
    println!("bytes per account {per_account:.0}, per open hold {per_hold:.0}, per remembered id {per_id:.0}");
    assert!(per_account <= 256.0, "{per_account} bytes per account");
    assert!(per_hold <= 256.0, "{per_hold} bytes per open hold");
    assert!(per_id <= 256.0, "{per_id} bytes per remembered transaction id");
}
