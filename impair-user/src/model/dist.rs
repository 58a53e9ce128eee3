//! Delay distributions: the quantile tables the data path samples jitter from.
//!
//! The data path ([`impair_common::dist`]) picks a uniform position in a table
//! of [`TABLE_SIZE`] knots and interpolates linearly between two neighbours, so
//! a table is a piecewise-linear quantile function. This module builds those
//! tables: the built-in distributions of tc netem, netem's own `.dist` files,
//! and empirical distributions from a list of samples.
//!
//! # The grid
//! Knot `j` (0 ≤ j < N = [`TABLE_SIZE`]) holds the quantile at probability
//! `p_j = j / (N − 1)`. The data path gives each of the N − 1 intervals
//! probability 1/(N − 1), so the sampled CDF passes exactly through
//! `(Q(p_j), p_j)` at every knot and is linear in between (the density is
//! constant within an interval, equal to its average over it). A grid at
//! (i + 0.5)/N, as netem's discrete lookup effectively uses, would put the
//! knots of an interpolated table off by half an interval.
//!
//! The end knots p = 0 and p = 1 are infinite for unbounded distributions. The
//! outermost intervals (probability 1/4095 each) then become uniform between
//! the last finite quantile `a` and an end value `L` chosen so the interval's
//! second moment equals the true tail's, E[Y² | tail] = m2:
//! (a² + aL + L²)/3 = m2, i.e. `L = (−a ± √(12·m2 − 3a²))/2`. This keeps the
//! variance where matching the tail's mean instead would lose ~5% of pareto's
//! variance; m2 is integrated numerically.
//!
//! The knots are standardized with the distribution's exact mean and
//! standard deviation, so the sampled CDF matches the standardized target at
//! every knot. The table itself (linear between knots) then has a standard
//! deviation slightly above 1 where the quantile function is convex, from the
//! chords, and the end interval that matches a Pareto(3) tail's second moment
//! cannot also match its mean: pareto's table has mean +0.0010 σ and standard
//! deviation 1.0015 σ, paretonormal's +0.0008 σ and 1.0011 σ, normal's 0 and
//! 1.00003 σ. Re-standardizing with those moments would make them exact but
//! shift the CDF by up to 6·10⁻⁴ (visible to a KS test of 10⁶ delays), while
//! 0.15% of σ is below what a measurement of the delay's σ can resolve (its
//! standard error for pareto is ~0.9% at 10⁶ packets). Sample-based tables
//! have no exact target and are standardized with the table's own moments.
//!
//! # Scale: what `--jitter` means
//! Normal, pareto and paretonormal are standardized to mean 0 and standard
//! deviation 1, so the jitter is one standard deviation of the added delay.
//! Uniform keeps netem's meaning: the delay is uniform over
//! [delay − jitter, delay + jitter) (standard deviation jitter/√3); the data
//! path draws it with `uniform_delay_ns` and needs no table, but
//! [`Distribution::table`] returns the matching table (knots from −1 to 1).
//!
//! netem's tables come from iproute2's `netem/normal.c`, `pareto.c` and
//! `paretonormal.c` (NISTnet code) with `NETEM_DIST_SCALE` = 8192 per unit,
//! 4096 16-bit entries drawn by `table[rand % size]`:
//! - normal: Φ⁻¹ at p = k/4096; one unit is one σ.
//! - pareto: α = 3, x_m = 1, stored as (4/3)·(x − 1.5), so one unit is
//!   (4/3)·√0.75 ≈ 1.155 σ, and entries are clamped at 32767 (x = 4.5,
//!   1.1% of the mass): the shipped pareto.dist has mean −0.033 and standard
//!   deviation 0.82 units.
//! - paretonormal: despite its comment (".25*normal + .75*pareto") it is not a
//!   mixture but a blend of quantile functions at the same probability:
//!   `(normvalue + 3·parvalue)/4`, i.e. Q(p) = ¼·Φ⁻¹(p) + ¾·(4/3)(x_p − 1.5)
//!   = ¼·Φ⁻¹(p) + (1 − p)^(−1/3) − 1.5, with standard deviation ≈ 1.0518
//!   units in theory and 0.83 in the clamped paretonormal.dist.
//!
//! impair uses the same shapes (pareto α = 3, the same paretonormal blend),
//! standardized exactly, with i32 entries scaled by 2^16
//! ([`TABLE_SCALE`]), range ±32768 σ: nothing is clamped in practice (the
//! largest standardized pareto knot is ≈ 42.4 σ). Values that would not fit an
//! i32 are clamped to ±(2^31 − 1), which only a custom table can reach.
//! A `.dist` file keeps netem's meaning (value/8192 units of jitter, not
//! re-standardized), so a netem user's own table behaves as it did in netem,
//! except that delays are interpolated between entries.

