//! Delay and loss series (`--delay-trace`, `--loss-trace`): lines
//! `time,value` (time in ms, or with a unit: `1.5s`; value in the flags'
//! units: `30ms`, `2%`), stepped or linearly interpolated, looped or held
//! after the last time. Expanded here to one value per step
//! ([`impair_common::series`]) for the kernel. Errors name the file and line.
use std::{path::Path, sync::Arc};

use impair_common::{
    prob,
    series::{series_flags, SeriesHeader, SERIES_POINTS},
};

use super::units::{parse_duration_ns, parse_percent};

/// What a series' values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Delays (ns).
    Delay,
    /// Loss probabilities in [0, 1].
    Loss,
}

/// Between two points: hold the earlier value, or interpolate linearly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceMode {
    #[default]
    Step,
    Linear,
}

/// After the last point: start again at time 0, or keep the last value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceEnd {
    #[default]
    Loop,
    Hold,
}

/// A parsed series: points `(time_ns, value)` in time order; values in ns
/// (delay) or as a fraction (loss).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub source: String,
    pub kind: SeriesKind,
    pub points: Vec<(u64, f64)>,
    pub mode: TraceMode,
    pub end: TraceEnd,
}

/// What is wrong with a series file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct SeriesError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The time step of the kernel's table: 1 ms, or coarser (whole ms) so a
/// series of any length fits in [`SERIES_POINTS`] values.
pub fn step_ns(period_ns: u64) -> u64 {
    let ms = period_ns.div_ceil(1_000_000).max(1);
    ms.div_ceil(u64::from(SERIES_POINTS - 1)).max(1) * 1_000_000
}

