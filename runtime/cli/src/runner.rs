//! The local runner behind `sluice run`: runs a function over records read from a file or
//! stdin, on the embedded in-memory cache, and prints what it did. It is how a user tries a
//! function without Kafka.
//!
//! Each input line is a JSON object: `{"key": ..., "value": ..., "headers": {...}}`, all
//! optional. A string is taken as its UTF-8 bytes; any other JSON value (an object, a number)
//! as its compact JSON text; `null` as a null key or value. Bytes that are not UTF-8 are given
//! in base64 as `key_b64` and `value_b64` instead. `topic`, `partition`, `offset` and
//! `timestamp_ms` may be given too. With `raw`, each line is taken as a record value as is.
//!
//! Compiled modules are kept between runs in the runtime's artifact cache format
//! ([`default_artifact_dir`]), so only the first run of a large (Python, JavaScript) component
//! pays for its compilation.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use sluice_cache::{Cache, CacheBackend, CacheError, MemoryCache, Namespace};
use sluice_engine::{BatchError, Engine, FunctionContext, FunctionInstance, Module};
use sluice_record::{Header, InputRecord, OutputRecord, RecordResult};

/// How to run a function locally.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The function's name in logs and errors.
    pub name: String,
    /// Settings handed to the function's `config` import.
    pub config: BTreeMap<String, String>,
    /// Records per `process` call. With 1, cache effects are shown per record.
    pub batch_size: usize,
    /// Print JSON lines instead of text.
    pub json: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { name: "function".into(), config: BTreeMap::new(), batch_size: 1, json: false }
    }
}

/// What a local run did, in numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records read.
    pub records: usize,
    /// Outputs returned.
    pub outputs: usize,
    /// Records that failed with a record error.
    pub record_errors: usize,
    /// Batches that failed as a whole (a trap, a limit).
    pub batch_errors: usize,
}

/// One input line, as written by a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    timestamp_ms: Option<i64>,
    #[serde(default)]
    key: Value,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    key_b64: Option<String>,
    #[serde(default)]
    value_b64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
}

/// Where `sluice run` keeps compiled modules by default: `$SLUICE_ARTIFACT_DIR`, else
/// `$XDG_CACHE_HOME/sluice/artifacts`, else `~/.cache/sluice/artifacts`; `None` when none of
/// them is set.
pub fn default_artifact_dir() -> Option<std::path::PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    var("SLUICE_ARTIFACT_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("sluice").join("artifacts")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("sluice").join("artifacts")))
}

/// The bytes of a key or value given either as JSON (`field`) or in base64 (`field_b64`).
fn bytes_of(field: &str, json: Value, b64: Option<String>) -> anyhow::Result<Option<Vec<u8>>> {
    use base64::Engine as _;
    match b64 {
        None => Ok(json_bytes(json)),
        Some(_) if !json.is_null() => bail!("give either {field} or {field}_b64, not both"),
        Some(text) => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{field}_b64 is not base64: {e}")),
    }
}

/// Reads records from `input`: one per non-empty line.
pub fn read_records(input: impl BufRead, raw: bool) -> anyhow::Result<Vec<InputRecord>> {
    let mut records = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read input line {}", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let offset = records.len() as i64;
        let record = if raw {
            InputRecord {
                topic: "local".into(),
                partition: 0,
                offset,
                timestamp_ms: None,
                key: None,
                value: Some(line.into_bytes()),
                headers: Vec::new(),
            }
        } else {
            let parsed: InputLine = serde_json::from_str(&line).with_context(|| {
                format!("input line {}: expected a JSON object with key, value and headers (or use --raw)", index + 1)
            })?;
            InputRecord {
                topic: parsed.topic.unwrap_or_else(|| "local".into()),
                partition: parsed.partition.unwrap_or(0),
                offset: parsed.offset.unwrap_or(offset),
                timestamp_ms: parsed.timestamp_ms,
                key: bytes_of("key", parsed.key, parsed.key_b64)
                    .with_context(|| format!("input line {}", index + 1))?,
                value: bytes_of("value", parsed.value, parsed.value_b64)
                    .with_context(|| format!("input line {}", index + 1))?,
                headers: parsed
                    .headers
                    .into_iter()
                    .map(|(key, value)| Header { key, value: json_bytes(value).unwrap_or_default() })
                    .collect(),
            }
        };
        records.push(record);
    }
    Ok(records)
}

fn json_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

