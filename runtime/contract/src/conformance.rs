//! The cache contract as data: cases of calls with the answer each must get, written once and
//! run against every implementation (the runtime's `Cache` over a backend, the SDK's native
//! stand-in).
//!
//! A [`Case`] starts from an empty cache (one namespace) and lists [`Step`]s: a [`Call`] and
//! the [`Answer`] it must get, a value or the [`ErrorKind`] of a failure. An implementation
//! runs the calls in order, turns each result into an [`Answer`] with [`answer`], and hands
//! the answers to [`Case::verify`]. No case waits for a TTL to pass: expiry is tested per
//! backend, with real clocks.
//!
//! Every case can fail: the crate's own tests run the cases against a reference model and
//! against models that each break one rule, and check that every case is failed by at least
//! one of them.

use std::fmt;

use crate::cache::{CacheError, ErrorKind, limits};

/// One cache call, as a function makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `get(key)`.
    Get(String),
    /// `get-many(keys)`.
    GetMany(Vec<String>),
    /// `set(key, value, ttl)`.
    Set(String, Vec<u8>, Option<u32>),
    /// `set-many(entries, ttl)`.
    SetMany(Vec<(String, Vec<u8>)>, Option<u32>),
    /// `incr(key, delta, ttl)`.
    Incr(String, i64, Option<u32>),
    /// `incr-many(entries, ttl)`.
    IncrMany(Vec<(String, i64)>, Option<u32>),
    /// `delete(key)`.
    Delete(String),
}

/// What a call answered: its value, or the kind of its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `set` or `set-many` succeeded.
    Done,
    /// What `get` read.
    Value(Option<Vec<u8>>),
    /// What `get-many` read.
    Values(Vec<Option<Vec<u8>>>),
    /// The counter `incr` returned.
    Counter(i64),
    /// The counters `incr-many` returned.
    Counters(Vec<i64>),
    /// Whether `delete` found the key.
    Existed(bool),
    /// The call failed with this kind of error.
    Failed(ErrorKind),
}

impl From<()> for Answer {
    fn from((): ()) -> Answer {
        Answer::Done
    }
}

impl From<Option<Vec<u8>>> for Answer {
    fn from(value: Option<Vec<u8>>) -> Answer {
        Answer::Value(value)
    }
}

impl From<Vec<Option<Vec<u8>>>> for Answer {
    fn from(values: Vec<Option<Vec<u8>>>) -> Answer {
        Answer::Values(values)
    }
}

impl From<i64> for Answer {
    fn from(counter: i64) -> Answer {
        Answer::Counter(counter)
    }
}

impl From<Vec<i64>> for Answer {
    fn from(counters: Vec<i64>) -> Answer {
        Answer::Counters(counters)
    }
}

impl From<bool> for Answer {
    fn from(existed: bool) -> Answer {
        Answer::Existed(existed)
    }
}

/// The answer of a call that returned `result`.
pub fn answer<T: Into<Answer>>(result: Result<T, CacheError>) -> Answer {
    match result {
        Ok(value) => value.into(),
        Err(error) => Answer::Failed(error.kind()),
    }
}

/// One call and the answer it must get.
#[derive(Debug, Clone)]
pub struct Step {
    /// The call.
    pub call: Call,
    /// Its answer, on every implementation.
    pub expect: Answer,
}

/// A named list of steps, run in order on an empty cache.
#[derive(Debug, Clone)]
pub struct Case {
    /// What the case shows, as a sentence.
    pub name: &'static str,
    /// The calls and their answers.
    pub steps: Vec<Step>,
}

impl Case {
    /// Checks the answers an implementation gave to [`Case::steps`], in order: `Err` names
    /// the case, the first step whose answer differs, the call, and both answers.
    pub fn verify(&self, answers: &[Answer]) -> Result<(), String> {
        for (index, step) in self.steps.iter().enumerate() {
            let Some(got) = answers.get(index) else {
                return Err(format!("{}: no answer to step {index} ({})", self.name, Shown(&step.call)));
            };
            if *got != step.expect {
                return Err(format!(
                    "{}: step {index} ({}) answered {} but the contract says {}",
                    self.name,
                    Shown(&step.call),
                    Shown(got),
                    Shown(&step.expect)
                ));
            }
        }
        if answers.len() > self.steps.len() {
            return Err(format!("{}: {} answers to {} steps", self.name, answers.len(), self.steps.len()));
        }
        Ok(())
    }
}

