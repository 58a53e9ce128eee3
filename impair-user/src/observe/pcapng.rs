//! A small pcapng writer: the three blocks a capture needs (section header,
//! one interface description per source, enhanced packets with a comment),
//! in the host's byte order, which the section header announces
//! (draft-ietf-opsawg-pcapng). Nanosecond timestamps (`if_tsresol` 9).
//! A two-way link's capture has two interfaces, one per direction, so
//! Wireshark's `frame.interface_id` (and `if_description`) tells them apart.
use std::io::{self, Write};

/// `LINKTYPE_ETHERNET`: frames start with an Ethernet header.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// `LINKTYPE_RAW`: frames start with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u16 = 101;

const BLOCK_SHB: u32 = 0x0A0D_0D0A;
const BLOCK_IDB: u32 = 0x0000_0001;
const BLOCK_EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;

/// Writes pcapng to `W`: the section and interface headers on creation, then
/// one enhanced packet block per [`PcapngWriter::packet`].
pub struct PcapngWriter<W: Write> {
    out: W,
    interfaces: u32,
}

/// One interface of the file (its position is its id in
/// [`PcapngWriter::packet`]).
pub struct Interface<'a> {
    /// `if_name`: the device.
    pub name: &'a str,
    /// `if_description`: which packets these are (e.g. the direction).
    pub description: &'a str,
    pub linktype: u16,
}

/// Appends option `code` with `value`, padded to 32 bits.
fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    // An option's length is 16 bits; longer values are cut (comments only).
    let len = value.len().min(u16::MAX as usize - 3);
    buf.extend_from_slice(&code.to_ne_bytes());
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&value[..len]);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Writes block `kind` with `body` (already padded): type, total length,
/// body, total length again.
fn block(out: &mut impl Write, kind: u32, body: &[u8]) -> io::Result<()> {
    let total = (12 + body.len()) as u32;
    out.write_all(&kind.to_ne_bytes())?;
    out.write_all(&total.to_ne_bytes())?;
    out.write_all(body)?;
    out.write_all(&total.to_ne_bytes())
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a section with `interfaces` (at least one), whose packets
    /// are cut at `snaplen` bytes.
    pub fn new(mut out: W, interfaces: &[Interface<'_>], snaplen: u32) -> io::Result<Self> {
        if interfaces.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a pcapng file needs an interface",
            ));
        }
        let mut shb = Vec::new();
        shb.extend_from_slice(&BYTE_ORDER_MAGIC.to_ne_bytes());
        shb.extend_from_slice(&1u16.to_ne_bytes()); // major
        shb.extend_from_slice(&0u16.to_ne_bytes()); // minor
        shb.extend_from_slice(&(-1i64).to_ne_bytes()); // section length: unknown
        option(
            &mut shb,
            SHB_USERAPPL,
            format!("impair {}", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
        option(&mut shb, OPT_ENDOFOPT, &[]);
        block(&mut out, BLOCK_SHB, &shb)?;

        for i in interfaces {
            let mut idb = Vec::new();
            idb.extend_from_slice(&i.linktype.to_ne_bytes());
            idb.extend_from_slice(&0u16.to_ne_bytes());
            idb.extend_from_slice(&snaplen.to_ne_bytes());
            option(&mut idb, IF_NAME, i.name.as_bytes());
            if !i.description.is_empty() {
                option(&mut idb, IF_DESCRIPTION, i.description.as_bytes());
            }
            option(&mut idb, IF_TSRESOL, &[9]); // 10^-9 s
            option(&mut idb, OPT_ENDOFOPT, &[]);
            block(&mut out, BLOCK_IDB, &idb)?;
        }
        Ok(Self {
            out,
            interfaces: interfaces.len() as u32,
        })
    }

    /// One packet of interface `if_id`: its first bytes `data` of
    /// `orig_len`, at `unix_ns` (nanoseconds since the epoch), with `comment`.
    pub fn packet(
        &mut self,
        if_id: u32,
        unix_ns: u64,
        data: &[u8],
        orig_len: u32,
        comment: &str,
    ) -> io::Result<()> {
        if if_id >= self.interfaces {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pcapng interface {if_id} was not described"),
            ));
        }
        let mut epb = Vec::with_capacity(32 + data.len() + comment.len());
        epb.extend_from_slice(&if_id.to_ne_bytes());
        epb.extend_from_slice(&((unix_ns >> 32) as u32).to_ne_bytes());
        epb.extend_from_slice(&(unix_ns as u32).to_ne_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        epb.extend_from_slice(&orig_len.max(data.len() as u32).to_ne_bytes());
        epb.extend_from_slice(data);
        pad(&mut epb);
        option(&mut epb, OPT_COMMENT, comment.as_bytes());
        option(&mut epb, OPT_ENDOFOPT, &[]);
        block(&mut self.out, BLOCK_EPB, &epb)
    }

    /// Flushes what was written.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes(b[i..i + 4].try_into().unwrap())
    }

    #[test]
    fn blocks_are_framed_and_aligned() {
        let ifs = [
            Interface {
                name: "r1",
                description: "egress",
                linktype: LINKTYPE_ETHERNET,
            },
            Interface {
                name: "r1",
                description: "ingress",
                linktype: LINKTYPE_ETHERNET,
            },
        ];
        let mut w = PcapngWriter::new(Vec::new(), &ifs, 128).unwrap();
        w.packet(
            1,
            1_700_000_000_123_456_789,
            &[1, 2, 3],
            60,
            "rule=0 actions=drop-loss",
        )
        .unwrap();
        assert!(w.packet(2, 0, &[1], 1, "").is_err(), "no interface 2");
        let b = w.into_inner();
        assert!(b.len().is_multiple_of(4));
        // Walk the blocks: each total length is at its start and its end.
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < b.len() {
            let kind = u32_at(&b, at);
            let total = u32_at(&b, at + 4) as usize;
            assert!(total.is_multiple_of(4));
            assert_eq!(u32_at(&b, at + total - 4) as usize, total);
            kinds.push(kind);
            at += total;
        }
        assert_eq!(kinds, [BLOCK_SHB, BLOCK_IDB, BLOCK_IDB, BLOCK_EPB]);
        assert_eq!(at, b.len());
        // The packet names interface 1: the EPB's first word.
        let epb = b.len() - u32_at(&b, b.len() - 4) as usize;
        assert_eq!(u32_at(&b, epb + 8), 1);
    }
}