use std::{fmt, path::Path, str::FromStr};

use super::error::ValueError;
use crate::statistics::normal_quantile_pq;

use impair_common::dist::{TABLE_SCALE, TABLE_SIZE};

/// iproute2's `NETEM_DIST_SCALE`: `.dist` values are units × 8192.
pub const NETEM_DIST_SCALE: f64 = 8192.0;

/// The Pareto shape netem uses (iproute2 `netem/pareto.c`: `a = 3.0`).
pub const PARETO_ALPHA: f64 = 3.0;

/// Knots per table, as a usize.
const N: usize = TABLE_SIZE as usize;

/// Probability held by each of the N − 1 intervals.
const SLICE: f64 = 1.0 / (N - 1) as f64;

/// A delay distribution that can be turned into a data-path table.
#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    /// netem's uniform: delay ± jitter (half-width, not σ).
    Uniform,
    /// Standard normal.
    Normal,
    /// Pareto with α = 3, standardized.
    Pareto,
    /// netem's paretonormal quantile blend, standardized.
    ParetoNormal,
    /// Quantile knots in units of the jitter at equally spaced probabilities
    /// 0, 1/(n−1), …, 1 (any n ≥ 1, non-decreasing); built by
    /// [`Distribution::from_file`] and [`Distribution::from_samples`], and
    /// resampled to [`TABLE_SIZE`] knots by [`Distribution::table`].
    Custom(Vec<f64>),
}

/// Why a distribution could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error(
        "unknown distribution {0:?}: expected one of uniform, normal, pareto, paretonormal (or a table file)"
    )]
    UnknownName(String),
    /// The OS error is the `source` (shown by `{:#}` error chains).
    #[error("cannot read distribution file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}: {token:?}")]
    BadToken {
        path: String,
        line: usize,
        token: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    BadTable { path: String, reason: String },
}

impl FromStr for Distribution {
    type Err = DistError;

    /// The built-in names (ASCII case-insensitive). A file is loaded with
    /// [`Distribution::from_file`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "uniform" => Ok(Self::Uniform),
            "normal" => Ok(Self::Normal),
            "pareto" => Ok(Self::Pareto),
            "paretonormal" => Ok(Self::ParetoNormal),
            _ => Err(DistError::UnknownName(s.to_string())),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uniform => "uniform",
            Self::Normal => "normal",
            Self::Pareto => "pareto",
            Self::ParetoNormal => "paretonormal",
            Self::Custom(_) => "custom",
        })
    }
}

