//! impair's controller library, in layers whose arrows point one way:
//!
//! - [`model`]: rules as a domain model (units, validation, compilation to
//!   the map ABI); [`profile`]: TOML profiles and scenarios that build it;
//! - the engine ([`engine`], [`discover`], [`maps`], [`ebpf`]): load,
//!   attach, update, detach, lease, qdisc and clsact ownership, leftovers;
//!   [`container`] resolves a container to its namespace and cgroup;
//! - [`observe`]: counters and snapshots, Prometheus metrics, doctor;
//! - beneath all of them, [`statistics`], [`sys`], [`netns`] and [`input`].
//!
//! The namespace lab, probe, sweep runner and demo live in the
//! `impair-tools` crate; flags, rendering and the live view in `impair-cli`.
//! docs/architecture.md has the concept → file table.
pub mod container;
pub mod discover;
pub mod ebpf;
pub mod engine;
pub mod input;
pub mod maps;
pub mod model;
pub mod netns;
pub mod observe;
pub mod profile;
pub mod statistics;
pub mod sys;
