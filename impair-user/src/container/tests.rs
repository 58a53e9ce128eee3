//! Unit tests of container.rs: the Docker/Podman reply, errors, /proc.
use super::*;

/// Recorded from Podman 4.3.1's compat API (`podman system service`),
/// trimmed to the fields around the ones read.
const PODMAN_RUNNING: &str = r#"{
 "Id": "611f61c78f487c2dcc664b31a8279254427ef81cd2756cf9631ec978dbf29d67",
 "Created": "2026-12-02T05:49:19.112281463Z",
 "Path": "/bin/busybox",
 "Args": ["sleep", "300"],
 "State": {"Status": "running", "Running": true, "Paused": false, "Restarting": false,
  "OOMKilled": false, "Dead": false, "Pid": 27324, "ExitCode": 0, "Error": "",
  "StartedAt": "2026-12-02T05:49:19.97585639Z", "FinishedAt": "0001-01-01T00:00:00Z",
  "Health": {"Status": "", "FailingStreak": 0, "Log": null}},
 "Image": "sha256:e1ea236d5ec1f9e1b2d772157a4eeddbd65732101c0b35155a68bf42b164774f",
 "Name": "/impair-cont-try",
 "RestartCount": 0, "Driver": "overlay", "Platform": "linux"
}"#;

/// The shape of Docker Engine API v1.43's reply for a stopped container
/// (from its documented ContainerInspectResponse; no daemon runs here).
const DOCKER_EXITED: &str = r#"{
 "Id": "ba033ac4401106a3b513bc9d639eee123ad78ca3616b921167cd74b20e25ed39",
 "Created": "2023-06-01T09:00:00.000000000Z",
 "Path": "nginx", "Args": [],
 "State": {"Status": "exited", "Running": false, "Paused": false, "Restarting": false,
  "OOMKilled": false, "Dead": false, "Pid": 0, "ExitCode": 0, "Error": "",
  "StartedAt": "2023-06-01T09:00:01Z", "FinishedAt": "2023-06-01T09:10:00Z"},
 "Image": "sha256:abc", "Name": "/web", "HostConfig": {"NetworkMode": "bridge"},
 "NetworkSettings": {"Networks": {"bridge": {"IPAddress": ""}}}
}"#;

#[test]
fn podman_compat_reply_parses() {
    let i = parse_inspect(PODMAN_RUNNING.as_bytes()).unwrap();
    assert_eq!(i.name, "/impair-cont-try");
    assert!(i.id.starts_with("611f61c78f48"));
    assert_eq!(
        i.state,
        InspectState {
            running: true,
            status: "running".into(),
            pid: 27324
        }
    );
}

