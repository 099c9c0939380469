//! The CLI's messages, at hakoniwa's verbosity levels: `-v` shows the setup log (debug),
//! `-vv` the rules too (trace), each line prefixed as env_logger does in hakoniwa
//! (`[2025-07-14T18:40:05Z DEBUG] Mount: bind_ro: /usr -> /usr`); without `-v`, errors and notes
//! are bare lines (`hatchery: ...`); `-q` silences everything but the command's own output.

use std::time::{SystemTime, UNIX_EPOCH};

/// How much the CLI says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing (`-q`).
    Quiet,
    /// Errors and notes (the default).
    Info,
    /// The setup log (`-v`).
    Debug,
    /// The rules too (`-vv`).
    Trace,
}

impl Level {
    /// The level of `-v` given `verbose` times and `-q` given `quiet` times.
    pub fn from_flags(verbose: u8, quiet: u8) -> Level {
        match (quiet, verbose) {
            (q, _) if q > 0 => Level::Quiet,
            (_, 0) => Level::Info,
            (_, 1) => Level::Debug,
            _ => Level::Trace,
        }
    }
}

/// Writes the CLI's messages to stderr at a [`Level`].
#[derive(Debug, Clone, Copy)]
pub struct Log {
    /// The level.
    pub level: Level,
}

/// `2025-07-14T18:40:05Z` for `secs` since the epoch (UTC, proleptic Gregorian).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Log {
    fn line(&self, tag: &str, msg: &str) {
        if self.level >= Level::Debug {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            eprintln!("[{} {tag}] {msg}", rfc3339(now));
        } else {
            eprintln!("{msg}");
        }
    }

    /// An error: shown unless quiet.
    pub fn error(&self, msg: impl std::fmt::Display) {
        if self.level > Level::Quiet {
            self.line("ERROR", &format!("hatchery: {msg}"));
        }
    }

    /// A note (a hint, a warning): shown unless quiet.
    pub fn note(&self, msg: impl std::fmt::Display) {
        if self.level > Level::Quiet {
            self.line("WARN ", &format!("hatchery: {msg}"));
        }
    }

    /// A setup log line: shown with `-v`.
    pub fn debug(&self, msg: impl std::fmt::Display) {
        if self.level >= Level::Debug {
            self.line("DEBUG", &msg.to_string());
        }
    }

    /// Whether `-vv` was given.
    pub fn tracing(&self) -> bool {
        self.level >= Level::Trace
    }

    /// Whether `-v` was given.
    pub fn debugging(&self) -> bool {
        self.level >= Level::Debug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_752_518_405), "2025-07-14T18:40:05Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn levels_follow_the_flags() {
        assert_eq!(Level::from_flags(0, 0), Level::Info);
        assert_eq!(Level::from_flags(1, 0), Level::Debug);
        assert_eq!(Level::from_flags(2, 0), Level::Trace);
        assert_eq!(Level::from_flags(3, 0), Level::Trace);
        assert_eq!(Level::from_flags(2, 1), Level::Quiet);
    }
}
