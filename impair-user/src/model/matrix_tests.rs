use super::*;

const CSV: &str = "\
# regions
prefix,delay,jitter,loss,rate
198.18.1.0/24,30ms,2ms,0.5%,100mbit
198.18.1.7,80ms,,,
2001:2::/48,,,1%,
";

#[test]
fn csv_parses_units_and_empty_cells() {
    let m = Matrix::parse_csv("m.csv", CSV).unwrap();
    assert_eq!(m.dests.len(), 3);
    let d = &m.dests[0];
    assert_eq!(d.prefix.to_string(), "198.18.1.0/24");
    assert_eq!(d.delay_ns, Some(30_000_000));
    assert_eq!(d.jitter_ns, Some(2_000_000));
    assert_eq!(d.loss, Some(0.005));
    assert_eq!(d.rate_bps, Some(100_000_000));
    let host = &m.dests[1];
    assert_eq!(host.prefix.to_string(), "198.18.1.7/32");
    assert_eq!(
        (host.jitter_ns, host.loss, host.rate_bps),
        (None, None, None)
    );
    assert_eq!(m.dests[2].delay_ns, None);
    assert_eq!(m.dests[2].loss, Some(0.01));
}

#[test]
fn header_columns_may_come_in_any_order() {
    let m = Matrix::parse_csv(
        "m.csv",
        "loss,prefix,rate,delay,jitter\n2%,198.18.0.0/16,,5ms,\n",
    )
    .unwrap();
    assert_eq!(m.dests[0].loss, Some(0.02));
    assert_eq!(m.dests[0].delay_ns, Some(5_000_000));
}

#[test]
fn errors_name_file_line_and_column() {
    let e = Matrix::parse_csv(
        "m.csv",
        "prefix,delay,jitter,loss,rate\n198.18.1.0/24,30ms,,,\n198.18.2.0/24,30 parsecs,,,\n",
    )
    .unwrap_err();
    assert_eq!((e.line, e.column, e.column_name.as_str()), (3, 2, "delay"));
    let text = e.to_string();
    assert!(
        text.starts_with("m.csv:3: column 2 (delay): invalid delay"),
        "{text}"
    );

    let e = Matrix::parse_csv(
        "m.csv",
        "prefix,delay,jitter,loss,rate\n10.0.0.0/8,,,150%,\n",
    )
    .unwrap_err();
    assert_eq!((e.line, e.column), (2, 4));
    let e =
        Matrix::parse_csv("m.csv", "prefix,delay,jitter,loss,rate\n10.0.0.0/33,,,,\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 1));
    let e = Matrix::parse_csv("m.csv", "prefix,delay,jitter,loss,rate\n10.0.0.0/8,,,,10\n")
        .unwrap_err();
    assert_eq!((e.line, e.column), (2, 5), "a rate needs a unit");
    let e =
        Matrix::parse_csv("m.csv", "prefix,delay,jitter,loss,rate\n10.0.0.0/8,1ms\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("2 cells"), "{e}");
}

#[test]
fn header_problems_are_reported() {
    let e = Matrix::parse_csv("m.csv", "prefix,delay,latency,loss,rate\n").unwrap_err();
    assert_eq!(
        (e.line, e.column, e.column_name.as_str()),
        (1, 3, "latency")
    );
    let e = Matrix::parse_csv("m.csv", "prefix,delay,loss,rate\n").unwrap_err();
    assert_eq!(e.column_name, "jitter");
    let e = Matrix::parse_csv("m.csv", "prefix,delay,delay,jitter,loss,rate\n").unwrap_err();
    assert_eq!(e.column, 3);
    assert!(Matrix::parse_csv("m.csv", "# only a comment\n").is_err());
    let e = Matrix::parse_csv("m.csv", "prefix,delay,jitter,loss,rate\n").unwrap_err();
    assert!(e.message.contains("no destinations"), "{e}");
}

#[test]
fn duplicate_prefixes_name_both_lines() {
    let e = Matrix::parse_csv(
        "m.csv",
        "prefix,delay,jitter,loss,rate\n10.1.0.0/16,1ms,,,\n10.2.0.0/16,1ms,,,\n10.1.0.0/16,2ms,,,\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 4);
    assert!(e.message.contains("first on line 2"), "{e}");
}

#[test]
fn toml_matches_csv_and_errors_have_lines() {
    let toml = r#"
[[dest]]
prefix = "198.18.1.0/24"
delay = "30ms"
jitter = "2ms"
loss = "0.5%"
rate = "100mbit"

[[dest]]
prefix = "198.18.1.7"
delay = "80ms"

[[dest]]
prefix = "2001:2::/48"
loss = "1%"
"#;
    let t = Matrix::parse_toml("m.toml", toml).unwrap();
    let c = Matrix::parse_csv("m.toml", CSV).unwrap();
    assert_eq!(t, c);

    let bad = "[[dest]]\nprefix = \"10.0.0.0/8\"\n\n[[dest]]\nprefix = \"10.1.0.0/16\"\nrate = \"fast\"\n";
    let e = Matrix::parse_toml("m.toml", bad).unwrap_err();
    assert_eq!((e.line, e.column_name.as_str()), (6, "rate"));
    assert!(
        e.to_string().starts_with("m.toml:6: rate: invalid rate"),
        "{e}"
    );
    let e = Matrix::parse_toml(
        "m.toml",
        "[[dest]]\nprefix = \"10.0.0.0/8\"\nlatency = \"1ms\"\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn entries_map_prefixes_into_the_trie_key_space() {
    use impair_common::matrix::{matrix_flags, FULL_PREFIX_LEN};
    let m = Matrix::parse_csv("m.csv", CSV).unwrap();
    let e = m.entries(65);
    assert_eq!(e[0].0, v4_prefix_len(24));
    assert_eq!(e[0].1, MatrixAddr::v4(65, [198, 18, 1, 0]));
    assert_eq!(e[1].0, FULL_PREFIX_LEN);
    assert_eq!(e[2].0, v6_prefix_len(48));
    let v = e[0].2;
    assert_eq!(
        v.flags,
        matrix_flags::DELAY | matrix_flags::LOSS | matrix_flags::RATE
    );
    assert_eq!(v.rate_ps_per_byte, 80_000, "100 Mbit/s is 80 ns a byte");
    assert_eq!(v.queue_limit_ns, 1000 * QUEUE_PACKET_BYTES * 80);
    assert_eq!(e[1].2.flags, matrix_flags::DELAY);
    assert_eq!(e[2].2.flags, matrix_flags::LOSS);
    assert_eq!(e[2].2.delay_ns, 0);
}

#[test]
fn at_most_the_data_paths_prefix_count() {
    let mut text = String::from("prefix,delay,jitter,loss,rate\n");
    for i in 0..=MATRIX_MAX_DESTS {
        let a = 0x0a00_0000u32 + i;
        text.push_str(&format!("{}/32,1ms,,,\n", std::net::Ipv4Addr::from(a)));
    }
    let e = Matrix::parse_csv("big.csv", &text).unwrap_err();
    assert_eq!(e.line, MATRIX_MAX_DESTS as usize + 2);
    assert!(e.message.contains("more than 100000"), "{e}");
}