#[test]
fn a_stopped_docker_container_is_not_running() {
    let i = parse_inspect(DOCKER_EXITED.as_bytes()).unwrap();
    let err = from_inspect(i, PathBuf::from("/var/run/docker.sock")).unwrap_err();
    assert_eq!(
        err,
        ContainerError::NotRunning {
            container: "web".into(),
            status: "exited".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "container 'web' is not running (status exited): start it first"
    );
}

#[test]
fn bad_replies_are_errors_not_panics() {
    for body in [
        "",
        "[]",
        "{}",
        r#"{"Id": 1}"#,
        "\u{0}\u{ff}",
        r#"{"Id":"x"}"#,
    ] {
        assert!(parse_inspect(body.as_bytes()).is_err(), "{body:?}");
    }
    // A negative or absent pid with Running true is still "not running".
    let i = parse_inspect(br#"{"Id":"x","State":{"Running":true,"Pid":-1}}"#).unwrap();
    assert!(matches!(
        from_inspect(i, PathBuf::new()),
        Err(ContainerError::NotRunning { .. })
    ));
}

#[test]
fn runtime_error_messages_are_extracted() {
    assert_eq!(
        reply_message(br#"{"message":"No such container: x"}"#),
        "No such container: x"
    );
    assert_eq!(reply_message(b"  oops \n"), "oops");
}

#[test]
fn names_that_could_escape_the_url_are_refused() {
    for bad in [
        "",
        "a/b",
        "../x",
        "a b",
        "a?b",
        "-x",
        ".x",
        "a%2f",
        &"a".repeat(254),
    ] {
        assert_eq!(
            resolve(bad, Some(Path::new("/nonexistent"))),
            Err(ContainerError::InvalidName(bad.to_owned())),
            "{bad:?}"
        );
    }
    for good in ["web", "my_app.1-x", "611f61c78f48"] {
        assert!(check_name(good).is_ok(), "{good}");
    }
}

#[test]
fn no_runtime_names_every_socket_tried() {
    let err = resolve("web", Some(Path::new("/nonexistent/impair-test.sock"))).unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("/nonexistent/impair-test.sock: absent"),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    // containerd's socket is asked over gRPC (container/containerd.rs);
    // absent here, it is named like any other.
    if !Path::new("/run/containerd/containerd.sock").exists() {
        let err = resolve("web", Some(Path::new("/run/containerd/containerd.sock")));
        let line = err.unwrap_err().to_string();
        assert!(
            line.contains("/run/containerd/containerd.sock: absent"),
            "{line}"
        );
    }
}

#[test]
fn a_socket_that_is_not_http_is_reported() {
    // A listener that closes at once, like a gRPC-only server would
    // refuse HTTP/1.1.
    let dir = std::env::temp_dir().join(format!("impair-cont-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("not-http.sock");
    let _ = fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            drop(s);
        }
    });
    let err = resolve("web", Some(&path)).unwrap_err();
    server.join().unwrap();
    let _ = fs::remove_dir_all(&dir);
    match err {
        ContainerError::NoRuntime { tried } => {
            assert_eq!(tried.len(), 1);
            assert!(tried[0].contains("not-http.sock: "), "{tried:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cgroup_v2_line_is_found_on_hybrid_hosts() {
    let text = "9:name=systemd:/libpod_parent/libpod-611f\n\
                4:memory:/libpod_parent/libpod-611f\n\
                0::/libpod_parent/libpod-611f\n";
    assert_eq!(
        cgroup_v2_path(text).as_deref(),
        Some("/libpod_parent/libpod-611f")
    );
    assert_eq!(cgroup_v2_path("1:cpu:/\n"), None);
}

#[test]
fn the_default_interface_is_the_only_non_loopback_one() {
    let mut c = Container {
        id: "x".into(),
        name: "web".into(),
        pid: 1,
        socket: PathBuf::new(),
        netns: PathBuf::new(),
        netns_ino: 0,
        shares_caller_netns: false,
        cgroup: None,
        cgroup_id: None,
        interfaces: vec!["lo".into(), "eth0".into()],
    };
    assert_eq!(c.default_interface(), Ok("eth0"));
    c.interfaces.push("eth1".into());
    assert_eq!(
        c.default_interface().unwrap_err().to_string(),
        "container 'web' has several interfaces (eth0, eth1): name one"
    );
    c.interfaces = vec!["lo".into()];
    assert!(matches!(
        c.default_interface(),
        Err(ContainerError::NoInterface { .. })
    ));
}

#[test]
fn a_private_cgroup2_mount_reads_ids_and_goes_away() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return; // mounting needs root; the controller tier runs as root
    }
    let text = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = cgroup_v2_path(&text).unwrap_or_else(|| "/".into());
    let id = cgroup_id_on_private_mount(own.trim_start_matches('/'));
    assert!(id.is_some(), "no cgroup2 id for {own}");
    // Where a cgroup2 mount is visible, both ways agree.
    if fs::read_to_string("/proc/self/mounts").is_ok_and(|m| m.contains(" cgroup2 ")) {
        assert_eq!(cgroup_id(&own), id);
    }
    // The root cgroup's id is 1 (kernfs), whichever mount shows it.
    assert_eq!(cgroup_id_on_private_mount(""), Some(1));
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains("impair-cgroup2-resolve"), "{mounts}");
    let left = fs::read_dir("/run").unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("impair-cgroup2-resolve")
    });
    assert!(!left, "a resolve mount point was left in /run");
}

#[test]
fn this_process_interfaces_are_listed() {
    let names = interfaces_in(Path::new("/proc/self/ns/net")).unwrap();
    assert!(names.iter().any(|n| n == "lo"), "{names:?}");
}
