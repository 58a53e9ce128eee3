//! Namespace tier for the agent (`impair agent`, crate impair-agent): the
//! real binary runs in the lab's router namespace and is driven over real
//! HTTP (curl, run in the same namespace); what it does is measured at the
//! receiver with the probe, and every test checks the router's `r1` is
//! restored exactly. `security` holds the bearer token and mutual TLS,
//! `container` a Podman container by name, `crash` the SIGKILL and the restarted agent's cleanup, `fleet` three
//! agents driven by Chaos Toolkit, `tools` the third-party checks
//! (schemathesis, kubernetes-validate).
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

use impair_tests::{
    impair_bin,
    ns::{assert_restored, lab, probe, router_state},
    stats::assert_inside_suite,
};
use impair_tools::lab::Lab;
use serde_json::{json, Value};

mod container;
mod crash;
mod fleet;
mod security;
mod tools;
mod twoway;

/// A running `impair agent` in a lab namespace.
pub struct Agent {
    child: Option<Child>,
    pub ns: String,
    /// `http://127.0.0.1:PORT` (or https).
    pub base: String,
    /// The lines it printed before it listened (leftovers it removed).
    pub preamble: Vec<String>,
    /// Extra curl arguments every request carries (token, certificates).
    pub curl_args: Vec<String>,
}

/// A response: status and the JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Agent {
    /// Starts `impair agent ARGS` in `ns` and waits for its "listening" line.
    pub fn start(ns: &str, args: &[&str]) -> Agent {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(impair_bin())
            .arg("agent")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning impair agent");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut preamble = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("listening on ") => {
                    let base = line.rsplit(' ').next().unwrap().to_owned();
                    return Agent {
                        child: Some(child),
                        ns: ns.to_owned(),
                        base,
                        preamble,
                        curl_args: vec![],
                    };
                }
                Ok(line) => preamble.push(line),
                Err(e) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    panic!(
                        "impair agent in {ns} did not come up ({e}): {preamble:?}\nstderr: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// curl in the agent's namespace; returns curl's exit status and the reply.
    pub fn curl(
        &self,
        extra: &[&str],
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (ExitStatus, Reply) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "30"])
            .args(["-X", method, "-w", "\n%{http_code}"])
            .args(&self.curl_args)
            .args(extra);
        if body.is_some() {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ]);
            cmd.stdin(Stdio::piped());
        }
        cmd.arg(format!("{}{path}", self.base));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("curl (install it: cargo xtask setup)");
        if let Some(b) = body {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            let data = b.as_bytes().to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
        let out = child.wait_with_output().unwrap();
        let all = String::from_utf8_lossy(&out.stdout).into_owned();
        let (text, code) = all.rsplit_once('\n').unwrap_or(("", all.as_str()));
        let reply = Reply {
            status: code.trim().parse().unwrap_or(0),
            body: serde_json::from_str(text).unwrap_or(Value::Null),
            text: text.to_owned(),
        };
        (out.status, reply)
    }

    /// A request that must reach the agent.
    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let text = body.map(Value::to_string);
        let (st, r) = self.curl(&[], method, path, text.as_deref());
        assert!(st.success(), "curl {method} {path}: {st:?} {r:?}");
        r
    }

    /// A raw body (not necessarily JSON).
    pub fn raw(&self, method: &str, path: &str, body: &str) -> Reply {
        let (st, r) = self.curl(&[], method, path, Some(body));
        assert!(st.success(), "curl {method} {path}: {st:?}");
        r
    }

    /// Sends `sig` and waits; returns the exit status.
    pub fn signal(mut self, sig: i32) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child (`ip netns exec` execs impair).
        unsafe { libc::kill(child.id() as i32, sig) };
        child.wait().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child; errors (already gone) are fine.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

/// Asserts an error reply: `status`, JSON with `error`, and `field` when given.
pub fn assert_error(r: &Reply, status: u16, field: Option<&str>) {
    assert_eq!(r.status, status, "{r:?}");
    assert!(
        r.body["error"].is_string() || r.body["error"].is_boolean(),
        "every error is JSON: {r:?}"
    );
    if let Some(f) = field {
        assert_eq!(r.body["field"], f, "{r:?}");
        assert!(
            r.body["allowed"].is_string(),
            "an error with a field says what is allowed: {r:?}"
        );
    }
}

