use super::*;

fn delay(text: &str, mode: TraceMode, end: TraceEnd) -> Series {
    Series::parse("d.csv", text, SeriesKind::Delay, mode, end).unwrap()
}

#[test]
fn times_in_ms_or_with_units_values_in_flag_units() {
    let s = delay(
        "time,value\n# a comment\n0,10ms\n1.5s,50ms\n3000,10ms\n",
        TraceMode::Step,
        TraceEnd::Loop,
    );
    assert_eq!(
        s.points,
        vec![(0, 10e6), (1_500_000_000, 50e6), (3_000_000_000, 10e6)]
    );
    let l = Series::parse(
        "l.csv",
        "0,0%\n100,50%\n",
        SeriesKind::Loss,
        TraceMode::Step,
        TraceEnd::Hold,
    )
    .unwrap();
    assert_eq!(l.points, vec![(0, 0.0), (100_000_000, 0.5)]);
}

#[test]
fn errors_name_file_and_line() {
    let e = Series::parse(
        "d.csv",
        "0,10ms\n5,fast\n",
        SeriesKind::Delay,
        TraceMode::Step,
        TraceEnd::Loop,
    )
    .unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().starts_with("d.csv:2: invalid delay"), "{e}");
    let e = Series::parse(
        "d.csv",
        "10,1ms\n5,2ms\n",
        SeriesKind::Delay,
        TraceMode::Step,
        TraceEnd::Loop,
    )
    .unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("must not decrease"), "{e}");
    let e = Series::parse(
        "l.csv",
        "0 5%\n",
        SeriesKind::Loss,
        TraceMode::Step,
        TraceEnd::Loop,
    )
    .unwrap_err();
    assert_eq!(e.line, 1);
    assert!(Series::parse(
        "l.csv",
        "\n",
        SeriesKind::Loss,
        TraceMode::Step,
        TraceEnd::Loop
    )
    .is_err());
    let e = Series::parse(
        "l.csv",
        "0,150%\n",
        SeriesKind::Loss,
        TraceMode::Step,
        TraceEnd::Loop,
    )
    .unwrap_err();
    assert_eq!(e.line, 1);
}

#[test]
fn step_and_linear_values() {
    let text = "0,10ms\n100,30ms\n200,30ms\n";
    let s = delay(text, TraceMode::Step, TraceEnd::Loop);
    assert_eq!(s.at(0), 10e6);
    assert_eq!(s.at(99_999_999), 10e6);
    assert_eq!(s.at(100_000_000), 30e6);
    let l = delay(text, TraceMode::Linear, TraceEnd::Loop);
    assert_eq!(l.at(50_000_000), 20e6);
    assert_eq!(l.at(150_000_000), 30e6);
    assert_eq!(l.at(500_000_000), 30e6, "after the last point: the last");
}

#[test]
fn expansion_is_one_value_per_millisecond() {
    let s = delay(
        "0,10ms\n100,30ms\n200,30ms\n",
        TraceMode::Step,
        TraceEnd::Loop,
    );
    let (h, v) = s.expand();
    assert_eq!(h.step_ns, 1_000_000);
    assert_eq!(h.len, 200, "loop: the period is the last time");
    assert_eq!(h.flags, series_flags::LOOP);
    assert_eq!(v[0], 10_000);
    assert_eq!(v[99], 10_000);
    assert_eq!(v[100], 30_000);
    let hold = delay("0,10ms\n100,30ms\n", TraceMode::Linear, TraceEnd::Hold);
    let (h, v) = hold.expand();
    assert_eq!((h.len, h.flags), (101, 0), "hold: the last value included");
    assert_eq!(v[50], 20_000);
    assert_eq!(v[100], 30_000);
}

#[test]
fn long_series_get_coarser_steps_within_the_table() {
    // 10 minutes: 600,000 ms do not fit in 65,536 values: 10 ms steps.
    let s = delay("0,10ms\n600000,20ms\n", TraceMode::Step, TraceEnd::Loop);
    let (h, v) = s.expand();
    assert_eq!(h.step_ns, 10_000_000);
    assert_eq!(h.len, 60_000);
    assert_eq!(v.len(), 60_000);
    assert!(step_ns(65_535_000_000) == 1_000_000);
    assert!(step_ns(65_536_000_000) == 2_000_000);
    // A single point: one value, held or looped.
    let one = delay("0,5ms\n", TraceMode::Step, TraceEnd::Loop);
    assert_eq!(one.expand().1, vec![5_000]);
}

#[test]
fn read_back_tables_expand_to_the_same_values() {
    for end in [TraceEnd::Loop, TraceEnd::Hold] {
        let s = Series::parse(
            "l.csv",
            "0,1%\n7,20%\n30,5%\n",
            SeriesKind::Loss,
            TraceMode::Linear,
            end,
        )
        .unwrap();
        let (h, v) = s.expand();
        let back = Series::from_table(SeriesKind::Loss, &h, &v);
        let (h2, v2) = back.expand();
        assert_eq!(
            (h2.len, h2.step_ns, h2.flags),
            (h.len, h.step_ns, h.flags),
            "{end:?}"
        );
        // Thresholds go through a fraction and back: equal within one.
        assert_eq!(v2.len(), v.len());
        for (a, b) in v2.iter().zip(&v) {
            assert!(a.abs_diff(*b) <= 1, "{end:?}: {a} vs {b}");
        }
    }
}
