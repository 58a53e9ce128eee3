//! Statistics shared by every layer: normal quantiles and CDF, the
//! Kolmogorov-Smirnov statistics the distribution and fidelity tests use,
//! Wilson score intervals for measured loss, and the median. Pure math, no
//! I/O: the model builds jitter tables with it, `impair stats` reports
//! intervals with it, and the tools, tests and benchmarks all use these one
//! definitions.

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;
/// z for a two-sided 99% interval.
pub const Z99: f64 = 2.575_829_303_548_901;
/// z for a two-sided 99.9% interval.
pub const Z999: f64 = 3.290_526_731_491_894;

/// P(X <= k) for X ~ Binomial(n, p), summed term by term.
pub fn binomial_cdf(k: u32, n: u32, p: f64) -> f64 {
    let mut term = (1.0 - p).powi(n as i32);
    let mut sum = term;
    for i in 1..=k {
        term *= (n - i + 1) as f64 / i as f64 * p / (1.0 - p);
        sum += term;
    }
    sum.min(1.0)
}

/// Wilson score interval for `successes` of `n` at normal quantile `z`:
/// (lo, hi) in [0, 1]; (0, 1) when n = 0.
pub fn wilson_interval(successes: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n_f = n as f64;
    let p = successes.min(n) as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = z * ((p * (1.0 - p) / n_f) + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    // At p = 0 (p = 1) the bound is exactly 0 (1); rounding could leave ±1e-17.
    let lo = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let hi = if successes >= n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (lo, hi)
}

/// The median of `v` (sorted in place); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Wichura's AS 241 (PPND16) coefficients: numerator and denominator of the
/// central region (A, B), the intermediate tails (C, D) and the far tails
/// (E, F); each denominator's constant term is the leading 1.0. They keep
/// all the published digits (more than an f64 holds) so the transcription can
/// be checked against the paper and its hash sums.
#[allow(clippy::excessive_precision)]
mod as241 {
    pub(super) const A: [f64; 8] = [
        3.387_132_872_796_366_608,
        1.331_416_678_917_843_774_5e2,
        1.971_590_950_306_551_442_7e3,
        1.373_169_376_550_946_112_5e4,
        4.592_195_393_154_987_145_7e4,
        6.726_577_092_700_870_085_3e4,
        3.343_057_558_358_812_810_5e4,
        2.509_080_928_730_122_672_7e3,
    ];
    pub(super) const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091_125_2e1,
        6.871_870_074_920_579_083e2,
        5.394_196_021_424_751_107_7e3,
        2.121_379_430_158_659_586_7e4,
        3.930_789_580_009_271_061e4,
        2.872_908_573_572_194_267_4e4,
        5.226_495_278_852_854_561e3,
    ];
    pub(super) const C: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        2.417_807_251_774_506_117_7e-1,
        2.272_384_498_926_918_458_33e-2,
        7.745_450_142_783_414_076_4e-4,
    ];
    pub(super) const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        6.897_673_349_851_000_045_5e-1,
        1.481_039_764_274_800_745_9e-1,
        1.519_866_656_361_645_719_66e-2,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    pub(super) const E: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        2.965_605_718_285_048_912_3e-1,
        2.653_218_952_657_612_309_3e-2,
        1.242_660_947_388_078_438_6e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    pub(super) const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_879_376_9e-1,
        1.369_298_809_227_358_053_1e-1,
        1.487_536_129_085_061_485_25e-2,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
}

/// The standard normal quantile Φ⁻¹(p): −∞ at 0, +∞ at 1, NaN outside [0, 1].
///
/// Wichura's algorithm AS 241, PPND16 (M. J. Wichura, "The Percentage Points
/// of the Normal Distribution", Applied Statistics 37(3), 477–484, 1988):
/// rational approximations in three regions, accurate to about 1 part in 10^16.
pub fn normal_quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    normal_quantile_pq(p, 1.0 - p)
}

