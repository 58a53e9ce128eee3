//! Latency matrices: per-destination delay, jitter, loss and rate for many
//! prefixes, read from CSV (header `prefix,delay,jitter,loss,rate`) or TOML
//! (`[[dest]]` tables with the same keys), values in the flags' units
//! ([`super::units`]), an empty cell meaning none. A rule refers to one
//! ([`super::RuleSpec::matrix`]); compiled, each prefix becomes an entry of
//! the data path's LPM trie (`impair_common::matrix`). Errors name the
//! file, the line and the column.
use std::{collections::HashMap, path::Path};

use impair_common::{
    edt,
    matrix::{
        matrix_flags, v4_prefix_len, v6_prefix_len, MatrixAddr, MatrixEntry, MATRIX_MAX_DESTS,
    },
    prob,
};
use ipnet::IpNet;

use super::{
    rule::DEFAULT_QUEUE_PACKETS,
    units::{parse_cidr, parse_duration_ns, parse_percent, parse_rate_bps, QUEUE_PACKET_BYTES},
};

/// The columns, in the order the header names them.
pub const COLUMNS: [&str; 5] = ["prefix", "delay", "jitter", "loss", "rate"];

/// One destination prefix and what the matrix does to packets for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dest {
    pub prefix: IpNet,
    pub delay_ns: Option<u64>,
    pub jitter_ns: Option<u64>,
    /// Loss probability in [0, 1].
    pub loss: Option<f64>,
    pub rate_bps: Option<u64>,
}

/// A latency matrix: where it came from (for messages and `impair status`)
/// and its destinations, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub source: String,
    pub dests: Vec<Dest>,
}

/// What is wrong with a matrix file, and where: `FILE:LINE: column N
/// (NAME): message` (line and column 0 when the file as a whole is at fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {}{message}", column_text(*column, column_name))]
pub struct MatrixError {
    pub file: String,
    pub line: usize,
    /// 1-based CSV column (0: none).
    pub column: usize,
    pub column_name: String,
    pub message: String,
}

fn column_text(column: usize, name: &str) -> String {
    match (column, name.is_empty()) {
        (0, true) => String::new(),
        (0, false) => format!("{name}: "),
        (c, _) => format!("column {c} ({name}): "),
    }
}

