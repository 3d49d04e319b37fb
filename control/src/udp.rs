//! The thin UDP driver of the heartbeat: sends the machine's heartbeat to
//! every peer each period and feeds verified heartbeats to the machine.
//! Non-blocking; the control thread calls it every tick.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};

use crate::heartbeat::{Heartbeat, HeartbeatError, LEN};
use crate::machine::Machine;

/// Counters of the management link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    pub rejected_auth: u64,
    pub rejected_malformed: u64,
    pub rejected_replay: u64,
}

pub struct HeartbeatLink {
    sock: UdpSocket,
    peers: Vec<SocketAddr>,
    key: Vec<u8>,
    boot_id: u64,
    seq: u64,
    next_send_ns: u64,
    pub counters: LinkCounters,
}

impl HeartbeatLink {
    /// Binds `local` (non-blocking). `boot_id` must grow across restarts of
    /// this node (its start time in ns is the usual choice).
    pub fn bind(
        local: SocketAddr,
        peers: Vec<SocketAddr>,
        key: Vec<u8>,
        boot_id: u64,
    ) -> std::io::Result<HeartbeatLink> {
        let sock = UdpSocket::bind(local)?;
        sock.set_nonblocking(true)?;
        Ok(HeartbeatLink {
            sock,
            peers,
            key,
            boot_id,
            seq: 0,
            next_send_ns: 0,
            counters: LinkCounters::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Reads every pending datagram into the machine.
    pub fn receive(&mut self, machine: &mut Machine, now_ns: u64) {
        let mut buf = [0u8; 256];
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, _from)) => match Heartbeat::decode(&buf[..n], &self.key) {
                    Ok(hb) => {
                        if machine.on_heartbeat(&hb, now_ns) {
                            self.counters.received += 1;
                        } else {
                            self.counters.rejected_replay += 1;
                        }
                    }
                    Err(HeartbeatError::BadMac) => self.counters.rejected_auth += 1,
                    Err(_) => self.counters.rejected_malformed += 1,
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors surface as ECONNREFUSED on Linux: a peer is down.
                Err(_) => break,
            }
        }
    }

    /// Sends the heartbeat if a period has passed since the last one.
    pub fn send_due(&mut self, machine: &Machine, now_ns: u64, synced: bool) {
        if now_ns >= self.next_send_ns {
            self.send_now(machine, now_ns, synced);
        }
    }

    /// Sends the heartbeat to every peer now (after a role change, so the
    /// peers learn it without waiting a period).
    pub fn send_now(&mut self, machine: &Machine, now_ns: u64, synced: bool) {
        self.seq += 1;
        let b: [u8; LEN] = machine.heartbeat(self.boot_id, self.seq, synced).encode(&self.key);
        for p in &self.peers {
            match self.sock.send_to(&b, p) {
                Ok(_) => self.counters.sent += 1,
                Err(_) => self.counters.send_errors += 1,
            }
        }
        self.next_send_ns = now_ns + machine.config().heartbeat_ns;
    }
}
