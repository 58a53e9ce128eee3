//! The few rtnetlink requests aya does not make: listing the filters of a
//! clsact hook and deleting the clsact qdisc (aya creates the qdisc and adds
//! and removes its own filters). Requests go to the network namespace of the
//! calling thread, like aya's.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the parent of the clsact qdisc.
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// The clsact qdisc's handle (`ffff:`).
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
/// Minor numbers of the clsact qdisc's two hooks.
const TC_H_MIN_INGRESS: u32 = 0xFFF2;
const TC_H_MIN_EGRESS: u32 = 0xFFF3;
/// `TCA_KIND`: the qdisc's kind, a NUL-terminated string.
const TCA_KIND: u16 = 1;
const NLMSG_HDR_LEN: usize = 16;
const TCMSG_LEN: usize = 20;

/// The fixed part of every tc request (`struct tcmsg`).
#[derive(Default, Clone, Copy)]
struct TcMsg {
    ifindex: u32,
    handle: u32,
    parent: u32,
}

/// A NETLINK_ROUTE socket of this thread's network namespace.
struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the result is checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor socket(2) just returned; nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends one request and hands every reply message (type, payload) to
    /// `each`, up to the final acknowledgement (or the end of a dump). A
    /// negative acknowledgement is returned as the OS error it carries.
    fn request(
        &self,
        msg_type: u16,
        flags: u16,
        tc: TcMsg,
        attrs: &[(u16, &[u8])],
        each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        let mut header = Vec::with_capacity(TCMSG_LEN);
        header.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        header.extend_from_slice(&tc.ifindex.to_ne_bytes());
        header.extend_from_slice(&tc.handle.to_ne_bytes());
        header.extend_from_slice(&tc.parent.to_ne_bytes());
        header.extend_from_slice(&0u32.to_ne_bytes()); // info
        let mut encoded = Vec::new();
        for (kind, data) in attrs {
            encoded.extend_from_slice(&attr(*kind, data));
        }
        self.request_raw(msg_type, flags, &header, &encoded, each)
    }

    /// [`Socket::request`] with any fixed header (`tcmsg`, `ifinfomsg`) and
    /// attributes already encoded ([`attr`]).
    fn request_raw(
        &self,
        msg_type: u16,
        flags: u16,
        header: &[u8],
        attrs: &[u8],
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        let mut msg = Vec::with_capacity(64);
        msg.extend_from_slice(&0u32.to_ne_bytes()); // length, set below
        msg.extend_from_slice(&msg_type.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        msg.extend_from_slice(header);
        msg.extend_from_slice(attrs);
        let total = msg.len() as u32;
        msg[..4].copy_from_slice(&total.to_ne_bytes());
        // SAFETY: `msg` is a valid buffer of `msg.len()` bytes for the call.
        let sent = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            if rest.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "netlink closed before acknowledging",
                ));
            }
            while rest.len() >= NLMSG_HDR_LEN {
                let len = u32_at(rest, 0) as usize;
                if len < NLMSG_HDR_LEN || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink reply",
                    ));
                }
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let payload = &rest[NLMSG_HDR_LEN..len];
                match i32::from(kind) {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let code = if payload.len() >= 4 {
                            u32_at(payload, 0) as i32
                        } else {
                            -libc::EPROTO
                        };
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => each(kind, payload),
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
    }
}

