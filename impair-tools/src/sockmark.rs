//! `impair run`'s mark on its cgroup's sockets, so the data path can tell
//! the packets they receive (impair-ebpf/src/socket.rs): tc finds a received
//! packet's socket with a socket lookup but cannot read that socket's cgroup
//! (`bpf_sk_cgroup_id` is for cgroup programs only); it can read its mark.
//!
//! A four-instruction `cgroup/sock_create` program (BPF_PROG_TYPE_CGROUP_SOCK,
//! attach type BPF_CGROUP_INET_SOCK_CREATE, Linux 4.10+) attached to the run's
//! cgroup sets `sk_mark` on every IPv4/IPv6 socket a process of the cgroup
//! creates; accepted TCP connections inherit it from their listener. It is
//! written out here rather than in impair-ebpf because it is this small and
//! belongs to `impair run` alone; it goes away with the cgroup.
//!
//! What it costs: `sk_mark` is the socket's SO_MARK, so CMD's sent packets
//! carry the mark too (`skb->mark`): policy routing (`ip rule fwmark`) and
//! firewall rules that match marks see it. The mark is [`MARK_BASE`] | the
//! cgroup's low 16 bits; a CMD that sets SO_MARK itself replaces it and its
//! received traffic is then not impaired.
use std::{fs::File, os::fd::AsRawFd as _, path::Path};

use anyhow::{anyhow, Context as _, Result};

/// The mark's upper half ("IM").
pub const MARK_BASE: u32 = 0x494d_0000;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// `offsetof(struct bpf_sock, mark)`.
const BPF_SOCK_MARK_OFFSET: i16 = 16;

/// The mark for the run cgroup `cgroup_id`.
pub fn mark_for(cgroup_id: u64) -> u32 {
    MARK_BASE | (cgroup_id as u32 & 0xffff)
}

/// One `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// `r2 = mark; *(u32 *)(r1 + mark) = r2; r0 = 1; exit` (1: allow the socket).
fn program(mark: u32) -> Vec<u8> {
    const MOV64_IMM: u8 = 0xb7;
    const STX_MEM_W: u8 = 0x63;
    const EXIT: u8 = 0x95;
    [
        insn(MOV64_IMM, 2, 0, 0, mark as i32),
        insn(STX_MEM_W, 1, 2, BPF_SOCK_MARK_OFFSET, 0),
        insn(MOV64_IMM, 0, 0, 0, 1),
        insn(EXIT, 0, 0, 0, 0),
    ]
    .concat()
}

/// bpf(2) with a zero-padded attribute buffer.
fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a writable 128-byte buffer laid out as the
    // command's union bpf_attr member, zero beyond the fields set; the size
    // passed is its length.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads the program and attaches it to the cgroup directory `dir` (multi:
/// other programs there keep running). Sockets created there from now on
/// carry `mark`. The attachment lives as long as the cgroup.
pub fn attach(dir: &Path, mark: u32) -> Result<()> {
    let insns = program(mark);
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_SOCK.to_ne_bytes());
    attr[4..8].copy_from_slice(&((insns.len() / 8) as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[48..60].copy_from_slice(b"impair_mark\0");
    attr[68..72].copy_from_slice(&BPF_CGROUP_INET_SOCK_CREATE.to_ne_bytes());
    let prog = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let said = String::from_utf8_lossy(&log);
        anyhow!(
            "loading a cgroup/sock_create program (BPF_CGROUP_INET_SOCK_CREATE): {e}: {}",
            said.trim_end_matches('\0').trim()
        )
    })?;
    // SAFETY: bpf(2) returned a new descriptor that nothing else owns.
    let prog =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(prog as i32) };
    let cg = File::open(dir).with_context(|| format!("opening cgroup {}", dir.display()))?;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(cg.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_INET_SOCK_CREATE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        anyhow!(
            "attaching a cgroup/sock_create program (BPF_CGROUP_INET_SOCK_CREATE) to {}: {e}",
            dir.display()
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_four_instructions_storing_the_mark() {
        let p = program(0x494d_0102);
        assert_eq!(p.len(), 32);
        assert_eq!(&p[0..2], &[0xb7, 0x02]);
        assert_eq!(&p[4..8], &0x494d_0102u32.to_ne_bytes());
        assert_eq!(&p[8..12], &[0x63, 0x21, 16, 0]);
        assert_eq!(p[24], 0x95);
        assert_eq!(mark_for(0x1_2345), 0x494d_2345);
    }
}
