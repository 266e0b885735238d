//! Progress of a long import on standard error: a bar redrawn in place on
//! a terminal, otherwise a line every few seconds (logs stay readable).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a line is written when standard error is not a terminal.
const EVERY: Duration = Duration::from_secs(5);

/// The progress of the current step.
#[derive(Debug)]
pub struct Progress {
    terminal: bool,
    step: String,
    total: u64,
    done: u64,
    shown: Instant,
    started: Instant,
}

impl Progress {
    /// A bar on a terminal, lines otherwise.
    pub fn stderr() -> Self {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            step: String::new(),
            total: 0,
            done: 0,
            shown: Instant::now(),
            started: Instant::now(),
        }
    }

    /// Starts `step`, which has `total` records to read.
    pub fn start(&mut self, step: &str, total: u64) {
        step.clone_into(&mut self.step);
        self.total = total;
        self.done = 0;
        self.shown = Instant::now();
        self.started = Instant::now();
        self.show(true);
    }

    /// `n` more records read.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        self.show(false);
    }

    /// The step is done.
    pub fn finish(&mut self) {
        self.done = self.done.max(self.total);
        self.show(true);
        let seconds = self.started.elapsed().as_secs_f64();
        let lead = if self.terminal { " " } else { "" };
        eprintln!("{lead}{}: done in {seconds:.1} s", self.step);
    }

    fn show(&mut self, now: bool) {
        if !now && !self.terminal && self.shown.elapsed() < EVERY {
            return;
        }
        self.shown = Instant::now();
        let total = self.total.max(self.done);
        if self.terminal {
            let filled = (self.done * 30).checked_div(total).unwrap_or(30) as usize;
            let bar = format!("{}{}", "#".repeat(filled), " ".repeat(30 - filled));
            eprint!("\r{:<12} [{bar}] {}/{}", self.step, self.done, total);
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{}: {} of {} read", self.step, self.done, total);
        }
    }
}
