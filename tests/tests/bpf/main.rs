//! BPF_PROG_TEST_RUN tier: the real programs — `impair_egress` (tc egress),
//! `impair_ingress` (tc ingress) and `impair_xdp` — run by the kernel on
//! crafted frames. A test that applies at more than one hook runs at each:
//! the hooks share the decision code but reach the packet differently (skb
//! helpers vs direct packet access with incremental checksum updates), and
//! only egress can hold, reorder or copy a packet. Needs root and the real
//! eBPF object.
//!
//! Modules by what they check:
//! - `matching`: every parse path and rule match, fail-open on garbage;
//! - `loss`: loss decisions and counters, the in-kernel rates, seeds, the
//!   lease, rule-set swaps;
//! - `mutation`: ECN, MTU, blackhole, detectable and silent corruption;
//! - `timing`: `skb->tstamp` (delay, jitter, rate, reorder, in-order),
//!   policing at the receive hooks, duplication;
//! - `fuzz`: random, truncated and malformed frames at every hook under rule
//!   sets reaching every path: allowed verdicts, consistent counters, no
//!   errors beyond the counted fail-open;
//! - `verifier`: every program at every hook accepted by this kernel's
//!   verifier within the instruction-count guard, and one packet through each
//!   path. What differs by kernel: the VM tier runs `bpf verifier::` on every
//!   kernel it boots (`cargo xtask vm`).
mod fuzz;
mod loss;
mod matching;
mod matrix;
mod mutation;
mod series;
mod timing;
mod trace;
mod verifier;
