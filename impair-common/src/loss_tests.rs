//! Tests of the loss models: analytic loss rates and run lengths against
//! long simulations with the data path's own generator.
extern crate std;
use super::*;
use crate::rng;
use std::vec::Vec;

const BATCHES: usize = 100;

/// The half-width multiplier that makes a whole test a 99% test.
///
/// Each statistical test below makes 15 checks (5 parameter sets × loss
/// rate, mean loss run, mean gap run). At 99% each, a correct model would
/// fail one of them for ~14% of seeds; with the Bonferroni correction each
/// check is two-sided at α = 0.01/15, so the test as a whole fails a correct
/// model with probability ≤ 1%. The normal quantile at 1 − α/2 = 0.99967 is
/// 3.40; Student's t with 99 degrees of freedom (100 batch means) adds
/// ≈ (z³ + z)/(4·99) = 0.11, giving 3.51.
const T_FAMILY_99: f64 = 3.51;

/// Batch-means estimate of a correlated series' mean and its standard error.
///
/// Splitting n correlated observations into B consecutive batches much
/// longer than the correlation time makes the batch means nearly
/// independent and normal, so SE = sd(batch means)/√B and the 99% interval
/// uses Student's t with B-1 degrees of freedom. Every chain tested here
/// forgets its state within a few hundred packets (the slowest leaves
/// gap-received with probability 0.007 per packet, ~140 packets) and
/// successive runs are independent or nearly so (a run's length depends
/// only on the state it starts in), while each batch holds 20,000 packets
/// or 200+ runs, so the batch means are close to independent.
fn batch_means(values: &[f64]) -> (f64, f64) {
    let per = values.len() / BATCHES;
    assert!(
        per >= 100,
        "too few values ({}) for batch means",
        values.len()
    );
    let means: Vec<f64> = values
        .chunks_exact(per)
        .take(BATCHES)
        .map(|c| c.iter().sum::<f64>() / per as f64)
        .collect();
    let mean = means.iter().sum::<f64>() / BATCHES as f64;
    let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (BATCHES - 1) as f64;
    (mean, (var / BATCHES as f64).sqrt())
}

struct Run {
    /// 1.0 per lost packet, 0.0 per received one.
    lost: Vec<f64>,
    loss_runs: Vec<f64>,
    gap_runs: Vec<f64>,
}

/// Runs `step` for `n` packets from a zeroed state and records the loss
/// sequence and the completed loss and gap runs (the run still open at the
/// end is discarded; the first run is complete as it starts at packet 0).
fn simulate(n: usize, seed: u64, mut step: impl FnMut(&mut u32, u64) -> bool) -> Run {
    let mut rng_state = rng::cpu_state(seed, 0);
    let mut state = 0u32;
    let mut lost = Vec::with_capacity(n);
    let (mut loss_runs, mut gap_runs) = (Vec::new(), Vec::new());
    let mut current: Option<(bool, u64)> = None;
    for _ in 0..n {
        let l = step(&mut state, rng::next_u64(&mut rng_state));
        lost.push(if l { 1.0 } else { 0.0 });
        current = match current {
            Some((kind, len)) if kind == l => Some((kind, len + 1)),
            Some((kind, len)) => {
                let runs = if kind { &mut loss_runs } else { &mut gap_runs };
                runs.push(len as f64);
                Some((l, 1))
            }
            None => Some((l, 1)),
        };
    }
    Run {
        lost,
        loss_runs,
        gap_runs,
    }
}

/// Checks one simulated run against the model's expectation: the loss rate
/// and both mean run lengths each inside their batch-means interval
/// ([`T_FAMILY_99`] standard errors, plus a 1e-12 slack for exact cases),
/// and each interval narrow enough (< `max_rel` of the value) that passing
/// it means something.
fn check(name: &str, run: &Run, e: &LossExpectation, max_rel: f64) {
    let (rate, se) = batch_means(&run.lost);
    assert!(
        (rate - e.loss_rate).abs() <= T_FAMILY_99 * se + 1e-12,
        "{name}: loss rate {rate} vs expected {} (99% half-width {})",
        e.loss_rate,
        T_FAMILY_99 * se
    );
    assert!(
        T_FAMILY_99 * se < max_rel * e.loss_rate,
        "{name}: loss rate interval too wide"
    );
    for (what, runs, want) in [
        ("loss run", &run.loss_runs, e.mean_loss_run),
        ("gap run", &run.gap_runs, e.mean_gap_run),
    ] {
        let (mean, se) = batch_means(runs);
        assert!(
            (mean - want).abs() <= T_FAMILY_99 * se + 1e-12,
            "{name}: mean {what} {mean} vs expected {want} (99% half-width {})",
            T_FAMILY_99 * se
        );
        assert!(
            T_FAMILY_99 * se < max_rel * want,
            "{name}: {what} interval too wide"
        );
    }
}

