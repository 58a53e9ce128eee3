//! SIGKILL of the agent: its impairments stop within the lease (the data
//! path passes everything once the lease ends), and a restarted agent
//! reports and removes what the dead one left (clsact filters: netlink
//! attachments outlive their process; tcx links do not).
use std::time::Duration;

use impair_tests::ns::{assert_restored, lab, probe, router_state};
use impair_tools::lab::Lab;
use serde_json::json;

use crate::Agent;

#[test]
fn a_killed_agents_leftovers_are_harmless_and_removed_by_the_next() {
    let lab: Lab = lab("agk");
    let before = router_state(&lab);
    let agent = Agent::start(&lab.router, &[]);
    let body = json!({"id": "k", "target": {"interface": "r1"}, "attach_mode": "netlink",
        "rules": [{"loss": "100%"}]});
    let r = agent.req("POST", "/v1/impairments", Some(&body));
    assert_eq!(r.status, 201, "{r:?}");
    let rep = probe(&lab, false, 0, 500, 200);
    assert_eq!(rep.received, 0, "100% loss while the agent lives: {rep:?}");

    let st = agent.signal(libc::SIGKILL);
    assert!(st.code().is_none(), "killed: {st:?}");
    let filters = lab
        .exec(
            &lab.router,
            &["tc", "filter", "show", "dev", "r1", "egress"],
        )
        .unwrap();
    assert!(
        filters.contains("impair_egress"),
        "the clsact filter outlives the agent: {filters}"
    );
    // The lease (2 s, plus a tick) ends the impairment without anyone's help.
    std::thread::sleep(Duration::from_millis(3_000));
    let rep = probe(&lab, false, 0, 2_000, 200);
    assert_eq!(
        rep.lost, 0,
        "a dead agent impairs nothing after its lease: {rep:?}"
    );

    let next = Agent::start(&lab.router, &[]);
    assert!(
        next.preamble
            .iter()
            .any(|l| l.contains("removed leftover") && l.contains("r1") && l.contains("agent k")),
        "the restarted agent says what it removed: {:?}",
        next.preamble
    );
    let info = next.req("GET", "/v1/agent", None);
    let removed = info.body["removed_at_start"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!removed.is_empty(), "{info:?}");
    assert_restored(&lab, &before);
    let st = next.signal(libc::SIGTERM);
    assert_eq!(st.code(), Some(0));
}
