//! Tests of the jitter distributions: table shapes, moments, KS against
//! the closed forms, file formats.
use super::*;
use crate::statistics::{ks_critical_99, ks_statistic, ks_two_sample, normal_cdf, normal_quantile};
use impair_common::{dist as kdist, rng};

/// Draws `n` values (in units of the jitter) through the data-path code:
/// `sample_index_frac` and `interpolate` on SplitMix64 output.
fn draw(table: &[i32], n: usize, seed: u64) -> Vec<f64> {
    assert_eq!(table.len(), N);
    let mut s = rng::cpu_state(seed, 0);
    (0..n)
        .map(|_| {
            let (i, f) = kdist::sample_index_frac(rng::next_u64(&mut s));
            let q = kdist::interpolate(table[i as usize], table[i as usize + 1], f);
            q as f64 / TABLE_SCALE as f64
        })
        .collect()
}

const SAMPLES: usize = 100_000;

/// Per-check z for the two moment checks of a distribution test, at
/// two-sided α = 0.001 each: with the KS check at 1%, a correct table fails
/// its test with probability ≤ 1.2%.
const Z_MOMENT: f64 = 3.29;

/// The sample mean and standard deviation of draws from `table` against
/// the table's exact moments: the mean's standard error is sd/√n and the
/// variance's √((μ4 − σ⁴)/n) (so the sd's is that over 2σ); μ4 is finite
/// for every table (bounded support), including pareto's.
fn check_moments(name: &str, table: &[i32], xs: &[f64]) {
    let m = table_moments(table);
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let se_mean = m.sd / n.sqrt();
    let se_sd = ((m.mu4 - m.sd.powi(4)) / n).sqrt() / (2.0 * m.sd);
    assert!(
        (mean - m.mean).abs() < Z_MOMENT * se_mean,
        "{name}: sample mean {mean} vs table mean {} (± {})",
        m.mean,
        Z_MOMENT * se_mean
    );
    assert!(
        (var.sqrt() - m.sd).abs() < Z_MOMENT * se_sd,
        "{name}: sample sd {} vs table sd {} (± {})",
        var.sqrt(),
        m.sd,
        Z_MOMENT * se_sd
    );
}

/// The standardized Pareto(3) CDF: X = 1.5 + y·√0.75, F = 1 − X^−3.
fn pareto_cdf(y: f64) -> f64 {
    let x = 1.5 + y * 0.75f64.sqrt();
    if x <= 1.0 {
        0.0
    } else {
        1.0 - x.powi(-3)
    }
}

