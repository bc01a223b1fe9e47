//! Memory per account, per open hold and per remembered id, measured with a
//! counting allocator (DESIGN.md §6 budget: ≤ 256 bytes per account and per
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

#[test]
fn bytes_per_account_hold_and_remembered_id() {
    // Ids are forgotten at once here, so the first figure is accounts alone.
    let limits = EngineLimits {
        idempotency_entries_max: 1,
        ..EngineLimits::default()
    };
    let mut engine = Engine::new(limits);
    let unit = Unit::parse("USD/2").unwrap();
    let open = |n: u64| {
        let account = AccountId::parse(&format!("customer:{n:08}")).unwrap();
        let op = Operation::Open {
            account,
            unit: unit.clone(),
            min_available: None,
            max_total: None,
            metadata: None,
        };
        transaction(format!("open-{n}"), op)
    };
    engine.apply_batch(1, &[open(u64::MAX)]);
    let batches: Vec<Vec<Transaction>> = (0..COUNT)
        .collect::<Vec<_>>()
        .chunks(8_192)
        .map(|chunk| chunk.iter().map(|n| open(*n)).collect())
        .collect();
    let before = ALLOCATED.load(Ordering::Relaxed);
    for batch in &batches {
        drop(engine.apply_batch(2, batch));
    }
    let per_account = (ALLOCATED.load(Ordering::Relaxed) - before) as f64 / COUNT as f64;

    let fund = transaction(
        "fund".into(),
        Operation::SetBalance {
            account: AccountId::parse("customer:00000001").unwrap(),
            available: coffer_core::Balance::new(1 << 40),
        },
    );
    engine.apply_batch(3, &[fund]);
    let holds: Vec<Vec<Transaction>> = (0..COUNT)
        .collect::<Vec<_>>()
        .chunks(8_192)
        .map(|chunk| {
            chunk
                .iter()
                .map(|n| {
                    let op = Operation::Hold {
                        hold: HoldId::parse(&format!("order:{n:08}")).unwrap(),
                        account: AccountId::parse("customer:00000001").unwrap(),
                        amount: Amount::new(1).unwrap(),
                        to: None,
                        expires_at_ms: None,
                        ttl_ms: Some(600_000),
                    };
                    transaction(format!("hold-{n}"), op)
                })
                .collect()
        })
        .collect();
    let before = ALLOCATED.load(Ordering::Relaxed);
    for batch in &holds {
        drop(engine.apply_batch(4, batch));
    }
    let per_hold = (ALLOCATED.load(Ordering::Relaxed) - before) as f64 / COUNT as f64;
    assert_eq!(engine.open_hold_count(), COUNT as usize);

    let mut window = Engine::new(EngineLimits::default());
    window.apply_batch(1, &[open(0)]);
    let deposits: Vec<Vec<Transaction>> = (0..COUNT)
        .collect::<Vec<_>>()
        .chunks(8_192)
        .map(|chunk| {
            chunk
                .iter()
                .map(|n| {
                    transaction(
                        format!("payment:{n:012}"),
                        Operation::deposit(AccountId::parse("customer:00000000").unwrap(), Amount::new(1).unwrap()),
                    )
                })
                .collect()
        })
        .collect();
    let before = ALLOCATED.load(Ordering::Relaxed);
    for batch in &deposits {
        drop(window.apply_batch(2, batch));
    }
    let per_id = (ALLOCATED.load(Ordering::Relaxed) - before) as f64 / COUNT as f64;
    println!("bytes per account {per_account:.0}, per open hold {per_hold:.0}, per remembered id {per_id:.0}");
    assert!(per_account <= 256.0, "{per_account} bytes per account");
    assert!(per_hold <= 256.0, "{per_hold} bytes per open hold");
    assert!(per_id <= 256.0, "{per_id} bytes per remembered transaction id");
}
