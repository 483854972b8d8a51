//! How far an import has got, on standard error: a bar on a terminal, a plain line every few
//! thousand users otherwise (a pod's log, a CI job), so the summary on standard output stays clean.

use std::io::IsTerminal as _;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Users between two plain progress lines.
const LINE_EVERY: u64 = 5_000;

#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    verb: &'static str,
}

impl Progress {
    /// Progress over `total` users; `verb` says what happens to them ("imported", "checked").
    pub fn new(total: u64, verb: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} users {msg} ({per_sec}, {eta} left)")
            {
                bar.set_style(style);
            }
            bar.set_message(verb);
            bar
        });
        Progress { bar, total, done: 0, started: Instant::now(), verb }
    }

    pub fn advance(&mut self, users: u64) {
        let before = self.done;
        self.done += users;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if before / LINE_EVERY != self.done / LINE_EVERY => eprintln!("{}", self.line()),
            None => {}
        }
    }

    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if !self.done.is_multiple_of(LINE_EVERY) || self.done == 0 => eprintln!("{}", self.line()),
            None => {}
        }
    }

    fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "import keycloak: {} of {} users {} ({:.0} users/s)",
            self.done,
            self.total,
            self.verb,
            self.done as f64 / seconds
        )
    }
}