/// The standardized paretonormal CDF, by bisection on its strictly
/// increasing quantile function (60 halvings: below 1e-15 in p).
fn paretonormal_cdf(y: f64, sd: f64) -> f64 {
    let target = y * sd;
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if Shape::ParetoNormal.quantile(mid, 1.0 - mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[test]
fn names_parse_and_errors_list_the_choices() {
    assert_eq!(
        "normal".parse::<Distribution>().unwrap(),
        Distribution::Normal
    );
    assert_eq!(
        "Pareto".parse::<Distribution>().unwrap(),
        Distribution::Pareto
    );
    assert_eq!(
        "paretonormal".parse::<Distribution>().unwrap(),
        Distribution::ParetoNormal
    );
    assert_eq!(
        "uniform".parse::<Distribution>().unwrap(),
        Distribution::Uniform
    );
    let e = "gaussian".parse::<Distribution>().unwrap_err().to_string();
    assert!(e.contains("\"gaussian\""), "{e}");
    for name in ["uniform", "normal", "pareto", "paretonormal"] {
        assert!(e.contains(name), "{e}");
    }
    assert_eq!(Distribution::ParetoNormal.to_string(), "paretonormal");
}

#[test]
fn tables_have_the_right_shape_and_are_monotone() {
    for d in [
        Distribution::Uniform,
        Distribution::Normal,
        Distribution::Pareto,
        Distribution::ParetoNormal,
    ] {
        let t = d.table();
        assert_eq!(t.len(), N, "{d}");
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "{d} not monotone");
        // Far inside i32: nothing is clamped.
        assert!(t.iter().all(|&v| v.unsigned_abs() < 50 << 16), "{d}");
    }
    let u = Distribution::Uniform.table();
    assert_eq!((u[0], u[N - 1]), (-(1 << 16), 1 << 16));
    // Interior knots are the exact standardized quantiles at j/4095.
    let k = Distribution::Normal.knots();
    for j in [1, 100, 2047, 4000, N - 2] {
        let p = j as f64 * SLICE;
        assert!((k[j] - normal_quantile(p)).abs() < 1e-12, "knot {j}");
    }
    assert!((k[N / 2 - 1] + k[N / 2]).abs() < 1e-12, "symmetric");
    // The tail end knots extend past the last interior quantile:
    // Φ⁻¹(1/4095) = −3.487, end −4.001.
    assert!(k[0] < k[1] - 0.5 && k[N - 1] > k[N - 2] + 0.5);
    // Pareto: exact quantiles (the lower end is the minimum x = 1), end
    // knot ≈ 42 σ.
    let k = Distribution::Pareto.knots();
    for j in [0, 1, 1000, 2047, 4000, N - 2] {
        let t = (N - 1 - j) as f64 * SLICE;
        let want = (t.powf(-1.0 / 3.0) - 1.5) / 0.75f64.sqrt();
        assert!(
            (k[j] - want).abs() < 1e-12 * want.abs().max(1.0),
            "pareto knot {j}: {} vs {want}",
            k[j]
        );
    }
    assert!((40.0..45.0).contains(&k[N - 1]), "pareto end {}", k[N - 1]);
}

#[test]
fn tail_integrals_match_closed_forms() {
    // Normal lower tail below a = Φ⁻¹(m): E[Z² | Z < a] = 1 − a·φ(a)/m.
    let a = normal_quantile(SLICE);
    let phi = (-0.5 * a * a).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let want = 1.0 - a * phi / SLICE;
    let got = integrate_tail(|u| normal_quantile_pq(u, 1.0 - u).powi(2), SLICE) / SLICE;
    assert!(
        (got - want).abs() < 1e-9 * want,
        "normal tail m2 {got} vs {want}"
    );
    // Pareto(3) above x_q = m^(−1/3): E[X² | X > x_q] = 3·x_q².
    let xq = SLICE.powf(-1.0 / 3.0);
    let got = integrate_tail(|t| t.powf(-2.0 / 3.0), SLICE) / SLICE;
    assert!(
        (got - 3.0 * xq * xq).abs() < 1e-9 * got,
        "pareto tail m2 {got}"
    );
    // Paretonormal variance against mpmath's quadrature (30 digits).
    let (_, sd) = Shape::ParetoNormal.mean_sd();
    assert!(
        (sd * sd - 1.106_235_374_238_103_7).abs() < 1e-9,
        "paretonormal var {}",
        sd * sd
    );
    let mean = integrate_tail(|u| Shape::ParetoNormal.quantile(u, 1.0 - u), 0.5)
        + integrate_tail(|t| Shape::ParetoNormal.quantile(1.0 - t, t), 0.5);
    assert!(mean.abs() < 1e-9, "paretonormal mean {mean}");
}

#[test]
fn built_in_tables_are_standardized() {
    // The realized (interpolated) tables: mean and sd as the module docs
    // state (chord excess and the pareto-tail end interval), within
    // 0.15% of σ; the second-moment-matched ends keep the variance, where
    // clamping at the last finite quantile would lose 2.8% of pareto's σ.
    for (d, max_mean, max_sd_excess) in [
        (Distribution::Normal, 1e-5, 5e-5),
        (Distribution::Pareto, 1.2e-3, 2e-3),
        (Distribution::ParetoNormal, 1e-3, 1.5e-3),
    ] {
        let m = table_moments(&d.table());
        assert!(m.mean.abs() < max_mean, "{d}: mean {}", m.mean);
        assert!(
            m.sd >= 1.0 && m.sd - 1.0 < max_sd_excess,
            "{d}: sd {}",
            m.sd
        );
    }
    let m = table_moments(&Distribution::Uniform.table());
    assert!(m.mean.abs() < 1e-9 && (m.sd - 1.0 / 3f64.sqrt()).abs() < 1e-5);
}

fn ks_check(name: &str, xs: &mut [f64], cdf: impl Fn(f64) -> f64) {
    let d = ks_statistic(xs, cdf);
    let crit = ks_critical_99(xs.len());
    assert!(d < crit, "{name}: KS D = {d} ≥ {crit}");
}

#[test]
fn normal_samples_pass_ks_and_moments() {
    let t = Distribution::Normal.table();
    let mut xs = draw(&t, SAMPLES, 11);
    check_moments("normal", &t, &xs);
    ks_check("normal", &mut xs, normal_cdf);
}

#[test]
fn pareto_samples_pass_ks_and_moments() {
    let t = Distribution::Pareto.table();
    let mut xs = draw(&t, SAMPLES, 12);
    check_moments("pareto", &t, &xs);
    ks_check("pareto", &mut xs, pareto_cdf);
}

#[test]
fn paretonormal_samples_pass_ks_and_moments() {
    let t = Distribution::ParetoNormal.table();
    let mut xs = draw(&t, SAMPLES, 13);
    check_moments("paretonormal", &t, &xs);
    let (_, sd) = Shape::ParetoNormal.mean_sd();
    ks_check("paretonormal", &mut xs, |y| paretonormal_cdf(y, sd));
}

#[test]
fn paretonormal_table_matches_direct_monte_carlo() {
    // Independent of the bisection CDF: a direct sample of the blend
    // ¼·Z + (1 − U)^(−1/3) − 1.5 (Z = Φ⁻¹(U), same U) standardized by the
    // mpmath variance, against table draws, two-sample KS at 99%:
    // critical value 1.628·√((n + m)/(n·m)).
    let sd = 1.106_235_374_238_103_7f64.sqrt();
    let mut s = rng::cpu_state(99, 0);
    let mut direct: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            // 53 random bits, offset by half a step: U in (0, 1).
            let u = ((rng::next_u64(&mut s) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (0.25 * normal_quantile(u) + (1.0 - u).powf(-1.0 / 3.0) - 1.5) / sd
        })
        .collect();
    let mut table = draw(&Distribution::ParetoNormal.table(), SAMPLES, 14);
    let d = ks_two_sample(&mut direct, &mut table);
    let n = SAMPLES as f64;
    let crit = 1.628 * ((n + n) / (n * n)).sqrt();
    assert!(d < crit, "two-sample D = {d} ≥ {crit}");
}

#[test]
fn uniform_table_is_uniform_on_minus_one_to_one() {
    let t = Distribution::Uniform.table();
    let mut xs = draw(&t, SAMPLES, 15);
    check_moments("uniform", &t, &xs);
    ks_check("uniform", &mut xs, |x| ((x + 1.0) / 2.0).clamp(0.0, 1.0));
}

#[test]
fn a_wrong_scale_is_detected() {
    // The KS test has power: the normal table read as 5% too wide fails.
    let t: Vec<i32> = Distribution::Normal
        .table()
        .iter()
        .map(|&v| (f64::from(v) * 1.05) as i32)
        .collect();
    let mut xs = draw(&t, SAMPLES, 16);
    let d = ks_statistic(&mut xs, normal_cdf);
    assert!(d > 2.0 * ks_critical_99(SAMPLES), "D = {d}");
}

#[test]
fn custom_samples_are_standardized_empirical_quantiles() {
    // A stratified exponential sample: x_i = −ln(1 − (i + ½)/n). The table
    // must reproduce the standardized exponential, F(y) = 1 − e^−(y+1).
    let n = 20_000;
    let text: String = std::iter::once("# exponential, stratified\n".to_string())
        .chain((0..n).map(|i| format!("{}\n", -(1.0 - (i as f64 + 0.5) / n as f64).ln())))
        .collect();
    let d = Distribution::parse_samples(&text, "exp.txt").unwrap();
    let t = d.table();
    let m = table_moments(&t);
    assert!(m.mean.abs() < 1e-6 && (m.sd - 1.0).abs() < 1e-6, "{m:?}");
    let mut xs = draw(&t, SAMPLES, 17);
    check_moments("custom exponential", &t, &xs);
    ks_check("custom exponential", &mut xs, |y| {
        if y <= -1.0 {
            0.0
        } else {
            1.0 - (-(y + 1.0)).exp()
        }
    });
    // Samples in any order, with blank lines and CRLF endings.
    let d2 = Distribution::parse_samples("3\r\n\r\n1\n2\n", "x").unwrap();
    let k = d2.knots();
    assert!(k.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        (k[0] + k[N - 1]).abs() < 1e-12,
        "symmetric samples give a symmetric table"
    );
}

#[test]
fn sample_file_errors_name_file_line_and_token() {
    let e = Distribution::parse_samples("# c\n1.5\n2.5\nx7\n", "delays.txt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("delays.txt:4") && e.contains("\"x7\""), "{e}");
    let e = Distribution::parse_samples("1 2\n", "d.txt")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("d.txt:1") && e.contains("\"2\"") && e.contains("one sample per line"),
        "{e}"
    );
    let e = Distribution::parse_samples("1\ninf\n", "d.txt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("d.txt:2") && e.contains("\"inf\""), "{e}");
    let e = Distribution::parse_samples("5\n5\n5\n", "same.txt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("same.txt") && e.contains("no spread"), "{e}");
    let e = Distribution::parse_samples("# only\n1\n", "one.txt")
        .unwrap_err()
        .to_string();
    assert!(e.contains("one.txt") && e.contains("at least 2"), "{e}");
    let e = Distribution::from_file("/nonexistent/impair/x.dist")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/impair/x.dist"), "{e}");
    let e = Distribution::parse_netem_dist("# h\n1 2 3\n4 five 6\n", "t.dist")
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.dist:3") && e.contains("\"five\""), "{e}");
    let e = Distribution::parse_netem_dist("# nothing\n", "t.dist")
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.dist") && e.contains("no values"), "{e}");
}

