//! Observation: what a running instance did. Counter snapshots with
//! configured vs measured loss ([`snapshot`]), Prometheus text
//! ([`metrics`]), what this kernel supports ([`doctor`]), and the record of
//! impaired packets as pcapng ([`capture`], [`pcapng`]); where a rate
//! trace ([`trace`]) or a delay or loss series ([`series`]) is.
pub mod capture;
pub mod doctor;
pub mod matrix;
pub mod metrics;
pub mod pcapng;
pub mod series;
pub mod snapshot;
pub mod trace;
