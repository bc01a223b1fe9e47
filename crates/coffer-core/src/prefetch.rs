//! A cache hint, in a leaf module: the engine and both of its probe tables
//! prefetch, and none of them should import another to do it.

/// Asks the CPU to load every cache line of `value`. Random access over
/// millions of accounts and ids is bound by memory latency; issuing the
/// loads a few transactions early hides it.
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let address = value as *const T as *const i8;
        let lines = std::mem::size_of::<T>().div_ceil(64);
        for line in 0..lines {
            // SAFETY: prefetching is a hint; it never faults, whatever the address.
            #[allow(unused_unsafe)]
            unsafe {
                std::arch::x86_64::_mm_prefetch(address.wrapping_add(line * 64), std::arch::x86_64::_MM_HINT_T0);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
