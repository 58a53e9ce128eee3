//! Third-party checks of the agent and its documents (installed by `cargo
//! xtask setup` into a venv, see xtask/src/setup.rs): kubernetes-validate on
//! docs/fleet.md's manifests, offline (no API server can run here), and
//! schemathesis on the agent from its OpenAPI document.
use std::{path::PathBuf, process::Command};

use impair_tests::Scratch;

/// The venv `cargo xtask setup` makes for the Python tools.
fn venv_bin(tool: &str) -> PathBuf {
    let p = PathBuf::from("/opt/impair-pytools/bin").join(tool);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo xtask setup` (it installs the PyPI tools)",
        p.display()
    );
    p
}

/// The YAML blocks of a Markdown file that hold Kubernetes objects.
fn manifests(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```yaml") => cur = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => {
                let block = cur.take().unwrap();
                if block.contains("apiVersion:") && block.contains("kind:") {
                    out.push(block);
                }
            }
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// `text` (YAML) as JSON, through the venv's PyYAML.
fn yaml_to_json(text: &str) -> serde_json::Value {
    use std::io::Write as _;
    let mut child = Command::new(venv_bin("python3"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn fleet_manifests_validate_and_the_chaos_maps_onto_rules() {
    let md = include_str!("../../../docs/fleet.md");
    let blocks = manifests(md);
    let dir = Scratch::new("fleet-yaml");
    let files: Vec<String> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| dir.file(&format!("m{i}.yaml"), b))
        .collect();
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--kubernetes-version", "1.30", "--strict"])
        .args(&files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate: {text}");
    assert!(
        text.contains("passed for resource daemonset/impair-agent"),
        "{text}"
    );
    // The custom resource has no schema offline: kubernetes-validate says
    // so; its chaosd fields go through the agent's own mapping instead.
    let chaos = blocks
        .iter()
        .map(|b| yaml_to_json(b))
        .find(|v| v["kind"] == "PhysicalMachineChaos")
        .expect("docs/fleet.md has a PhysicalMachineChaos");
    let action = chaos["spec"]["action"].as_str().unwrap();
    let mut fields = chaos["spec"][action].clone();
    fields["action"] = action.trim_start_matches("network-").into();
    let attack: impair_agent::chaosd::NetworkAttack = serde_json::from_value(fields).unwrap();
    let req = attack.to_request("pmc-uid".into()).unwrap();
    let rules = req.rules.unwrap();
    for (i, r) in rules.iter().enumerate() {
        let spec = r.to_spec(&format!("rules[{i}]")).unwrap();
        assert_eq!(spec.loss, Some(0.10));
        assert_eq!(spec.matcher.dport, Some((5000, 5010)));
    }
}

/// schemathesis (PyPI), driven by docs/agent-openapi.json against a live
/// agent: no 5xx, every status, content type and body as documented (every
/// 400 with its field path and what is allowed), malformed data rejected.
#[test]
fn schemathesis_finds_the_agent_as_documented() {
    let lab = impair_tests::ns::lab("agst");
    let agent = crate::Agent::start(&lab.router, &["--listen", "127.0.0.1:0"]);
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/agent-openapi.json");
    let dir = Scratch::new("schemathesis");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.router])
        .arg(venv_bin("st"))
        .args([
            "run",
            schema,
            "--url",
            &agent.base,
            "--no-color",
            "--workers",
            "1",
        ])
        .args(["--max-examples", "30", "--seed", "7"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,negative_data_rejection",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis: {text}");
    assert!(
        text.contains("passed") && !text.contains("failed"),
        "{text}"
    );
    let left = agent.req("GET", "/v1/impairments", None);
    for inst in left.body["impairments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let id = inst["id"].as_str().unwrap().to_owned();
        assert_eq!(
            agent
                .req("DELETE", &format!("/v1/impairments/{id}"), None)
                .status,
            200
        );
    }
}