/// Runs `module` over `records` and writes a report of every result to `out`.
pub async fn run(
    engine: &Engine,
    module: &Module,
    records: &[InputRecord],
    options: &RunOptions,
    out: &mut impl Write,
) -> anyhow::Result<RunSummary> {
    if options.batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    let recorder = Arc::new(RecordingCache::default());
    let namespace = Namespace::new("local").expect("a valid namespace");
    let context = FunctionContext {
        name: options.name.as_str().into(),
        cache: Cache::new(recorder.clone(), namespace),
        config: Arc::new(options.config.clone()),
        log_sink: None,
    };
    let mut instance = FunctionInstance::new(engine, module, context);
    let mut summary = RunSummary::default();
    let started = Instant::now();
    // A batch holds records of one topic partition, as a pipeline's do.
    let partitions = records.chunk_by(|a, b| (&a.topic, a.partition) == (&b.topic, b.partition));
    for batch in partitions.flat_map(|records| records.chunks(options.batch_size)) {
        summary.records += batch.len();
        let outcome = instance.process(batch).await;
        let effects = recorder.take();
        match &outcome {
            Ok(results) => {
                for (record, result) in batch.iter().zip(results) {
                    match result {
                        Ok(outputs) => summary.outputs += outputs.len(),
                        Err(_) => summary.record_errors += 1,
                    }
                    report_record(out, options.json, record, result)?;
                }
            }
            Err(error) => {
                summary.batch_errors += 1;
                report_batch_error(out, options.json, batch, error)?;
            }
        }
        report_effects(out, options.json, &effects)?;
    }
    if !options.json {
        report_summary(out, &summary, started.elapsed(), &recorder.inner)?;
    }
    Ok(summary)
}

/// Bytes as text when they are UTF-8, else as `hex:...`.
fn show(bytes: &Option<Vec<u8>>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => Value::String(format!("hex:{}", hex::encode(b))),
        },
    }
}

fn output_json(output: &OutputRecord) -> Value {
    let headers: serde_json::Map<String, Value> =
        output.headers.iter().map(|h| (h.key.clone(), show(&Some(h.value.clone())))).collect();
    serde_json::json!({
        "target": output.target,
        "key": show(&output.key),
        "value": show(&output.value),
        "headers": headers,
    })
}

