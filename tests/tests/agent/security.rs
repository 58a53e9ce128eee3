//! The agent's safety on other addresses than loopback: it refuses to start
//! without a bearer token or client certificates; with a token, requests
//! without it get a JSON 401; with mutual TLS, a client without a
//! certificate of the configured CA never gets an answer. Certificates are
//! made here with the openssl command line.
use std::process::Command;

use impair_tests::{impair_bin, ns::lab, Scratch};
use impair_tools::lab::Lab;
use serde_json::json;

use crate::{assert_error, Agent};

/// `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (install it: cargo xtask setup)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`NAME-ca.pem`) and a certificate it signed (`NAME.pem`, `NAME-key.pem`)
/// for `cn`, with `san` as subjectAltName when given.
fn issue(dir: &std::path::Path, ca: &str, name: &str, cn: &str, san: Option<&str>) {
    if !dir.join(format!("{ca}-ca.pem")).exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}-ca-key.pem"),
                "-out",
                &format!("{ca}-ca.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca} test CA"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    let ext = format!("{name}.ext");
    let mut text = String::from("basicConstraints=CA:FALSE\n");
    if let Some(s) = san {
        text += &format!("subjectAltName={s}\nextendedKeyUsage=serverAuth\n");
    } else {
        text += "extendedKeyUsage=clientAuth\n";
    }
    std::fs::write(dir.join(&ext), text).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca-key.pem"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

#[test]
fn other_addresses_need_a_token_or_client_certificates() {
    let lab: Lab = lab("ags");
    let addr = format!("{}:0", lab.router_ingress_v4());
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.router])
        .arg(impair_bin())
        .args(["agent", "--listen", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused as a usage error: {err}"
    );
    assert!(
        err.contains("not a loopback address") && err.contains("token"),
        "{err}"
    );

    let dir = Scratch::new("agent-token");
    let token_file = dir.file("token", "s3cret-token-for-the-test\n");
    let mut agent = Agent::start(
        &lab.router,
        &["--listen", &addr, "--token-file", &token_file],
    );
    let r = agent.req("GET", "/v1/impairments", None);
    assert_error(&r, 401, None);
    agent.curl_args = vec!["-H".into(), "Authorization: Bearer wrong".into()];
    assert_error(&agent.req("GET", "/v1/impairments", None), 401, None);
    agent.curl_args = vec![
        "-H".into(),
        "Authorization: Bearer s3cret-token-for-the-test".into(),
    ];
    let ok = agent.req("GET", "/v1/impairments", None);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, json!({"impairments": []}));
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let lab: Lab = lab("agm");
    let ip = lab.router_ingress_v4().to_string();
    let dir = Scratch::new("agent-mtls");
    let d = dir.path();
    issue(
        d,
        "good",
        "server",
        "impair agent",
        Some(&format!("IP:{ip}")),
    );
    issue(d, "good", "client", "test client", None);
    issue(d, "rogue", "rogue", "rogue client", None);
    let p = |f: &str| d.join(f).to_string_lossy().into_owned();
    let mut agent = Agent::start(
        &lab.router,
        &[
            "--listen",
            &format!("{ip}:0"),
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server-key.pem"),
            "--client-ca",
            &p("good-ca.pem"),
        ],
    );
    assert!(agent.base.starts_with("https://"), "{}", agent.base);
    agent.curl_args = vec!["--cacert".into(), p("good-ca.pem")];
    // No client certificate: the handshake fails, no HTTP answer at all.
    let (st, r) = agent.curl(&[], "GET", "/v1/impairments", None);
    assert!(
        !st.success() && r.status == 0,
        "refused without a certificate: {st:?} {r:?}"
    );
    // A certificate of another CA: refused alike.
    let rogue = ["--cert", &p("rogue.pem"), "--key", &p("rogue-key.pem")];
    let (st, r) = agent.curl(&rogue, "GET", "/v1/impairments", None);
    assert!(
        !st.success() && r.status == 0,
        "refused with a rogue certificate: {st:?} {r:?}"
    );
    // The CA's client: served.
    agent.curl_args.extend([
        "--cert".into(),
        p("client.pem"),
        "--key".into(),
        p("client-key.pem"),
    ]);
    let ok = agent.req("GET", "/v1/impairments", None);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, json!({"impairments": []}));
}