fn ge(p: [u32; 5]) -> impl FnMut(&mut u32, u64) -> bool {
    move |s, r| gilbert_elliott(&p, s, r)
}

fn fs(p: [u32; 5]) -> impl FnMut(&mut u32, u64) -> bool {
    move |s, r| four_state(&p, s, r)
}

const N: usize = 2_000_000;

#[test]
fn gilbert_elliott_matches_analytic_rates_and_run_lengths() {
    let cases = [
        (
            "netem default gemodel 1%",
            gilbert_elliott_netem_defaults(0.01),
        ),
        (
            "netem default gemodel 20%",
            gilbert_elliott_netem_defaults(0.20),
        ),
        (
            "simple gilbert p=1% r=10%",
            gilbert_elliott_params(0.01, 0.10, 1.0, 0.0),
        ),
        (
            "gilbert p=5% r=30% 1-h=70%",
            gilbert_elliott_params(0.05, 0.30, 0.70, 0.0),
        ),
        (
            "full GE p=2% r=25% 1-h=80% 1-k=0.5%",
            gilbert_elliott_params(0.02, 0.25, 0.80, 0.005),
        ),
    ];
    for (i, (name, p)) in cases.into_iter().enumerate() {
        let run = simulate(N, 1000 + i as u64, ge(p));
        check(name, &run, &gilbert_elliott_expectation(&p), 0.05);
    }
}

#[test]
fn gilbert_elliott_batch_variance_matches_chain_mixing() {
    // Cross-checks the batch-means machinery against the closed form for a
    // two-state chain: with λ = 1-p-r and per-state loss l_G, l_B,
    // Cov(X_0, X_k) = π_G π_B (l_B - l_G)² λ^k for k ≥ 1, so the asymptotic
    // variance of the loss indicator's mean is
    // σ² = P(1-P) + 2 π_G π_B (l_B - l_G)² λ/(1-λ). The batch-means SE must
    // agree with √(σ²/n) within its own sampling error (±30% is ~3 sd for
    // a variance estimated from 100 batches).
    let p = gilbert_elliott_params(0.02, 0.25, 0.80, 0.005);
    let run = simulate(N, 77, ge(p));
    let (_, se) = batch_means(&run.lost);
    let (pp, rr) = (prob::to_fraction(p[GE_P]), prob::to_fraction(p[GE_R]));
    let (lg, lb) = (
        prob::to_fraction(p[GE_ONE_MINUS_K]),
        prob::to_fraction(p[GE_ONE_MINUS_H]),
    );
    let (pi_g, pi_b) = (rr / (pp + rr), pp / (pp + rr));
    let loss = pi_g * lg + pi_b * lb;
    let lambda = 1.0 - pp - rr;
    let sigma2 =
        loss * (1.0 - loss) + 2.0 * pi_g * pi_b * (lb - lg).powi(2) * lambda / (1.0 - lambda);
    let analytic = (sigma2 / N as f64).sqrt();
    let ratio = se / analytic;
    assert!(
        (0.7..1.3).contains(&ratio),
        "batch SE {se} vs analytic {analytic}"
    );
    // The correlation matters: an i.i.d. bound would be far too narrow.
    let iid = (loss * (1.0 - loss) / N as f64).sqrt();
    assert!(analytic > 1.5 * iid);
}

#[test]
fn simple_gilbert_closed_forms() {
    let p = gilbert_elliott_params(0.03, 0.2, 1.0, 0.0);
    let e = gilbert_elliott_expectation(&p);
    let (pp, rr) = (prob::to_fraction(p[GE_P]), prob::to_fraction(p[GE_R]));
    assert!((e.loss_rate - pp / (pp + rr)).abs() < 1e-12);
    assert!((e.mean_loss_run - 1.0 / rr).abs() < 1e-9);
    assert!((e.mean_gap_run - 1.0 / pp).abs() < 1e-9);
}