impl Distribution {
    /// Loads a table file. A name ending in `.dist` is read as iproute2's
    /// format (whitespace-separated integers, value/8192 units of jitter,
    /// lines starting with `#` ignored; not re-standardized, see the module
    /// docs); anything else as samples, one number per line (`#` lines and
    /// blank lines ignored), turned into a standardized empirical table.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DistError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| DistError::Io {
            path: name.clone(),
            source,
        })?;
        if path.extension().is_some_and(|e| e == "dist") {
            Self::parse_netem_dist(&text, &name)
        } else {
            Self::parse_samples(&text, &name)
        }
    }

    /// Parses iproute2's `.dist` text; `source` names it in errors.
    pub fn parse_netem_dist(text: &str, source: &str) -> Result<Self, DistError> {
        let mut values = Vec::new();
        for (idx, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            for token in t.split_whitespace() {
                let v: i64 = token.parse().map_err(|_| DistError::BadToken {
                    path: source.to_string(),
                    line: idx + 1,
                    token: token.to_string(),
                    reason: "expected an integer (value × 8192)".into(),
                })?;
                if i32::try_from(v).is_err() {
                    return Err(DistError::BadToken {
                        path: source.to_string(),
                        line: idx + 1,
                        token: token.to_string(),
                        reason: "value out of range".into(),
                    });
                }
                values.push(v as f64 / NETEM_DIST_SCALE);
            }
        }
        if values.is_empty() {
            return Err(DistError::BadTable {
                path: source.to_string(),
                reason: "no values".into(),
            });
        }
        values.sort_by(f64::total_cmp);
        Ok(Self::Custom(empirical_knots(&values)))
    }

    /// Parses a list of samples, one per line; `source` names it in errors.
    pub fn parse_samples(text: &str, source: &str) -> Result<Self, DistError> {
        let mut samples = Vec::new();
        for (idx, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let bad = |token: &str, reason: &str| DistError::BadToken {
                path: source.to_string(),
                line: idx + 1,
                token: token.to_string(),
                reason: reason.to_string(),
            };
            let mut tokens = t.split_whitespace();
            let token = tokens.next().unwrap_or(t);
            if let Some(extra) = tokens.next() {
                return Err(bad(
                    extra,
                    "expected one sample per line (name an iproute2 table *.dist)",
                ));
            }
            let v: f64 = token.parse().map_err(|_| bad(token, "expected a number"))?;
            if !v.is_finite() {
                return Err(bad(token, "sample is not finite"));
            }
            samples.push(v);
        }
        Self::from_samples(&samples).map_err(|reason| DistError::BadTable {
            path: source.to_string(),
            reason,
        })
    }

    /// The standardized empirical distribution of `samples`.
    ///
    /// The knots are the sample quantiles at p_j = j/(N − 1), interpolated
    /// between order statistics (Hyndman–Fan type 7: h = p·(n − 1)), so the
    /// table runs from the smallest to the largest sample. They are then
    /// shifted and scaled by the interpolated table's own exact mean and
    /// standard deviation, so the delays actually drawn have mean `delay` and
    /// standard deviation `jitter`.
    pub fn from_samples(samples: &[f64]) -> Result<Self, String> {
        if samples.len() < 2 {
            return Err(format!("need at least 2 samples, got {}", samples.len()));
        }
        if samples.iter().any(|v| !v.is_finite()) {
            return Err("samples must be finite".into());
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let knots = empirical_knots(&sorted);
        let m = knot_moments(&knots);
        if m.sd.is_nan() || m.sd <= 1e-12 * m.mean.abs().max(1.0) {
            return Err("samples have no spread (all equal)".into());
        }
        Ok(Self::Custom(standardize(&knots)))
    }

    /// The quantile knots in units of the jitter, before scaling to integers.
    pub fn knots(&self) -> Vec<f64> {
        match self {
            Self::Uniform => (0..N).map(|j| -1.0 + 2.0 * j as f64 * SLICE).collect(),
            Self::Normal => Shape::Normal.knots(),
            Self::Pareto => Shape::Pareto.knots(),
            Self::ParetoNormal => Shape::ParetoNormal.knots(),
            Self::Custom(k) => resample(k),
        }
    }

    /// The data-path table: [`TABLE_SIZE`] knots × [`TABLE_SCALE`], rounded,
    /// clamped to ±(2^31 − 1) so |q| < 2^31 as `jittered_delay_ns` requires.
    pub fn table(&self) -> Vec<i32> {
        let max = f64::from(i32::MAX);
        self.knots()
            .iter()
            .map(|k| (k * TABLE_SCALE as f64).round().clamp(-max, max) as i32)
            .collect()
    }
}

/// Type-7 sample quantiles of sorted `values` at the N grid probabilities.
fn empirical_knots(sorted: &[f64]) -> Vec<f64> {
    resample(sorted)
}

