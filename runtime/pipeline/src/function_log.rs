//! A pipeline's function logs: what its function said (the `log` import, stdout and stderr)
//! and why its records failed (dead-lettered, skipped or blocking, with the trap or limit
//! behind it), kept in memory on this node for `GET /v1/pipelines/{name}/logs` and
//! `sluice logs`.
//!
//! A [`FunctionLog`] is a ring of the latest [`FUNCTION_LOG_CAPACITY`] entries: a new entry
//! past it drops the oldest, and the count of dropped entries is kept. Followers
//! ([`FunctionLog::follow`]) get new entries through a broadcast channel of
//! [`FOLLOW_BUFFER`] entries, so a writer (a partition worker) never waits for a reader; a
//! follower that falls further behind misses entries and is told how many.
//!
//! The ring belongs to a node: in a cluster each node keeps the entries of the partitions it
//! processes. This module must not know about HTTP or Kafka.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use sluice_engine::{GuestLogSink, GuestOutput};
use sluice_record::bindings::sluice::function::log::Level as GuestLevel;

/// How many entries a pipeline's function log keeps on one node; older ones are dropped.
pub const FUNCTION_LOG_CAPACITY: usize = 1_000;
/// How many new entries a follower may fall behind by before it misses some.
pub const FOLLOW_BUFFER: usize = 1_024;
/// The longest message an entry keeps, in bytes; the rest is cut. (Guest lines are cut
/// before, at the engine's `max_log_line_bytes`.)
pub const MAX_ENTRY_MESSAGE_BYTES: usize = 8 * 1024;

/// How severe an entry is, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail.
    Trace,
    /// Debugging.
    Debug,
    /// Normal operation; a guest's stdout.
    Info,
    /// Something to look at: a guest's stderr, a dead-lettered or skipped record.
    Warn,
    /// A record blocking its partition, a module that cannot be prepared.
    Error,
}

impl LogLevel {
    /// The name, as the API and `?level=` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            _ => Err(format!("{text:?} is not a log level (trace, debug, info, warn, error)")),
        }
    }
}

impl From<GuestLevel> for LogLevel {
    fn from(level: GuestLevel) -> Self {
        match level {
            GuestLevel::Trace => LogLevel::Trace,
            GuestLevel::Debug => LogLevel::Debug,
            GuestLevel::Info => LogLevel::Info,
            GuestLevel::Warn => LogLevel::Warn,
            GuestLevel::Error => LogLevel::Error,
        }
    }
}

/// Who wrote an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The function, through the `log` import.
    Log,
    /// The function, on stdout.
    Stdout,
    /// The function, on stderr (a Rust panic's message too).
    Stderr,
    /// The runtime, about a record that failed: why, and what became of it.
    Failure,
    /// The runtime, about the function (a module that cannot be prepared) or the log itself
    /// (entries a follower missed).
    Runtime,
}

impl LogSource {
    /// The name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Log => "log",
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
            LogSource::Failure => "failure",
            LogSource::Runtime => "runtime",
        }
    }
}

/// One entry of a function log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// The entry's number in its pipeline's log on this node, from 1; 0 for a notice made
    /// for one follower.
    pub seq: u64,
    /// When, in RFC 3339 (UTC, milliseconds).
    pub time: String,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// How severe.
    pub level: LogLevel,
    /// Who wrote it.
    pub source: LogSource,
    /// The input topic of the partition concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The partition concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// The offset of the record concerned (failures), when there is one. A guest line is
    /// written during a batch, not for one record, so it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// The revision of the pipeline's module that ran, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// What was said, at most [`MAX_ENTRY_MESSAGE_BYTES`].
    pub message: String,
}

/// Where an entry happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPlace {
    /// Input topic.
    pub topic: Option<String>,
    /// Partition.
    pub partition: Option<i32>,
    /// Offset of the record.
    pub offset: Option<i64>,
    /// Module revision.
    pub revision: Option<u64>,
}

/// Which entries a reader wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only entries at or after this time, in milliseconds since the Unix epoch.
    pub since_ms: Option<i64>,
    /// Only entries at this level or above.
    pub min_level: Option<LogLevel>,
    /// Only the latest this many of the entries kept (a follower then gets every new one).
    pub limit: Option<usize>,
}