/// AS 241 with both tail areas given (p + t = 1), so that upper-tail quantiles
/// keep full precision when t is tiny.
pub(crate) fn normal_quantile_pq(p: f64, t: f64) -> f64 {
    fn poly(c: &[f64; 8], x: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
    }
    if p.is_nan() || t.is_nan() {
        return f64::NAN;
    }
    // q = p − 1/2, from whichever tail area is smaller (exact either way).
    let q = if p <= 0.5 { p - 0.5 } else { 0.5 - t };
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        return q * poly(&as241::A, r) / poly(&as241::B, r);
    }
    let tail = if q < 0.0 { p } else { t };
    if tail <= 0.0 {
        return if q < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    let r = (-tail.ln()).sqrt();
    let z = if r <= 5.0 {
        let r = r - 1.6;
        poly(&as241::C, r) / poly(&as241::D, r)
    } else {
        let r = r - 5.0;
        poly(&as241::E, r) / poly(&as241::F, r)
    };
    if q < 0.0 {
        -z
    } else {
        z
    }
}

/// The standard normal CDF Φ(x), absolute error below 1e-15.
///
/// Marsaglia's series (G. Marsaglia, "Evaluating the Normal Distribution",
/// Journal of Statistical Software 11(4), 2004): Φ(x) = ½ + φ(x)·(x + x³/3 +
/// x⁵/(3·5) + …), all terms of one sign so nothing cancels inside the sum.
/// Beyond |x| = 9 the result is within 1.2e−19 of 0 or 1 and returned as such.
pub fn normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= -9.0 {
        return 0.0;
    }
    if x >= 9.0 {
        return 1.0;
    }
    let q = x * x;
    let (mut sum, mut term, mut i) = (x, x, 1.0);
    loop {
        i += 2.0;
        term *= q / i;
        let next = sum + term;
        if next == sum {
            break;
        }
        sum = next;
    }
    // ln √(2π) = 0.918938533204672741780
    0.5 + sum * (-0.5 * q - 0.918_938_533_204_672_7).exp()
}

/// The one-sample Kolmogorov–Smirnov statistic D = sup |F_n(x) − F(x)| of
/// `samples` against `cdf`. Sorts `samples` in place.
pub fn ks_statistic(samples: &mut [f64], cdf: impl Fn(f64) -> f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    samples.iter().enumerate().fold(0.0, |d, (i, &x)| {
        let f = cdf(x);
        let below = f - i as f64 / n;
        let above = (i + 1) as f64 / n - f;
        d.max(below).max(above)
    })
}

/// The two-sample Kolmogorov–Smirnov statistic sup |F_a(x) − F_b(x)|.
/// Sorts both slices in place.
pub fn ks_two_sample(a: &mut [f64], b: &mut [f64]) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d
}

/// The 99% critical value of the one-sample KS statistic for n samples.
///
/// The Kolmogorov distribution's 0.99 quantile is 1.6276, so D_crit ≈
/// 1.628/√n for large n; Stephens' correction (M. A. Stephens, JASA 69,
/// 1974) 1.628/(√n + 0.12 + 0.11/√n) keeps it accurate down to n ≈ 5.
pub fn ks_critical_99(n: usize) -> f64 {
    let s = (n.max(1) as f64).sqrt();
    1.628 / (s + 0.12 + 0.11 / s)
}

