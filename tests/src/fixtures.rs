//! Builders for the engine side of a test: engines, instances and records.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice::cache::{Cache, CacheBackend, MemoryCache, Namespace};
use sluice::engine::{Engine, EngineConfig, FunctionContext, FunctionInstance, Limits, Module};
use sluice::record::{Header, InputRecord, OutputRecord};

use crate::guests;

/// An engine with `limits` and no artifact cache.
pub fn engine_with(limits: Limits) -> Engine {
    Engine::new(EngineConfig { limits, artifact_dir: None }).expect("engine")
}

/// An engine with the default limits.
pub fn engine() -> Engine {
    engine_with(Limits::default())
}

/// The built guest `crate_name`, loaded on `engine`.
pub fn load(engine: &Engine, crate_name: &str) -> Module {
    engine.load(&guests::component_bytes(crate_name)).unwrap_or_else(|e| panic!("load {crate_name}: {e}"))
}

/// A context named `name` on `backend` (namespace `test`) with `config`.
pub fn context(name: &str, backend: Arc<dyn CacheBackend>, config: &[(&str, &str)]) -> FunctionContext {
    FunctionContext {
        name: name.into(),
        cache: Cache::new(backend, Namespace::new("test").expect("namespace")),
        config: Arc::new(config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()),
        log_sink: None,
    }
}

/// An instance of guest `crate_name` on a fresh in-memory cache, returned with the cache.
pub fn instance(engine: &Engine, crate_name: &str, config: &[(&str, &str)]) -> (FunctionInstance, MemoryCache) {
    let cache = MemoryCache::new();
    let module = load(engine, crate_name);
    let instance = FunctionInstance::new(engine, &module, context(crate_name, Arc::new(cache.clone()), config));
    (instance, cache)
}

/// A record at `offset` of topic `in`, partition 0, with a key and a text value.
pub fn record(offset: i64, key: &str, value: &str) -> InputRecord {
    InputRecord {
        topic: "in".into(),
        partition: 0,
        offset,
        timestamp_ms: Some(1_700_000_000_000 + offset),
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: vec![Header { key: "source".into(), value: b"test".to_vec() }],
    }
}

/// Records at offsets 0.. with the given values and keys `k0`, `k1`, ...
pub fn records(values: &[&str]) -> Vec<InputRecord> {
    values.iter().enumerate().map(|(i, v)| record(i as i64, &format!("k{i}"), v)).collect()
}

/// An output's key and value as text, for assertions.
pub fn key_value(output: &OutputRecord) -> (String, String) {
    let text = |b: &Option<Vec<u8>>| String::from_utf8(b.clone().unwrap_or_default()).expect("UTF-8");
    (text(&output.key), text(&output.value))
}

/// Everything logged by this test process, captured by a global subscriber installed on first
/// use. Tests look for their own lines (for example by a unique function name), so tests
/// running in parallel do not disturb each other.
pub fn captured_log() -> String {
    let buffer = log_buffer();
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Installs the capturing subscriber (idempotent).
pub fn capture_log() {
    log_buffer();
}

fn log_buffer() -> &'static std::sync::Mutex<Vec<u8>> {
    use std::sync::{Mutex, OnceLock};
    static BUFFER: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        struct Writer(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Writer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Writer(buffer))
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber in tests");
        buffer
    })
}

/// A [`sluice::pipeline::StartOptions::before_batch`] seam that crashes a partition's worker
/// once: it panics before the first batch starting at `offset` or later. The flag says
/// whether it has.
pub fn crash_once_from(offset: i64) -> (sluice::pipeline::BatchHook, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let crashed = Arc::new(AtomicBool::new(false));
    let flag = crashed.clone();
    let hook = Arc::new(move |_: &str, _: i32, first: i64| {
        if first >= offset && !flag.swap(true, Ordering::SeqCst) {
            panic!("injected crash before offset {first}");
        }
    });
    (hook, crashed)
}
