//! Mbuf ownership on real DPDK: after every path a packet can take (RX then
//! TX, RX then drop, a TX burst the port refuses, a worker forwarding a
//! burst), the pool's in-use count returns to exactly zero.
//!
//! One EAL per process: every test here shares it through a `OnceLock` and
//! makes its own pool and ports, so the tests may run in parallel.

use std::sync::atomic::Ordering;

mod common;
use common::{alloc_n, ring_port, started};

use dataplane::dpdk::mbuf::MbufStash;
use dataplane::dpdk::mempool::DEFAULT_DATA_ROOM;
use dataplane::dpdk::ring::{vdev_create, RingPort};
use dataplane::dpdk::{Mbuf, Mempool, RxBurst, TxBatch};
use dataplane::nf::{Forward, Side};

fn pool(name: &str) -> Mempool {
    common::pool(name, 1023, DEFAULT_DATA_ROOM)
}

fn split_ring_port(name: &str, pool: &Mempool) -> RingPort {
    ring_port(name, Some((256, 256)), 0, pool)
}

/// Runs a `forward` worker over two ports until `done(counters)` or 10 s.
fn run_forward_worker(
    inside: &RingPort,
    outside: &RingPort,
    owned: bool,
    done: impl Fn(&dataplane::stats::CounterSnapshot) -> bool,
) -> dataplane::stats::CounterSnapshot {
    let (t, shared, quit) = common::spawn_standalone(Forward, inside, outside, owned);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done(&shared.counters.snapshot()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    quit.store(true, Ordering::SeqCst);
    t.join().unwrap();
    shared.counters.snapshot()
}

#[test]
fn rx_then_tx_returns_every_mbuf_to_the_pool() {
    let pool = pool("own_rxtx");
    let src = started(vdev_create("net_null_rxtx_a", "size=64").unwrap(), &pool);
    let dst = started(vdev_create("net_null_rxtx_b", "size=64").unwrap(), &pool);
    let mut burst = RxBurst::<32>::default();
    let mut batch = TxBatch::<32>::default();
    let n = src.rx_queue(0).rx_burst(&mut burst);
    assert_eq!(n, 32);
    assert_eq!(pool.in_use(), 32);
    while let Some(m) = burst.pop() {
        batch.push(m).map_err(|_| "full").unwrap();
    }
    let out = dst.tx_queue(0).tx_burst(&mut batch);
    assert_eq!((out.sent, out.refused), (32, 0));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn rx_then_drop_returns_every_mbuf_to_the_pool() {
    let pool = pool("own_rxdrop");
    let src = started(vdev_create("net_null_rxdrop", "size=64").unwrap(), &pool);
    let mut burst = RxBurst::<32>::default();
    assert_eq!(src.rx_queue(0).rx_burst(&mut burst), 32);
    let first = burst.pop().expect("a packet");
    assert_eq!(first.pkt_len(), 64);
    drop(first);
    assert_eq!(pool.in_use(), 31);
    drop(burst);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_burst_drained_onto_a_vector_keeps_its_order_and_owns_each_mbuf_once() {
    let pool = pool("own_drain");
    let ring = ring_port("ring_drain", None, 64, &pool);
    // Packet i's first byte is i (alloc_n).
    assert!(ring.inject(alloc_n(&pool, 12, 60)).is_empty());
    let mut burst = RxBurst::<32>::default();
    assert_eq!(ring.port.rx_queue(0).rx_burst(&mut burst), 12);
    let first = burst.pop().expect("a packet");
    let mut v = vec![first];
    burst.drain_into(&mut v);
    assert!(burst.is_empty());
    assert_eq!(
        v.iter().map(|m| m.data()[0]).collect::<Vec<_>>(),
        (0..12).collect::<Vec<u8>>()
    );
    assert_eq!(pool.in_use(), 12);
    drop(burst);
    assert_eq!(pool.in_use(), 12, "the burst no longer owns what it gave");
    drop(v);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_batch_takes_what_fits_from_the_front_of_a_vector_and_leaves_the_rest_in_order() {
    let pool = pool("own_append");
    let mut v = alloc_n(&pool, 10, 60);
    let mut batch = TxBatch::<8>::default();
    batch
        .push(alloc_n(&pool, 1, 60).pop().unwrap())
        .map_err(|_| "full")
        .unwrap();
    assert_eq!(batch.append_vec(&mut v), 7);
    assert_eq!(v.iter().map(|m| m.data()[0]).collect::<Vec<_>>(), [7, 8, 9]);
    assert!(batch.is_full());
    assert_eq!(batch.append_vec(&mut v), 0, "a full batch takes nothing");
    assert_eq!(v.len(), 3);
    assert_eq!(pool.in_use(), 11);
    let ring = ring_port("ring_append", None, 64, &pool);
    assert_eq!(ring.port.tx_queue(0).tx_burst(&mut batch).sent, 8);
    let mut burst = RxBurst::<32>::default();
    assert_eq!(ring.port.rx_queue(0).rx_burst(&mut burst), 8);
    let sent: Vec<u8> = std::iter::from_fn(|| burst.pop()).map(|m| m.data()[0]).collect();
    assert_eq!(
        sent,
        [0, 0, 1, 2, 3, 4, 5, 6],
        "the batch's own packet, then the vector's first seven"
    );
    drop(v);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn tx_burst_frees_the_packets_a_full_ring_refuses() {
    let pool = pool("own_refuse");
    // A 16-slot ring holds 15 packets; the TX burst offers 32.
    let ring = ring_port("ring_refuse", None, 16, &pool);
    let mut batch = TxBatch::<32>::default();
    for m in alloc_n(&pool, 32, 60) {
        batch.push(m).map_err(|_| "full").unwrap();
    }
    assert_eq!(pool.in_use(), 32);
    let out = ring.port.tx_queue(0).tx_burst(&mut batch);
    assert_eq!((out.sent, out.refused), (15, 17));
    assert!(batch.is_empty());
    assert_eq!(pool.in_use(), 15, "only the packets sitting in the ring remain");
    assert_eq!(ring.queued(), 15);
    let mut burst = RxBurst::<32>::default();
    assert_eq!(ring.port.rx_queue(0).rx_burst(&mut burst), 15);
    drop(burst);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn indirect_clone_shares_the_buffer_and_chain_frees_both() {
    let clones = pool("own_clone_ind");
    let pool = pool("own_clone");
    let mut orig = alloc_n(&pool, 1, 200).pop().unwrap();
    let clone = orig.clone_indirect(&clones).expect("clone");
    assert!(clone.is_indirect());
    assert_eq!(clone.buf_addr(), orig.buf_addr(), "same data buffer");
    assert_eq!(orig.buffer_refcnt(), 2);
    orig.data_mut()[0] = 0xab;
    assert_eq!(clone.data()[0], 0xab, "no copy was made");
    let head = alloc_n(&pool, 1, 10).pop().unwrap();
    let chained = head.chain(clone).map_err(|_| "chain").unwrap();
    assert_eq!(chained.pkt_len(), 210);
    assert_eq!(chained.nb_segs(), 2);
    drop(chained);
    assert_eq!(orig.buffer_refcnt(), 1);
    assert_eq!(clones.in_use(), 0);
    drop(orig);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn forward_worker_moves_a_burst_across_and_leaks_nothing() {
    let pool = pool("own_worker");
    let inside = split_ring_port("w_in", &pool);
    let outside = split_ring_port("w_out", &pool);
    assert!(inside.inject(alloc_n(&pool, 40, 64)).is_empty());

    let c = run_forward_worker(&inside, &outside, true, |c| c.tx[Side::Outside.index()] >= 40);
    assert_eq!(c.rx, [40, 0]);
    assert_eq!(c.tx, [0, 40]);
    assert_eq!(c.total_drops(), 0);
    let sent = outside.take_sent(64);
    assert_eq!(sent.len(), 40);
    let first_bytes: Vec<u8> = sent.iter().map(|m| m.data()[0]).collect();
    assert_eq!(first_bytes, (0..40u8).collect::<Vec<_>>(), "order kept");
    drop(sent);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn backup_worker_ignores_its_data_ports_and_transmits_nothing() {
    let pool = pool("own_backup");
    let inside = split_ring_port("b_in", &pool);
    let outside = split_ring_port("b_out", &pool);
    assert!(inside.inject(alloc_n(&pool, 10, 64)).is_empty());
    let c = run_forward_worker(&inside, &outside, false, |c| c.ignored_not_owner >= 10);
    assert_eq!(c.ignored_not_owner, 10);
    assert_eq!((c.rx, c.tx), ([0, 0], [0, 0]));
    assert!(outside.take_sent(16).is_empty() && inside.take_sent(16).is_empty());
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_stash_takes_its_refill_at_once_and_returns_what_it_holds_when_dropped() {
    let p = pool("stash_pool");
    let mut stash = MbufStash::new(8);
    let first = stash.take(&p).expect("mbuf");
    assert_eq!(p.in_use(), 8, "one refill of 8, one of them handed out");
    let more: Vec<Mbuf> = (0..7).map(|_| stash.take(&p).expect("mbuf")).collect();
    assert_eq!(p.in_use(), 8, "the next seven come from the stash");
    let ninth = stash.take(&p).expect("mbuf");
    assert_eq!(p.in_use(), 16);
    drop((first, more, ninth));
    assert_eq!(p.in_use(), 7);
    drop(stash);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn a_stash_falls_back_to_one_at_a_time_when_the_pool_runs_low() {
    let p = common::pool("stash_low", 5, DEFAULT_DATA_ROOM);
    let mut stash = MbufStash::new(8);
    let got: Vec<Mbuf> = (0..5).map(|_| stash.take(&p).expect("one of five")).collect();
    assert_eq!(p.in_use(), 5);
    assert!(stash.take(&p).is_none(), "the pool is empty");
    drop(got);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn free_bulk_returns_every_mbuf_chain_included_and_empties_the_vector() {
    let p = pool("free_bulk");
    let mut v = alloc_n(&p, 40, 64);
    let head = v.pop().expect("mbuf");
    let tail = v.pop().expect("mbuf");
    v.push(head.chain(tail).ok().expect("chain"));
    assert_eq!(p.in_use(), 40);
    Mbuf::free_bulk(&mut v);
    assert!(v.is_empty());
    assert_eq!(p.in_use(), 0);
}

#[test]
fn inject_keeps_the_order_and_hands_back_the_tail_from_the_first_refusal() {
    let p = pool("inject_order");
    let r = ring_port("inject_order", Some((4, 4)), 0, &p);
    let pkts = alloc_n(&p, 6, 64);
    let rest = r.inject(pkts);
    assert_eq!(rest.iter().map(|m| m.data()[0]).collect::<Vec<_>>(), vec![3, 4, 5]);
    let mut burst: RxBurst<8> = RxBurst::default();
    let mut rx = r.port.rx_queue(0);
    assert_eq!(rx.rx_burst(&mut burst), 3);
    assert_eq!(
        burst.as_slice().iter().map(|m| m.data()[0]).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[test]
fn a_ring_port_and_its_peer_are_two_ends_of_one_link() {
    let p = pool("ring_peer");
    let a = ring_port("ring_peer_a", Some((64, 64)), 0, &p);
    let b = a
        .peer("ring_peer_b")
        .and_then(|b| b.started(&common::port_config(), &p))
        .expect("peer");
    let mut burst: RxBurst<8> = RxBurst::default();
    for (from, to, first) in [(&a.port, &b.port, 0u8), (&b.port, &a.port, 10)] {
        let mut batch = TxBatch::<8>::default();
        for (i, mut m) in alloc_n(&p, 3, 64).into_iter().enumerate() {
            m.data_mut()[0] = first + i as u8;
            batch.push(m).map_err(|_| "full").unwrap();
        }
        assert_eq!(from.tx_queue(0).tx_burst(&mut batch).sent, 3);
        assert_eq!(from.rx_queue(0).rx_burst(&mut burst), 0, "nothing comes back");
        assert_eq!(to.rx_queue(0).rx_burst(&mut burst), 3);
        assert_eq!(
            burst.as_slice().iter().map(|m| m.data()[0]).collect::<Vec<_>>(),
            vec![first, first + 1, first + 2]
        );
        burst.clear();
    }
    drop(b);
    assert_eq!(p.in_use(), 0);
}
