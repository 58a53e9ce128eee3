//! Every command-line value parser on arbitrary text: no panic, and every
//! rejection is one line that says something.
#![no_main]
use impair::model::{
    dist::parse_distribution,
    units::{
        parse_cell, parse_cidr, parse_duration_ns, parse_loss_model, parse_mtu, parse_percent,
        parse_port_range, parse_proto, parse_queue, parse_rate_bps,
    },
};
use libfuzzer_sys::fuzz_target;

fn one_line(what: &str, input: &str, msg: &str) {
    assert!(!msg.trim().is_empty(), "{what}({input:?}): an empty error");
    assert!(
        !msg.contains('\n'),
        "{what}({input:?}): more than one line: {msg}"
    );
}

fuzz_target!(|s: &str| {
    macro_rules! check {
        ($name:literal, $e:expr) => {
            if let Err(e) = $e {
                one_line($name, s, &e.0);
            }
        };
    }
    check!("percent", parse_percent("percentage", s));
    check!("duration", parse_duration_ns("time", s));
    check!("rate", parse_rate_bps(s));
    check!("queue", parse_queue(s));
    check!("loss model", parse_loss_model(s));
    check!("cidr", parse_cidr("prefix", s));
    check!("proto", parse_proto(s));
    check!("ports", parse_port_range("port", s));
    check!("cell", parse_cell(s));
    check!("mtu", parse_mtu(s));
    // A distribution with a '/' names a file: not text to parse.
    if !s.contains('/') {
        check!("distribution", parse_distribution(s));
    }
});
