//! Observation: what a running instance did. Counter snapshots with
//! configured vs measured loss ([`snapshot`]), Prometheus text
//! ([`metrics`]), and what this kernel supports ([`doctor`]).
pub mod doctor;
pub mod matrix;
pub mod metrics;
pub mod snapshot;
pub mod trace;
