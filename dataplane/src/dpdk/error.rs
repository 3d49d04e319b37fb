//! DPDK errors: the failing call and its errno, with DPDK's own text.

use std::ffi::CStr;
use std::fmt;

/// A DPDK call that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError {
    /// The DPDK function (or lockstep step) that failed.
    pub op: String,
    /// Positive errno value.
    pub errno: i32,
}

impl DpdkError {
    pub fn new(op: impl Into<String>, errno: i32) -> Self {
        DpdkError {
            op: op.into(),
            errno: errno.abs(),
        }
    }

    /// Builds the error from the per-lcore `rte_errno`.
    pub fn from_rte_errno(op: impl Into<String>) -> Self {
        Self::new(op, rte_errno())
    }

    /// Turns a DPDK return code (negative errno on failure) into a result.
    pub fn check(op: &str, ret: i32) -> Result<i32, DpdkError> {
        if ret < 0 {
            Err(Self::new(op, -ret))
        } else {
            Ok(ret)
        }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (errno {})", self.op, strerror(self.errno), self.errno)
    }
}

impl std::error::Error for DpdkError {}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local integer; no preconditions.
    unsafe { dpdk_sys::lsd_rte_errno() }
}

/// DPDK's message for an errno (it knows its own codes as well as libc's).
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated buffer, valid until the next call on this thread; we
    // copy it out at once.
    unsafe {
        let p = dpdk_sys::rte_strerror(errno);
        if p.is_null() {
            return format!("errno {errno}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
