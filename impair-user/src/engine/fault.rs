//! A test hook for crash consistency: with `IMPAIR_FAULT_AT=STEP` in its
//! environment, the process kills itself with SIGKILL when the engine
//! reaches STEP (`attach:recorded`, `attach:fq`, `attach:clsact`,
//! `attach:linked`, `update:written`, `detach:unlinked`), as a crash, the
//! OOM killer or `kill -9` would. The controller tier kills at every step
//! and checks that the next impair command leaves nothing behind. Inert
//! unless the variable is set.
use std::sync::OnceLock;

/// Dies here if the environment names this step.
pub(crate) fn point(step: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("IMPAIR_FAULT_AT").ok())
        .as_deref()
        == Some(step)
    {
        tracing::debug!(step, "IMPAIR_FAULT_AT: killing this process");
        // SAFETY: kill(2) on this process's own pid; nothing is borrowed.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
