//! Profiles that name files (`matrix`, `delay-trace`, `loss-trace`,
//! `rate-trace`): per-direction traces in a two-way profile, paths relative
//! to the profile's directory, and every refusal with its file, line and key.
use std::path::{Path, PathBuf};

use super::*;
use crate::model::{
    compile_all,
    series::{TraceEnd, TraceMode},
};

/// A scratch directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("impair-pfiles-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Writes `text` to `name` (creating its directories); its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load_path(p: &Path) -> Result<Profile, String> {
    load(p.to_str().unwrap()).map_err(|e| e.0)
}

/// Two opportunities a ms (24 Mbit/s) up; one every 2 ms (6 Mbit/s) down.
const UP: &str = "# 24 Mbit/s\n1\n1\n2\n2\n";
const DOWN: &str = "2\n4\n";

#[test]
fn a_two_way_profile_gives_each_direction_its_own_rate_trace() {
    let d = Dir::new("2way");
    d.file("up.trace", UP);
    d.file("traces/down.trace", DOWN);
    let profile = d.file(
        "link.toml",
        "summary = \"a traced cell\"\n\
         [[uplink.rule]]\nrate-trace = \"up.trace\"\ndelay = \"20ms\"\n\
         [[downlink.rule]]\nrate-trace = \"traces/down.trace\"\nqueue = \"50ms\"\nrate = \"100mbit\"\n",
    );
    let p = load_path(&profile).unwrap();
    assert!(p.two_way);
    let up = p.rules[0].rate_trace.as_ref().unwrap();
    let down = p.downlink[0].rate_trace.as_ref().unwrap();
    assert_eq!(up.times_ms, [1, 1, 2, 2]);
    assert_eq!(down.times_ms, [2, 4]);
    assert_eq!(up.mean_rate_bps(), 24_000_000);
    assert_eq!(down.mean_rate_bps(), 6_000_000);
    // Read from the profile's directory, and named by that path.
    assert_eq!(Path::new(&up.source), d.path("up.trace"));
    assert_eq!(Path::new(&down.source), d.path("traces/down.trace"));
    // The rule's other keys are kept beside the trace.
    assert_eq!(p.rules[0].delay.as_ref().unwrap().delay_ns, 20_000_000);
    // Each side is its own rule set with its own trace: both compile, and
    // flipping swaps them.
    let link = p.link();
    let (u, w) = (
        compile_all(&link.uplink).unwrap(),
        compile_all(&link.downlink).unwrap(),
    );
    assert_eq!(u.rate_trace.as_deref(), Some(&**up));
    assert_eq!(w.rate_trace.as_deref(), Some(&**down));
    let f = link.flipped();
    assert_eq!(f.uplink[0].rate_trace.as_deref(), Some(&**down));
    assert_eq!(f.downlink[0].rate_trace.as_deref(), Some(&**up));

    // The same with `direction` keys; `both` shares one file between sides.
    let keys = d.file(
        "keys.toml",
        "[[rule]]\ndirection = \"uplink\"\nrate-trace = \"up.trace\"\ndelay = \"20ms\"\n\
         [[rule]]\ndirection = \"downlink\"\nrate-trace = \"traces/down.trace\"\n\
         queue = \"50ms\"\nrate = \"100mbit\"\n",
    );
    assert_eq!(load_path(&keys).unwrap().link(), link);
    let both = d.file(
        "both.toml",
        "[[rule]]\ndirection = \"both\"\nloss-trace = \"l.csv\"\n",
    );
    d.file("l.csv", "0,1%\n100,2%\n");
    let b = load_path(&both).unwrap();
    assert_eq!(b.rules[0].loss_series, b.downlink[0].loss_series);
    assert!(b.rules[0].loss_series.is_some());
}