#[test]
fn simple_gilbert_loss_runs_are_geometric_with_mean_one_over_r() {
    // In simple Gilbert a loss run is exactly the stay in BAD, so run lengths
    // are i.i.d. geometric: P(1) = r, P(2) = r(1-r), P(≥3) = (1-r)². Each
    // class count is binomial over the R runs, so its frequency's interval
    // is q ± z √(q(1-q)/R). Four checks (three classes and the mean) at
    // two-sided α = 0.01/4 each (z = 3.02) keep the whole test at 99%.
    const Z: f64 = 3.02;
    let p = gilbert_elliott_params(0.05, 0.4, 1.0, 0.0);
    let r = prob::to_fraction(p[GE_R]);
    let run = simulate(N, 4242, ge(p));
    let runs = &run.loss_runs;
    let total = runs.len() as f64;
    assert!(total > 50_000.0);
    let freq =
        |pred: &dyn Fn(f64) -> bool| runs.iter().filter(|&&l| pred(l)).count() as f64 / total;
    for (what, got, want) in [
        ("P(run=1)", freq(&|l| l == 1.0), r),
        ("P(run=2)", freq(&|l| l == 2.0), r * (1.0 - r)),
        ("P(run>=3)", freq(&|l| l >= 3.0), (1.0 - r) * (1.0 - r)),
    ] {
        let half = Z * (want * (1.0 - want) / total).sqrt();
        assert!(
            (got - want).abs() < half,
            "{what}: {got} vs {want} ± {half}"
        );
    }
    let mean = runs.iter().sum::<f64>() / total;
    // Geometric with mean 1/r has sd √(1-r)/r.
    let half = Z * (1.0 - r).sqrt() / r / total.sqrt();
    assert!(
        (mean - 1.0 / r).abs() < half,
        "mean run {mean} vs {}",
        1.0 / r
    );
}

#[test]
fn four_state_matches_analytic_rates_and_run_lengths() {
    let cases = [
        ("netem default state 1%", four_state_netem_defaults(0.01)),
        ("netem default state 10%", four_state_netem_defaults(0.10)),
        (
            "bursty p13=2% p31=30% p32=20% p23=40% p14=1%",
            four_state_params(0.02, 0.30, 0.20, 0.40, 0.01),
        ),
        (
            "isolated only p14=5%",
            four_state_params(0.0, 0.0, 0.0, 0.0, 0.05),
        ),
        (
            "long bursts p13=0.5% p31=5% p32=10% p23=60% p14=0.2%",
            four_state_params(0.005, 0.05, 0.10, 0.60, 0.002),
        ),
    ];
    for (i, (name, p)) in cases.into_iter().enumerate() {
        let run = simulate(N, 2000 + i as u64, fs(p));
        check(name, &run, &four_state_expectation(&p), 0.05);
    }
}

#[test]
fn four_state_closed_form_stationary_distribution() {
    let p = four_state_params(0.02, 0.30, 0.20, 0.40, 0.01);
    let f = |i| prob::to_fraction(p[i]);
    let (p13, p31, p32, p23, p14) = (f(FS_P13), f(FS_P31), f(FS_P32), f(FS_P23), f(FS_P14));
    let rel = [1.0, p13 * p32 / (p31 * p23), p13 / p31, p14];
    let z: f64 = rel.iter().sum();
    let pi: Vec<f64> = rel.iter().map(|v| v / z).collect();
    let e = four_state_expectation(&p);
    assert!((e.loss_rate - (pi[2] + pi[3])).abs() < 1e-12);
    let p01 = pi[0] * (p13 + p14) + pi[1] * p23;
    assert!((e.mean_loss_run - (pi[2] + pi[3]) / p01).abs() < 1e-9);
    assert!((e.mean_gap_run - (pi[0] + pi[1]) / p01).abs() < 1e-9);
    // netem's `state p13` default is simple Gilbert in disguise: loss runs
    // are geometric with mean 1/p31, gaps 1/p13.
    let d = four_state_netem_defaults(0.1);
    let e = four_state_expectation(&d);
    let (p13, p31) = (prob::to_fraction(d[FS_P13]), prob::to_fraction(d[FS_P31]));
    assert!((e.loss_rate - p13 / (p13 + p31)).abs() < 1e-12);
    assert!((e.mean_loss_run - 1.0 / p31).abs() < 1e-9);
    assert!((e.mean_gap_run - 1.0 / p13).abs() < 1e-9);
}

#[test]
fn all_zero_parameters_never_lose() {
    let zero = [0u32; 5];
    let mut rs = rng::cpu_state(5, 0);
    let (mut ge_state, mut fs_state) = (0u32, 0u32);
    for _ in 0..100_000 {
        let r = rng::next_u64(&mut rs);
        assert!(!gilbert_elliott(&zero, &mut ge_state, r));
        assert!(!four_state(&zero, &mut fs_state, r));
    }
    // Extreme randoms too: 0 must not fire a zero threshold.
    for r in [0, u64::MAX] {
        assert!(!gilbert_elliott(&zero, &mut ge_state, r));
        assert!(!four_state(&zero, &mut fs_state, r));
    }
    assert_eq!(ge_state, GE_GOOD);
    assert_eq!(fs_state, FS_GAP_RECEIVED);
    let e = gilbert_elliott_expectation(&zero);
    assert_eq!((e.loss_rate, e.mean_loss_run), (0.0, 0.0));
    assert!(e.mean_gap_run.is_infinite());
    let e = four_state_expectation(&zero);
    assert_eq!((e.loss_rate, e.mean_loss_run), (0.0, 0.0));
    assert!(e.mean_gap_run.is_infinite());
}