/// The configured loss of an instance's first rule (read back from the map).
fn assert_loss(view: &Value, loss: f64) {
    let got = view["status"]["rules"][0]["loss"].as_f64();
    assert!(
        got.is_some_and(|g| (g - loss).abs() < 1e-6),
        "configured loss {loss}: {view}"
    );
}

fn create_body(id: &str, loss: &str) -> Value {
    json!({"id": id, "target": {"interface": "r1"}, "rules": [{"dst": "198.18.2.0/24", "loss": loss}], "seed": 7})
}

#[test]
fn a_loss_rule_over_http_is_measured_updated_and_removed_exactly() {
    let lab: Lab = lab("agt");
    let before = router_state(&lab);
    let agent = Agent::start(&lab.router, &["--listen", "127.0.0.1:0"]);

    let r = agent.req("POST", "/v1/impairments", Some(&create_body("t1", "20%")));
    assert_eq!(r.status, 201, "{r:?}");
    assert_loss(&r.body, 0.2);
    // The same id and body again: the existing one, nothing stacks.
    let again = agent.req("POST", "/v1/impairments", Some(&create_body("t1", "20%")));
    assert_eq!(again.status, 200, "{again:?}");
    // The same id, another body: a conflict, and nothing changed.
    let other = agent.req("POST", "/v1/impairments", Some(&create_body("t1", "30%")));
    assert_error(&other, 409, None);

    let rep = probe(&lab, false, 0, 10_000, 200);
    assert_inside_suite(0.20, rep.lost, rep.sent);
    let got = agent.req("GET", "/v1/impairments/t1", None);
    assert_eq!(got.status, 200);
    let rule = &got.body["status"]["rules"][0];
    assert_eq!(rule["packets"].as_u64(), Some(rep.sent), "{got:?}");
    assert_eq!(
        rule["dropped_loss"].as_u64(),
        Some(rep.lost),
        "configured vs measured: {got:?}"
    );
    assert!(rule["measured_loss"].is_number(), "{got:?}");

    // Update (atomic, the engine's): 50% from now on.
    let up = agent.req(
        "PUT",
        "/v1/impairments/t1",
        Some(&json!({"rules": [{"dst": "198.18.2.0/24", "loss": "50%"}]})),
    );
    assert_eq!(up.status, 200, "{up:?}");
    assert_eq!(up.body["status"]["generation"], 2, "{up:?}");
    let rep = probe(&lab, false, 0, 10_000, 200);
    assert_inside_suite(0.50, rep.lost, rep.sent);
    let patch = agent.req(
        "PATCH",
        "/v1/impairments/t1",
        Some(&json!({"profile": "lossy"})),
    );
    assert_eq!(patch.status, 200, "{patch:?}");

    let list = agent.req("GET", "/v1/impairments", None);
    assert_eq!(
        list.body["impairments"].as_array().map(Vec::len),
        Some(1),
        "{list:?}"
    );
    let metrics = agent.req("GET", "/metrics", None);
    assert!(
        metrics
            .text
            .contains("impair_packets_total{interface=\"r1\""),
        "{}",
        metrics.text
    );
    let doc = agent.req("GET", "/openapi.json", None);
    let kept: Value =
        serde_json::from_str(include_str!("../../../docs/agent-openapi.json")).unwrap();
    assert_eq!(
        doc.body, kept,
        "the served OpenAPI document is docs/agent-openapi.json"
    );

    let del = agent.req("DELETE", "/v1/impairments/t1", None);
    assert_eq!(del.status, 200, "{del:?}");
    assert_error(&agent.req("DELETE", "/v1/impairments/t1", None), 404, None);
    assert_restored(&lab, &before);
    let rep = probe(&lab, false, 0, 2_000, 200);
    assert_eq!(rep.lost, 0, "nothing impairs after delete: {rep:?}");

    // SIGTERM with an impairment held: it is detached, and the agent exits 0.
    let r = agent.req("POST", "/v1/impairments", Some(&create_body("t2", "10%")));
    assert_eq!(r.status, 201, "{r:?}");
    let st = agent.signal(libc::SIGTERM);
    assert_eq!(st.code(), Some(0), "SIGTERM exits 0");
    assert_restored(&lab, &before);
}