impl LogQuery {
    fn matches(&self, entry: &LogEntry) -> bool {
        self.since_ms.is_none_or(|since| entry.time_ms >= since) && self.min_level.is_none_or(|min| entry.level >= min)
    }
}

/// What a read of the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// The entries that match, oldest first.
    pub entries: Vec<LogEntry>,
    /// Entries this log has dropped since it began, to stay within its capacity.
    pub dropped: u64,
    /// The most entries it keeps.
    pub capacity: usize,
}

/// A pipeline's function log on this node. See the module's documentation.
#[derive(Debug)]
pub struct FunctionLog {
    ring: Mutex<Ring>,
    followers: broadcast::Sender<Arc<LogEntry>>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Arc<LogEntry>>,
    last_seq: u64,
    dropped: u64,
}

impl Default for FunctionLog {
    fn default() -> Self {
        FunctionLog::new(FUNCTION_LOG_CAPACITY)
    }
}

impl FunctionLog {
    /// A log keeping the latest `capacity` entries (at least one).
    pub fn new(capacity: usize) -> FunctionLog {
        let capacity = capacity.max(1);
        FunctionLog { ring: Mutex::default(), followers: broadcast::Sender::new(FOLLOW_BUFFER), capacity }
    }

    /// Adds an entry now. Never waits for a reader.
    pub fn push(&self, level: LogLevel, source: LogSource, place: LogPlace, message: &str) {
        let time_ms = now_ms();
        let mut ring = self.lock();
        ring.last_seq += 1;
        let entry = Arc::new(LogEntry {
            seq: ring.last_seq,
            time: rfc3339(time_ms),
            time_ms,
            level,
            source,
            topic: place.topic,
            partition: place.partition,
            offset: place.offset,
            revision: place.revision,
            message: truncate(message, MAX_ENTRY_MESSAGE_BYTES).to_owned(),
        });
        if ring.entries.len() == self.capacity {
            ring.entries.pop_front();
            ring.dropped += 1;
        }
        ring.entries.push_back(entry.clone());
        // Sent under the ring's lock, so a follower that subscribed under it sees each
        // entry either in its backlog or on the channel, never both or neither. No receiver
        // is not an error.
        let _ = self.followers.send(entry);
    }

    /// The kept entries that match `query`.
    pub fn read(&self, query: &LogQuery) -> LogRead {
        let ring = self.lock();
        LogRead { entries: matching(&ring, query), dropped: ring.dropped, capacity: self.capacity }
    }

