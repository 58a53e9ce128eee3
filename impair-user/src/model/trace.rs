//! Rate traces (`--rate-trace FILE`) in Mahimahi's format: one line per
//! 1500-byte delivery opportunity, the time in ms from the trace's start; a
//! repeated time is several opportunities; the trace loops with the period
//! of its last time. Compiled to the kernel's tables
//! ([`impair_common::trace`]). Errors name the file and line.
use std::{path::Path, sync::Arc};

use impair_common::trace::{TRACE_MAX_OPPORTUNITIES, TRACE_MAX_PERIOD_MS};

/// How long a packet may wait for the trace's capacity (the queue limit of
/// a rule with a rate trace and no rate of its own): 1 s.
pub const TRACE_DEFAULT_QUEUE_NS: u64 = 1_000_000_000;

/// A parsed trace: opportunity times, ms, non-decreasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTrace {
    pub source: String,
    pub times_ms: Vec<u32>,
}

/// What is wrong with a trace file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct TraceError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl RateTrace {
    pub fn load(path: &Path) -> Result<Arc<RateTrace>, TraceError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TraceError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read the trace: {e}"),
        })?;
        RateTrace::parse(&file, &text).map(Arc::new)
    }

    /// One time (whole ms) per line; blank lines and `#` comments skipped.
    pub fn parse(file: &str, text: &str) -> Result<RateTrace, TraceError> {
        let err = |line: usize, message: String| TraceError {
            file: file.to_owned(),
            line,
            message,
        };
        let mut times_ms: Vec<u32> = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let line = i + 1;
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let t: u32 = l.parse().map_err(|_| {
                err(
                    line,
                    format!("expected a time in whole milliseconds, got '{l}'"),
                )
            })?;
            if t > TRACE_MAX_PERIOD_MS {
                return Err(err(
                    line,
                    format!("{t} ms: traces of at most {TRACE_MAX_PERIOD_MS} ms are supported"),
                ));
            }
            if times_ms.last().is_some_and(|&last| t < last) {
                return Err(err(line, format!("{t} ms is earlier than the line before")));
            }
            if times_ms.len() >= TRACE_MAX_OPPORTUNITIES as usize {
                return Err(err(
                    line,
                    format!("more than {TRACE_MAX_OPPORTUNITIES} delivery opportunities"),
                ));
            }
            times_ms.push(t);
        }
        match times_ms.last() {
            None => Err(err(0, "the trace has no delivery opportunities".into())),
            Some(0) => Err(err(
                0,
                "the trace's last time must be above 0 ms (its period)".into(),
            )),
            Some(_) => Ok(RateTrace {
                source: file.to_owned(),
                times_ms,
            }),
        }
    }

    /// The period, ms: the last time.
    pub fn period_ms(&self) -> u32 {
        self.times_ms.last().copied().unwrap_or(0)
    }

    /// For each ms `0..=period`, the opportunities before it.
    pub fn before_table(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.period_ms() as usize + 1);
        let mut k = 0usize;
        for ms in 0..=self.period_ms() {
            while k < self.times_ms.len() && self.times_ms[k] < ms {
                k += 1;
            }
            out.push(k as u32);
        }
        out
    }

    /// The mean rate over one period, bit/s.
    pub fn mean_rate_bps(&self) -> u64 {
        let bits = self.times_ms.len() as u64 * impair_common::trace::OPPORTUNITY_BYTES * 8;
        bits * 1_000 / u64::from(self.period_ms().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mahimahi_lines() {
        let t = RateTrace::parse("t", "# one a ms, twice at 3\n1\n2\n3\n3\n\n4\n").unwrap();
        assert_eq!(t.times_ms, [1, 2, 3, 3, 4]);
        assert_eq!(t.period_ms(), 4);
        assert_eq!(t.before_table(), [0, 0, 1, 2, 4]);
        assert_eq!(t.mean_rate_bps(), 5 * 1500 * 8 * 1000 / 4);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = RateTrace::parse("t", "1\n2\nx\n").unwrap_err();
        assert_eq!((e.line, e.to_string().starts_with("t:3: ")), (3, true));
        let e = RateTrace::parse("t", "5\n4\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(RateTrace::parse("t", "").is_err());
        assert!(RateTrace::parse("t", "0\n0\n").is_err());
        let e = RateTrace::parse("t", "1\n999999\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}