/// A call or answer for a message, with long byte strings and lists cut short.
struct Shown<'a, T>(&'a T);

impl fmt::Display for Shown<'_, Call> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Call::Get(key) => write!(f, "get {}", short_key(key)),
            Call::GetMany(keys) => write!(f, "get-many of {} keys from {}", keys.len(), first_key(keys.iter())),
            Call::Set(key, value, ttl) => write!(f, "set {} = {} ttl {ttl:?}", short_key(key), short_bytes(value)),
            Call::SetMany(entries, ttl) => {
                write!(
                    f,
                    "set-many of {} entries from {} ttl {ttl:?}",
                    entries.len(),
                    first_key(entries.iter().map(|e| &e.0))
                )
            }
            Call::Incr(key, delta, ttl) => write!(f, "incr {} by {delta} ttl {ttl:?}", short_key(key)),
            Call::IncrMany(entries, ttl) => {
                write!(
                    f,
                    "incr-many of {} entries from {} ttl {ttl:?}",
                    entries.len(),
                    first_key(entries.iter().map(|e| &e.0))
                )
            }
            Call::Delete(key) => write!(f, "delete {}", short_key(key)),
        }
    }
}

impl fmt::Display for Shown<'_, Answer> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = |v: &Option<Vec<u8>>| v.as_deref().map_or_else(|| "none".to_owned(), short_bytes);
        match self.0 {
            Answer::Done => write!(f, "ok"),
            Answer::Value(v) => write!(f, "{}", value(v)),
            Answer::Values(vs) if vs.len() > 8 => write!(f, "{} values", vs.len()),
            Answer::Values(vs) => write!(f, "[{}]", vs.iter().map(value).collect::<Vec<_>>().join(", ")),
            Answer::Counter(n) => write!(f, "{n}"),
            Answer::Counters(ns) if ns.len() > 8 => write!(f, "{} counters", ns.len()),
            Answer::Counters(ns) => write!(f, "{ns:?}"),
            Answer::Existed(existed) => write!(f, "existed: {existed}"),
            Answer::Failed(kind) => write!(f, "error {kind:?}"),
        }
    }
}

fn short_key(key: &str) -> String {
    if key.len() > 24 { format!("<key of {} bytes>", key.len()) } else { format!("{key:?}") }
}

fn first_key<'a>(mut keys: impl Iterator<Item = &'a String>) -> String {
    keys.next().map_or_else(|| "nothing".to_owned(), |k| short_key(k))
}

fn short_bytes(bytes: &[u8]) -> String {
    if bytes.len() > 24 { format!("<{} bytes>", bytes.len()) } else { format!("{:?}", String::from_utf8_lossy(bytes)) }
}

fn step(call: Call, expect: Answer) -> Step {
    Step { call, expect }
}

fn get(key: &str) -> Call {
    Call::Get(key.to_owned())
}

fn get_many(keys: &[&str]) -> Call {
    Call::GetMany(keys.iter().map(|k| (*k).to_owned()).collect())
}

fn set(key: &str, value: impl AsRef<[u8]>, ttl: Option<u32>) -> Call {
    Call::Set(key.to_owned(), value.as_ref().to_vec(), ttl)
}

fn set_many(entries: &[(&str, &[u8])], ttl: Option<u32>) -> Call {
    Call::SetMany(entries.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect(), ttl)
}

fn incr(key: &str, delta: i64, ttl: Option<u32>) -> Call {
    Call::Incr(key.to_owned(), delta, ttl)
}

fn incr_many(entries: &[(&str, i64)], ttl: Option<u32>) -> Call {
    Call::IncrMany(entries.iter().map(|(k, d)| ((*k).to_owned(), *d)).collect(), ttl)
}

fn delete(key: &str) -> Call {
    Call::Delete(key.to_owned())
}

fn text(value: &str) -> Answer {
    Answer::Value(Some(value.as_bytes().to_vec()))
}

fn failed(kind: ErrorKind) -> Answer {
    Answer::Failed(kind)
}

const NONE: Answer = Answer::Value(None);
const DONE: Answer = Answer::Done;