/// Linear interpolation of knots at equally spaced probabilities 0..=1 onto
/// the N-knot grid (the identity when `knots.len() == N`).
fn resample(knots: &[f64]) -> Vec<f64> {
    match knots.len() {
        0 => vec![0.0; N],
        1 => vec![knots[0]; N],
        n if n == N => knots.to_vec(),
        n => (0..N)
            .map(|j| {
                // h = p_j·(n − 1) with p_j = j/(N − 1): one exact integer
                // product and one rounding.
                let h = (j * (n - 1)) as f64 / (N - 1) as f64;
                let lo = (h.floor() as usize).min(n - 2);
                let f = h - lo as f64;
                knots[lo] + f * (knots[lo + 1] - knots[lo])
            })
            .collect(),
    }
}

/// The exact moments of the piecewise-linear quantile distribution a table
/// describes (each interval uniform between its knots, probability 1/(n−1)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TableMoments {
    pub mean: f64,
    pub sd: f64,
    /// Fourth central moment (for the sampling error of a variance estimate).
    pub mu4: f64,
}

/// [`TableMoments`] of a data-path table, in units of the jitter.
pub fn table_moments(table: &[i32]) -> TableMoments {
    let knots: Vec<f64> = table
        .iter()
        .map(|&v| f64::from(v) / TABLE_SCALE as f64)
        .collect();
    knot_moments(&knots)
}

fn knot_moments(knots: &[f64]) -> TableMoments {
    if knots.len() < 2 {
        let mean = knots.first().copied().unwrap_or(0.0);
        return TableMoments {
            mean,
            sd: 0.0,
            mu4: 0.0,
        };
    }
    let w = 1.0 / (knots.len() - 1) as f64;
    let mean: f64 = knots.windows(2).map(|s| 0.5 * (s[0] + s[1])).sum::<f64>() * w;
    let (mut m2, mut m4) = (0.0, 0.0);
    for s in knots.windows(2) {
        // For U uniform on [a, b]: E[U²] = (a² + ab + b²)/3 and
        // E[U⁴] = (a⁴ + a³b + a²b² + ab³ + b⁴)/5, about the overall mean.
        let (a, b) = (s[0] - mean, s[1] - mean);
        m2 += (a * a + a * b + b * b) / 3.0;
        m4 += (a.powi(4) + a.powi(3) * b + a * a * b * b + a * b.powi(3) + b.powi(4)) / 5.0;
    }
    TableMoments {
        mean,
        sd: (m2 * w).max(0.0).sqrt(),
        mu4: m4 * w,
    }
}

/// Knots shifted and scaled so the table they describe has exactly mean 0
/// and standard deviation 1 (callers guarantee a non-zero spread).
fn standardize(knots: &[f64]) -> Vec<f64> {
    let m = knot_moments(knots);
    knots.iter().map(|k| (k - m.mean) / m.sd).collect()
}

/// The built-in shapes with an unbounded tail, in their natural units.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Normal,
    Pareto,
    ParetoNormal,
}

impl Shape {
    /// The quantile at probability p, given both p and t = 1 − p so that
    /// either tail is computed without cancellation.
    fn quantile(self, p: f64, t: f64) -> f64 {
        match self {
            Self::Normal => normal_quantile_pq(p, t),
            Self::Pareto => t.powf(-1.0 / PARETO_ALPHA),
            Self::ParetoNormal => {
                0.25 * normal_quantile_pq(p, t) + t.powf(-1.0 / PARETO_ALPHA) - 1.5
            }
        }
    }