    /// The kept entries that match `query`, then every new entry at or above its level as
    /// it is added.
    pub fn follow(&self, query: &LogQuery) -> LogFollower {
        let ring = self.lock();
        let backlog = matching(&ring, query).into();
        LogFollower { backlog, receiver: self.followers.subscribe(), min_level: query.min_level }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn matching(ring: &Ring, query: &LogQuery) -> Vec<LogEntry> {
    let mut entries: Vec<LogEntry> =
        ring.entries.iter().filter(|e| query.matches(e)).map(|e| LogEntry::clone(e)).collect();
    if let Some(limit) = query.limit {
        entries.drain(..entries.len().saturating_sub(limit));
    }
    entries
}

/// A reader of a log's entries as they come ([`FunctionLog::follow`]).
#[derive(Debug)]
pub struct LogFollower {
    backlog: VecDeque<LogEntry>,
    receiver: broadcast::Receiver<Arc<LogEntry>>,
    min_level: Option<LogLevel>,
}

impl LogFollower {
    /// The next entry: the backlog's first, then new ones as they are added. An entry of
    /// source [`LogSource::Runtime`] and `seq` 0 says how many this follower missed by
    /// falling behind. `None` once the log is gone (its pipeline deleted).
    pub async fn next(&mut self) -> Option<LogEntry> {
        if let Some(entry) = self.backlog.pop_front() {
            return Some(entry);
        }
        loop {
            match self.receiver.recv().await {
                Ok(entry) if self.min_level.is_none_or(|min| entry.level >= min) => {
                    return Some(LogEntry::clone(&entry));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let time_ms = now_ms();
                    return Some(LogEntry {
                        seq: 0,
                        time: rfc3339(time_ms),
                        time_ms,
                        level: LogLevel::Warn,
                        source: LogSource::Runtime,
                        topic: None,
                        partition: None,
                        offset: None,
                        revision: None,
                        message: format!(
                            "this follower fell more than {FOLLOW_BUFFER} entries behind: {missed} entries were not sent to it"
                        ),
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The guest lines of one partition's function instance, into its pipeline's log.
#[derive(Debug)]
pub(crate) struct PartitionLogSink {
    pub(crate) log: Arc<FunctionLog>,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) revision: u64,
}

impl GuestLogSink for PartitionLogSink {
    fn line(&self, output: GuestOutput, level: GuestLevel, message: &str) {
        let source = match output {
            GuestOutput::Log => LogSource::Log,
            GuestOutput::Stdout => LogSource::Stdout,
            GuestOutput::Stderr => LogSource::Stderr,
        };
        let place = LogPlace {
            topic: Some(self.topic.clone()),
            partition: Some(self.partition),
            offset: None,
            revision: Some(self.revision),
        };
        self.log.push(level.into(), source, place, message);
    }
}

fn truncate(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds:
/// `2026-11-03T14:05:09.042Z`.
pub fn rfc3339(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (secs, millis) = (ms_of_day / 1000, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Reads a `since`: a duration back from `now_ms` (`30s`, `5m`, `2h`, `1d`) or an RFC 3339
/// time (`2026-11-03T14:05:09Z`, `2026-11-03T15:05:09.5+01:00`). Answers milliseconds since
/// the Unix epoch.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let bad =
        || format!("{text:?} is neither a duration (30s, 5m, 2h, 1d) nor an RFC 3339 time (2026-11-03T14:05:09Z)");
    if let Some(unit) = text.chars().last().filter(|c| c.is_ascii_alphabetic())
        && text.len() > 1
        && text[..text.len() - 1].bytes().all(|b| b.is_ascii_digit())
    {
        let count: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
        let unit_ms: i64 = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(bad()),
        };
        return count.checked_mul(unit_ms).map(|back| now_ms - back).ok_or_else(bad);
    }
    parse_rfc3339(text).ok_or_else(bad)
}

/// An RFC 3339 date-time as milliseconds since the Unix epoch.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let frac = &rest[1..1 + digits];
        millis = (0..3).fold(0, |n, i| n * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0')));
        rest = &rest[1 + digits..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let value = |d: &[u8]| i64::from(d[0] - b'0') * 10 + i64::from(d[1] - b'0');
            let minutes = value(&digits[..2]) * 60 + value(&digits[2..]);
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(partition: i32) -> LogPlace {
        LogPlace { topic: Some("in".into()), partition: Some(partition), offset: None, revision: Some(1) }
    }

    #[test]
    fn a_full_log_drops_its_oldest_entries_and_counts_them() {
        let log = FunctionLog::new(3);
        for n in 1..=5 {
            log.push(LogLevel::Info, LogSource::Log, place(0), &format!("line {n}"));
        }
        let read = log.read(&LogQuery::default());
        let messages: Vec<&str> = read.entries.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["line 3", "line 4", "line 5"]);
        assert_eq!(read.dropped, 2);
        assert_eq!(read.capacity, 3);
        assert_eq!(read.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
    }

    #[test]
    fn the_default_log_keeps_the_documented_number_of_entries() {
        let log = FunctionLog::default();
        for n in 0..FUNCTION_LOG_CAPACITY + 7 {
            log.push(LogLevel::Info, LogSource::Stdout, place(0), &n.to_string());
        }
        let read = log.read(&LogQuery::default());
        assert_eq!(read.entries.len(), FUNCTION_LOG_CAPACITY);
        assert_eq!(read.dropped, 7);
        assert_eq!(read.entries[0].message, "7");
    }

    #[test]
    fn a_read_keeps_entries_at_or_above_the_level_and_the_latest_up_to_the_limit() {
        let log = FunctionLog::new(10);
        for (level, message) in
            [(LogLevel::Debug, "a"), (LogLevel::Warn, "b"), (LogLevel::Info, "c"), (LogLevel::Error, "d")]
        {
            log.push(level, LogSource::Log, place(0), message);
        }
        let query = LogQuery { min_level: Some(LogLevel::Warn), ..LogQuery::default() };
        let messages: Vec<String> = log.read(&query).entries.into_iter().map(|e| e.message).collect();
        assert_eq!(messages, ["b", "d"]);
        let query = LogQuery { limit: Some(2), ..LogQuery::default() };
        let messages: Vec<String> = log.read(&query).entries.into_iter().map(|e| e.message).collect();
        assert_eq!(messages, ["c", "d"]);
        let query = LogQuery { since_ms: Some(now_ms() + 60_000), ..LogQuery::default() };
        assert!(log.read(&query).entries.is_empty());
    }

    #[test]
    fn a_long_message_is_cut_at_the_entry_limit() {
        let log = FunctionLog::new(1);
        log.push(LogLevel::Warn, LogSource::Failure, LogPlace::default(), &"é".repeat(MAX_ENTRY_MESSAGE_BYTES));
        let entry = &log.read(&LogQuery::default()).entries[0];
        assert_eq!(entry.message.len(), MAX_ENTRY_MESSAGE_BYTES);
    }

    #[tokio::test]
    async fn a_follower_gets_the_backlog_then_new_entries_at_its_level() {
        let log = FunctionLog::new(10);
        log.push(LogLevel::Warn, LogSource::Log, place(0), "before");
        let mut follower = log.follow(&LogQuery { min_level: Some(LogLevel::Warn), ..LogQuery::default() });
        log.push(LogLevel::Info, LogSource::Log, place(0), "quiet");
        log.push(LogLevel::Error, LogSource::Failure, place(1), "after");
        assert_eq!(follower.next().await.map(|e| e.message), Some("before".into()));
        assert_eq!(follower.next().await.map(|e| e.message), Some("after".into()));
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_misses_entries_and_is_told_how_many_while_writers_go_on() {
        let log = FunctionLog::new(10);
        let mut follower = log.follow(&LogQuery::default());
        for n in 0..FOLLOW_BUFFER + 5 {
            log.push(LogLevel::Info, LogSource::Log, place(0), &n.to_string());
        }
        let notice = follower.next().await.expect("a notice");
        assert_eq!((notice.seq, notice.source, notice.level), (0, LogSource::Runtime, LogLevel::Warn));
        assert!(notice.message.contains("5 entries were not sent"), "{}", notice.message);
        assert_eq!(follower.next().await.map(|e| e.message), Some("5".into()));
    }

    #[tokio::test]
    async fn a_follower_ends_when_its_log_is_gone() {
        let log = FunctionLog::new(10);
        let mut follower = log.follow(&LogQuery::default());
        drop(log);
        assert_eq!(follower.next().await, None);
    }

    #[test]
    fn times_are_written_and_read_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_783_087_509_042), "2026-07-03T14:05:09.042Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(parse_since("2026-07-03T14:05:09.042Z", 0), Ok(1_783_087_509_042));
        assert_eq!(parse_since("2026-07-03T16:05:09.0421+02:00", 0), Ok(1_783_087_509_042));
        assert_eq!(parse_since("1970-01-01T00:00:00Z", 0), Ok(0));
        for ms in [0, 86_399_999, 951_782_400_000, 4_102_444_800_123, 1_783_087_509_042] {
            assert_eq!(parse_since(&rfc3339(ms), 0), Ok(ms));
        }
    }

    #[test]
    fn a_since_may_be_a_duration_back_from_now() {
        let now = 10_000_000;
        assert_eq!(parse_since("30s", now), Ok(now - 30_000));
        assert_eq!(parse_since("5m", now), Ok(now - 300_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_since("1d", now), Ok(now - 86_400_000));
        for bad in ["", "5", "m", "5x", "-5m", "yesterday", "2026-07-03", "2026-07-03T14:05:09", "2026-13-03T14:05:09Z"]
        {
            assert!(parse_since(bad, now).is_err(), "{bad:?} was taken");
        }
    }
}
