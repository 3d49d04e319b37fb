//! The heartbeat link on real UDP sockets (loopback): a heartbeat is
//! stamped with when the kernel received it, not when it was read.

use std::time::Duration;

use control::machine::{Machine, MachineConfig, StartRole};
use control::udp::HeartbeatLink;

const MS: u64 = 1_000_000;

fn machine(id: u32) -> Machine {
    Machine::new(
        MachineConfig {
            node_id: id,
            priority: 100,
            heartbeat_ns: 10 * MS,
            dead_intervals: 3,
            start_as: StartRole::Backup,
        },
        0,
    )
}

/// (sender, its machine, receiver, its machine), the sender aimed at the
/// receiver.
fn pair() -> (HeartbeatLink, Machine, HeartbeatLink, Machine) {
    let key = b"lockstep-test-key-0001".to_vec();
    let rx = HeartbeatLink::bind("127.0.0.1:0".parse().unwrap(), vec![], key.clone(), 1).expect("bind");
    let to = rx.local_addr().expect("addr");
    let tx = HeartbeatLink::bind("127.0.0.1:0".parse().unwrap(), vec![to], key, 1).expect("bind");
    // The kernel turns receive timestamps on for the whole stack from a
    // deferred work item after the first socket asks; until then it stamps
    // a datagram when it is read (what the link did before). A node binds
    // its link long before heartbeats matter; a test waits a moment.
    std::thread::sleep(Duration::from_millis(50));
    (tx, machine(1), rx, machine(2))
}

fn last_heard(m: &Machine, id: u32) -> u64 {
    m.peers().find(|p| p.id == id).expect("peer heard").last_heard_ns
}

#[test]
fn a_heartbeat_read_late_is_stamped_with_its_arrival() {
    let (mut tx, ma, mut rx, mut mb) = pair();
    let t0 = 1000 * MS;
    rx.receive(&mut mb, t0);
    tx.send_now(&ma, t0, true);
    std::thread::sleep(Duration::from_millis(40));
    // Read 50 ms later on the receiver's clock: it waited ~40 of them.
    rx.receive(&mut mb, t0 + 50 * MS);
    let heard = last_heard(&mb, 1);
    assert!(
        heard >= t0 && heard <= t0 + 15 * MS,
        "stamped {} ms after t0",
        (heard - t0) / MS
    );
}

#[test]
fn an_arrival_stamp_is_never_older_than_the_previous_read() {
    let (mut tx, ma, mut rx, mut mb) = pair();
    let t0 = 1000 * MS;
    rx.receive(&mut mb, t0);
    tx.send_now(&ma, t0, true);
    std::thread::sleep(Duration::from_millis(40));
    // The machine's clock says only 10 ms passed since the last read (a
    // wall-clock step, say): the heartbeat cannot be older than that.
    rx.receive(&mut mb, t0 + 10 * MS);
    assert_eq!(last_heard(&mb, 1), t0);
}
