//! lockstep's control plane, free of DPDK and of I/O.
//!
//! - [`heartbeat`]: the authenticated heartbeat message of the management link
//!   ([`fuzzing`]: its fuzz entry point, also run over a corpus in the tests).
//! - [`machine`]: failure detection, election, roles and epochs as a pure
//!   state machine: events and the time go in, [`machine::Action`]s come out.
//! - [`udp`]: the thin socket driver that feeds the machine in production;
//!   tests drive it with a deterministic simulator instead
//!   (`control/tests/simulation.rs`).
//!
//! The machine reaches the data plane only through the [`machine::DataPlaneView`]
//! it is given each tick and the actions it returns.

pub mod fuzzing;
pub mod heartbeat;
pub mod machine;
pub mod udp;