#[test]
fn bad_requests_are_json_errors_with_the_field_and_change_nothing() {
    let lab: Lab = lab("agb");
    let before = router_state(&lab);
    let agent = Agent::start(&lab.router, &[]);
    let post = |v: Value| agent.req("POST", "/v1/impairments", Some(&v));
    let target = json!({"interface": "r1"});

    assert_error(
        &post(json!({"id": "b", "target": target, "rules": [{"loss": "150%"}]})),
        400,
        Some("rules[0].loss"),
    );
    assert_error(
        &post(json!({"id": "b", "target": target, "rules": [{"loss": "1%"}, {"jitter": "5ms"}]})),
        400,
        Some("rules[1].jitter"),
    );
    assert_error(
        &post(json!({"id": "b", "target": target, "rules": [{"loss": true}]})),
        400,
        Some("rules[0].loss"),
    );
    assert_error(
        &post(json!({"id": "b", "target": target, "rules": [{"los": "1%"}]})),
        400,
        Some("rules[0].los"),
    );
    assert_error(
        &post(json!({"id": "b", "target": {"interface": "nope0"}, "rules": [{"loss": "1%"}]})),
        400,
        Some("target.interface"),
    );
    assert_error(
        &post(json!({"id": "../x", "target": target, "profile": "lossy"})),
        400,
        Some("id"),
    );
    assert_error(
        &post(json!({"id": "b", "target": target, "profile": "no-such"})),
        400,
        Some("profile"),
    );
    assert_error(
        &post(json!({"id": "b", "target": target, "profile": "lossy", "direction": "sideways"})),
        400,
        Some("direction"),
    );
    assert_error(
        &agent.raw("POST", "/v1/impairments", "{\"id\": "),
        400,
        None,
    );
    assert_error(&agent.raw("POST", "/v1/impairments", "[1,2"), 400, None);
    let big = format!("{{\"id\": \"{}\"}}", "x".repeat(300 * 1024));
    assert_error(&agent.raw("POST", "/v1/impairments", &big), 413, None);
    assert_error(&agent.req("GET", "/v1/impairments/none", None), 404, None);
    assert_error(
        &agent.req(
            "PUT",
            "/v1/impairments/none",
            Some(&json!({"rules": [{"loss": "1%"}]})),
        ),
        404,
        None,
    );
    assert_error(&agent.req("GET", "/v2/nothing", None), 404, None);
    assert_error(&agent.req("DELETE", "/metrics", None), 405, None);
    let list = agent.req("GET", "/v1/impairments", None);
    assert_eq!(
        list.body["impairments"],
        json!([]),
        "nothing was created: {list:?}"
    );
    assert_restored(&lab, &before);

    // An update with a bad rule leaves the running rules as they were.
    let ok = post(json!({"id": "u", "target": target, "rules": [{"loss": "10%"}]}));
    assert_eq!(ok.status, 201, "{ok:?}");
    let bad = agent.req(
        "PATCH",
        "/v1/impairments/u",
        Some(&json!({"rules": [{"loss": "10%", "queue": "5ms"}]})),
    );
    assert_error(&bad, 400, Some("rules[0].queue"));
    let still = agent.req("GET", "/v1/impairments/u", None);
    assert_eq!(still.body["status"]["generation"], 1, "{still:?}");
    assert_loss(&still.body, 0.1);
    assert_eq!(agent.req("DELETE", "/v1/impairments/u", None).status, 200);
    assert_restored(&lab, &before);

    // A scenario is played step by step (atomic updates); at the end of its
    // duration the agent removes it by itself.
    let scenario = "[[step]]\nduration = \"1s\"\n[[step.rule]]\nloss = \"10%\"\n\
                    [[step]]\nduration = \"1s\"\n[[step.rule]]\nblackhole = true\n";
    let sc =
        post(json!({"id": "sc", "target": target, "scenario": scenario, "duration": "2500ms"}));
    assert_eq!(sc.status, 201, "{sc:?}");
    assert_eq!(sc.body["label"], "agent sc: scenario sc", "{sc:?}");
    std::thread::sleep(Duration::from_millis(1_400));
    let step2 = agent.req("GET", "/v1/impairments/sc", None);
    assert_eq!(
        step2.body["label"], "agent sc: scenario step 2: blackhole",
        "{step2:?}"
    );
    assert_eq!(step2.body["status"]["generation"], 2, "{step2:?}");
    assert_eq!(
        step2.body["status"]["rules"][0]["blackhole"], true,
        "{step2:?}"
    );
    std::thread::sleep(Duration::from_millis(1_600));
    let gone = agent.req("GET", "/v1/impairments/sc", None);
    assert_error(&gone, 404, None);
    assert_restored(&lab, &before);
}