/// One netlink attribute (`struct nlattr` and its data), padded to 4 bytes.
fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(4 + data.len() + 3);
    a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(data);
    a.resize(a.len().next_multiple_of(4), 0);
    a
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether any filter (anyone's) is attached at either hook of the clsact
/// qdisc of interface `ifindex`; false when there is no clsact qdisc.
pub(crate) fn clsact_has_filters(ifindex: u32) -> io::Result<bool> {
    let sock = Socket::open()?;
    for min in [TC_H_MIN_INGRESS, TC_H_MIN_EGRESS] {
        let mut any = false;
        sock.request(
            libc::RTM_GETTFILTER,
            (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            TcMsg {
                ifindex,
                parent: (TC_H_CLSACT & 0xFFFF_0000) | min,
                ..Default::default()
            },
            &[],
            |kind, _| any |= kind == libc::RTM_NEWTFILTER,
        )?;
        if any {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether interface `ifindex` has a clsact qdisc.
pub(crate) fn clsact_present(ifindex: u32) -> io::Result<bool> {
    let sock = Socket::open()?;
    let mut found = false;
    sock.request(
        libc::RTM_GETQDISC,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        TcMsg {
            ifindex,
            ..Default::default()
        },
        &[],
        |kind, payload| {
            if kind != libc::RTM_NEWQDISC || payload.len() < TCMSG_LEN {
                return;
            }
            let (ifi, handle) = (u32_at(payload, 4), u32_at(payload, 8));
            if ifi == ifindex
                && handle == CLSACT_HANDLE
                && has_kind(&payload[TCMSG_LEN..], b"clsact")
            {
                found = true;
            }
        },
    )?;
    Ok(found)
}

/// Whether the attributes `attrs` carry `TCA_KIND` = `kind`.
fn has_kind(mut attrs: &[u8], kind: &[u8]) -> bool {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3FFF;
        if len < 4 || len > attrs.len() {
            return false;
        }
        if ty == TCA_KIND {
            let v = &attrs[4..len];
            return v.strip_suffix(&[0]).unwrap_or(v) == kind;
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    false
}

/// Deletes the clsact qdisc of interface `ifindex` (as `tc qdisc del dev
/// IFACE clsact` does; naming the kind, so an `ingress` qdisc in its place
/// is refused, not deleted). Errors are the kernel's.
pub(crate) fn delete_clsact(ifindex: u32) -> io::Result<()> {
    Socket::open()?.request(
        libc::RTM_DELQDISC,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        TcMsg {
            ifindex,
            handle: CLSACT_HANDLE,
            parent: TC_H_CLSACT,
        },
        &[(TCA_KIND, b"clsact\0")],
        |_, _| {},
    )
}

/// `IFLA_*` attributes and `ifinfomsg`'s size (the link requests).
const IFLA_IFNAME: u16 = 3;
const IFLA_TXQLEN: u16 = 13;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const IFINFOMSG_LEN: usize = 16;

/// `struct ifinfomsg` for interface `ifindex` (0: none yet).
fn ifinfomsg(ifindex: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(IFINFOMSG_LEN);
    h.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // family, pad, type
    h.extend_from_slice(&ifindex.to_ne_bytes());
    h.extend_from_slice(&flags.to_ne_bytes());
    h.extend_from_slice(&change.to_ne_bytes());
    h
}

/// Creates the ifb device `name`, up, with a transmit queue of `txqlen`
/// packets (the default qdisc's limit), as `ip link add NAME txqueuelen N up
/// type ifb` does. Exclusive: a device of that name already there (anyone's)
/// is `EEXIST`, never taken over.
pub(crate) fn create_ifb(name: &str, txqlen: u32) -> io::Result<()> {
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    let mut attrs = attr(IFLA_IFNAME, &ifname);
    attrs.extend_from_slice(&attr(IFLA_TXQLEN, &txqlen.to_ne_bytes()));
    attrs.extend_from_slice(&attr(
        IFLA_LINKINFO | NLA_F_NESTED,
        &attr(IFLA_INFO_KIND, b"ifb"),
    ));
    let up = libc::IFF_UP as u32;
    Socket::open()?.request_raw(
        libc::RTM_NEWLINK,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        &ifinfomsg(0, up, up),
        &attrs,
        |_, _| {},
    )
}

/// The kind (`ifb`, `veth`…; empty for a physical device) and name of
/// interface `ifindex`, or `None` when there is no such interface.
pub(crate) fn link_kind(ifindex: u32) -> io::Result<Option<(String, String)>> {
    let mut found = None;
    let r = Socket::open()?.request_raw(
        libc::RTM_GETLINK,
        // The acknowledgement ends the exchange (a get has no NLMSG_DONE).
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        &ifinfomsg(ifindex, 0, 0),
        &[],
        |kind, payload| {
            if kind != libc::RTM_NEWLINK || payload.len() < IFINFOMSG_LEN {
                return;
            }
            let attrs = &payload[IFINFOMSG_LEN..];
            let text =
                |v: &[u8]| String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned();
            let name = find_attr(attrs, IFLA_IFNAME).map(text).unwrap_or_default();
            let kind = find_attr(attrs, IFLA_LINKINFO)
                .and_then(|info| find_attr(info, IFLA_INFO_KIND))
                .map(text)
                .unwrap_or_default();
            found = Some((kind, name));
        },
    );
    match r {
        Ok(()) => Ok(found),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes interface `ifindex` (`ip link del`).
pub(crate) fn delete_link(ifindex: u32) -> io::Result<()> {
    Socket::open()?.request_raw(
        libc::RTM_DELLINK,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        &ifinfomsg(ifindex, 0, 0),
        &[],
        |_, _| {},
    )
}

/// The data of attribute `ty` among `attrs` (nested or not).
fn find_attr(mut attrs: &[u8], ty: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let t = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3FFF;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if t == ty {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_attribute_is_found_among_others() {
        // TCA_OPTIONS (2) with 4 bytes, then TCA_KIND "clsact\0" padded to 8.
        let mut a = vec![8, 0, 2, 0, 1, 2, 3, 4];
        a.extend_from_slice(&[11, 0, 1, 0]);
        a.extend_from_slice(b"clsact\0\0");
        assert!(has_kind(&a, b"clsact"));
        assert!(!has_kind(&a, b"ingress"));
        assert!(!has_kind(&a[..6], b"clsact"));
    }
}
