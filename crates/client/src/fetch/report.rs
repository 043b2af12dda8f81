//! Progress reporting for the fetcher: bars on a terminal (indicatif), plain lines
//! otherwise, nothing with `--quiet`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Progress;

/// One bar per account, drawn on standard error.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Bars {
    /// Bars on standard error.
    pub fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, account: &str) -> Option<ProgressBar> {
        self.bars.lock().ok()?.get(account).cloned()
    }
}

impl Progress for Bars {
    fn start(&self, account: &str, messages: usize, bytes: u64) {
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {msg} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        // Styled before it is added, so no default bar is ever drawn.
        let bar = ProgressBar::new(bytes)
            .with_style(style)
            .with_prefix(account.to_owned())
            .with_message(format!("0/{messages} messages"));
        let bar = self.multi.add(bar);
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(account.to_owned(), bar);
        }
    }

    fn message(&self, account: &str, bytes: u64) {
        if let Some(bar) = self.bar(account) {
            bar.inc(bytes);
            let msg = bar.message();
            // "k/n messages" → "k+1/n messages"
            if let Some((done, rest)) = msg.split_once('/')
                && let Ok(k) = done.parse::<u64>()
            {
                bar.set_message(format!("{}/{rest}", k + 1));
            }
        }
    }

    fn note(&self, account: &str, text: &str) {
        let _ = self.multi.println(format!("{account}: {text}"));
    }

    fn done(&self, account: &str, line: &str) -> bool {
        let bar = self.bars.lock().ok().and_then(|mut b| b.remove(account));
        match bar {
            Some(bar) => {
                // The bar's line becomes the summary and stays where it is.
                if let Ok(style) = ProgressStyle::with_template("{msg}") {
                    bar.set_style(style);
                }
                bar.finish_with_message(line.to_owned());
            }
            None => {
                let _ = self.multi.println(line);
            }
        }
        true
    }
}

/// Plain lines on standard error (not a terminal, e.g. cron or a log file).
#[derive(Debug, Default)]
pub struct Lines {
    /// Start each line with the UTC time (`--every`).
    pub timestamps: bool,
}

impl Lines {
    fn line(&self, text: &str) {
        let _ = if self.timestamps {
            writeln!(
                std::io::stderr(),
                "{} {text}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            )
        } else {
            writeln!(std::io::stderr(), "{text}")
        };
    }
}

impl Progress for Lines {
    fn start(&self, account: &str, messages: usize, bytes: u64) {
        self.line(&format!(
            "{account}: {messages} new messages ({bytes} octets) to fetch"
        ));
    }
    fn message(&self, _account: &str, _bytes: u64) {}
    fn note(&self, account: &str, text: &str) {
        self.line(&format!("{account}: {text}"));
    }
}

impl Bars {
    /// Finishes every bar (leaves them on screen).
    pub fn finish(&self) {
        if let Ok(bars) = self.bars.lock() {
            for b in bars.values() {
                b.finish();
            }
        }
    }
}