impl Matrix {
    /// Reads a matrix file: TOML when its name ends in `.toml`, else CSV.
    pub fn load(path: &Path) -> Result<Matrix, MatrixError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MatrixError {
            file: file.clone(),
            line: 0,
            column: 0,
            column_name: String::new(),
            message: format!("cannot read the matrix: {e}"),
        })?;
        if path.extension().is_some_and(|e| e == "toml") {
            Matrix::parse_toml(&file, &text)
        } else {
            Matrix::parse_csv(&file, &text)
        }
    }

    /// Parses CSV: a header naming the five columns (any order; `#` starts a
    /// comment line; blank lines are skipped), then one prefix per line.
    /// Cells are plain (no quoting): no value of these columns has a comma.
    pub fn parse_csv(file: &str, text: &str) -> Result<Matrix, MatrixError> {
        let err = |line: usize, column: usize, name: &str, message: String| MatrixError {
            file: file.to_owned(),
            line,
            column,
            column_name: name.to_owned(),
            message,
        };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        let Some((hline, header)) = lines.next() else {
            return Err(err(
                0,
                0,
                "",
                format!("empty matrix: expected the header {}", COLUMNS.join(",")),
            ));
        };
        // For each of COLUMNS, its position in the file.
        let names: Vec<String> = header
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let mut pos = [usize::MAX; 5];
        for (i, n) in names.iter().enumerate() {
            let Some(k) = COLUMNS.iter().position(|c| c == n) else {
                return Err(err(
                    hline,
                    i + 1,
                    n,
                    format!("unknown column: the header is {}", COLUMNS.join(",")),
                ));
            };
            if pos[k] != usize::MAX {
                return Err(err(hline, i + 1, n, "named twice in the header".into()));
            }
            pos[k] = i;
        }
        if let Some(k) = pos.iter().position(|&p| p == usize::MAX) {
            return Err(err(
                hline,
                0,
                COLUMNS[k],
                format!("missing from the header {}", COLUMNS.join(",")),
            ));
        }
        let mut b = Builder::new(file);
        for (line, l) in lines {
            let cells: Vec<&str> = l.split(',').map(str::trim).collect();
            if cells.len() != names.len() {
                return Err(err(
                    line,
                    0,
                    "",
                    format!(
                        "{} cells; the header has {} columns",
                        cells.len(),
                        names.len()
                    ),
                ));
            }
            let cell = |k: usize| {
                let c = cells[pos[k]];
                (!c.is_empty()).then_some((c, pos[k] + 1))
            };
            b.add(line, [cell(0), cell(1), cell(2), cell(3), cell(4)])?;
        }
        b.finish()
    }

    /// Parses TOML: `[[dest]]` tables with `prefix` and any of `delay`,
    /// `jitter`, `loss`, `rate` (strings in the flags' units).
    pub fn parse_toml(file: &str, text: &str) -> Result<Matrix, MatrixError> {
        use toml::Spanned;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            #[serde(default)]
            dest: Vec<DestToml>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct DestToml {
            prefix: Spanned<String>,
            delay: Option<Spanned<String>>,
            jitter: Option<Spanned<String>>,
            loss: Option<Spanned<String>>,
            rate: Option<Spanned<String>>,
        }
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let doc: Doc = toml::from_str(text).map_err(|e| MatrixError {
            file: file.to_owned(),
            line: e.span().map_or(0, |s| line_of(s.start)),
            column: 0,
            column_name: String::new(),
            message: e.message().to_owned(),
        })?;
        let mut b = Builder::new(file);
        for d in &doc.dest {
            let line = line_of(d.prefix.span().start);
            fn v<'t>(
                s: &'t Option<Spanned<String>>,
                line_of: &dyn Fn(usize) -> usize,
            ) -> Option<(&'t str, usize)> {
                s.as_ref()
                    .map(|s| (s.get_ref().as_str(), line_of(s.span().start)))
            }
            let cells = [
                Some((d.prefix.get_ref().as_str(), line)),
                v(&d.delay, &line_of),
                v(&d.jitter, &line_of),
                v(&d.loss, &line_of),
                v(&d.rate, &line_of),
            ];
            b.add_toml(cells)?;
        }
        b.finish()
    }

    /// The trie entries of this matrix for rule `rule` (its `IMPAIR_RULES`
    /// index): `(prefix_len, key data, value)`. A destination with a rate
    /// queues at most netem's default 1000 packets at that rate.
    pub fn entries(&self, rule: u32) -> Vec<(u32, MatrixAddr, MatrixEntry)> {
        self.dests
            .iter()
            .map(|d| {
                let (len, addr) = match d.prefix {
                    IpNet::V4(n) => (
                        v4_prefix_len(n.prefix_len()),
                        MatrixAddr::v4(rule, n.network().octets()),
                    ),
                    IpNet::V6(n) => (
                        v6_prefix_len(n.prefix_len()),
                        MatrixAddr::v6(rule, n.network().octets()),
                    ),
                };
                (len, addr, d.entry())
            })
            .collect()
    }
}

impl Dest {
    /// The trie value: parameters set, state and counters zero.
    pub fn entry(&self) -> MatrixEntry {
        let mut e = MatrixEntry::default();
        if self.delay_ns.is_some() || self.jitter_ns.is_some() {
            e.flags |= matrix_flags::DELAY;
            e.delay_ns = self.delay_ns.unwrap_or(0);
            e.jitter_ns = self.jitter_ns.unwrap_or(0);
        }
        if let Some(p) = self.loss {
            e.flags |= matrix_flags::LOSS;
            e.loss_u32 = prob::from_fraction(p);
        }
        if let Some(bps) = self.rate_bps {
            e.flags |= matrix_flags::RATE;
            e.rate_ps_per_byte = edt::ps_per_byte(bps);
            e.queue_limit_ns = edt::tx_time_ns(
                DEFAULT_QUEUE_PACKETS * QUEUE_PACKET_BYTES,
                e.rate_ps_per_byte,
            )
            .max(1);
        }
        e
    }

