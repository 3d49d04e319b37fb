//! Big tables a worker lets go of are freed by another thread.
//!
//! Freeing a table of tens or hundreds of MiB hands its pages back to the
//! kernel (it has a mapping of its own: see
//! [`crate::dpdk::huge::keep_big_allocations_mapped`]), milliseconds of
//! work at a million sessions that would stall the shard, and the backup's
//! shard with it at the same sequence number. A session index lets go of
//! its old table when a growth's keys have moved, and of a next table it
//! prepared for a growth that did not come.

use std::any::Any;
use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;

/// Smaller values are freed on the spot: a thread hop costs more.
pub const FREE_ELSEWHERE_FROM: usize = 1 << 20;

static RECLAIMER: OnceLock<Option<Sender<Box<dyn Any + Send>>>> = OnceLock::new();

fn reclaimer() -> Option<&'static Sender<Box<dyn Any + Send>>> {
    RECLAIMER
        .get_or_init(|| {
            let (tx, rx) = channel::<Box<dyn Any + Send>>();
            std::thread::Builder::new()
                .name("ls-reclaim".into())
                .spawn(move || {
                    for item in rx {
                        drop(item);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Starts the reclaim thread now. Call it from the main thread once EAL
/// has pinned it to the main lcore, before the workers start: a thread
/// inherits the CPU affinity of the one that starts it (started before
/// EAL it would keep the whole process's CPU set, the workers' cores
/// included; started by a worker, that worker's core).
pub fn start() {
    let _ = reclaimer();
}

/// Lets go of `v`: a vector of [`FREE_ELSEWHERE_FROM`] bytes or more is
/// freed by the reclaim thread, a smaller one (or any, if that thread
/// could not be started) here.
pub fn free_elsewhere<T: Send + 'static>(v: Vec<T>) {
    if v.capacity() * std::mem::size_of::<T>() < FREE_ELSEWHERE_FROM {
        return;
    }
    if let Some(tx) = reclaimer() {
        // A send fails only if the thread is gone; the value comes back
        // and is freed here.
        let _ = tx.send(Box::new(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;
    use std::thread::ThreadId;
    use std::time::Duration;

    /// Tells, when dropped, on which thread.
    struct Tell(std::sync::mpsc::SyncSender<ThreadId>);

    impl Drop for Tell {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    fn tells(n: usize) -> (Vec<Tell>, std::sync::mpsc::Receiver<ThreadId>) {
        let (tx, rx) = sync_channel(n);
        ((0..n).map(|_| Tell(tx.clone())).collect(), rx)
    }

    #[test]
    fn a_big_table_is_freed_on_another_thread() {
        let n = FREE_ELSEWHERE_FROM / std::mem::size_of::<Tell>() + 1;
        let (v, rx) = tells(n);
        free_elsewhere(v);
        let by = rx.recv_timeout(Duration::from_secs(10)).expect("freed");
        assert_ne!(by, std::thread::current().id());
        assert_eq!(rx.iter().take(n - 1).count(), n - 1, "every element dropped");
    }

    #[test]
    fn a_small_table_is_freed_on_the_spot() {
        let (v, rx) = tells(4);
        free_elsewhere(v);
        assert_eq!(rx.try_recv(), Ok(std::thread::current().id()));
    }
}
