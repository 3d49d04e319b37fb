//! The safe DPDK layer. Every `unsafe` block of lockstep outside `dpdk-sys`
//! lives under this module.

pub mod eal;
pub mod error;
pub mod lcore;
pub mod lpm;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod ring;
pub mod telemetry;

pub use eal::Eal;
pub use error::DpdkError;
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{Port, PortConfig, PortInfo, PortStats, RxBurst, RxQueue, TxBatch, TxOutcome, TxQueue};
