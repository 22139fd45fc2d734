//! A child process whose stdout is read line by line, for tests that start
//! this test binary again as a service or a worker and wait on what it says.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running child and every line it has said so far.
pub struct ChildLines {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Lines read so far, in order.
    pub seen: Vec<String>,
}

impl ChildLines {
    /// Starts `command` with its stdout piped; `what` names it in failures.
    pub fn spawn(command: &mut Command, what: &str) -> ChildLines {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildLines {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line that `want` accepts, said already or from now on
    /// (failing after a minute of silence, or when the child has ended,
    /// with how it ended and all it said).
    pub fn wait_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| want(l)) {
            return line.clone();
        }
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| {
                    let exit = self.child.try_wait();
                    panic!(
                        "the child went silent ({e}; exit: {exit:?}); it said {:#?}",
                        self.seen
                    )
                });
            self.seen.push(line.clone());
            if want(&line) {
                return line;
            }
        }
    }

    /// Waits for the child to end by itself; its exit status. What it
    /// said until then is in `seen` afterwards.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        status
    }

    /// SIGTERM; the exit status and how long after the signal it came.
    /// What the child said until it ended is in `seen` afterwards.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = self.child.wait().unwrap();
        let took = sent.elapsed();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        (status, took)
    }
}

impl Drop for ChildLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line in a worker's handler log `log` (written and synced first, so
/// that a kill right after cannot lose it) and on stdout.
pub fn say(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    writeln!(f, "{line}").unwrap();
    f.sync_all().unwrap();
    println!("{line}");
}

/// The lines of `handler.log` in `dir` (none before it exists).
pub fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("handler.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
