//! The Environment Abstraction Layer: one per process, initialised from the
//! EAL arguments given on the command line, cleaned up on drop.

use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::DpdkError;

static EAL_TAKEN: AtomicBool = AtomicBool::new(false);
/// The runtime directory [`Eal::remove_runtime_files_at_exit`] removes.
static AT_EXIT_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

extern "C" fn remove_runtime_files_now() {
    if let Some(dir) = AT_EXIT_DIR.get() {
        remove_runtime_files(dir);
    }
}

/// Proof that EAL is up. Dropping it runs `rte_eal_cleanup`, so it must
/// outlive every port, pool and worker (drop them first).
pub struct Eal {
    parsed_args: usize,
    runtime_dir: Option<std::path::PathBuf>,
}

impl Eal {
    /// Initialises EAL with `args` (`args[0]` is the program name, as in
    /// `argv`). Fails if EAL was already initialised in this process.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::new("rte_eal_init (already initialised)", libc_ealready()));
        }
        let owned: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_ref()).map_err(|_| DpdkError::new("EAL argument with NUL", 22)))
            .collect::<Result<_, _>>()?;
        // EAL keeps pointers into argv (e.g. for later reporting), so the
        // strings live as long as the process.
        let mut argv: Vec<*mut c_char> = owned.into_iter().map(|c| c.into_raw()).collect();
        let argc = argv.len() as i32;
        argv.push(std::ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());
        // SAFETY: argv is a NULL-terminated array of argc valid C strings that
        // are never freed; EAL is initialised at most once (guard above).
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            EAL_TAKEN.store(false, Ordering::SeqCst);
            return Err(DpdkError::from_rte_errno("rte_eal_init"));
        }
        // SAFETY: EAL is up; the returned string is static inside EAL.
        let dir = unsafe { dpdk_sys::rte_eal_get_runtime_dir() };
        let runtime_dir = (!dir.is_null()).then(|| {
            // SAFETY: checked non-NULL; NUL-terminated by EAL.
            let s = unsafe { std::ffi::CStr::from_ptr(dir) };
            std::path::PathBuf::from(s.to_string_lossy().into_owned())
        });
        Ok(Eal {
            parsed_args: ret as usize,
            runtime_dir,
        })
    }

    /// For an EAL kept in a static and so never dropped (test binaries
    /// keep theirs in a `OnceLock`): removes its runtime files and
    /// directory when the process exits, as a drop would have.
    pub fn remove_runtime_files_at_exit(&self) {
        if let Some(dir) = &self.runtime_dir {
            if AT_EXIT_DIR.set(dir.clone()).is_ok() {
                // SAFETY: registers a function without captured state; it
                // only removes files.
                unsafe { libc::atexit(remove_runtime_files_now) };
            }
        }
    }

    /// How many arguments EAL consumed (including the program name).
    pub fn parsed_args(&self) -> usize {
        self.parsed_args
    }

    /// The lcore this thread runs on (the main lcore for the caller of `init`).
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_get_main_lcore() }
    }

    /// Worker lcores, in order (the main lcore excluded).
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        // SAFETY: EAL is initialised; rte_get_next_lcore walks its lcore table.
        unsafe {
            let mut id = dpdk_sys::rte_get_next_lcore(u32::MAX, 1, 0);
            while id < dpdk_sys::RTE_MAX_LCORE {
                out.push(id);
                id = dpdk_sys::rte_get_next_lcore(id, 1, 0);
            }
        }
        out
    }

    /// TSC ticks per second, as calibrated by EAL.
    pub fn tsc_hz(&self) -> u64 {
        tsc_hz()
    }

    /// Starts DPDK's packet-capture server so `dpdk-dumpcap` can attach. It
    /// needs a shared-config primary process (hugepages, no `--no-shconf`).
    pub fn pdump_init(&self) -> Result<(), DpdkError> {
        // SAFETY: EAL is initialised.
        let ret = unsafe { dpdk_sys::rte_pdump_init() };
        DpdkError::check("rte_pdump_init", ret).map(|_| ())
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: the Eal value is the only handle; by construction every
        // port, pool and worker was dropped before it.
        let ret = unsafe { dpdk_sys::rte_eal_cleanup() };
        if ret < 0 {
            log::warn!("rte_eal_cleanup failed: {}", DpdkError::new("rte_eal_cleanup", -ret));
        }
        // EAL leaves its runtime directory (shared-config files, the
        // telemetry socket) and, without --huge-unlink, its hugepage files
        // behind for secondary processes. A primary that exits has no use
        // for them: remove what carries this process's file prefix.
        if let Some(dir) = &self.runtime_dir {
            remove_runtime_files(dir);
        }
    }
}

/// TSC ticks per second (valid once EAL is up).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value EAL calibrated at init; 0 before init.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// The TSC, read with `rdtsc`.
#[inline(always)]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: no preconditions.
    unsafe {
        dpdk_sys::rte_rdtsc()
    }
}

fn libc_ealready() -> i32 {
    114 // EALREADY
}

/// Removes EAL's runtime directory `dir` (`/var/run/dpdk/<prefix>`) with its
/// files, and the hugepage files `<prefix>map_*` on every hugetlbfs mount.
fn remove_runtime_files(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
    let Some(prefix) = dir.file_name().map(|p| p.to_string_lossy().into_owned()) else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let page_prefix = format!("{prefix}map_");
    for mount in mounts.lines().filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(2) == Some(&"hugetlbfs"))
            .then(|| f.get(1).map(|s| s.to_string()))
            .flatten()
    }) {
        if let Ok(entries) = std::fs::read_dir(&mount) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&page_prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}
