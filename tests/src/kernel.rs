//! What the running kernel can do, found out by trying it: tests that need a
//! feature ask here, and when it is missing say so in a NOTE and check what
//! they still can (usually that impair refuses clearly and changes nothing).
//! No list of test names elsewhere decides which tests a kernel can run.
use std::sync::OnceLock;

use aya::programs::{tc::TcAttachOptions, LinkOrder, TcAttachType};
use impair::{
    engine::{Loaded, Program},
    model::{compile_all, RuleSpec},
};
use impair_tools::lab::Lab;

use crate::note;

/// Whether the kernel attaches tc programs with tcx links (Linux 6.6+).
/// Found by a real attempt, once per test binary: impair's egress program
/// attached with a tcx link to the loopback device of a private network
/// namespace that exists only for this thread, and dropped again (with the
/// namespace) when the thread ends.
pub fn has_tcx() -> bool {
    static TCX: OnceLock<bool> = OnceLock::new();
    *TCX.get_or_init(|| {
        crate::require_privileges();
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread's network namespace;
            // the thread ends right after the attempt.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return false;
            }
            let rules = compile_all(&[RuleSpec::default()]).expect("an empty rule compiles");
            let Ok(mut loaded) = Loaded::with_programs(&rules, 1, &[Program::TcEgress]) else {
                return false;
            };
            let Ok(prog) = loaded.tc_egress() else {
                return false;
            };
            prog.attach_with_options(
                "lo",
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .is_ok()
        })
        .join()
        .unwrap_or(false)
    })
}

/// [`has_tcx`], printing a NOTE naming `test` and what it checks instead
/// when the kernel has no tcx.
pub fn tcx_or_note(test: &str, instead: &str) -> bool {
    let tcx = has_tcx();
    if !tcx {
        note(format!(
            "{test}: this kernel has no tcx (Linux < 6.6; a tcx attach on a scratch device failed): \
             {instead}"
        ));
    }
    tcx
}

/// Whether the kernel has qdisc `kind` (e.g. "fq", "netem"): tried as the
/// root qdisc of the router's `r0` in `lab`, then removed.
pub fn has_qdisc(lab: &Lab, kind: &str) -> bool {
    let ok = lab
        .exec(
            &lab.router,
            &["tc", "qdisc", "add", "dev", "r0", "root", kind],
        )
        .is_ok();
    if ok {
        lab.exec(&lab.router, &["tc", "qdisc", "del", "dev", "r0", "root"])
            .unwrap();
    }
    ok
}

/// Whether the kernel has sch_fq ([`has_qdisc`]), printing a NOTE naming
/// `test` and what it checks instead when it has not.
pub fn fq_or_note(lab: &Lab, test: &str, instead: &str) -> bool {
    let fq = has_qdisc(lab, "fq");
    if !fq {
        note(format!("{test}: this kernel has no sch_fq: {instead}"));
    }
    fq
}
