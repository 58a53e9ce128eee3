//! The files a profile's rule names: a latency matrix (`matrix`), delay and
//! loss series (`delay-trace`, `loss-trace`, read as `trace-mode` and
//! `trace-end` say) and a rate trace (`rate-trace`), the keys spelt as the
//! flags of those names and read by the same model parsers
//! ([`Matrix::load`], [`Series::load`], [`RateTrace::load`]).
//!
//! A relative path is relative to the directory of the profile (or
//! scenario) file that names it; an absolute one is taken as it is. A
//! profile that is not a file — a built-in, embedded in the binary, or text
//! given to the agent — has no directory and names no files: such a key is
//! refused with its line.
use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use toml::Spanned;

use super::SourceText;
use crate::{
    input::UsageError,
    model::{
        series::{Series, SeriesKind, TraceEnd, TraceMode},
        trace::RateTrace,
        Matrix, ValueError,
    },
};

/// What a rule's files hold, read and parsed.
#[derive(Debug, Default)]
pub(crate) struct RuleFiles {
    pub matrix: Option<Arc<Matrix>>,
    pub delay_series: Option<Arc<Series>>,
    pub loss_series: Option<Arc<Series>>,
    pub rate_trace: Option<Arc<RateTrace>>,
}

/// The keys of a rule that name files, as written.
pub(crate) struct FileKeys<'a> {
    pub matrix: &'a Option<Spanned<String>>,
    pub delay_trace: &'a Option<Spanned<String>>,
    pub loss_trace: &'a Option<Spanned<String>>,
    pub trace_mode: &'a Option<Spanned<String>>,
    pub trace_end: &'a Option<Spanned<String>>,
    pub rate_trace: &'a Option<Spanned<String>>,
}

/// A file's error as `FILE: message`, or `FILE:LINE: message` when a line
/// is at fault (the model's errors say line 0 for the file as a whole), on
/// one line whatever the path or the text holds.
fn located(file: &str, line: usize, message: &str) -> String {
    let text = if line == 0 {
        format!("{file}: {message}")
    } else {
        format!("{file}:{line}: {message}")
    };
    ValueError::one_line(text).0
}

/// Where the file `v` (written under `key`) is: relative to `base`, the
/// profile's directory; refused without one.
fn path_of(
    src: &SourceText<'_>,
    base: Option<&Path>,
    key: &str,
    v: &Spanned<String>,
) -> Result<PathBuf, UsageError> {
    let name = v.get_ref();
    if name.trim().is_empty() {
        return Err(src.at(
            v.span(),
            key,
            "an empty path: expected a file, relative to the profile's directory or absolute",
        ));
    }
    let Some(base) = base else {
        return Err(src.at(
            v.span(),
            key,
            ValueError::one_line(format!(
                "'{name}' is a file, and only a profile read from a file can name files \
                 (this one is built in, or was given as text): write the rule in a profile file"
            )),
        ));
    };
    let path = Path::new(name);
    Ok(if path.is_relative() {
        // `./x` in `./p.toml` is `./x`, not `././x`.
        base.join(
            path.components()
                .filter(|c| *c != Component::CurDir)
                .collect::<PathBuf>(),
        )
    } else {
        path.to_owned()
    })
}

/// A `step|linear` or `loop|hold` key.
fn choice<T: std::str::FromStr<Err = String> + Default>(
    src: &SourceText<'_>,
    key: &str,
    v: &Option<Spanned<String>>,
) -> Result<T, UsageError> {
    match v {
        None => Ok(T::default()),
        Some(s) => s
            .get_ref()
            .parse::<T>()
            .map_err(|e| src.at(s.span(), key, ValueError::one_line(e))),
    }
}

impl FileKeys<'_> {
    /// Reads and parses every file the rule names. `trace-mode` and
    /// `trace-end` apply to both series and need one of them.
    pub(crate) fn read(
        &self,
        src: &SourceText<'_>,
        base: Option<&Path>,
    ) -> Result<RuleFiles, UsageError> {
        let mode: TraceMode = choice(src, "trace-mode", self.trace_mode)?;
        let end: TraceEnd = choice(src, "trace-end", self.trace_end)?;
        if self.delay_trace.is_none() && self.loss_trace.is_none() {
            for (key, v) in [
                ("trace-mode", self.trace_mode),
                ("trace-end", self.trace_end),
            ] {
                if let Some(v) = v {
                    return Err(src.at(
                        v.span(),
                        key,
                        "needs a delay-trace or loss-trace in the same rule (it says how a \
                         series is read)",
                    ));
                }
            }
        }
        let mut files = RuleFiles::default();
        if let Some(v) = self.matrix {
            let path = path_of(src, base, "matrix", v)?;
            let m = Matrix::load(&path).map_err(|e| {
                // The matrix's own text after `FILE:LINE: ` (its column, if any).
                let full = e.to_string();
                let prefix = format!("{}:{}: ", e.file, e.line);
                let rest = full.strip_prefix(&prefix).unwrap_or(&full);
                src.at(v.span(), "matrix", located(&e.file, e.line, rest))
            })?;
            files.matrix = Some(Arc::new(m));
        }
        for (key, v, kind, slot) in [
            (
                "delay-trace",
                self.delay_trace,
                SeriesKind::Delay,
                &mut files.delay_series,
            ),
            (
                "loss-trace",
                self.loss_trace,
                SeriesKind::Loss,
                &mut files.loss_series,
            ),
        ] {
            if let Some(v) = v {
                let path = path_of(src, base, key, v)?;
                let s = Series::load(&path, kind, mode, end)
                    .map_err(|e| src.at(v.span(), key, located(&e.file, e.line, &e.message)))?;
                *slot = Some(s);
            }
        }
        if let Some(v) = self.rate_trace {
            let path = path_of(src, base, "rate-trace", v)?;
            let t = RateTrace::load(&path).map_err(|e| {
                src.at(v.span(), "rate-trace", located(&e.file, e.line, &e.message))
            })?;
            files.rate_trace = Some(t);
        }
        Ok(files)
    }
}
