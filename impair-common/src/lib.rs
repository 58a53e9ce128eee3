//! Types and model code shared by impair's eBPF programs and its controller.
//!
//! Everything here is `no_std` and allocation-free so the same code runs in the
//! kernel (compiled for `bpfel-unknown-none`) and in host unit tests. The map
//! types are `#[repr(C)]` with size asserts: they are an ABI between the embedded
//! object and the controller built from the same commit (see docs/map-abi.md).
#![no_std]

pub mod abi;
pub mod capture;
pub mod counters;
pub mod dist;
pub mod edt;
pub mod flow;
pub mod index;
pub mod loss;
pub mod matrix;
pub mod prob;
pub mod rng;
pub mod series;
pub mod trace;

pub use abi::*;
pub use counters::*;