#[test]
fn p14_certain_loses_exactly_every_other_packet() {
    let p = four_state_params(0.0, 0.0, 0.0, 0.0, 1.0);
    assert_eq!(p[FS_P14], u32::MAX);
    let mut rs = rng::cpu_state(9, 0);
    let mut state = 0;
    for i in 0..10_000 {
        let lost = four_state(&p, &mut state, rng::next_u64(&mut rs));
        assert_eq!(lost, i % 2 == 0, "packet {i}");
        assert_eq!(
            state,
            if i % 2 == 0 {
                FS_ISOLATED_LOSS
            } else {
                FS_GAP_RECEIVED
            }
        );
    }
    let e = four_state_expectation(&p);
    assert!((e.loss_rate - 0.5).abs() < 1e-12);
    assert!((e.mean_loss_run - 1.0).abs() < 1e-12);
    assert!((e.mean_gap_run - 1.0).abs() < 1e-12);
}

#[test]
fn max_thresholds_are_certain() {
    let m = u32::MAX;
    for r in [
        0u64,
        1,
        u64::from(u32::MAX),
        u64::MAX,
        0x8000_0000_8000_0000,
    ] {
        // GE: GOOD loses with 1-k = 100% and always moves to BAD; BAD loses
        // with 1-h = 100% and always moves back.
        let p = [m, m, m, m, 0];
        let mut s = GE_GOOD;
        assert!(gilbert_elliott(&p, &mut s, r));
        assert_eq!(s, GE_BAD);
        assert!(gilbert_elliott(&p, &mut s, r));
        assert_eq!(s, GE_GOOD);
        // 4-state: p13 = 100% then p31 = 100%: lost, received, lost, ...
        let p = [m, m, 0, 0, 0];
        let mut s = FS_GAP_RECEIVED;
        assert!(four_state(&p, &mut s, r));
        assert_eq!(s, FS_LOST_IN_BURST);
        assert!(!four_state(&p, &mut s, r));
        assert_eq!(s, FS_GAP_RECEIVED);
        // p23 = 100% and p32 = 100% alternate inside the burst.
        let p = [0, 0, m, m, 0];
        let mut s = FS_BURST_RECEIVED;
        assert!(four_state(&p, &mut s, r));
        assert!(!four_state(&p, &mut s, r));
        assert_eq!(s, FS_BURST_RECEIVED);
        // p14 = p13 = 100% (the controller forbids the sum > 1): the
        // saturating intervals give 1→4 all of the range.
        let p = [m, 0, 0, 0, m];
        let mut s = FS_GAP_RECEIVED;
        assert!(four_state(&p, &mut s, r));
        assert_eq!(s, FS_ISOLATED_LOSS);
    }
    // 100% 1-h keeps BAD losing however the chain moves.
    let p = [m, 0, m, 0, 0];
    let mut rs = rng::cpu_state(3, 0);
    let mut s = 0;
    let lost: Vec<bool> = (0..1000)
        .map(|_| gilbert_elliott(&p, &mut s, rng::next_u64(&mut rs)))
        .collect();
    assert!(!lost[0], "the first packet is judged in GOOD with 1-k = 0");
    assert!(lost[1..].iter().all(|&l| l));
}

#[test]
fn fate_is_decided_by_the_state_before_the_transition() {
    // GOOD with p = 100%, 1-k = 0: the packet that causes GOOD→BAD is received.
    let p = [u32::MAX, 0, u32::MAX, 0, 0];
    let mut s = GE_GOOD;
    assert!(!gilbert_elliott(&p, &mut s, 0));
    assert_eq!(s, GE_BAD);
    // BAD with r = 100%, 1-h = 100%: the packet that causes BAD→GOOD is lost.
    let p = [0, u32::MAX, u32::MAX, 0, 0];
    let mut s = GE_BAD;
    assert!(gilbert_elliott(&p, &mut s, 0));
    assert_eq!(s, GE_GOOD);
    // Loss uses the low 32 bits, the transition the high 32 bits.
    let p = [10, 0, 0, 10, 0];
    let mut s = GE_GOOD;
    assert!(gilbert_elliott(&p, &mut s, 10 | (11u64 << 32)));
    assert_eq!(s, GE_GOOD);
    assert!(!gilbert_elliott(&p, &mut s, 11 | (10u64 << 32)));
    assert_eq!(s, GE_BAD);
}

