//! Property tests of latency-matrix files (the `fuzz_inputs.rs` pattern):
//! for any text, CSV or TOML, no panic, and every rejection is one line
//! that starts with `FILE:LINE:`; a generated valid matrix parses back to
//! the values written, compiles to one trie entry per prefix, and reads
//! back from its entries (what `impair update` keeps) unchanged.
use std::net::Ipv4Addr;

use impair::model::{matrix::Dest, Matrix};
use proptest::prelude::*;

/// A cell: arbitrary text, or shaped like the columns' values.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\n\r,]{0,12}",
        "-?[0-9]{0,5}(\\.[0-9]{0,3})?(%|ms|s|us|ns|bit|kbit|mbit|gbit|kbps|/)?",
        "[0-9a-f:.]{0,18}(/[0-9]{0,3})?",
        Just(String::new()),
    ]
}

/// A CSV text: sometimes the real header, then rows of cells.
fn csv_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("prefix,delay,jitter,loss,rate".to_owned()),
            "[a-z,]{0,30}",
        ],
        prop::collection::vec(prop::collection::vec(cell(), 0..7), 0..6),
    )
        .prop_map(|(h, rows)| {
            let mut s = h + "\n";
            for r in rows {
                s += &r.join(",");
                s += "\n";
            }
            s
        })
}

/// A TOML text: `[[dest]]` tables with real and made-up keys.
fn toml_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::collection::vec(
            (
                prop_oneof![
                    Just("prefix"),
                    Just("delay"),
                    Just("jitter"),
                    Just("loss"),
                    Just("rate"),
                    Just("latency")
                ],
                cell(),
            ),
            0..5,
        ),
        0..4,
    )
    .prop_map(|tables| {
        let mut s = String::new();
        for t in tables {
            s += "[[dest]]\n";
            for (k, v) in t {
                s += &format!("{k} = {v:?}\n");
            }
        }
        s
    })
}

fn refused_with_a_place(file: &str, text: &str, msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(!msg.contains('\n'), "{text:?}: more than one line: {msg}");
    prop_assert!(
        msg.starts_with(&format!("{file}:")),
        "{text:?}: the error names the file: {msg}"
    );
    let line = msg[file.len() + 1..].split(':').next().unwrap_or("");
    prop_assert!(
        line.parse::<usize>().is_ok(),
        "{text:?}: then a line number: {msg}"
    );
    Ok(())
}

/// A row: an IPv4 address and delay (us), jitter (us), loss (%), rate (kbit).
type Row = (u32, Option<u32>, Option<u32>, Option<u32>, Option<u32>);

/// Valid rows: distinct /32s and values in the columns' units.
fn valid_rows() -> impl Strategy<Value = Vec<Row>> {
    prop::collection::btree_map(
        any::<u32>(),
        (
            prop::option::of(0u32..10_000),
            prop::option::of(0u32..1_000),
            prop::option::of(0u32..=100),
            prop::option::of(1u32..10_000),
        ),
        1..40,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(a, (d, j, l, r))| (a, d, j, l, r))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn csv_never_panics_and_refuses_with_file_and_line(text in csv_text()) {
        match Matrix::parse_csv("m.csv", &text) {
            Ok(m) => {
                prop_assert!(!m.dests.is_empty());
                prop_assert_eq!(m.entries(3).len(), m.dests.len());
            }
            Err(e) => refused_with_a_place("m.csv", &text, &e.to_string())?,
        }
    }

    #[test]
    fn toml_never_panics_and_refuses_with_file_and_line(text in toml_text()) {
        match Matrix::parse_toml("m.toml", &text) {
            Ok(m) => prop_assert_eq!(m.entries(0).len(), m.dests.len()),
            Err(e) => refused_with_a_place("m.toml", &text, &e.to_string())?,
        }
    }

    #[test]
    fn valid_matrices_parse_back_and_survive_the_trie(rows in valid_rows()) {
        let mut text = String::from("prefix,delay,jitter,loss,rate\n");
        let opt = |v: Option<u32>, unit: &str| v.map_or(String::new(), |v| format!("{v}{unit}"));
        for (a, d, j, l, r) in &rows {
            text += &format!(
                "{},{},{},{},{}\n",
                Ipv4Addr::from(*a),
                opt(*d, "us"),
                opt(*j, "us"),
                opt(*l, "%"),
                opt(*r, "kbit"),
            );
        }
        let m = Matrix::parse_csv("m.csv", &text).unwrap();
        prop_assert_eq!(m.dests.len(), rows.len());
        for (d, (_, delay, jitter, loss, rate)) in m.dests.iter().zip(&rows) {
            prop_assert_eq!(d.delay_ns, delay.map(|v| u64::from(v) * 1_000));
            prop_assert_eq!(d.jitter_ns, jitter.map(|v| u64::from(v) * 1_000));
            prop_assert_eq!(d.loss, loss.map(|v| f64::from(v) / 100.0));
            prop_assert_eq!(d.rate_bps, rate.map(|v| u64::from(v) * 1_000));
            // Read back from the trie value: the same destination, with the
            // loss as the data path's threshold holds it and the rate through
            // picoseconds per byte.
            let back = Dest::of_entry(d.prefix, &d.entry());
            prop_assert_eq!(back.prefix, d.prefix);
            prop_assert_eq!(back.delay_ns, d.delay_ns.or(d.jitter_ns.map(|_| 0)));
            prop_assert_eq!(back.jitter_ns, d.jitter_ns.filter(|&j| j != 0));
            if let (Some(a), Some(b)) = (back.loss, d.loss) {
                prop_assert!((a - b).abs() < 1e-9, "loss {a} vs {b}");
            } else {
                prop_assert_eq!(back.loss.is_some(), d.loss.is_some());
            }
            if let (Some(a), Some(b)) = (back.rate_bps, d.rate_bps) {
                prop_assert!((a as f64 - b as f64).abs() <= b as f64 * 1e-3, "rate {a} vs {b}");
            } else {
                prop_assert_eq!(back.rate_bps.is_some(), d.rate_bps.is_some());
            }
        }
    }
}
