//! A freed big table leaves the process (its own binary: the allocator's
//! policy and the resident size are the whole process's).

use dataplane::dpdk::huge::keep_big_allocations_mapped;

const MIB: usize = 1 << 20;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident field");
    pages * 4096
}

fn touched(bytes: usize) -> Vec<u8> {
    let v = vec![1u8; bytes];
    std::hint::black_box(v)
}

#[test]
fn a_big_table_freed_after_a_bigger_one_was_freed_goes_back_to_the_kernel() {
    keep_big_allocations_mapped();
    // glibc's own policy would now serve blocks up to 16 MiB from the heap
    // and keep them resident once freed.
    drop(touched(16 * MIB));
    let table = touched(8 * MIB);
    let with_table = resident_bytes();
    drop(table);
    let without = resident_bytes();
    assert!(
        with_table.saturating_sub(without) >= 7 * MIB,
        "resident {with_table} with the table, {without} after it was freed"
    );
}
