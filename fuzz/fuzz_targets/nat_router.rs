#![no_main]
//! The router with a NAT over arbitrary frames, sides and times.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::nat_router(data);
});
