//! The contract between `cargo xtask vm` on the host and `vm-init`, the
//! guest's PID 1: the plan the host writes into the initramfs, and the marker
//! lines the guest prints on the console, which the host turns into the
//! PASS/FAIL summary (docs/vm.md).
use serde::{Deserialize, Serialize};

/// Where the plan is in the initramfs.
pub const PLAN_PATH: &str = "/etc/impair-vm/plan.json";

/// What the guest does after booting, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The kernel release the initramfs was built for (`uname -r`); the
    /// modules only load into that kernel.
    pub kernel: String,
    /// Kernel modules to load, dependencies first: paths in the guest of
    /// uncompressed `.ko` files.
    pub modules: Vec<String>,
    /// The test binaries, run one after another.
    pub runs: Vec<Run>,
}

/// One program the guest runs, with the name its markers carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The name in the summary and in the markers ("bpf", "netns", ...): one
    /// token, unique within the plan.
    pub name: String,
    /// The executable's path in the guest.
    pub program: String,
    pub args: Vec<String>,
}

/// A console line that only `vm-init` prints: the marker, then fields
/// separated by spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `<release> <n> cpus, uptime <s> s`: the guest reached its init.
    Booted,
    /// `<module path> <error>`: a module did not load.
    ModuleFailed,
    /// `<run name> uptime <s>`: the run starts.
    Start,
    /// `<run name> <exit code> uptime <s>` (a signal is 128 + its number, as
    /// in a shell).
    Result,
    /// `<error>`: init could not do its job (no plan, ...); it powers off.
    InitFailed,
    /// Every run has finished; the guest powers off.
    Done,
}

impl Marker {
    pub const fn text(self) -> &'static str {
        match self {
            Marker::Booted => "IMPAIR-VM-BOOTED",
            Marker::ModuleFailed => "IMPAIR-VM-MODULE-FAILED",
            Marker::Start => "IMPAIR-VM-START",
            Marker::Result => "IMPAIR-VM-RESULT",
            Marker::InitFailed => "IMPAIR-VM-INIT-FAILED",
            Marker::Done => "IMPAIR-VM-DONE",
        }
    }

    /// The line the guest prints.
    pub fn line(self, fields: &[&str]) -> String {
        let mut line = self.text().to_string();
        for f in fields {
            line.push(' ');
            line.push_str(f);
        }
        line
    }

    /// The fields after this marker on a console line (which may carry a
    /// prefix such as a kernel timestamp), if the line has it.
    pub fn fields(self, line: &str) -> Option<Vec<&str>> {
        let text = self.text();
        // "IMPAIR-VM-RESULT" must not match inside a longer marker name.
        let at = line.match_indices(text).find_map(|(at, _)| {
            let rest = &line[at + text.len()..];
            (rest.is_empty() || rest.starts_with(' ')).then_some(at)
        })?;
        Some(line[at + text.len()..].split_whitespace().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let line = Marker::Result.line(&["bpf", "101", "uptime", "40.2"]);
        assert_eq!(line, "IMPAIR-VM-RESULT bpf 101 uptime 40.2");
        let console = format!("[  12.3] {line}");
        assert_eq!(
            Marker::Result.fields(&console).unwrap(),
            ["bpf", "101", "uptime", "40.2"]
        );
        assert!(Marker::Start.fields(&console).is_none());
        assert_eq!(
            Marker::Done.fields("IMPAIR-VM-DONE").unwrap(),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn plan_round_trips_through_json() {
        let plan = Plan {
            kernel: "6.1.0-57-cloud-amd64".into(),
            modules: vec!["/lib/modules/x/veth.ko".into()],
            runs: vec![Run {
                name: "bpf".into(),
                program: "/t/deps/bpf".into(),
                args: vec!["--test-threads=1".into(), "verifier::".into()],
            }],
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
    }
}