fn report_record(out: &mut impl Write, json: bool, record: &InputRecord, result: &RecordResult) -> std::io::Result<()> {
    if json {
        let line = match result {
            Ok(outputs) => serde_json::json!({
                "offset": record.offset,
                "outputs": outputs.iter().map(output_json).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({
                "offset": record.offset,
                "error": { "message": e.message, "retryable": e.retryable },
            }),
        };
        return writeln!(out, "{line}");
    }
    match result {
        Ok(outputs) if outputs.is_empty() => writeln!(out, "offset {}: no output", record.offset),
        Ok(outputs) => {
            writeln!(out, "offset {}: {} output{}", record.offset, outputs.len(), plural(outputs.len()))?;
            for output in outputs {
                let target = output.target.as_deref().map(|t| format!(" [{t}]")).unwrap_or_default();
                let headers: String =
                    output.headers.iter().map(|h| format!(" {}={}", h.key, show(&Some(h.value.clone())))).collect();
                let headers = if headers.is_empty() { String::new() } else { format!(" headers:{headers}") };
                writeln!(out, "  ->{target} key={} value={}{headers}", show(&output.key), show(&output.value))?;
            }
            Ok(())
        }
        Err(e) => {
            let kind = if e.retryable { "retryable" } else { "fatal" };
            writeln!(out, "offset {}: error ({kind}): {}", record.offset, e.message)
        }
    }
}

fn report_batch_error(
    out: &mut impl Write,
    json: bool,
    batch: &[InputRecord],
    error: &BatchError,
) -> std::io::Result<()> {
    let first = batch.first().map_or(0, |r| r.offset);
    let last = batch.last().map_or(0, |r| r.offset);
    if json {
        let line = serde_json::json!({ "offsets": [first, last], "batch_error": error.to_string() });
        return writeln!(out, "{line}");
    }
    if first == last {
        writeln!(out, "offset {first}: batch failed: {error}")
    } else {
        writeln!(out, "offsets {first}..={last}: batch failed: {error}")
    }
}

fn report_effects(out: &mut impl Write, json: bool, effects: &[String]) -> std::io::Result<()> {
    if effects.is_empty() {
        return Ok(());
    }
    if json {
        return writeln!(out, "{}", serde_json::json!({ "cache": effects }));
    }
    for effect in effects {
        writeln!(out, "  cache {effect}")?;
    }
    Ok(())
}

fn report_summary(
    out: &mut impl Write,
    summary: &RunSummary,
    elapsed: Duration,
    cache: &MemoryCache,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} record{}, {} output{}, {} record error{}, {} batch error{} in {:.1} ms",
        summary.records,
        plural(summary.records),
        summary.outputs,
        plural(summary.outputs),
        summary.record_errors,
        plural(summary.record_errors),
        summary.batch_errors,
        plural(summary.batch_errors),
        elapsed.as_secs_f64() * 1000.0
    )?;
    let entries = cache.snapshot();
    if !entries.is_empty() {
        writeln!(out, "cache now holds {} key{}:", entries.len(), plural(entries.len()))?;
        for (key, value) in entries {
            writeln!(out, "  {} = {}", strip_namespace(&key), show(&Some(value)))?;
        }
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn strip_namespace(key: &str) -> &str {
    key.split_once(':').map_or(key, |(_, rest)| rest)
}

/// The in-memory cache, with a note of every call for the report.
#[derive(Default)]
struct RecordingCache {
    inner: MemoryCache,
    effects: Mutex<Vec<String>>,
}

impl RecordingCache {
    fn note(&self, effect: String) {
        self.effects.lock().unwrap_or_else(|p| p.into_inner()).push(effect);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.effects.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn ttl_note(ttl_seconds: Option<u32>) -> String {
    ttl_seconds.map(|t| format!(" ttl={t}s")).unwrap_or_default()
}

fn outcome<T: std::fmt::Debug>(result: &Result<T, CacheError>) -> String {
    match result {
        Ok(value) => format!("{value:?}"),
        Err(e) => format!("failed: {e}"),
    }
}

#[async_trait]
impl CacheBackend for RecordingCache {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let result = self.inner.get(key).await;
        let seen = match &result {
            Ok(Some(v)) => format!("hit {}", show(&Some(v.clone()))),
            Ok(None) => "miss".into(),
            Err(e) => format!("failed: {e}"),
        };
        self.note(format!("get {} -> {seen}", strip_namespace(key)));
        result
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let result = self.inner.get_many(keys).await;
        let hits = result.as_ref().map_or(0, |values| values.iter().flatten().count());
        self.note(format!("get-many of {} keys -> {hits} hits", keys.len()));
        result
    }

    async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let result = self.inner.set(key, value, ttl_seconds).await;
        let shown = show(&Some(value.to_vec()));
        self.note(format!("set {} = {shown}{}", strip_namespace(key), ttl_note(ttl_seconds)));
        result
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let result = self.inner.set_many(entries, ttl_seconds).await;
        self.note(format!("set-many of {} entries{}", entries.len(), ttl_note(ttl_seconds)));
        result
    }

    async fn incr(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        let result = self.inner.incr(key, delta, ttl_seconds).await;
        self.note(format!("incr {} {delta:+}{} -> {}", strip_namespace(key), ttl_note(ttl_seconds), outcome(&result)));
        result
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let result = self.inner.delete(key).await;
        self.note(format!("delete {} -> {}", strip_namespace(key), outcome(&result)));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_shows_each_outputs_headers() {
        let record = InputRecord {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: None,
            value: Some(b"v".to_vec()),
            headers: Vec::new(),
        };
        let output = OutputRecord {
            target: None,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![Header { key: "trace".into(), value: b"abc".to_vec() }],
        };
        let mut out = Vec::new();
        report_record(&mut out, false, &record, &Ok(vec![output])).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("key=\"k\" value=\"v\" headers: trace=\"abc\""), "{text}");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_read_from_base64_fields() {
        let input =
            concat!(r#"{"key_b64": "/wA=", "value_b64": "gIGC"}"#, "\n", r#"{"key": "k", "value": {"n": 1}}"#, "\n");
        let records = read_records(input.as_bytes(), false).unwrap();
        assert_eq!(records[0].key.as_deref(), Some(&[0xff, 0x00][..]));
        assert_eq!(records[0].value.as_deref(), Some(&[0x80, 0x81, 0x82][..]));
        assert_eq!(records[1].value.as_deref(), Some(&br#"{"n":1}"#[..]));
    }

    #[test]
    fn a_base64_field_that_is_malformed_or_doubled_is_refused_with_its_line() {
        let error = read_records(r#"{"value_b64": "not base64!"}"#.as_bytes(), false).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("input line 1") && message.contains("value_b64 is not base64"), "{message}");
        let error = read_records(r#"{"key": "a", "key_b64": "YQ=="}"#.as_bytes(), false).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("either key or key_b64"), "{message}");
    }
}