/// The KS critical value at significance `alpha` for `n` samples (the
/// asymptotic `c(α) = sqrt(−ln(α/2)/2)` with the same small-sample
/// correction as [`ks_critical_99`]). For k tests that must all pass at a
/// family-wise level, use `alpha / k` (Bonferroni).
pub fn ks_critical(n: usize, alpha: f64) -> f64 {
    let c = (-(alpha / 2.0).ln() / 2.0).sqrt();
    let s = (n.max(1) as f64).sqrt();
    c / (s + 0.12 + 0.11 / s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ks_critical_matches_the_99_percent_table_value() {
        let (a, b) = (ks_critical(2000, 0.01), ks_critical_99(2000));
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        assert!(ks_critical(2000, 0.0025) > b);
    }

    #[test]
    fn normal_quantile_known_values() {
        // References computed with mpmath at 400 digits: √2·erfinv(2p − 1).
        let cases = [
            (0.975, 1.959_963_984_540_054),
            (0.5, 0.0),
            (0.9, 1.281_551_565_544_600_5),
            (0.3, -0.524_400_512_708_040_8),
            (0.02425, -1.972_961_051_311_885),
            (1e-10, -6.361_340_902_404_056),
            (1e-12, -7.034_483_825_301_132),
            (1e-300, -37.047_096_299_361_2),
        ];
        for (p, want) in cases {
            let got = normal_quantile(p);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                "Φ⁻¹({p}) = {got}, want {want}"
            );
        }
        // The upper tail from its own tail area keeps full precision.
        assert!((normal_quantile_pq(1.0 - 1e-12, 1e-12) - 7.034_483_825_301_132).abs() < 1e-13);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(1.5).is_nan() && normal_quantile(-0.1).is_nan());
        // Symmetry.
        for p in [1e-5, 0.01, 0.2, 0.4] {
            // 1 − p is rounded to a double (error ≤ 1.1e-16), which moves
            // Φ⁻¹ by ≤ 1.1e-16/φ(Φ⁻¹(p)): 2.5e-12 at p = 1e-5.
            assert!((normal_quantile(p) + normal_quantile(1.0 - p)).abs() < 1e-11);
        }
    }

    #[test]
    fn as241_coefficients_match_the_published_hash_sums() {
        // AS 241 publishes, for each pair of coefficient sets, the sum of the
        // coefficients' decimal mantissas (the constant 1 of each denominator
        // excluded) so a transcription can be checked: 55.8831928806149014439,
        // 49.33206503301610289036 and 47.52583317549289671629 (here cut to
        // what an f64 holds).
        fn mantissa(x: f64) -> f64 {
            x / 10f64.powi(x.abs().log10().floor() as i32)
        }
        for (num, den, want) in [
            (&as241::A, &as241::B, 55.883_192_880_614_9),
            (&as241::C, &as241::D, 49.332_065_033_016_1),
            (&as241::E, &as241::F, 47.525_833_175_492_9),
        ] {
            assert_eq!(den[0], 1.0);
            let sum: f64 = num.iter().chain(&den[1..]).map(|&x| mantissa(x)).sum();
            assert!((sum - want).abs() < 1e-12, "hash {sum}, want {want}");
        }
    }

    #[test]
    fn normal_cdf_known_values_and_round_trip() {
        let cases = [
            (1.0, 0.841_344_746_068_542_9),
            (-3.0, 0.001_349_898_031_630_094_5),
            (1.959_963_984_540_054, 0.975),
            (-8.0, 6.220_960_574_271_784e-16),
            (5.0, 0.999_999_713_348_428_1),
            (0.0, 0.5),
        ];
        for (x, want) in cases {
            let got = normal_cdf(x);
            assert!((got - want).abs() < 1e-15, "Φ({x}) = {got}, want {want}");
        }
        for i in 1..1000 {
            let p = i as f64 / 1000.0;
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-14);
        }
    }

    #[test]
    fn ks_helpers() {
        assert!((ks_critical_99(100_000) - 1.628 / 100_000f64.sqrt()).abs() < 1e-5);
        assert!(
            (ks_critical_99(10) - 0.4889).abs() < 3e-3,
            "{}",
            ks_critical_99(10)
        );
        // Uniform grid points against the uniform CDF: D = 1/n exactly.
        let mut xs: Vec<f64> = (0..10).map(|i| i as f64 / 10.0).collect();
        assert!((ks_statistic(&mut xs, |x| x) - 0.1).abs() < 1e-15);
        let (mut a, mut b) = (vec![1.0, 2.0, 3.0], vec![1.5, 2.5, 3.5]);
        assert!((ks_two_sample(&mut a, &mut b) - 1.0 / 3.0).abs() < 1e-15);
        let (mut a, mut b) = (vec![1.0, 2.0], vec![3.0, 4.0]);
        assert_eq!(ks_two_sample(&mut a, &mut b), 1.0);
    }

    #[test]
    fn wilson_matches_published_values() {
        // 10 of 100 at 95%: 0.0552 .. 0.1744 (Newcombe 1998, method 3).
        let (lo, hi) = wilson_interval(10, 100, Z95);
        assert!(
            (lo - 0.0552).abs() < 1e-4 && (hi - 0.1744).abs() < 1e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson_interval(0, 0, Z95), (0.0, 1.0));
        let (lo, _) = wilson_interval(0, 50, Z95);
        assert_eq!(lo, 0.0);
    }

    #[test]
    fn z_constants_are_the_normal_quantiles() {
        assert!((normal_quantile(0.975) - Z95).abs() < 1e-12);
        assert!((normal_quantile(0.995) - Z99).abs() < 1e-12);
        assert!((normal_quantile(0.9995) - Z999).abs() < 1e-12);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