#[test]
fn chaosd_network_attacks_map_onto_rules_and_recover() {
    let lab: Lab = lab("agc");
    let before = router_state(&lab);
    let agent = Agent::start(&lab.router, &[]);
    let attack = json!({"action": "loss", "device": "r1", "percent": "30", "ip-address": "198.18.2.1",
        "ip-protocol": "udp", "uid": "0d5e6a3c-1b7a-4d33-9b8e-3f0b9d3c2a11", "kind": "network"});
    let r = agent.req("POST", "/api/attack/network", Some(&attack));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        json!({"status": 200, "message": "attack successfully", "uid": attack["uid"]})
    );
    // A repeated uid does not stack.
    let r2 = agent.req("POST", "/api/attack/network", Some(&attack));
    assert_eq!(r2.status, 200, "{r2:?}");
    let list = agent.req("GET", "/v1/impairments", None);
    assert_eq!(
        list.body["impairments"].as_array().map(Vec::len),
        Some(1),
        "{list:?}"
    );
    let rep = probe(&lab, false, 0, 10_000, 200);
    assert_inside_suite(0.30, rep.lost, rep.sent);

    // What has no faithful mapping is refused, saying why.
    let corr = json!({"action": "loss", "device": "r1", "percent": "30", "correlation": "50"});
    let e = agent.req("POST", "/api/attack/network", Some(&corr));
    assert_error(&e, 400, Some("correlation"));
    assert!(e.text.contains("netem"), "{e:?}");
    for action in ["dns", "occupied"] {
        let e = agent.req(
            "POST",
            "/api/attack/network",
            Some(&json!({"action": action, "device": "r1"})),
        );
        assert_error(&e, 400, Some("action"));
    }

    let rec = agent.req(
        "DELETE",
        &format!("/api/attack/{}", attack["uid"].as_str().unwrap()),
        None,
    );
    assert_eq!(rec.status, 200, "{rec:?}");
    assert_eq!(rec.body["message"], "attack recover successfully");
    assert_error(
        &agent.req("DELETE", "/api/attack/unknown-uid", None),
        404,
        None,
    );
    assert_restored(&lab, &before);

    // A partition "to" the server: a blackhole for what leaves toward it.
    let part = json!({"action": "partition", "device": "r1", "ip-address": "198.18.2.1",
        "direction": "to", "uid": "part-1"});
    let r = agent.req("POST", "/api/attack/network", Some(&part));
    assert_eq!(r.status, 200, "{r:?}");
    let rep = probe(&lab, false, 0, 2_000, 200);
    assert_eq!(rep.received, 0, "partitioned: {rep:?}");
    assert_eq!(agent.req("DELETE", "/api/attack/part-1", None).status, 200);
    let rep = probe(&lab, false, 0, 2_000, 200);
    assert_eq!(rep.lost, 0, "recovered: {rep:?}");
    assert_restored(&lab, &before);
}
