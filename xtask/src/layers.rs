//! The layer rule, checked: in `impair-user` no module imports one of a
//! higher layer (model → engine → observation), and in every crate the
//! top-level modules import each other without a cycle. Crate-level arrows
//! (library → tools → command line) are Cargo's to enforce: a dependency
//! cycle between packages does not build. Run by `cargo test -p xtask`
//! (the unit tier).
#![cfg(test)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// `impair-user`'s top-level modules and their layer (higher may use lower).
const USER_LAYERS: &[(&str, u8)] = &[
    ("statistics", 0),
    ("sys", 0),
    ("netns", 0),
    ("input", 0),
    ("model", 1),
    ("profile", 1),
    ("ebpf", 2),
    ("maps", 2),
    ("discover", 2),
    ("engine", 2),
    ("container", 2),
    ("observe", 3),
];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src` belongs to (`engine/link/tcx.rs` →
/// `engine`); `None` for the crate roots.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_owned())
}

/// Top-level modules a file names through `crate::` (in `use` lists and
/// paths alike), comments left out.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.insert(name);
            }
        }
    }
    refs
}

/// The modules of multi-line `use crate::{ ... };` groups: the first name
/// of each line at the group's own brace depth.
fn group_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut depth = 0i32;
    for line in text.lines() {
        let t = line.trim();
        if depth == 0 {
            if t.starts_with("use crate::{") && !t.ends_with("};") {
                depth = 1;
            }
            continue;
        }
        if depth == 1 {
            let name: String = t
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.insert(name);
            }
        }
        depth += t.matches('{').count() as i32 - t.matches('}').count() as i32;
        depth = depth.max(0);
    }
    refs
}

/// Top-level module → the top-level modules it refers to, for `src`.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = top_module(src, &f) else {
            continue;
        };
        let text = fs::read_to_string(&f).unwrap_or_default();
        let mut refs = crate_refs(&text);
        refs.extend(group_refs(&text));
        refs.remove(&m);
        g.entry(m).or_default().extend(refs);
    }
    g
}

/// A cycle in `g`, if any, as the modules along it.
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if g.contains_key(m) {
                if let Some(c) = visit(m, g, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

#[test]
fn impair_user_modules_import_only_their_layer_and_below() {
    let src = root().join("impair-user/src");
    let layer = |m: &str| USER_LAYERS.iter().find(|(n, _)| *n == m).map(|(_, l)| *l);
    let g = graph(&src);
    assert!(!g.is_empty(), "no modules found under {}", src.display());
    for (m, refs) in &g {
        let Some(lm) = layer(m) else {
            panic!("impair-user module `{m}` has no layer: add it to USER_LAYERS");
        };
        for r in refs {
            if let Some(lr) = layer(r) {
                assert!(
                    lr <= lm,
                    "`{m}` (layer {lm}) imports `{r}` (layer {lr}): arrows point from higher to lower layers only"
                );
            }
        }
    }
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    for krate in [
        "impair-user",
        "impair-tools",
        "impair-cli",
        "impair-agent",
        "impair-bench",
        "impair-ebpf",
        "tests",
        "xtask",
    ] {
        let g = graph(&root().join(krate).join("src"));
        if let Some(c) = cycle(&g) {
            panic!("{krate}: import cycle {}", c.join(" → "));
        }
    }
}

/// The `[dependencies]` of a crate's manifest (package names).
fn dependencies(krate: &str) -> BTreeSet<String> {
    let text = fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap_or_default();
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = t.split_once('=') {
                out.insert(name.trim().to_owned());
            }
        }
    }
    out
}

/// The agent sits beside the command line: above the library and the
/// tools, below nothing. It builds the domain model itself and never uses
/// the command line's types; nothing below it uses it.
#[test]
fn the_agent_sits_beside_the_command_line() {
    let agent = dependencies("impair-agent");
    assert!(agent.contains("impair-user"), "impair-agent: {agent:?}");
    assert!(
        !agent.contains("impair-cli"),
        "impair-agent must not depend on the command line (its flags are not the API's types)"
    );
    for lower in ["impair-user", "impair-tools", "impair-common"] {
        assert!(
            !dependencies(lower).contains("impair-agent"),
            "{lower} (a lower layer) depends on impair-agent"
        );
    }
}

#[test]
fn the_checker_sees_cycles_and_groups() {
    let text = "use crate::{\n    a::{\n        x,\n        y,\n    },\n    b,\n};\nfn f() { crate::c::g(); } // crate::d\n";
    let refs = crate_refs(text);
    assert!(refs.contains("c") && !refs.contains("d"));
    let groups = group_refs(text);
    assert_eq!(groups, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    let mut g = BTreeMap::new();
    g.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    g.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle(&g).map(|c| c.len()), Some(3));
    g.insert("b".to_owned(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
}
