//! lockstep's data plane.
//!
//! - [`dpdk`]: the safe layer over DPDK (the only home of `unsafe`).
//! - [`frame`] and [`wire`]: packet bytes and zero-copy typed views over them.
//! - [`nf`]: the network functions, pure code over frames.
//! - [`worker`]: the run-to-completion poll loop of one shard.

pub mod clock;
pub mod dpdk;
pub mod frame;
pub mod fuzzing;
pub mod nf;
pub mod ownership;
pub mod replication;
pub mod stats;
pub mod wire;
pub mod worker;
