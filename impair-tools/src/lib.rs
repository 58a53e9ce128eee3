//! impair's tools, one layer above the library's observation layer and one
//! below the command line: the namespace lab ([`lab`]), the probe
//! ([`probe`]), the sweep runner ([`sweep`]), `impair run`'s cgroup scoping
//! ([`run`]), the scenario player ([`player`]), the demo ([`demo`]), the
//! one SVG writer ([`svg`]) and the stop signals ([`signals`]). The tests
//! and the benchmarks use the same lab and probe.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the tools (demo, sweep, run) report to the terminal of the command that runs them"
)]
pub mod demo;
pub mod lab;
pub mod player;
pub mod probe;
pub mod run;
pub mod signals;
pub mod sockmark;
pub mod sweep;

/// The one SVG writer (its own crate, so xtask draws with it too).
pub use impair_svg as svg;

/// A [`impair::input::UsageError`] from a format string.
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => { ::impair::input::UsageError(format!($($arg)*)) };
}
