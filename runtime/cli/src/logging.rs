//! The runtime's own log on stderr: which lines (`RUST_LOG`, or its alias `SLUICE_LOG`), in
//! which form (text, or one JSON object per line for log shippers), and whether in colour (only
//! on a terminal, never with `NO_COLOR`). Owns the choice and the subscriber's set-up; what
//! is logged is each crate's business.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// The variable of the conventional filter of tracing-based programs (`info`,
/// `sluice_pipeline=debug,info`, ...).
pub const FILTER_VARIABLE: &str = "RUST_LOG";
/// Sluice's own name for the filter, kept from before `RUST_LOG` was read: when both are set,
/// it wins, since it names this program alone (a `RUST_LOG` exported for another program in
/// the same shell does not override it).
pub const FILTER_ALIAS: &str = "SLUICE_LOG";
/// The filter when neither variable is set.
pub const DEFAULT_FILTER: &str = "info";

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines: time, level, target, message and fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp` (RFC 3339, UTC), `level` (`INFO`, ...), `target`
    /// (the Rust module), `message`, each field of the event at the top level (`pipeline`,
    /// `partition`, `offset`, ...), and `span` with the fields of the span it happened in, if
    /// any.
    Json,
}

/// The filter directives: `SLUICE_LOG` if set, else `RUST_LOG` if set, else [`DEFAULT_FILTER`].
pub fn filter_directives(rust_log: Option<&str>, sluice_log: Option<&str>) -> String {
    let set = |value: Option<&str>| value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    set(sluice_log).or_else(|| set(rust_log)).unwrap_or_else(|| DEFAULT_FILTER.to_owned())
}

/// Whether lines carry ANSI colours: only on a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn use_colour(terminal: bool, no_color: Option<&str>) -> bool {
    terminal && no_color.is_none_or(str::is_empty)
}

/// Installs the subscriber writing the runtime's log to stderr in `format`, filtered and
/// coloured as the environment says.
pub fn init(format: LogFormat) {
    let var = |name: &str| std::env::var(name).ok();
    let directives = filter_directives(var(FILTER_VARIABLE).as_deref(), var(FILTER_ALIAS).as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|error| {
        eprintln!("sluice: ignoring the log filter {directives:?} ({error}); logging at {DEFAULT_FILTER}");
        EnvFilter::new(DEFAULT_FILTER)
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = use_colour(std::io::stderr().is_terminal(), var("NO_COLOR").as_deref());
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_is_read_and_sluice_log_wins_when_both_are_set() {
        assert_eq!(filter_directives(None, None), "info");
        assert_eq!(filter_directives(Some("debug"), None), "debug");
        assert_eq!(filter_directives(None, Some("warn")), "warn");
        assert_eq!(filter_directives(Some("debug"), Some("warn")), "warn");
        assert_eq!(filter_directives(Some("debug"), Some("")), "debug", "an empty alias is unset");
    }

    #[test]
    fn colours_only_on_a_terminal_and_never_with_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("")), "an empty NO_COLOR is unset");
        assert!(!use_colour(true, Some("1")));
        assert!(!use_colour(false, None));
    }
}