#[test]
fn series_and_matrices_are_read_as_the_flags_read_them() {
    let d = Dir::new("series");
    d.file("rtt.csv", "time,value\n0,10ms\n1.5s,50ms\n");
    d.file("loss.csv", "0,0%\n2000,100%\n");
    d.file(
        "m/regions.csv",
        "prefix,delay,jitter,loss,rate\n198.18.10.0/24,38ms,1ms,,\n",
    );
    d.file(
        "m/regions.toml",
        "[[dest]]\nprefix = \"198.18.20.0/24\"\nloss = \"1%\"\n",
    );
    let p = d.file(
        "p.toml",
        "[[rule]]\ndst = \"198.18.10.0/24\"\nmatrix = \"m/regions.csv\"\n\
         [[rule]]\ndst = \"198.18.20.0/24\"\nmatrix = \"m/regions.toml\"\n\
         [[rule]]\ndelay-trace = \"rtt.csv\"\nloss-trace = \"loss.csv\"\n\
         trace-mode = \"linear\"\ntrace-end = \"hold\"\n",
    );
    let p = load_path(&p).unwrap();
    assert!(!p.two_way);
    let m = p.rules[0].matrix.as_ref().unwrap();
    assert_eq!(m.dests.len(), 1);
    assert_eq!(m.dests[0].delay_ns, Some(38_000_000));
    let m = p.rules[1].matrix.as_ref().unwrap();
    assert_eq!(m.dests[0].loss, Some(0.01));
    let delay = p.rules[2].delay_series.as_ref().unwrap();
    let loss = p.rules[2].loss_series.as_ref().unwrap();
    assert_eq!(delay.points, [(0, 10e6), (1_500_000_000, 50e6)]);
    assert_eq!(loss.points, [(0, 0.0), (2_000_000_000, 1.0)]);
    // trace-mode and trace-end apply to both series of the rule.
    for s in [delay, loss] {
        assert_eq!((s.mode, s.end), (TraceMode::Linear, TraceEnd::Hold));
    }
    // The defaults are the flags': step, loop.
    let q = d.file("q.toml", "[[rule]]\nloss-trace = \"loss.csv\"\n");
    let s = load_path(&q).unwrap().rules[0].loss_series.clone().unwrap();
    assert_eq!((s.mode, s.end), (TraceMode::Step, TraceEnd::Loop));
    // The whole set compiles with its series.
    let set = compile_all(&load_path(&d.path("p.toml")).unwrap().rules).unwrap();
    assert!(set.delay_series.is_some() && set.loss_series.is_some());
}

#[test]
fn relative_paths_start_at_the_profiles_directory_and_absolute_ones_are_kept() {
    let d = Dir::new("rel");
    let up = d.file("up.trace", UP);
    d.file("sub/down.trace", DOWN);
    let profile = d.file(
        "sub/deeper/p.toml",
        &format!(
            "[[uplink.rule]]\nrate-trace = \"../../up.trace\"\n\
             [[downlink.rule]]\nrate-trace = \"{}\"\n",
            d.path("sub/down.trace").display()
        ),
    );
    let p = load_path(&profile).unwrap();
    let t = p.rules[0].rate_trace.as_ref().unwrap();
    assert_eq!(
        Path::new(&t.source),
        d.path("sub/deeper").join("../../up.trace")
    );
    assert_eq!(
        std::fs::canonicalize(&t.source).unwrap(),
        std::fs::canonicalize(&up).unwrap()
    );
    let t = p.downlink[0].rate_trace.as_ref().unwrap();
    assert_eq!(Path::new(&t.source), d.path("sub/down.trace"));
    assert_eq!(t.times_ms, [2, 4]);

    // Not the working directory's: a name resolved there would not exist
    // (the unit tests run in the crate's directory).
    let e =
        load_path(&d.file("sub/rel.toml", "[[rule]]\nrate-trace = \"up.trace\"\n")).unwrap_err();
    assert!(
        e.contains(&d.path("sub/up.trace").display().to_string()),
        "{e}"
    );

    // `./` adds nothing to the path a message names.
    let e = load_path(&d.file(
        "sub/dot.toml",
        "[[rule]]\nrate-trace = \"./none/x.trace\"\n",
    ))
    .unwrap_err();
    assert!(
        e.contains(&format!(
            "rate-trace: {}:",
            d.path("sub/none/x.trace").display()
        )),
        "{e}"
    );

    // parse() with a base is what load() does.
    let p = parse(
        "t",
        "t.toml",
        "[[rule]]\nrate-trace = \"up.trace\"\n",
        Origin::Builtin,
        Some(&d.0),
    )
    .unwrap();
    assert_eq!(
        p.rules[0].rate_trace.as_ref().unwrap().times_ms,
        [1, 1, 2, 2]
    );

    // A scenario's inline step reads from the scenario's directory.
    d.file("loss.csv", "0,5%\n");
    let sc = d.file(
        "sub/s.toml",
        "[[step]]\nduration = \"1s\"\n[[step.uplink.rule]]\nloss-trace = \"../loss.csv\"\n\
         [[step.downlink.rule]]\nrate-trace = \"down.trace\"\n",
    );
    let s = crate::profile::scenario::load(sc.to_str().unwrap()).unwrap();
    assert_eq!(
        s.steps[0].rules[0].loss_series.as_ref().unwrap().points,
        [(0, 0.05)]
    );
    assert_eq!(
        s.steps[0].downlink[0].rate_trace.as_ref().unwrap().times_ms,
        [2, 4]
    );
}

