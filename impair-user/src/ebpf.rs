//! The eBPF object, built by build.rs and embedded so one binary is all a
//! user copies to a lab host.
use aya::include_bytes_aligned;

static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/impair-ebpf"));

/// The embedded object (empty when built without a BPF toolchain).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// Whether this binary was built with the stub object instead of the programs.
pub fn is_stub() -> bool {
    OBJECT.is_empty()
}