#[test]
fn four_state_intervals_have_no_gaps_or_overlaps() {
    // From state 1 with p14 = 10, p13 = 20: x in [0, 11) → 4, [11, 32) → 3,
    // [32, 2^32) → 1. netem's a4 < x < a1 + a4 dropped x == a4.
    let p = [20, 0, 0, 0, 10];
    let from1 = |x: u64| {
        let mut s = FS_GAP_RECEIVED;
        four_state(&p, &mut s, x);
        s
    };
    assert_eq!(from1(0), FS_ISOLATED_LOSS);
    assert_eq!(from1(10), FS_ISOLATED_LOSS);
    assert_eq!(from1(11), FS_LOST_IN_BURST);
    assert_eq!(from1(31), FS_LOST_IN_BURST);
    assert_eq!(from1(32), FS_GAP_RECEIVED);
    assert_eq!(from1(u64::from(u32::MAX)), FS_GAP_RECEIVED);
    // Only the low 32 bits count.
    assert_eq!(from1(10 | (u64::MAX << 32)), FS_ISOLATED_LOSS);

    // From state 3 with p32 = 5, p31 = 7: [0, 6) → 2, [6, 14) → 1, else 3.
    let p = [0, 7, 5, 0, 0];
    let from3 = |x: u64| {
        let mut s = FS_LOST_IN_BURST;
        let lost = four_state(&p, &mut s, x);
        (s, lost)
    };
    assert_eq!(from3(5), (FS_BURST_RECEIVED, false));
    assert_eq!(from3(6), (FS_GAP_RECEIVED, false));
    assert_eq!(from3(13), (FS_GAP_RECEIVED, false));
    assert_eq!(from3(14), (FS_LOST_IN_BURST, true));

    // From state 2 with p23 = 3: same as prob::fires.
    let p = [0, 0, 0, 3, 0];
    for x in 0..10u64 {
        let mut s = FS_BURST_RECEIVED;
        assert_eq!(four_state(&p, &mut s, x), prob::fires(3, x as u32));
    }

    // Each single transition's probability equals its threshold's exactly,
    // as the matrix used for the expectations says.
    let p = four_state_params(0.3, 0.6, 0.4, 0.5, 0.7);
    let t = four_state_matrix(&p);
    assert!((t[0][3] - prob::to_fraction(p[FS_P14])).abs() < 1e-15);
    assert!((t[0][2] + t[0][3] - 1.0).abs() < 1e-9);
    assert!(t[0][0].abs() < 1e-9);
    assert!((t[2][1] - prob::to_fraction(p[FS_P32])).abs() < 1e-15);
    for row in t {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}

#[test]
fn zeroed_and_unknown_states_are_valid_starts() {
    let p = four_state_params(0.0, 0.0, 0.0, 0.0, 1.0);
    for start in [0u32, 1, 99, u32::MAX] {
        let mut s = start;
        assert!(four_state(&p, &mut s, 0));
        assert_eq!(s, FS_ISOLATED_LOSS);
    }
    let p = gilbert_elliott_params(0.0, 0.0, 1.0, 0.0);
    for start in [0u32, 7, u32::MAX] {
        let mut s = start;
        assert!(
            !gilbert_elliott(&p, &mut s, 0),
            "unknown GE states are GOOD"
        );
        assert_eq!(s, GE_GOOD);
    }
}

#[test]
fn reducible_chains_have_defined_expectations() {
    // p31 = p32 = 0: once in state 3 the chain never leaves, so the long-run
    // loss from state 1 is 1 (whatever p13 > 0) and the burst never ends.
    let p = four_state_params(0.1, 0.0, 0.0, 0.0, 0.0);
    let e = four_state_expectation(&p);
    assert!((e.loss_rate - 1.0).abs() < 1e-9);
    assert!(e.mean_loss_run.is_infinite() || e.mean_loss_run > 1e12);
    // GE that never leaves GOOD but loses there with 1-k: Bernoulli.
    let p = gilbert_elliott_params(0.0, 0.5, 1.0, 0.2);
    let e = gilbert_elliott_expectation(&p);
    let k = prob::to_fraction(p[GE_ONE_MINUS_K]);
    assert!((e.loss_rate - k).abs() < 1e-12);
    assert!((e.mean_loss_run - 1.0 / (1.0 - k)).abs() < 1e-9);
    assert!((e.mean_gap_run - 1.0 / k).abs() < 1e-9);
}
