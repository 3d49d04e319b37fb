#![no_main]
//! The checkpoint's state chunks (NAT sessions, neighbours) installed from
//! arbitrary bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::state_chunk(data);
});