    /// A destination read back from its trie value (rates and
    /// probabilities as the data path holds them).
    pub fn of_entry(prefix: IpNet, e: &MatrixEntry) -> Dest {
        let delay = e.flags & matrix_flags::DELAY != 0;
        Dest {
            prefix,
            delay_ns: delay.then_some(e.delay_ns),
            jitter_ns: (delay && e.jitter_ns != 0).then_some(e.jitter_ns),
            loss: (e.flags & matrix_flags::LOSS != 0).then(|| prob::to_fraction(e.loss_u32)),
            rate_bps: (e.flags & matrix_flags::RATE != 0 && e.rate_ps_per_byte != 0)
                .then(|| (8e12 / e.rate_ps_per_byte as f64).round() as u64),
        }
    }

    /// The longest time the destination may hold a packet: delay, jitter
    /// and its queue limit (for sizing fq).
    pub fn max_hold_ns(&self) -> u64 {
        let e = self.entry();
        e.delay_ns
            .saturating_add(e.jitter_ns)
            .saturating_add(e.queue_limit_ns)
    }
}

/// Collects validated destinations; refuses duplicates and too many.
struct Builder<'a> {
    file: &'a str,
    dests: Vec<Dest>,
    seen: HashMap<IpNet, usize>,
}

impl<'a> Builder<'a> {
    fn new(file: &'a str) -> Self {
        Self {
            file,
            dests: Vec::new(),
            seen: HashMap::new(),
        }
    }

    fn err(&self, line: usize, column: usize, k: usize, message: String) -> MatrixError {
        MatrixError {
            file: self.file.to_owned(),
            line,
            column,
            column_name: COLUMNS[k].to_owned(),
            message,
        }
    }

    /// A CSV row: each cell with its 1-based column, `None` when empty.
    fn add(&mut self, line: usize, cells: [Option<(&str, usize)>; 5]) -> Result<(), MatrixError> {
        let at = |k: usize| (line, cells[k].map_or(0, |c| c.1));
        self.push(line, cells.map(|c| c.map(|c| c.0)), at)
    }

    /// A TOML table: each value with its line (the column is the key).
    fn add_toml(&mut self, cells: [Option<(&str, usize)>; 5]) -> Result<(), MatrixError> {
        let line = cells[0].map_or(0, |c| c.1);
        let at = |k: usize| (cells[k].map_or(line, |c| c.1), 0);
        self.push(line, cells.map(|c| c.map(|c| c.0)), at)
    }

    fn push(
        &mut self,
        line: usize,
        v: [Option<&str>; 5],
        at: impl Fn(usize) -> (usize, usize),
    ) -> Result<(), MatrixError> {
        let fail = |k: usize, m: String| {
            let (l, c) = at(k);
            self.err(l, c, k, m)
        };
        let Some(p) = v[0] else {
            return Err(fail(0, "every destination needs a prefix".into()));
        };
        let prefix = parse_cidr("prefix", p).map_err(|e| fail(0, e.0))?;
        let delay_ns = v[1]
            .map(|s| parse_duration_ns("delay", s))
            .transpose()
            .map_err(|e| fail(1, e.0))?;
        let jitter_ns = v[2]
            .map(|s| parse_duration_ns("jitter", s))
            .transpose()
            .map_err(|e| fail(2, e.0))?;
        let loss = v[3]
            .map(|s| parse_percent("loss", s))
            .transpose()
            .map_err(|e| fail(3, e.0))?;
        let rate_bps = v[4]
            .map(parse_rate_bps)
            .transpose()
            .map_err(|e| fail(4, e.0))?;
        if let Some(first) = self.seen.get(&prefix) {
            return Err(fail(
                0,
                format!("{prefix} is given twice (first on line {first})"),
            ));
        }
        if self.dests.len() >= MATRIX_MAX_DESTS as usize {
            return Err(fail(
                0,
                format!(
                    "more than {MATRIX_MAX_DESTS} prefixes: the data path holds at most that many"
                ),
            ));
        }
        self.seen.insert(prefix, line);
        self.dests.push(Dest {
            prefix,
            delay_ns,
            jitter_ns,
            loss,
            rate_bps,
        });
        Ok(())
    }

    fn finish(self) -> Result<Matrix, MatrixError> {
        if self.dests.is_empty() {
            return Err(MatrixError {
                file: self.file.to_owned(),
                line: 0,
                column: 0,
                column_name: String::new(),
                message: "the matrix has no destinations".into(),
            });
        }
        Ok(Matrix {
            source: self.file.to_owned(),
            dests: self.dests,
        })
    }
}

#[cfg(test)]
#[path = "matrix_tests.rs"]
mod tests;
