//! DPDK telemetry commands answered by Rust closures.
//!
//! DPDK 22.11's callback carries no user pointer, so one C trampoline serves
//! every command and finds the closure by the command's name.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use super::error::DpdkError;

/// A value in a telemetry answer. Dictionaries nest one level (DPDK's JSON
/// writer accepts containers inside the top-level dictionary only).
#[derive(Clone, Debug, PartialEq)]
pub enum TelValue {
    U64(u64),
    Int(i32),
    Str(String),
    Dict(Vec<(String, TelValue)>),
}

type Handler = Arc<dyn Fn(Option<&str>) -> Vec<(String, TelValue)> + Send + Sync>;

fn registry() -> &'static Mutex<HashMap<String, Handler>> {
    static REG: OnceLock<Mutex<HashMap<String, Handler>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Registers `cmd` (e.g. `/lockstep/status`). The handler gets the text after
/// the comma, if any, and returns the top-level dictionary.
pub fn register<F>(cmd: &str, help: &str, handler: F) -> Result<(), DpdkError>
where
    F: Fn(Option<&str>) -> Vec<(String, TelValue)> + Send + Sync + 'static,
{
    if let Ok(mut reg) = registry().lock() {
        reg.insert(cmd.to_string(), Arc::new(handler));
    }
    let c_cmd = CString::new(cmd).map_err(|_| DpdkError::new("telemetry command with NUL", 22))?;
    let c_help = CString::new(help).map_err(|_| DpdkError::new("telemetry help with NUL", 22))?;
    // SAFETY: DPDK copies neither string, so both are leaked to live for the
    // process; the trampoline has the telemetry_cb signature.
    let ret = unsafe { dpdk_sys::rte_telemetry_register_cmd(c_cmd.into_raw(), Some(trampoline), c_help.into_raw()) };
    DpdkError::check(&format!("rte_telemetry_register_cmd({cmd})"), ret).map(|_| ())
}

extern "C" fn trampoline(cmd: *const c_char, params: *const c_char, d: *mut dpdk_sys::rte_tel_data) -> c_int {
    // SAFETY: DPDK passes NUL-terminated strings (params may be NULL).
    let cmd = unsafe { CStr::from_ptr(cmd) }.to_string_lossy().into_owned();
    let params = (!params.is_null()).then(|| {
        // SAFETY: checked non-NULL above.
        unsafe { CStr::from_ptr(params) }.to_string_lossy().into_owned()
    });
    let handler = match registry().lock() {
        Ok(reg) => reg.get(&cmd).cloned(),
        Err(_) => None,
    };
    let Some(handler) = handler else {
        return -22;
    };
    let params = params.filter(|p| !p.is_empty());
    let answer = catch_unwind(AssertUnwindSafe(|| handler(params.as_deref())));
    match answer {
        Ok(entries) => {
            // SAFETY: d is the output object DPDK handed to this callback.
            unsafe { fill_dict(d, &entries) };
            0
        }
        Err(_) => -5,
    }
}

/// Writes `entries` into `d` as a dictionary.
///
/// # Safety
/// `d` must be a valid, empty telemetry data object.
unsafe fn fill_dict(d: *mut dpdk_sys::rte_tel_data, entries: &[(String, TelValue)]) {
    dpdk_sys::rte_tel_data_start_dict(d);
    for (k, v) in entries {
        let Ok(name) = CString::new(k.as_str()) else {
            continue;
        };
        match v {
            TelValue::U64(x) => {
                dpdk_sys::rte_tel_data_add_dict_u64(d, name.as_ptr(), *x);
            }
            TelValue::Int(x) => {
                dpdk_sys::rte_tel_data_add_dict_int(d, name.as_ptr(), *x);
            }
            TelValue::Str(s) => {
                let Ok(val) = CString::new(s.as_str()) else {
                    continue;
                };
                dpdk_sys::rte_tel_data_add_dict_string(d, name.as_ptr(), val.as_ptr());
            }
            TelValue::Dict(inner) => {
                let c = dpdk_sys::rte_tel_data_alloc();
                if c.is_null() {
                    continue;
                }
                let flat: Vec<(String, TelValue)> = inner
                    .iter()
                    .filter(|(_, v)| !matches!(v, TelValue::Dict(_)))
                    .cloned()
                    .collect();
                fill_dict(c, &flat);
                // keep = 0: DPDK frees the container after writing the reply.
                if dpdk_sys::rte_tel_data_add_dict_container(d, name.as_ptr(), c, 0) < 0 {
                    dpdk_sys::rte_tel_data_free(c);
                }
            }
        }
    }
}
