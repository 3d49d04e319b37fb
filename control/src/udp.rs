//! The thin UDP driver of the heartbeat: sends the machine's heartbeat to
//! every peer each period and feeds verified heartbeats to the machine.
//! Non-blocking; the control thread calls it every tick.

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};
use nix::sys::time::TimeSpec;

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
    /// When `receive` last ran (the machine's clock).
    last_receive_ns: Option<u64>,
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
        // The kernel stamps each datagram at arrival (SO_TIMESTAMPNS).
        if setsockopt(&sock, sockopt::ReceiveTimestampns, &true).is_err() {
            log::warn!("management link: no SO_TIMESTAMPNS; heartbeats are stamped when read");
        }
        Ok(HeartbeatLink {
            last_receive_ns: None,
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

    /// Reads every pending datagram into the machine, each stamped with
    /// when it arrived: a heartbeat that waited in the socket while this
    /// thread was late is not younger than it is, so a dead primary does
    /// not look alive for longer than it was.
    pub fn receive(&mut self, machine: &mut Machine, now_ns: u64) {
        let real_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // How late this read can be: since the last one (bounds the damage
        // of a wall-clock step between arrival and now).
        let max_age = self.last_receive_ns.map_or(0, |t| now_ns.saturating_sub(t));
        self.last_receive_ns = Some(now_ns);
        let mut buf = [0u8; 256];
        loop {
            let (n, arrived_real) = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let mut cmsg = nix::cmsg_space!(TimeSpec);
                match recvmsg::<SockaddrStorage>(
                    self.sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(msg) => {
                        let stamp = msg.cmsgs().ok().and_then(|mut c| {
                            c.find_map(|m| match m {
                                ControlMessageOwned::ScmTimestampns(ts) => {
                                    Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
                                }
                                _ => None,
                            })
                        });
                        (msg.bytes, stamp)
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    // ICMP errors surface as ECONNREFUSED on Linux: a peer is down.
                    Err(_) => break,
                }
            };
            let arrived = match arrived_real {
                Some(t) => now_ns.saturating_sub(real_now.saturating_sub(t).min(max_age)),
                None => now_ns,
            };
            match Heartbeat::decode(&buf[..n], &self.key) {
                Ok(hb) => {
                    if machine.on_heartbeat(&hb, arrived) {
                        self.counters.received += 1;
                    } else {
                        self.counters.rejected_replay += 1;
                    }
                }
                Err(HeartbeatError::BadMac) => self.counters.rejected_auth += 1,
                Err(_) => self.counters.rejected_malformed += 1,
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
