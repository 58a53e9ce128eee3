//! The floor: an empty tc program (`return TC_ACT_OK`) at the same hook as
//! impair, so the lab arms can say how much of impair's cost is the hook
//! itself (the tcx entry, the skb context) and how much is impair's decision.
//!
//! It is loaded from two raw BPF instructions with the `bpf(2)` syscall and
//! attached through a tcx link, the hook `Engine::attach` uses on Linux 6.6+,
//! so no second eBPF object is built and impair's own programs (and their
//! verifier instruction counts) are untouched. On kernels without tcx the
//! link cannot be made and the floor arms are reported as not run.
use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

use anyhow::{Context as _, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type` (include/uapi/linux/bpf.h).
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// `r0 = 0 (TC_ACT_OK); exit` as `struct bpf_insn` words (little endian:
/// opcode in the low byte, the immediate in the high 32 bits).
const FLOOR_INSNS: [u64; 2] = [
    0xb7, // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 0
    0x95, // BPF_JMP | BPF_EXIT
];

/// `call bpf_ktime_get_ns; r0 = 0 (TC_ACT_OK); exit`: the floor plus the
/// clock read every timed path makes, so the report can say what one read
/// costs in this kernel on this machine (a virtual machine may make the TSC
/// read dear) rather than estimate it from user space.
const CLOCK_INSNS: [u64; 3] = [
    0x0000_0005_0000_0085, // BPF_JMP | BPF_CALL, imm 5: BPF_FUNC_ktime_get_ns
    0xb7,
    0x95,
];

/// `r0 = 2 (XDP_PASS); exit`: the empty XDP program.
const XDP_FLOOR_INSNS: [u64; 2] = [0x0000_0002_0000_00b7, 0x95];

/// An attached floor program: the link detaches when this drops (a tcx link
/// lives as long as its last descriptor).
pub(crate) struct Floor {
    _link: OwnedFd,
    _prog: OwnedFd,
}

/// Runs `bpf(cmd, attr)` with a zeroed 128-byte `union bpf_attr`.
fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<RawFd> {
    // SAFETY: attr is a valid, writable buffer of the size passed; the kernel
    // reads (and for some commands writes) at most that many bytes of it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    RawFd::try_from(r).map_err(|_| io::Error::other("bpf(2) returned an out-of-range fd"))
}

fn put_u32(attr: &mut [u8; 128], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Loads the empty classifier and links it at tcx ingress or egress of
/// `iface`. Must run in the interface's namespace (the link's ifindex is
/// resolved in the caller's).
pub(crate) fn attach_floor(iface: &str, ingress: bool) -> Result<Floor> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: name is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("no interface {iface}"));
    }
    let prog = load_empty(false)?;
    let mut attr = [0u8; 128];
    // struct { prog_fd; target_ifindex; attach_type; flags; tcx {...} }
    put_u32(&mut attr, 0, std::os::fd::AsRawFd::as_raw_fd(&prog) as u32);
    put_u32(&mut attr, 4, ifindex);
    put_u32(
        &mut attr,
        8,
        if ingress {
            BPF_TCX_INGRESS
        } else {
            BPF_TCX_EGRESS
        },
    );
    let link = bpf(BPF_LINK_CREATE, &mut attr)
        .with_context(|| format!("linking the empty tc program at tcx on {iface} (Linux 6.6+)"))?;
    // SAFETY: as above, a fresh descriptor we own.
    let link = unsafe { OwnedFd::from_raw_fd(link) };
    Ok(Floor {
        _link: link,
        _prog: prog,
    })
}

/// Loads the empty program: a tc classifier (`TC_ACT_OK`) or, with `xdp`,
/// an XDP program (`XDP_PASS`).
pub(crate) fn load_empty(xdp: bool) -> Result<OwnedFd> {
    if xdp {
        load(BPF_PROG_TYPE_XDP, &XDP_FLOOR_INSNS)
    } else {
        load(BPF_PROG_TYPE_SCHED_CLS, &FLOOR_INSNS)
    }
}

/// Loads the tc floor with one `bpf_ktime_get_ns` call in it.
pub(crate) fn load_clock() -> Result<OwnedFd> {
    load(BPF_PROG_TYPE_SCHED_CLS, &CLOCK_INSNS)
}

fn load(prog_type: u32, insns: &[u64]) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut attr = [0u8; 128];
    // struct { prog_type; insn_cnt; insns; license; log_level; log_size;
    // log_buf; kern_version; prog_flags; prog_name[16]; ... }
    put_u32(&mut attr, 0, prog_type);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..59].copy_from_slice(b"bench_floor");
    let prog = bpf(BPF_PROG_LOAD, &mut attr).context("loading the empty program")?;
    // SAFETY: prog is a descriptor the kernel just gave us; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(prog) })
}

/// The kernel's average ns per run of the program `prog` over `repeat`
/// BPF_PROG_TEST_RUN runs on `frame` (one call).
pub(crate) fn test_run_ns(prog: &OwnedFd, frame: &[u8], repeat: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = [0u8; 128];
    // struct { prog_fd; retval; data_size_in; data_size_out; data_in;
    // data_out; repeat; duration; ... }
    put_u32(&mut attr, 0, std::os::fd::AsRawFd::as_raw_fd(prog) as u32);
    put_u32(&mut attr, 8, frame.len() as u32);
    put_u32(&mut attr, 12, out.len() as u32);
    put_u64(&mut attr, 16, frame.as_ptr() as u64);
    put_u64(&mut attr, 24, out.as_mut_ptr() as u64);
    put_u32(&mut attr, 32, repeat);
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN of the empty program")?;
    let mut duration = [0u8; 4];
    duration.copy_from_slice(&attr[36..40]);
    Ok(f64::from(u32::from_ne_bytes(duration)))
}
