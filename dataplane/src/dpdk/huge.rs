//! Big tables on transparent huge pages: a session index or slab of
//! hundreds of megabytes read at random takes a TLB miss per look-up on
//! 4 KiB pages; on 2 MiB pages its page-table walk stays in cache. Only
//! for tables made full size at start, their pages touched then: a huge
//! page's first touch may have the kernel compact memory for milliseconds
//! (5-9 ms measured here), so tables that grow in the worker stay on
//! small pages.

/// Tables smaller than a huge page gain nothing.
const HUGE_PAGE: usize = 2 << 20;
const PAGE: usize = 4096;

/// A vector of `n` copies of `fill` whose memory the kernel is asked to
/// back with transparent huge pages (`madvise(MADV_HUGEPAGE)`) before it
/// is first touched, when it spans at least one. Where the kernel has
/// them off, or refuses, the vector is the same on small pages. `None`
/// when the memory cannot be had at all.
pub fn huge_vec<T: Clone>(n: usize, fill: T) -> Option<Vec<T>> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(n).ok()?;
    advise_huge(v.as_mut_ptr() as usize, v.capacity() * std::mem::size_of::<T>());
    v.resize(n, fill);
    Some(v)
}

/// Reserves room for `extra` more elements, advises it huge the same way
/// and touches every page of it now (for a slab made full size up
/// front): a huge page's first touch may have the kernel compact memory
/// for milliseconds, which belongs at start, not in the worker.
pub fn reserve_huge<T>(v: &mut Vec<T>, extra: usize) -> Option<()> {
    v.try_reserve_exact(extra).ok()?;
    let start = v.as_ptr() as usize + v.len() * std::mem::size_of::<T>();
    advise_huge(start, (v.capacity() - v.len()) * std::mem::size_of::<T>());
    let per_page = (PAGE / std::mem::size_of::<T>().max(1)).max(1);
    let spare = v.spare_capacity_mut();
    for e in spare.iter_mut().step_by(per_page) {
        *e = std::mem::MaybeUninit::zeroed();
    }
    std::hint::black_box(spare);
    Some(())
}

/// Allocations from this size up get mappings of their own.
const OWN_MAPPING_FROM: usize = 1 << 20;

/// Has every allocation of 1 MiB or more made by a mapping of its own,
/// returned to the kernel when freed. glibc's default threshold rises to
/// the size of the last big block freed (up to 32 MiB), so after a
/// session index's first growth the next tables came from the heap, and
/// the old ones, freed after their keys moved, stayed resident under
/// newer blocks: the process kept its peak memory. Call once, at start,
/// before any table is made.
pub fn keep_big_allocations_mapped() {
    // SAFETY: mallopt only changes the allocator's policy for later
    // allocations; blocks already handed out keep working.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_FROM as libc::c_int);
    }
}

fn advise_huge(start: usize, len: usize) {
    if len < HUGE_PAGE {
        return;
    }
    // madvise takes whole pages: the pages inside the range only.
    let first = start.next_multiple_of(PAGE);
    let end = (start + len) & !(PAGE - 1);
    if end <= first {
        return;
    }
    // SAFETY: [first, end) lies inside an allocation this process owns
    // and nothing else uses yet; MADV_HUGEPAGE changes how the kernel
    // backs those pages, never their contents (untouched pages read as
    // zero either way). A failure leaves small pages, which is correct.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kilobytes of huge pages backing the mapping that holds `addr`
    /// (its `AnonHugePages` line in /proc/self/smaps).
    fn huge_kb_at(addr: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                    return kb.trim().trim_end_matches(" kB").trim().parse().ok();
                }
            }
        }
        None
    }

    /// Memory that cannot be had is an answer, not an abort.
    #[test]
    fn a_table_larger_than_the_address_space_is_refused() {
        assert!(huge_vec(usize::MAX / 64, 0u64).is_none());
        let mut v: Vec<u64> = Vec::new();
        assert_eq!(reserve_huge(&mut v, usize::MAX / 64), None);
    }

    /// Where the kernel offers transparent huge pages at all, a table of
    /// 16 MiB gets some.
    #[test]
    fn a_big_table_is_backed_by_huge_pages_where_the_kernel_offers_them() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        let v = huge_vec(16 << 20, 1u8).expect("16 MiB");
        let kb = huge_kb_at(v.as_ptr() as usize + (8 << 20));
        if thp.contains("[never]") || thp.is_empty() {
            eprintln!("transparent huge pages off here: nothing to check");
            return;
        }
        assert!(kb.is_some_and(|kb| kb >= 2048), "{kb:?} kB of huge pages ({thp})");
    }

    #[test]
    fn a_huge_vec_holds_its_fill_and_length() {
        let v = huge_vec(3 << 20, 7u8).expect("3 MiB");
        assert_eq!((v.len(), v[0], v[(3 << 20) - 1]), (3 << 20, 7, 7));
        let mut w: Vec<u64> = vec![1, 2];
        assert_eq!(reserve_huge(&mut w, 1 << 20), Some(()));
        assert!(w.capacity() >= 2 + (1 << 20));
        assert_eq!(w, [1, 2]);
    }
}