/// Every call that takes a key, with `key`, and the answer of a call refused for its key.
fn every_call_refuses_key(key: &str) -> Vec<Step> {
    let invalid = || failed(ErrorKind::InvalidKey);
    vec![
        step(set(key, "v", None), invalid()),
        step(get(key), invalid()),
        step(incr(key, 1, None), invalid()),
        step(delete(key), invalid()),
        step(get_many(&["ok", key]), invalid()),
        step(set_many(&[("ok", b"v"), (key, b"v")], None), invalid()),
        step(incr_many(&[("ok", 1), (key, 1)], None), invalid()),
        step(get("ok"), NONE),
    ]
}

/// The conformance cases, in a stable order.
pub fn cases() -> Vec<Case> {
    let longest_key = "k".repeat(limits::MAX_KEY_BYTES);
    let too_long_key = "k".repeat(limits::MAX_KEY_BYTES + 1);
    let longest_multibyte_key = "é".repeat(limits::MAX_KEY_BYTES / 2);
    let too_long_multibyte_key = "é".repeat(limits::MAX_KEY_BYTES / 2 + 1);
    let every_byte: Vec<u8> = (0..=255).collect();
    let largest: Vec<u8> = (0..limits::MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    let too_large = vec![b'x'; limits::MAX_VALUE_BYTES + 1];
    let batch: Vec<String> = (0..limits::MAX_BATCH_KEYS).map(|i| format!("key-{i}")).collect();
    let over_batch: Vec<String> = (0..=limits::MAX_BATCH_KEYS).map(|i| format!("key-{i}")).collect();
    let (max, min) = (i64::MAX.to_string(), i64::MIN.to_string());
    let ttl_max = Some(limits::MAX_TTL_SECONDS);

    let mut cases = vec![
        Case {
            name: "a key never set reads as missing and deletes as absent",
            steps: vec![
                step(get("never-set"), NONE),
                step(get_many(&["a", "b"]), Answer::Values(vec![None, None])),
                step(delete("never-set"), Answer::Existed(false)),
            ],
        },
        Case {
            name: "set then get returns exactly the bytes stored, and a new set replaces them",
            steps: vec![
                step(set("text", "hello", None), DONE),
                step(get("text"), text("hello")),
                step(set("binary", &every_byte, Some(60)), DONE),
                step(get("binary"), Answer::Value(Some(every_byte.clone()))),
                step(set("text", "replaced", Some(60)), DONE),
                step(get("text"), text("replaced")),
                step(set_many(&[("text", b"again"), ("other", b"o")], None), DONE),
                step(get_many(&["text", "other"]), Answer::Values(vec![Some(b"again".to_vec()), Some(b"o".to_vec())])),
            ],
        },
        Case {
            name: "an empty value is a value, not a miss",
            steps: vec![
                step(set("empty", "", None), DONE),
                step(get("empty"), text("")),
                step(get_many(&["empty"]), Answer::Values(vec![Some(Vec::new())])),
                step(delete("empty"), Answer::Existed(true)),
                step(get("empty"), NONE),
            ],
        },
        Case {
            name: "values that look like numbers come back unchanged",
            steps: ["007", "+5", " 5", "-0", "18446744073709551616", "42"]
                .into_iter()
                .flat_map(|v| [step(set("v", v, None), DONE), step(get("v"), text(v))])
                .collect(),
        },
        Case {
            name: "keys of 1 to 200 bytes without whitespace or control characters are keys, in any script",
            steps: [longest_key.as_str(), longest_multibyte_key.as_str(), "x", "clé:日本:ü", "a/b?c=d&e#f", "{json}"]
                .into_iter()
                .flat_map(|key| {
                    [
                        step(set(key, "v", None), DONE),
                        step(get(key), text("v")),
                        step(delete(key), Answer::Existed(true)),
                        step(incr(key, 1, None), Answer::Counter(1)),
                    ]
                })
                .collect(),
        },
        Case { name: "an empty key is refused by every call", steps: every_call_refuses_key("") },
        Case { name: "a key over 200 bytes is refused by every call", steps: every_call_refuses_key(&too_long_key) },
        Case {
            name: "the key limit counts bytes, not characters",
            steps: every_call_refuses_key(&too_long_multibyte_key),
        },
    ];
    for (name, key) in [
        ("a key with a space is refused by every call", "a b"),
        ("a key with a newline is refused by every call", "a\nb"),
        ("a key with a tab is refused by every call", "a\tb"),
        ("a key with a NUL is refused by every call", "a\u{0}b"),
        ("a key with DEL is refused by every call", "a\u{7f}b"),
        ("a key with a no-break space (Unicode whitespace) is refused by every call", "a\u{a0}b"),
        ("a key with an em space (Unicode whitespace) is refused by every call", "a\u{2003}b"),
    ] {
        cases.push(Case { name, steps: every_call_refuses_key(key) });
    }
    cases.extend([
        Case {
            name: "a value of 1,000,000 bytes is stored and one byte more is too large, writing nothing",
            steps: vec![
                step(set("largest", &largest, None), DONE),
                step(get("largest"), Answer::Value(Some(largest.clone()))),
                step(set("too-large", &too_large, None), failed(ErrorKind::TooLarge)),
                step(get("too-large"), NONE),
                step(set_many(&[("fine", b"v"), ("too-large", &too_large)], None), failed(ErrorKind::TooLarge)),
                step(get("fine"), NONE),
                step(set("largest", &too_large, None), failed(ErrorKind::TooLarge)),
                step(get("largest"), Answer::Value(Some(largest.clone()))),
            ],
        },
        Case {
            name: "a get-many answer of more than 16 MiB is too large, and fewer keys are read",
            steps: {
                // 16 values of 1,000,000 bytes: within one call's writes; 17 read back are not.
                let keys: Vec<String> = (0..16).map(|i| format!("big-{i}")).collect();
                let entries: Vec<(String, Vec<u8>)> = keys.iter().map(|k| (k.clone(), largest.clone())).collect();
                let mut over: Vec<&str> = keys.iter().map(String::as_str).collect();
                over.push("big-0");
                vec![
                    step(Call::SetMany(entries, None), DONE),
                    step(get_many(&over), failed(ErrorKind::TooLarge)),
                    step(get_many(&over[..16]), Answer::Values(vec![Some(largest.clone()); 16])),
                ]
            },
        },
        Case {
            name: "a TTL of 0 is refused, not read as no expiry, and writes nothing",
            steps: vec![
                step(set("k", "v", Some(0)), failed(ErrorKind::InvalidArgument)),
                step(get("k"), NONE),
                step(incr("n", 1, Some(0)), failed(ErrorKind::InvalidArgument)),
                step(get("n"), NONE),
                step(set_many(&[("k", b"v")], Some(0)), failed(ErrorKind::InvalidArgument)),
                step(incr_many(&[("n", 1)], Some(0)), failed(ErrorKind::InvalidArgument)),
                step(get_many(&["k", "n"]), Answer::Values(vec![None, None])),
            ],
        },
        Case {
            name: "TTLs run from 1 s to 30 days, and no TTL means no expiry",
            steps: vec![
                step(set("k", "v", None), DONE),
                step(set("k", "v", Some(1)), DONE),
                step(set("k", "v", ttl_max), DONE),
                step(set("k", "v", Some(limits::MAX_TTL_SECONDS + 1)), failed(ErrorKind::InvalidArgument)),
                step(set("k", "v", Some(u32::MAX)), failed(ErrorKind::InvalidArgument)),
                step(incr("n", 1, ttl_max), Answer::Counter(1)),
                step(incr("n", 1, Some(limits::MAX_TTL_SECONDS + 1)), failed(ErrorKind::InvalidArgument)),
                step(set_many(&[("m", b"v")], ttl_max), DONE),
                step(incr_many(&[("n", 1)], Some(1)), Answer::Counters(vec![2])),
                step(get_many(&["k", "n", "m"]), Answer::Values(vec![Some(b"v".to_vec()), Some(b"2".to_vec()), Some(b"v".to_vec())])),
            ],
        },
        Case {
            name: "batches take up to 1,000 keys, and empty batches do nothing",
            steps: vec![
                step(Call::GetMany(batch.clone()), Answer::Values(vec![None; limits::MAX_BATCH_KEYS])),
                step(Call::GetMany(over_batch.clone()), failed(ErrorKind::InvalidArgument)),
                step(
                    Call::SetMany(over_batch.iter().map(|k| (k.clone(), b"v".to_vec())).collect(), None),
                    failed(ErrorKind::InvalidArgument),
                ),
                step(get("key-0"), NONE),
                step(
                    Call::IncrMany(over_batch.iter().map(|k| (k.clone(), 1)).collect(), None),
                    failed(ErrorKind::InvalidArgument),
                ),
                step(get("key-0"), NONE),
                step(Call::SetMany(batch.iter().map(|k| (k.clone(), b"v".to_vec())).collect(), None), DONE),
                step(Call::IncrMany(batch.iter().map(|k| (k.clone(), 1)).collect(), None), failed(ErrorKind::NotANumber)),
                step(get_many(&[]), Answer::Values(vec![])),
                step(set_many(&[], None), DONE),
                step(incr_many(&[], None), Answer::Counters(vec![])),
            ],
        },
        Case {
            name: "incr creates a missing counter holding the delta, stored as decimal text",
            steps: vec![
                step(incr("up", 5, None), Answer::Counter(5)),
                step(get("up"), text("5")),
                step(incr("zero", 0, None), Answer::Counter(0)),
                step(get("zero"), text("0")),
                step(incr("down", -3, Some(60)), Answer::Counter(-3)),
                step(get("down"), text("-3")),
            ],
        },
        Case {
            name: "incr adds to a counter in canonical decimal text and writes it back without padding",
            steps: vec![
                step(set("c", "10", None), DONE),
                step(incr("c", 5, None), Answer::Counter(15)),
                step(get("c"), text("15")),
                step(set("grows", "9", None), DONE),
                step(incr("grows", 991, None), Answer::Counter(1000)),
                step(incr("grows", -995, None), Answer::Counter(5)),
                step(get("grows"), text("5")),
                step(set("negative", "-7", None), DONE),
                step(incr("negative", 7, None), Answer::Counter(0)),
                step(get("negative"), text("0")),
                step(incr("negative", -1, None), Answer::Counter(-1)),
                step(get("negative"), text("-1")),
            ],
        },
        Case {
            name: "counters span the signed 64-bit range in decimal text",
            steps: vec![
                step(incr("at-max", i64::MAX, None), Answer::Counter(i64::MAX)),
                step(get("at-max"), text(&max)),
                step(set("near-min", (i64::MIN + 1).to_string(), None), DONE),
                step(incr("near-min", -1, None), Answer::Counter(i64::MIN)),
                step(get("near-min"), text(&min)),
                step(incr("near-min", i64::MAX, None), Answer::Counter(-1)),
            ],
        },
        Case {
            name: "incr past the signed 64-bit range is not a number and leaves the counter unchanged",
            steps: vec![
                step(set("max", (i64::MAX - 1).to_string(), None), DONE),
                step(incr("max", 1, None), Answer::Counter(i64::MAX)),
                step(incr("max", 1, None), failed(ErrorKind::NotANumber)),
                step(get("max"), text(&max)),
                step(set("min", &min, None), DONE),
                step(incr("min", -1, None), failed(ErrorKind::NotANumber)),
                step(get("min"), text(&min)),
                step(incr_many(&[("many", i64::MAX - 1), ("many", 1), ("many", 1)], None), failed(ErrorKind::NotANumber)),
                step(get("many"), text(&max)),
            ],
        },
        Case {
            name: "incr of a value that is not a canonical counter is not a number and leaves it unchanged",
            steps: [
                "abc",
                "",
                "12abc",
                "1.5",
                "007",
                "+5",
                " 5",
                "5 ",
                "-0",
                "-",
                "9223372036854775808",
                "-9223372036854775809",
            ]
            .into_iter()
            .flat_map(|v| {
                [
                    step(set("v", v, None), DONE),
                    step(incr("v", 1, None), failed(ErrorKind::NotANumber)),
                    step(incr_many(&[("v", 0)], None), failed(ErrorKind::NotANumber)),
                    step(get("v"), text(v)),
                ]
            })
            .collect(),
        },
        Case {
            name: "incr-many applies entries in order, a repeated key sees the earlier ones, and a failure keeps the entries before it",
            steps: vec![
                step(
                    incr_many(&[("a", 1), ("b", 5), ("a", 2), ("c", -4), ("a", -10), ("b", 0)], None),
                    Answer::Counters(vec![1, 5, 3, -4, -7, 5]),
                ),
                step(get_many(&["a", "b", "c"]), Answer::Values(vec![Some(b"-7".to_vec()), Some(b"5".to_vec()), Some(b"-4".to_vec())])),
                step(set("text", "abc", None), DONE),
                step(incr_many(&[("fresh", 1), ("text", 1)], None), failed(ErrorKind::NotANumber)),
                step(get("fresh"), text("1")),
                step(get("text"), text("abc")),
            ],
        },
        Case {
            name: "delete reports whether the key existed",
            steps: vec![
                step(set("k", "v", None), DONE),
                step(delete("k"), Answer::Existed(true)),
                step(delete("k"), Answer::Existed(false)),
                step(get("k"), NONE),
                step(incr("n", 1, None), Answer::Counter(1)),
                step(delete("n"), Answer::Existed(true)),
                step(incr("n", 1, None), Answer::Counter(1)),
            ],
        },
        Case {
            name: "get-many answers every key in order, repeats included, with none for misses",
            steps: vec![
                step(set("a", "1", None), DONE),
                step(set("c", "3", None), DONE),
                step(
                    get_many(&["c", "b", "a", "c", "d"]),
                    Answer::Values(vec![Some(b"3".to_vec()), None, Some(b"1".to_vec()), Some(b"3".to_vec()), None]),
                ),
            ],
        },
        Case {
            name: "a call that breaks several rules fails on the first in the contract's order",
            steps: vec![
                step(set(&too_long_key, &too_large, Some(0)), failed(ErrorKind::InvalidKey)),
                step(set("k", &too_large, Some(0)), failed(ErrorKind::TooLarge)),
                step(set("k", "v", Some(0)), failed(ErrorKind::InvalidArgument)),
                step(incr("", 1, Some(0)), failed(ErrorKind::InvalidKey)),
                step(set_many(&[("", &too_large)], Some(0)), failed(ErrorKind::InvalidArgument)),
                step(set_many(&[("", &too_large)], None), failed(ErrorKind::InvalidKey)),
                step(set_many(&[("k", &too_large), ("", b"v")], None), failed(ErrorKind::TooLarge)),
                step(incr_many(&[("", 1)], Some(0)), failed(ErrorKind::InvalidArgument)),
                step(
                    Call::GetMany(std::iter::once(String::new()).chain(over_batch.iter().cloned()).collect()),
                    failed(ErrorKind::InvalidArgument),
                ),
            ],
        },
    ]);
    cases
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::cache::{self, add_to_counter, check_value, format_counter, parse_counter};

    /// One rule a broken implementation gets wrong.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Flaw {
        NoKeyCheck,
        KeyLengthInCharacters,
        OnlyAsciiWhitespaceInKeys,
        OnlyAsciiKeys,
        NoValueCheck,
        ValueLimitExclusive,
        ZeroTtlMeansNoExpiry,
        LongestTtlRefused,
        NoBatchCheck,
        EmptyBatchesRefused,
        EmptyValueIsAMiss,
        MissingKeyReadsEmpty,
        SetDoesNotReplace,
        SetManyWritesBeforeChecking,
        LenientCounters,
        WrappingCounters,
        CountersPadded,
        IncrStartsAtOne,
        IncrManyAllOrNothing,
        DeleteAlwaysFalse,
        GetManyWithoutRepeats,
        NoAnswerSizeCheck,
        TtlCheckedBeforeKey,
        SetNormalisesNumbers,
    }

    const FLAWS: [Flaw; 24] = [
        Flaw::NoKeyCheck,
        Flaw::KeyLengthInCharacters,
        Flaw::OnlyAsciiWhitespaceInKeys,
        Flaw::OnlyAsciiKeys,
        Flaw::NoValueCheck,
        Flaw::ValueLimitExclusive,
        Flaw::ZeroTtlMeansNoExpiry,
        Flaw::LongestTtlRefused,
        Flaw::NoBatchCheck,
        Flaw::EmptyBatchesRefused,
        Flaw::EmptyValueIsAMiss,
        Flaw::MissingKeyReadsEmpty,
        Flaw::SetDoesNotReplace,
        Flaw::SetManyWritesBeforeChecking,
        Flaw::LenientCounters,
        Flaw::WrappingCounters,
        Flaw::CountersPadded,
        Flaw::IncrStartsAtOne,
        Flaw::IncrManyAllOrNothing,
        Flaw::DeleteAlwaysFalse,
        Flaw::GetManyWithoutRepeats,
        Flaw::NoAnswerSizeCheck,
        Flaw::TtlCheckedBeforeKey,
        Flaw::SetNormalisesNumbers,
    ];

    /// A cache without clocks that follows the contract, except for its one `flaw`.
    struct Model {
        entries: HashMap<String, Vec<u8>>,
        flaw: Option<Flaw>,
    }

    type Res<T> = Result<T, CacheError>;

    impl Model {
        fn has(&self, flaw: Flaw) -> bool {
            self.flaw == Some(flaw)
        }

        fn key(&self, key: &str) -> Res<()> {
            match self.flaw {
                Some(Flaw::NoKeyCheck) => Ok(()),
                // Every other character as one byte: the length counted in characters.
                Some(Flaw::KeyLengthInCharacters) => cache::check_key(
                    &key.chars().map(|c| if c.is_whitespace() || c.is_control() { c } else { 'k' }).collect::<String>(),
                ),
                Some(Flaw::OnlyAsciiWhitespaceInKeys) if key.chars().any(|c| c.is_whitespace() && !c.is_ascii()) => {
                    Ok(())
                }
                Some(Flaw::OnlyAsciiKeys) if !key.is_ascii() => Err(CacheError::InvalidKey("not ASCII".into())),
                _ => cache::check_key(key),
            }
        }

        fn value(&self, value: &[u8]) -> Res<()> {
            match self.flaw {
                Some(Flaw::NoValueCheck) => Ok(()),
                Some(Flaw::ValueLimitExclusive) if value.len() == limits::MAX_VALUE_BYTES => {
                    Err(CacheError::TooLarge("at the limit".into()))
                }
                _ => check_value(value),
            }
        }

        fn ttl(&self, ttl: Option<u32>) -> Res<()> {
            match (self.flaw, ttl) {
                (Some(Flaw::ZeroTtlMeansNoExpiry), Some(0)) => Ok(()),
                (Some(Flaw::LongestTtlRefused), Some(limits::MAX_TTL_SECONDS)) => {
                    Err(CacheError::InvalidArgument("at the limit".into()))
                }
                _ => cache::check_ttl(ttl),
            }
        }

        fn batch(&self, len: usize) -> Res<()> {
            match self.flaw {
                Some(Flaw::NoBatchCheck) => Ok(()),
                Some(Flaw::EmptyBatchesRefused) if len == 0 => Err(CacheError::InvalidArgument("empty".into())),
                _ => cache::check_batch_len(len),
            }
        }

        fn read(&self, key: &str) -> Option<Vec<u8>> {
            match self.entries.get(key) {
                Some(value) if value.is_empty() && self.has(Flaw::EmptyValueIsAMiss) => None,
                None if self.has(Flaw::MissingKeyReadsEmpty) => Some(Vec::new()),
                found => found.cloned(),
            }
        }

        fn write(&mut self, key: &str, value: &[u8]) {
            if self.has(Flaw::SetDoesNotReplace) && self.entries.contains_key(key) {
                return;
            }
            let mut value = value.to_vec();
            if self.has(Flaw::SetNormalisesNumbers)
                && let Some(n) = std::str::from_utf8(&value).ok().and_then(|t| t.trim().parse::<i64>().ok())
            {
                value = n.to_string().into_bytes();
            }
            self.entries.insert(key.to_owned(), value);
        }

        fn incr_one(&mut self, key: &str, delta: i64) -> Res<i64> {
            let current = match self.entries.get(key) {
                None if self.has(Flaw::IncrStartsAtOne) => 1,
                None => 0,
                Some(raw) if self.has(Flaw::LenientCounters) => std::str::from_utf8(raw)
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .ok_or_else(|| CacheError::NotANumber("lenient".into()))?,
                Some(raw) => parse_counter(key, raw)?,
            };
            let value = if self.has(Flaw::WrappingCounters) {
                current.wrapping_add(delta)
            } else {
                add_to_counter(key, current, delta)?
            };
            let text = if self.has(Flaw::CountersPadded) { format!("{value:03}") } else { format_counter(value) };
            self.entries.insert(key.to_owned(), text.into_bytes());
            Ok(value)
        }

        fn call(&mut self, call: &Call) -> Answer {
            match call {
                Call::Get(key) => answer(self.key(key).map(|()| self.read(key))),
                Call::GetMany(keys) => answer((|| {
                    self.batch(keys.len())?;
                    keys.iter().try_for_each(|k| self.key(k))?;
                    let mut values: Vec<_> = keys.iter().map(|k| self.read(k)).collect();
                    if self.has(Flaw::GetManyWithoutRepeats) {
                        let mut seen = std::collections::HashSet::new();
                        for (k, v) in keys.iter().zip(values.iter_mut()) {
                            if !seen.insert(k) {
                                *v = None;
                            }
                        }
                    }
                    if !self.has(Flaw::NoAnswerSizeCheck) {
                        cache::check_get_many_answer(&values)?;
                    }
                    Ok(values)
                })()),
                Call::Set(key, value, ttl) => answer((|| {
                    if self.has(Flaw::TtlCheckedBeforeKey) {
                        self.ttl(*ttl)?;
                    }
                    self.key(key)?;
                    self.value(value)?;
                    self.ttl(*ttl)?;
                    self.write(key, value);
                    Ok(())
                })()),
                Call::SetMany(entries, ttl) => answer((|| {
                    self.batch(entries.len())?;
                    self.ttl(*ttl)?;
                    for (key, value) in entries {
                        if self.has(Flaw::SetManyWritesBeforeChecking) {
                            self.write(key, value);
                        }
                        self.key(key)?;
                        self.value(value)?;
                    }
                    for (key, value) in entries {
                        self.write(key, value);
                    }
                    Ok(())
                })()),
                Call::Incr(key, delta, ttl) => answer((|| {
                    if self.has(Flaw::TtlCheckedBeforeKey) {
                        self.ttl(*ttl)?;
                    }
                    self.key(key)?;
                    self.ttl(*ttl)?;
                    self.incr_one(key, *delta)
                })()),
                Call::IncrMany(entries, ttl) => answer((|| {
                    self.batch(entries.len())?;
                    self.ttl(*ttl)?;
                    entries.iter().try_for_each(|(k, _)| self.key(k))?;
                    let before = self.entries.clone();
                    let result = entries.iter().map(|(k, d)| self.incr_one(k, *d)).collect::<Res<Vec<_>>>();
                    if result.is_err() && self.has(Flaw::IncrManyAllOrNothing) {
                        self.entries = before;
                    }
                    result
                })()),
                Call::Delete(key) => answer(self.key(key).map(|()| {
                    let existed = self.entries.remove(key).is_some();
                    existed && !self.has(Flaw::DeleteAlwaysFalse)
                })),
            }
        }
    }

    fn run(case: &Case, flaw: Option<Flaw>) -> Result<(), String> {
        let mut model = Model { entries: HashMap::new(), flaw };
        let answers: Vec<Answer> = case.steps.iter().map(|s| model.call(&s.call)).collect();
        case.verify(&answers)
    }

    #[test]
    fn a_faithful_model_passes_every_case() {
        let failures: Vec<String> = cases().iter().filter_map(|case| run(case, None).err()).collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn every_case_is_failed_by_some_model_with_one_flaw() {
        let cases = cases();
        let caught: Vec<Vec<Flaw>> = cases
            .iter()
            .map(|case| FLAWS.into_iter().filter(|flaw| run(case, Some(*flaw)).is_err()).collect())
            .collect();
        let uncatchable: Vec<&str> =
            cases.iter().zip(&caught).filter(|(_, flaws)| flaws.is_empty()).map(|(case, _)| case.name).collect();
        assert!(uncatchable.is_empty(), "cases no flaw fails: {uncatchable:#?}");
        let unnoticed: Vec<Flaw> =
            FLAWS.into_iter().filter(|flaw| !caught.iter().any(|flaws| flaws.contains(flaw))).collect();
        assert!(unnoticed.is_empty(), "flaws no case notices: {unnoticed:?}");
    }

    #[test]
    fn case_names_are_unique() {
        let mut names: Vec<_> = cases().iter().map(|c| c.name).collect();
        names.sort();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn a_wrong_answer_is_reported_with_the_case_the_step_and_both_answers() {
        let case = &cases()[0];
        let error = case.verify(&[Answer::Value(Some(b"x".to_vec()))]).unwrap_err();
        assert!(
            error.contains(case.name) && error.contains("step 0") && error.contains("\"x\"") && error.contains("none"),
            "{error}"
        );
        assert!(case.verify(&[NONE]).unwrap_err().contains("no answer to step 1"));
    }
}