#[test]
fn a_profile_that_is_no_file_names_no_files() {
    // A built-in (no directory) naming a file is refused: the test that
    // every built-in parses (mod.rs) would fail on it.
    for key in ["matrix", "delay-trace", "loss-trace", "rate-trace"] {
        let text = format!("summary = \"x\"\n[[rule]]\n{key} = \"a.csv\"\n");
        let e = parse("x", "builtin:x", &text, Origin::Builtin, None)
            .unwrap_err()
            .0;
        assert!(
            e.starts_with(&format!("builtin:x:3: {key}: 'a.csv' is a file"))
                && e.contains("profile file"),
            "{e}"
        );
        let steps = format!("[[step]]\nduration = \"1s\"\n[[step.rule]]\n{key} = \"/a.csv\"\n");
        let e = crate::profile::scenario::parse("scenario", &steps, None)
            .unwrap_err()
            .0;
        assert!(e.starts_with(&format!("scenario:4: {key}: ")), "{e}");
    }
    for (name, text) in BUILTIN {
        for key in ["matrix", "delay-trace", "loss-trace", "rate-trace"] {
            assert!(
                !text.lines().any(|l| l.trim_start().starts_with(key)),
                "built-in {name} names a file with {key}"
            );
        }
    }
}

#[test]
fn file_errors_name_the_profile_line_key_path_and_reason() {
    let d = Dir::new("errs");
    d.file("bad.trace", "1\n2\nsoon\n");
    d.file("bad.csv", "0,10%\n5,lots\n");
    d.file(
        "bad-matrix.csv",
        "prefix,delay,jitter,loss,rate\n198.18.0.0/33,1ms,,,\n",
    );
    d.file("up.trace", UP);
    d.file("down.trace", DOWN);
    d.file("l.csv", "0,1%\n");
    std::fs::create_dir_all(d.path("a-dir")).unwrap();
    let label = |name: &str| d.path(name).display().to_string();
    let err = |name: &str, text: &str| load_path(&d.file(name, text)).unwrap_err();

    // Missing: the profile's file and line, the key, the resolved path, why.
    let e = err(
        "p1.toml",
        "summary = \"x\"\n[[rule]]\nrate-trace = \"gone.trace\"\n",
    );
    assert!(
        e.starts_with(&format!(
            "{}:3: rate-trace: {}: cannot read the trace: ",
            label("p1.toml"),
            label("gone.trace")
        )) && e.contains("No such file"),
        "{e}"
    );
    // Unreadable (a directory).
    let e = err("p2.toml", "[[downlink.rule]]\nloss-trace = \"a-dir\"\n");
    assert!(
        e.starts_with(&format!(
            "{}:2: loss-trace: {}: cannot read the series: ",
            label("p2.toml"),
            label("a-dir")
        )),
        "{e}"
    );
    let e = err(
        "p3.toml",
        "[[rule]]\nloss = \"1%\"\n\nmatrix = \"nope.csv\"\n",
    );
    assert!(
        e.starts_with(&format!(
            "{}:4: matrix: {}: cannot read the matrix: ",
            label("p3.toml"),
            label("nope.csv")
        )),
        "{e}"
    );
    // Invalid: the file's own line inside the profile's.
    let e = err("p4.toml", "[[uplink.rule]]\nrate-trace = \"bad.trace\"\n");
    assert!(
        e.starts_with(&format!(
            "{}:2: rate-trace: {}:3: expected a time in whole milliseconds, got 'soon'",
            label("p4.toml"),
            label("bad.trace")
        )),
        "{e}"
    );
    let e = err("p5.toml", "[[rule]]\ndelay-trace = \"bad.csv\"\n");
    assert!(
        e.starts_with(&format!(
            "{}:2: delay-trace: {}:1: ",
            label("p5.toml"),
            label("bad.csv")
        )) && e.contains("10%"),
        "a loss is no delay: {e}"
    );
    let e = err("p6.toml", "[[rule]]\nloss-trace = \"bad.csv\"\n");
    assert!(
        e.starts_with(&format!(
            "{}:2: loss-trace: {}:2: ",
            label("p6.toml"),
            label("bad.csv")
        )) && e.contains("lots"),
        "{e}"
    );
    let e = err("p7.toml", "[[rule]]\nmatrix = \"bad-matrix.csv\"\n");
    assert!(
        e.starts_with(&format!(
            "{}:2: matrix: {}:2: column 1 (prefix): ",
            label("p7.toml"),
            label("bad-matrix.csv")
        )),
        "{e}"
    );
    // An empty path; a number for a path; modes without a series; bad modes.
    let e = err("p8.toml", "[[rule]]\nrate-trace = \"\"\n");
    assert!(e.contains(":2: rate-trace: an empty path"), "{e}");
    let e = err("p9.toml", "[[rule]]\nrate-trace = 5\n");
    assert!(
        e.contains(":2: rate-trace: ") && e.contains("rate-trace = \"uplink.trace\""),
        "{e}"
    );
    let e = err(
        "p10.toml",
        "[[rule]]\nloss = \"1%\"\ntrace-end = \"hold\"\n",
    );
    assert!(
        e.contains(":3: trace-end: needs a delay-trace or loss-trace"),
        "{e}"
    );
    let e = err(
        "p11.toml",
        "[[rule]]\nloss-trace = \"l.csv\"\ntrace-mode = \"smooth\"\n",
    );
    assert!(
        e.contains(":3: trace-mode: invalid trace mode 'smooth': expected step or linear"),
        "{e}"
    );
    let e = err(
        "p12.toml",
        "[[rule]]\nloss-trace = \"l.csv\"\ntrace-end = \"stop\"\n",
    );
    assert!(e.contains(":3: trace-end: invalid trace end 'stop'"), "{e}");
    // One rate trace per rule set: per side, so two sides may differ but
    // two rules of one side may not.
    let e = err(
        "p13.toml",
        "[[uplink.rule]]\nproto = \"udp\"\nrate-trace = \"up.trace\"\n\
         [[uplink.rule]]\nrate-trace = \"down.trace\"\n[[downlink.rule]]\nloss = \"1%\"\n",
    );
    assert!(
        e.starts_with(&format!("{}: uplink: ", label("p13.toml")))
            && e.contains("one rate trace per rule set"),
        "{e}"
    );
    // Every refusal is one line.
    for n in 1..=13 {
        let e = load_path(&d.path(&format!("p{n}.toml"))).unwrap_err();
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}
