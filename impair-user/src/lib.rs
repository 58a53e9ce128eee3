//! impair's controller library: loads the embedded eBPF data path, compiles
//! rules into map values, attaches and detaches safely, and reads counters.
pub mod cli;
pub mod demo;
pub mod discover;
pub mod dist;
pub mod doctor;
pub mod ebpf;
pub mod engine;
pub mod input;
pub mod lab;
pub mod maps;
pub mod metrics;
pub mod netns;
pub mod probe;
pub mod profiles;
pub mod rules;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod sweep;
pub mod sys;
