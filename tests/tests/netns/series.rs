//! A loss series at the router's egress, measured at the receiver: each
//! step's loss inside the 99% Wilson interval of the step's value. (Delay
//! series need sch_fq, which the host lacks: the BPF tier checks their
//! departure times step by step.)
use std::time::{Duration, Instant};

use impair_tests::{
    ns::{lab, probe, Site},
    stats::assert_inside_99,
    Scratch,
};

#[test]
fn loss_series_steps_are_what_the_receiver_sees() {
    let lab = lab("series");
    let scratch = Scratch::new("series");
    // 40% for the first 6 s (attaching on a loaded machine takes seconds),
    // then 5%, held.
    let file = scratch.file("loss.csv", "time,value\n0,40%\n6000,5%\n");
    let site = Site::RouterEgress;
    let before = site.state(&lab);
    let t0 = Instant::now();
    let ctl = site.attach(
        &lab,
        &["--loss-trace", &file, "--trace-end", "hold", "--seed", "7"],
    );
    // The series' time 0 is when the rule set was written: after t0, before t1.
    let t1 = Instant::now();
    assert!(ctl.first_line.contains("loss-trace"), "{}", ctl.first_line);
    let first = probe(&lab, false, 0, 4_000, 200);
    let first_done = t0.elapsed();
    assert!(
        first_done < Duration::from_millis(5_800),
        "the first step's probe ended {first_done:?} after the attach began: the series' \
         first step (6 s from the rule set's start, which comes after that) must hold it"
    );
    assert_inside_99(0.40, first.lost, first.sent);
    std::thread::sleep(Duration::from_millis(6_200).saturating_sub(t1.elapsed()));
    let second = probe(&lab, false, 0, 10_000, 200);
    assert_inside_99(0.05, second.lost, second.sent);
    let stats = site.stats(&lab);
    let rule = &stats["rules"][0];
    assert_eq!(
        rule["dropped_loss"],
        first.lost + second.lost,
        "engine drops == receiver losses: {stats}"
    );
    let status = ctl.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
    site.assert_restored(&lab, &before);
}
