//! Booting one kernel with its initramfs in qemu (TCG: no KVM on these
//! machines), streaming the console to stdout and the log as it comes, and
//! killing qemu when the boot's budget runs out.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use xtask::guest::Marker;

use crate::{
    kernels::Kernel,
    util::{describe, host_tool},
};

/// A console line and when (seconds since qemu started) it arrived.
pub type Lines = Vec<(f64, String)>;

/// What a boot left behind.
#[derive(Debug)]
pub struct Boot {
    pub lines: Lines,
    /// Killed at the budget; the name of the run that was going then, if any.
    pub timed_out: Option<Option<String>>,
    /// qemu's exit status (None if it could not be collected).
    pub status: Option<ExitStatus>,
    pub secs: f64,
}

/// Shared between the console reader and the loop that watches qemu.
#[derive(Default)]
struct Progress {
    /// The init printed [`Marker::Done`].
    done: AtomicBool,
    /// The run between its start and result markers.
    running: Mutex<Option<String>>,
}

pub fn boot(k: &Kernel, initrd: &Path, log_path: &Path, budget: Duration) -> Result<Boot> {
    let qemu = host_tool("qemu-system-x86_64", "qemu-system-x86")?;
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&k.manifest.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        // panic=-1: reboot at once on a panic, which -no-reboot turns into exit.
        .arg("console=ttyS0 quiet panic=-1 rdinit=/init random.trust_cpu=on")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("+ {} (budget {} s)", describe(&cmd), budget.as_secs());
    let log = Arc::new(Mutex::new(
        fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?,
    ));
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let progress = Arc::new(Progress::default());
    let prefix = format!("[{}]", k.series);
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let reader = {
        let (log, progress, prefix) = (log.clone(), progress.clone(), prefix.clone());
        thread::spawn(move || stream(stdout, &prefix, &log, Some(&progress), started))
    };
    let err_reader = {
        let (log, prefix) = (log.clone(), format!("{prefix} qemu:"));
        thread::spawn(move || stream(stderr, &prefix, &log, None, started))
    };

    let mut timed_out = None;
    let mut done_at: Option<Instant> = None;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if progress.done.load(Ordering::Relaxed) {
            // The init finished and powers off; give it a moment, then stop waiting.
            let at = *done_at.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_secs(30) {
                eprintln!(
                    "qemu did not power off 30 s after {}: killing it",
                    Marker::Done.text()
                );
                let _ = child.kill();
                break child.wait().ok();
            }
        }
        if started.elapsed() > budget {
            let running = progress.running.lock().ok().and_then(|r| r.clone());
            eprintln!(
                "\n{prefix} TIMEOUT: the boot's budget of {} s ran out {}: killing qemu \
                 (--timeout-secs sets another budget)",
                budget.as_secs(),
                match &running {
                    Some(name) => format!("while `{name}` was running"),
                    None => "outside any test binary (booting, loading modules or after)".into(),
                }
            );
            timed_out = Some(running);
            let _ = child.kill();
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(100));
    };
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("console reader panicked"))?;
    let _ = err_reader.join();
    Ok(Boot {
        lines,
        timed_out,
        status,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Copies a stream to the log and to stdout (prefixed) line by line, notes
/// the init's progress from its markers, and returns the lines with their
/// arrival times.
fn stream(
    from: impl Read,
    prefix: &str,
    log: &Mutex<fs::File>,
    progress: Option<&Progress>,
    started: Instant,
) -> Lines {
    let mut lines = Vec::new();
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        // The serial console ends lines with \r\n and may carry terminal escapes.
        let line = strip_escapes(line.trim_end_matches(['\r', '\n']));
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{line}");
        }
        println!("{prefix} {line}");
        if let Some(p) = progress {
            note_progress(p, &line);
        }
        lines.push((started.elapsed().as_secs_f64(), line));
    }
    lines
}

fn note_progress(p: &Progress, line: &str) {
    if Marker::Done.fields(line).is_some() {
        p.done.store(true, Ordering::Relaxed);
    }
    let Ok(mut running) = p.running.lock() else {
        return;
    };
    if let Some(name) = Marker::Start.fields(line).and_then(|f| f.first().copied()) {
        *running = Some(name.to_string());
    } else if Marker::Result.fields(line).is_some() {
        *running = None;
    }
}

/// Drops terminal control sequences (SeaBIOS clears the screen) and stray
/// carriage returns, so logs and markers are plain text.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r"),
            "SeaBIOS"
        );
        assert_eq!(strip_escapes("plain"), "plain");
    }

    #[test]
    fn progress_follows_the_markers() {
        let p = Progress::default();
        note_progress(&p, "IMPAIR-VM-START netns uptime 3.1");
        assert_eq!(p.running.lock().unwrap().as_deref(), Some("netns"));
        note_progress(&p, "IMPAIR-VM-RESULT netns 0 uptime 90.0");
        assert_eq!(*p.running.lock().unwrap(), None);
        assert!(!p.done.load(Ordering::Relaxed));
        note_progress(&p, "IMPAIR-VM-DONE");
        assert!(p.done.load(Ordering::Relaxed));
    }
}
