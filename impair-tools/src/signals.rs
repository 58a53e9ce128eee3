//! Stop requests: SIGINT, SIGTERM and SIGHUP all mean "detach and exit".
use std::sync::{atomic::AtomicBool, Arc};

use anyhow::Result;

/// A flag that the three stop signals set (and that no longer kill the
/// process, so whatever holds an engine can detach before exiting).
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}