/// A unique path in the system temporary directory.
fn temp_path(name: &str) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("impair-dist-{}-{n}-{name}", std::process::id()))
}

#[test]
fn netem_dist_files_keep_netem_units() {
    // A 4096-entry table written the way iproute2's maketable does (8 per
    // line, a comment header), from our normal knots × 8192: read back,
    // its knots are the entries / 8192 exactly (one knot per entry).
    let entries: Vec<i32> = Distribution::Normal
        .knots()
        .iter()
        .map(|k| (k * NETEM_DIST_SCALE).round().clamp(-32768.0, 32767.0) as i32)
        .collect();
    let mut text = String::from("# This is the distribution table for the normal distribution.\n");
    for line in entries.chunks(8) {
        text += &line.iter().map(|v| format!(" {v}")).collect::<String>();
        text += "\n";
    }
    let path = temp_path("normal.dist");
    std::fs::write(&path, &text).unwrap();
    let d = Distribution::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let k = d.knots();
    for (j, &e) in entries.iter().enumerate() {
        assert_eq!(k[j], f64::from(e) / NETEM_DIST_SCALE, "entry {j}");
    }
    // A table of another size is resampled; unsorted entries are sorted
    // (netem draws entries uniformly, so order carries no meaning).
    let d = Distribution::parse_netem_dist("8192 -8192\n0\n", "three.dist").unwrap();
    let k = d.knots();
    assert_eq!((k[0], k[N - 1]), (-1.0, 1.0));
    assert!(
        k[(N - 1) / 2].abs() < 1e-3,
        "the middle entry 0 sits mid-table"
    );
    // A non-.dist name is read as samples and standardized.
    let path = temp_path("samples.txt");
    std::fs::write(&path, "1\n2\n3\n4\n").unwrap();
    let d = Distribution::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let m = table_moments(&d.table());
    assert!(m.mean.abs() < 1e-4 && (m.sd - 1.0).abs() < 1e-4);
}

#[test]
fn iproute2_normal_dist_if_installed() {
    // iproute2 installs its tables in TC_LIB_DIR: /usr/lib/tc upstream,
    // /usr/lib/<multiarch>/tc on Debian, /usr/share/tc on some builds.
    let dirs = [
        "/usr/lib/tc",
        "/usr/lib/x86_64-linux-gnu/tc",
        "/usr/lib/aarch64-linux-gnu/tc",
        "/usr/lib64/tc",
        "/usr/share/tc",
    ];
    let Some(path) = dirs
        .iter()
        .map(|d| Path::new(d).join("normal.dist"))
        .find(|p| p.exists())
    else {
        eprintln!("no iproute2 normal.dist installed: skipped");
        return;
    };
    let d = Distribution::from_file(&path).unwrap();
    let t = d.table();
    let m = table_moments(&t);
    // netem's normal table: Φ⁻¹ at k/4096 in 16 bits, first entry clamped.
    assert!(m.mean.abs() < 2e-3 && (m.sd - 1.0).abs() < 2e-3, "{m:?}");
    let mut xs = draw(&t, SAMPLES, 18);
    ks_check("iproute2 normal.dist", &mut xs, normal_cdf);
}
