//! A connection's own TCP counters as the kernel leaves them when the socket
//! is destroyed: `ss -tinE` (iproute2) prints every TCP socket of the
//! namespace at the moment it is freed, with its `tcp_info` (`data_segs_in`,
//! `data_segs_out`, `delivered`, ...), so the last values of a connection are
//! read exactly, not sampled some time before it closed.
//!
//! `data_segs_in` and `data_segs_out` count wire segments (`tcp_segs_in`
//! adds an skb's `gso_segs`, `tcp_transmit_skb` its `tcp_skb_pcount`),
//! retransmissions and duplicates included; the MIB's TcpInSegs counts skbs
//! after GRO instead.
use std::{
    collections::HashMap,
    io::Read as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// One socket of `ss -tin` output: its addresses and its `tcp_info` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// `ADDR:PORT` as ss prints it.
    pub local: String,
    pub peer: String,
    /// `name:value` pairs of the info line (`data_segs_in` → `"115864"`).
    pub fields: HashMap<String, String>,
}

impl Socket {
    /// A numeric field (absent: 0, as ss leaves out zero counters).
    pub fn n(&self, name: &str) -> u64 {
        self.fields
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The port of `ADDR:PORT` (`[v6]:PORT` too).
    fn port_of(addr: &str) -> Option<u16> {
        addr.rsplit(':').next()?.parse().ok()
    }

    pub fn local_port(&self) -> Option<u16> {
        Self::port_of(&self.local)
    }

    pub fn peer_port(&self) -> Option<u16> {
        Self::port_of(&self.peer)
    }
}

/// Parses `ss -tinH` / `ss -tinEH` output: a line `STATE RECV-Q SEND-Q
/// LOCAL PEER [PROCESS]`, then an indented line of fields (`mss:1448`,
/// `bytes_received:...`; bare words such as `cubic` or `app_limited` and
/// ones like `send 52bps` are skipped). A socket without an info line has
/// no fields.
pub fn parse(text: &str) -> Vec<Socket> {
    let mut out: Vec<Socket> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if let Some(s) = out.last_mut() {
                for w in line.split_whitespace() {
                    if let Some((k, v)) = w.split_once(':') {
                        s.fields.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() >= 5 {
            out.push(Socket {
                local: w[3].to_owned(),
                peer: w[4].to_owned(),
                fields: HashMap::new(),
            });
        }
    }
    out
}

/// `ss -tinEH` running in a namespace: collects the TCP sockets destroyed
/// there until [`Destroyed::finish`].
pub struct Destroyed {
    child: Child,
}

impl Destroyed {
    /// Starts listening in `ns` (give it a moment before the traffic:
    /// [`Destroyed::start`] waits 200 ms for ss to subscribe).
    pub fn start(ns: &str) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "stdbuf", "-oL", "ss", "-tinEH"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ss -tinE");
        std::thread::sleep(Duration::from_millis(200));
        Self { child }
    }

    /// Waits `settle` for the last sockets to go, stops ss and returns
    /// every socket it saw destroyed.
    pub fn finish(mut self, settle: Duration) -> Vec<Socket> {
        std::thread::sleep(settle);
        // SAFETY: kill(2) on the pid of a child this value owns and has not
        // reaped (`ip netns exec` and stdbuf exec into ss: one process).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut text = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = self.child.wait();
        parse(&text)
    }
}

impl Drop for Destroyed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sockets_and_their_fields() {
        // Real `ss -tinEH` output (iproute2 6.1): a sender's and a
        // listener's destroyed sockets, the second with few fields.
        let text = "UNCONN 0      131072 198.18.7.1:43870 198.18.7.2:5201\n\t wscale:10,10 rto:204 \
                    rtt:0.063/0.016 mss:1448 cwnd:284 bytes_sent:20971557 bytes_acked:20840486 \
                    segs_out:14563 segs_in:317 data_segs_out:14561 send 52219936508bps lastrcv:336 \
                    delivered:14471 app_limited\n\
                    UNCONN 0      0      [2001:2::1]:5201    [::]:*    \n\t rto:1000 mss:536 cwnd:10\n\
                    UNCONN 0 0 198.18.7.2:5201 198.18.7.1:1\n";
        let s = parse(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].local, "198.18.7.1:43870");
        assert_eq!(s[0].peer_port(), Some(5201));
        assert_eq!(s[0].local_port(), Some(43870));
        assert_eq!(s[0].n("data_segs_out"), 14561);
        assert_eq!(s[0].n("delivered"), 14471);
        assert_eq!(s[0].n("bytes_acked"), 20840486);
        assert_eq!(s[0].n("data_segs_in"), 0, "absent counters are 0");
        assert_eq!(s[0].fields["rtt"], "0.063/0.016");
        assert!(!s[0].fields.contains_key("send"));
        assert_eq!(s[1].local_port(), Some(5201));
        assert_eq!(s[1].peer_port(), None);
        assert_eq!(s[1].n("mss"), 536);
        assert!(s[2].fields.is_empty());
        assert!(parse("").is_empty());
    }
}
