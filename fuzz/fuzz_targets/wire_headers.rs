#![no_main]
//! Ethernet, ARP, IPv4, TCP, UDP and ICMP views over arbitrary bytes.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::fuzzing::wire_headers(data);
});
