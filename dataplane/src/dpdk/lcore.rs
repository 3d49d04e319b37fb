//! Running closures on EAL worker lcores, with panics caught and reported.

use std::any::Any;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use super::eal::Eal;
use super::error::DpdkError;

type Job = Box<dyn FnOnce() + Send + 'static>;

struct Launch {
    job: Job,
    panic: Arc<Mutex<Option<String>>>,
}

/// A closure running on an lcore. `join` waits for it.
pub struct LcoreHandle {
    lcore: u32,
    panic: Arc<Mutex<Option<String>>>,
    joined: bool,
}

/// Runs `f` on worker lcore `lcore` (which must be idle).
pub fn launch<F>(_eal: &Eal, lcore: u32, f: F) -> Result<LcoreHandle, DpdkError>
where
    F: FnOnce() + Send + 'static,
{
    let panic = Arc::new(Mutex::new(None));
    let launch = Box::new(Launch {
        job: Box::new(f),
        panic: panic.clone(),
    });
    let arg = Box::into_raw(launch) as *mut c_void;
    // SAFETY: trampoline matches lcore_function_t; arg is a leaked Box that
    // the trampoline takes back exactly once. On failure DPDK never calls it
    // and we take it back here.
    let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if ret < 0 {
        // SAFETY: DPDK did not take arg; we still own the Box.
        drop(unsafe { Box::from_raw(arg as *mut Launch) });
        return Err(DpdkError::new(format!("rte_eal_remote_launch(lcore {lcore})"), -ret));
    }
    Ok(LcoreHandle {
        lcore,
        panic,
        joined: false,
    })
}

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Launch> leaked by `launch`, passed once.
    let launch = unsafe { Box::from_raw(arg as *mut Launch) };
    let Launch { job, panic } = *launch;
    match catch_unwind(AssertUnwindSafe(job)) {
        Ok(()) => 0,
        Err(e) => {
            let msg = panic_message(&*e);
            if let Ok(mut slot) = panic.lock() {
                *slot = Some(msg);
            }
            -1
        }
    }
}

fn panic_message(e: &(dyn Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

impl LcoreHandle {
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Waits for the closure to return. `Err` carries its panic message.
    pub fn join(mut self) -> Result<(), String> {
        self.wait()
    }

    fn wait(&mut self) -> Result<(), String> {
        if self.joined {
            return Ok(());
        }
        self.joined = true;
        // SAFETY: lcore was launched by us; waiting is always allowed.
        let ret = unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) };
        if ret == 0 {
            return Ok(());
        }
        let msg = self.panic.lock().ok().and_then(|mut s| s.take());
        Err(msg.unwrap_or_else(|| format!("lcore {} returned {ret}", self.lcore)))
    }
}

impl Drop for LcoreHandle {
    fn drop(&mut self) {
        // Never leave an lcore running past its handle: it may use ports and
        // pools that are about to be freed.
        if let Err(e) = self.wait() {
            log::error!("lcore {}: {e}", self.lcore);
        }
    }
}

/// Moves the calling thread to `SCHED_FIFO` at `priority` (1..=99). Meant
/// for a thread that sleeps between short steps, such as the failure
/// detector: at normal priority beside busy-polling workers it wakes
/// milliseconds late, and a dead peer is noticed as late. (DPDK's own
/// `rte_thread_set_priority` refuses real-time priorities on Linux.)
/// Threads it creates afterwards inherit the policy: call it last.
pub fn raise_current_thread_to_realtime(_eal: &Eal, priority: u8) -> Result<(), DpdkError> {
    let priority = priority.clamp(1, 99);
    set_current_thread_scheduling(libc::SCHED_FIFO, priority, &format!("SCHED_FIFO, {priority}"))
}

/// Puts the calling thread back to normal scheduling (before it busy-waits
/// for workers at shutdown, where a real-time spinner could starve them).
pub fn lower_current_thread_to_normal(_eal: &Eal) -> Result<(), DpdkError> {
    set_current_thread_scheduling(libc::SCHED_OTHER, 0, "SCHED_OTHER")
}

fn set_current_thread_scheduling(policy: i32, priority: u8, what: &str) -> Result<(), DpdkError> {
    let param = libc::sched_param {
        sched_priority: priority as i32,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param
    // that outlives the call.
    let ret = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if ret != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(DpdkError::new(format!("sched_setscheduler({what})"), errno));
    }
    Ok(())
}
