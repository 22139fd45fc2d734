//! The live display on a terminal: a line per job with a spinner, its
//! latest status and the time it has taken, ending with its outcome.
//!
//! With many jobs a line each would scroll off the screen, so past
//! [`MAX_LINES`] jobs the display is one progress line, and each job's
//! outcome is printed above it as it ends.

use std::time::Duration;

use goenhance_jobs::JobStatus;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{text_line, Outcome};

/// The most jobs shown with a line each.
pub(crate) const MAX_LINES: usize = 16;
/// Ids longer than this are not padded to line up.
const MAX_ID_WIDTH: usize = 40;

pub(crate) struct Live {
    mp: MultiProgress,
    mode: Mode,
    width: usize,
}

enum Mode {
    PerJob(Vec<Line>),
    Summary {
        bar: ProgressBar,
        failed: u64,
        errors: u64,
    },
}

struct Line {
    id: String,
    bar: ProgressBar,
    done: bool,
}

impl Live {
    /// A display for these jobs (in the order given), drawn on stdout.
    pub(crate) fn new(ids: &[&str]) -> Live {
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let width = ids
            .iter()
            .map(|id| id.len())
            .max()
            .unwrap_or(0)
            .min(MAX_ID_WIDTH);
        let mode = if ids.len() <= MAX_LINES {
            let style = ProgressStyle::with_template(&format!(
                "{{spinner:.cyan}} {{prefix:{width}}} {{msg:11}} {{elapsed:>4}}"
            ))
            .expect("the running template is valid");
            Mode::PerJob(
                ids.iter()
                    .map(|id| {
                        let bar = mp.add(ProgressBar::new_spinner());
                        bar.set_style(style.clone());
                        bar.set_prefix(id.to_string());
                        bar.set_message("starting");
                        Line {
                            id: id.to_string(),
                            bar,
                            done: false,
                        }
                    })
                    .collect(),
            )
        } else {
            let style = ProgressStyle::with_template(
                "{spinner:.cyan} {pos}/{len} finished {msg} {elapsed:>4}",
            )
            .expect("the summary template is valid");
            let bar = mp.add(ProgressBar::new(ids.len() as u64));
            bar.set_style(style);
            Mode::Summary {
                bar,
                failed: 0,
                errors: 0,
            }
        };
        Live { mp, mode, width }
    }

    /// The display's bars, to add more (download progress).
    pub(crate) fn multi(&self) -> MultiProgress {
        self.mp.clone()
    }

    /// Shows a job's new status.
    pub(crate) fn update(&self, id: &str, status: &str) {
        if let Mode::PerJob(lines) = &self.mode {
            for line in lines.iter().filter(|l| !l.done && l.id == id) {
                line.bar
                    .set_message(crate::out::printable(status).into_owned());
            }
        }
    }

    /// Moves the spinners on.
    pub(crate) fn refresh(&self) {
        match &self.mode {
            Mode::PerJob(lines) => {
                for line in lines.iter().filter(|l| !l.done) {
                    line.bar.tick();
                }
            }
            Mode::Summary { bar, .. } => bar.tick(),
        }
    }

    /// Ends the first unfinished line of `id` with its outcome.
    pub(crate) fn finish(&mut self, id: &str, outcome: &Outcome) {
        let width = self.width;
        match &mut self.mode {
            Mode::PerJob(lines) => {
                let Some(line) = lines.iter_mut().find(|l| !l.done && l.id == id) else {
                    return;
                };
                line.done = true;
                let elapsed = short_duration(line.bar.elapsed());
                line.bar.set_style(
                    ProgressStyle::with_template("{msg}").expect("the plain template is valid"),
                );
                line.bar.finish_with_message(format!(
                    "{} {id:width$} {}",
                    symbol(outcome),
                    crate::out::printable(&outcome_text(outcome, &elapsed))
                ));
            }
            Mode::Summary {
                bar,
                failed,
                errors,
            } => {
                match outcome {
                    Ok(d) if *d.status() == JobStatus::Failed => *failed += 1,
                    Ok(_) => {}
                    Err(_) => *errors += 1,
                }
                let _ = self
                    .mp
                    .println(format!("{} {}", symbol(outcome), text_line(id, outcome)));
                bar.set_message(format!("({failed} failed, {errors} errors)"));
                bar.inc(1);
            }
        }
    }

    /// Stops the display, leaving the lines of finished jobs in place.
    pub(crate) fn close(&self, interrupted: bool) {
        match &self.mode {
            Mode::PerJob(lines) => {
                for line in lines.iter().filter(|l| !l.done) {
                    if interrupted {
                        line.bar.abandon_with_message("interrupted");
                    } else {
                        line.bar.finish();
                    }
                }
            }
            Mode::Summary { bar, .. } => bar.abandon(),
        }
    }
}

fn symbol(outcome: &Outcome) -> &'static str {
    match outcome {
        Ok(d) if *d.status() == JobStatus::Succeeded => "✔",
        Ok(_) => "✘",
        Err(_) => "!",
    }
}

/// `succeeded  4s  <url> <url>`, `failed  3s`, or `error: <message>`.
fn outcome_text(outcome: &Outcome, elapsed: &str) -> String {
    match outcome {
        Ok(d) => {
            let mut text = format!("{:11} {elapsed:>4}", d.status().as_str());
            for out in d.outputs() {
                text.push_str("  ");
                text.push_str(out.url());
            }
            text
        }
        Err(e) => format!("error: {}", crate::report::chain(e)),
    }
}

/// `850ms`, `4s`, `2m05s`.
fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{}ms", d.subsec_millis())
    } else if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(short_duration(Duration::from_millis(4_300)), "4s");
        assert_eq!(short_duration(Duration::from_secs(125)), "2m05s");
    }
}
