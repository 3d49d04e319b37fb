#![no_main]
//! The management link's heartbeat datagrams, from arbitrary bytes and as
//! signed heartbeats changed by one byte.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    control::fuzzing::heartbeat(data);
});
