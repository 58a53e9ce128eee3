//! The `impair` command line.
use std::process::ExitCode;

use impair::{cli, input::UsageError};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMPAIR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<UsageError>() {
                eprintln!("impair: error: {u}");
                ExitCode::from(2)
            } else {
                eprintln!("impair: error: {e:#}");
                ExitCode::from(1)
            }
        }
    }
}
