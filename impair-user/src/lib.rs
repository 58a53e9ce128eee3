//! impair's controller library.
pub mod ebpf;