impl Series {
    /// Reads a series file of `kind`.
    pub fn load(
        path: &Path,
        kind: SeriesKind,
        mode: TraceMode,
        end: TraceEnd,
    ) -> Result<Arc<Series>, SeriesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SeriesError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read the series: {e}"),
        })?;
        Series::parse(&file, &text, kind, mode, end).map(Arc::new)
    }

    /// Parses `time,value` lines; `#` comments, blank lines and a
    /// `time,value` header are skipped. Times must not decrease.
    pub fn parse(
        file: &str,
        text: &str,
        kind: SeriesKind,
        mode: TraceMode,
        end: TraceEnd,
    ) -> Result<Series, SeriesError> {
        let err = |line: usize, message: String| SeriesError {
            file: file.to_owned(),
            line,
            message,
        };
        let mut points: Vec<(u64, f64)> = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let line = i + 1;
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') || l.eq_ignore_ascii_case("time,value") {
                continue;
            }
            let Some((t, v)) = l.split_once(',') else {
                return Err(err(line, format!("expected TIME,VALUE, got '{l}'")));
            };
            let (t, v) = (t.trim(), v.trim());
            let time_ns = match t.parse::<f64>() {
                Ok(ms) if ms.is_finite() && (0.0..=3.6e6).contains(&ms) => {
                    (ms * 1e6).round() as u64
                }
                Ok(_) => return Err(err(line, format!("time '{t}': between 0 and 1 hour"))),
                Err(_) => parse_duration_ns("time", t).map_err(|e| err(line, e.0))?,
            };
            let value = match kind {
                SeriesKind::Delay => {
                    let ns = parse_duration_ns("delay", v).map_err(|e| err(line, e.0))?;
                    if ns > u64::from(u32::MAX) * 1_000 {
                        return Err(err(line, format!("delay '{v}': at most 71 minutes")));
                    }
                    ns as f64
                }
                SeriesKind::Loss => parse_percent("loss", v).map_err(|e| err(line, e.0))?,
            };
            if let Some(&(last, _)) = points.last() {
                if time_ns < last {
                    return Err(err(
                        line,
                        format!(
                            "time '{t}' is earlier than the line before: times must not decrease"
                        ),
                    ));
                }
            }
            points.push((time_ns, value));
        }
        if points.is_empty() {
            return Err(err(0, "the series has no TIME,VALUE lines".into()));
        }
        Ok(Series {
            source: file.to_owned(),
            kind,
            points,
            mode,
            end,
        })
    }

    /// The series' value at `t_ns` (before the first point: the first
    /// value; after the last: the last).
    pub fn at(&self, t_ns: u64) -> f64 {
        let p = &self.points;
        let i = p.partition_point(|&(t, _)| t <= t_ns);
        if i == 0 {
            return p[0].1;
        }
        let (t0, v0) = p[i - 1];
        match (self.mode, p.get(i)) {
            (TraceMode::Linear, Some(&(t1, v1))) if t1 > t0 => {
                v0 + (v1 - v0) * (t_ns - t0) as f64 / (t1 - t0) as f64
            }
            _ => v0,
        }
    }

    /// The series' period: its last time (at least one step).
    pub fn period_ns(&self) -> u64 {
        self.points.last().map_or(0, |p| p.0)
    }

    /// The kernel's header (without its start time) and values: one per
    /// step from time 0; `loop` repeats them, `hold` ends on the last
    /// point's value.
    pub fn expand(&self) -> (SeriesHeader, Vec<u32>) {
        let period = self.period_ns();
        let step = step_ns(period);
        let steps = period.div_ceil(step).max(1);
        let len = match self.end {
            TraceEnd::Loop => steps,
            TraceEnd::Hold => steps + 1,
        }
        .min(u64::from(SERIES_POINTS));
        let values = (0..len)
            .map(|k| {
                let v = self.at(k * step);
                match self.kind {
                    SeriesKind::Delay => (v / 1_000.0).round().min(f64::from(u32::MAX)) as u32,
                    SeriesKind::Loss => prob::from_fraction(v.clamp(0.0, 1.0)),
                }
            })
            .collect();
        let h = SeriesHeader {
            start_ns: 0,
            step_ns: step,
            len: len as u32,
            flags: if self.end == TraceEnd::Loop {
                series_flags::LOOP
            } else {
                0
            },
        };
        (h, values)
    }

    /// The largest value, ns (delay series; for sizing fq).
    pub fn max_delay_ns(&self) -> u64 {
        self.points.iter().map(|p| p.1 as u64).max().unwrap_or(0)
    }

    /// A series read back from the kernel's table (for `impair update`,
    /// which keeps what the flags do not change): one stepped point per value.
    pub fn from_table(kind: SeriesKind, h: &SeriesHeader, values: &[u32]) -> Series {
        let points = values
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let value = match kind {
                    SeriesKind::Delay => f64::from(v) * 1_000.0,
                    SeriesKind::Loss => prob::to_fraction(v),
                };
                (k as u64 * h.step_ns, value)
            })
            .collect::<Vec<_>>();
        let end = if h.flags & series_flags::LOOP != 0 {
            TraceEnd::Loop
        } else {
            TraceEnd::Hold
        };
        let mut points = points;
        if end == TraceEnd::Loop {
            // The period ends one step after the last value.
            let last = points.last().map_or(0.0, |p| p.1);
            points.push((u64::from(h.len) * h.step_ns, last));
        }
        Series {
            source: "running series".into(),
            kind,
            points,
            mode: TraceMode::Step,
            end,
        }
    }
}

impl std::str::FromStr for TraceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "step" => Ok(TraceMode::Step),
            "linear" => Ok(TraceMode::Linear),
            o => Err(format!("invalid trace mode '{o}': expected step or linear")),
        }
    }
}

impl std::str::FromStr for TraceEnd {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "loop" => Ok(TraceEnd::Loop),
            "hold" => Ok(TraceEnd::Hold),
            o => Err(format!("invalid trace end '{o}': expected loop or hold")),
        }
    }
}

#[cfg(test)]
#[path = "series_tests.rs"]
mod tests;
