//! The embedded eBPF object.
use aya::include_bytes_aligned;

static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/impair-ebpf"));

pub fn object() -> &'static [u8] {
    OBJECT
}