    /// Mean and standard deviation in natural units. Pareto(α, x_m = 1) has
    /// mean α/(α−1) = 1.5 and variance α/((α−1)²(α−2)) = 0.75. The
    /// paretonormal blend has mean ¼·0 + 1.5 − 1.5 = 0; its variance involves
    /// E[Φ⁻¹(U)·(1−U)^(−1/3)] and is integrated numerically (≈ 1.1062354).
    fn mean_sd(self) -> (f64, f64) {
        match self {
            Self::Normal => (0.0, 1.0),
            Self::Pareto => (1.5, 0.75f64.sqrt()),
            Self::ParetoNormal => {
                let sq = |p: f64, t: f64| self.quantile(p, t).powi(2);
                let var = integrate_tail(|u| sq(u, 1.0 - u), 0.5)
                    + integrate_tail(|t| sq(1.0 - t, t), 0.5);
                (0.0, var.sqrt())
            }
        }
    }

    fn lower_bounded(self) -> bool {
        matches!(self, Self::Pareto)
    }

    /// Standardized knots on the N-point grid (see the module docs).
    fn knots(self) -> Vec<f64> {
        let (mean, sd) = self.mean_sd();
        let y = |p: f64, t: f64| (self.quantile(p, t) - mean) / sd;
        let last = (N - 1) as f64;
        let mut k: Vec<f64> = (0..N)
            .map(|j| y(j as f64 / last, (N - 1 - j) as f64 / last))
            .collect();
        // Upper end: every shape here is unbounded above.
        let m2_upper = integrate_tail(|t| y(1.0 - t, t).powi(2), SLICE) / SLICE;
        k[N - 1] = tail_end(k[N - 2], m2_upper, 1.0);
        k[0] = if self.lower_bounded() {
            y(0.0, 1.0)
        } else {
            let m2_lower = integrate_tail(|u| y(u, 1.0 - u).powi(2), SLICE) / SLICE;
            tail_end(k[1], m2_lower, -1.0)
        };
        k
    }
}

/// The end knot L of an outermost interval whose inner knot is `a`, such that
/// U uniform between a and L has E[U²] = m2: (a² + aL + L²)/3 = m2, so
/// L = (−a + side·√(12·m2 − 3a²))/2 with side = +1 above, −1 below. Falls
/// back to `a` if no such L lies beyond `a` (cannot happen for a true tail,
/// where m2 ≥ a²).
fn tail_end(a: f64, m2: f64, side: f64) -> f64 {
    let disc = 12.0 * m2 - 3.0 * a * a;
    if disc.is_nan() || disc < 0.0 {
        return a;
    }
    let l = 0.5 * (-a + side * disc.sqrt());
    if (l - a) * side >= 0.0 {
        l
    } else {
        a
    }
}

/// ∫₀^mass f(t) dt for an f that may be singular (but integrable) at 0, by
/// substituting t = mass·e^s: ∫_{−∞}^0 f(mass·e^s)·mass·e^s ds, truncated at
/// s = −150 and integrated with Simpson's rule, step 0.01. The integrands
/// here grow at most like t^(−2/3) near 0, so the truncated part is below
/// e^(−150/3) ≈ 2e−22 of the total, and the substituted integrand is smooth.
fn integrate_tail(f: impl Fn(f64) -> f64, mass: f64) -> f64 {
    const S_MIN: f64 = -150.0;
    const STEPS: usize = 15_000; // even, step 0.01
    let h = -S_MIN / STEPS as f64;
    let g = |s: f64| {
        let t = mass * s.exp();
        f(t) * t
    };
    let mut sum = g(S_MIN) + g(0.0);
    for i in 1..STEPS {
        let s = S_MIN + i as f64 * h;
        sum += if i % 2 == 1 { 4.0 } else { 2.0 } * g(s);
    }
    sum * h / 3.0
}

/// A jitter distribution as given on any front end: a built-in name, or
/// the path of a table file (iproute2 `.dist`, or one sample per line).
pub fn parse_distribution(s: &str) -> Result<Distribution, ValueError> {
    match s.parse::<Distribution>() {
        Ok(d) => Ok(d),
        Err(_) if Path::new(s).exists() => {
            Distribution::from_file(s).map_err(|e| ValueError::one_line(format!("{e:#}")))
        }
        Err(e) => Err(ValueError::one_line(format!("{e}"))),
    }
}

#[cfg(test)]
#[path = "dist_tests.rs"]
mod tests;
