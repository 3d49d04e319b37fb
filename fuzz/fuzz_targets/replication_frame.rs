#![no_main]
//! The replication frame decoder (and the frame a DATA frame carries).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::replication_frame(data);
});
