//! Hostile guests are contained: each limit trips with a message naming it, only the batch at
//! fault fails, the instance is rebuilt for the next batch, and other workers carry on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice::cache::{CacheBackend, CacheError, MemoryCache};
use sluice::engine::{BatchError, Engine, FunctionInstance, Limits};
use sluice_tests::fixtures::{capture_log, captured_log, context, engine_with, instance, load, record, records};

/// Limits small enough to trip quickly.
fn tight() -> Limits {
    Limits {
        max_cpu_per_call: Duration::from_millis(200),
        call_timeout: Duration::from_secs(5),
        max_memory_bytes: 32 * 1024 * 1024,
        max_outputs_per_batch: 100_000,
        ..Limits::default()
    }
}

/// Sends `value` to the hostile guest, expects a batch error, then shows that the same
/// instance processes an ordinary record afterwards.
async fn contained(engine: &Engine, value: &str) -> BatchError {
    let (mut hostile, _) = instance(engine, "hostile", &[]);
    let error = hostile.process(&records(&[value])).await.expect_err("the hostile record must fail its batch");
    let after = hostile.process(&records(&["ordinary"])).await.expect("a fresh instance serves the next batch");
    assert_eq!(after[0].as_ref().unwrap()[0].value, Some(b"ordinary".to_vec()));
    error
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_cpu_limit() {
    let error = contained(&engine_with(tight()), "loop").await;
    assert!(matches!(error, BatchError::CpuLimit { .. }), "{error:?}");
    assert!(error.to_string().contains("CPU time"), "{error}");
}

#[tokio::test]
async fn memory_bomb_is_stopped_by_the_memory_limit() {
    let error = contained(&engine_with(tight()), "grow").await;
    let BatchError::MemoryLimit { desired, limit, .. } = error else { panic!("{error:?}") };
    assert_eq!(limit, 32 * 1024 * 1024);
    assert!(desired > limit);
}

#[tokio::test]
async fn unbounded_recursion_is_stopped_as_a_stack_overflow() {
    let error = contained(&engine_with(tight()), "recurse").await;
    assert!(matches!(error, BatchError::StackOverflow { .. }), "{error:?}");
}

#[tokio::test]
async fn guest_panic_fails_the_batch_with_the_panic_message() {
    let error = contained(&engine_with(tight()), "panic").await;
    assert!(matches!(error, BatchError::Trap { .. }), "{error:?}");
    assert!(error.to_string().contains("poison record at offset 0"), "{error}");
}

/// [`tight`] with the default memory limit: a guest holds a batch's outputs and their copy in
/// the results at the end of a call, so outputs over the output limits would reach a 32 MiB
/// memory limit first.
fn tight_outputs() -> Limits {
    Limits { max_memory_bytes: Limits::default().max_memory_bytes, ..tight() }
}

#[tokio::test]
async fn huge_output_is_refused_by_the_output_byte_limit() {
    let error = contained(&engine_with(tight_outputs()), "huge").await;
    let BatchError::OutputLimit { what, actual, limit, .. } = error else { panic!("{error:?}") };
    assert_eq!((what, limit), ("bytes", 16 * 1024 * 1024));
    assert_eq!(actual, 20 * 1024 * 1024, "20 values of 1 MiB");
}

#[tokio::test]
async fn too_many_outputs_are_refused_by_the_output_count_limit() {
    let error = contained(&engine_with(tight_outputs()), "many").await;
    let BatchError::OutputLimit { what, actual, limit, .. } = error else { panic!("{error:?}") };
    assert_eq!((what, actual, limit), ("records", 200_000, 100_000));
}

#[tokio::test]
async fn record_errors_fail_only_their_record_and_say_whether_to_retry() {
    let (mut hostile, _) = instance(&engine_with(tight()), "hostile", &[]);
    let results = hostile.process(&records(&["fine", "fail", "retry"])).await.unwrap();
    assert!(results[0].is_ok());
    let fatal = results[1].as_ref().unwrap_err();
    assert!(!fatal.retryable && fatal.message.contains("offset 1"), "{fatal:?}");
    let retryable = results[2].as_ref().unwrap_err();
    assert!(retryable.retryable, "{retryable:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_worker_does_not_stop_other_workers() {
    let engine = engine_with(tight());
    let looping = tokio::spawn({
        let engine = engine.clone();
        async move {
            let (mut hostile, _) = instance(&engine, "hostile", &[]);
            hostile.process(&records(&["loop"])).await
        }
    });
    // While the loop burns its CPU budget, another worker processes many batches.
    let (mut passthrough, _) = instance(&engine, "passthrough", &[]);
    let mut processed = 0;
    while !looping.is_finished() {
        passthrough.process(&records(&["x"; 16])).await.unwrap();
        processed += 16;
        tokio::task::yield_now().await;
    }
    let error = looping.await.unwrap().expect_err("the loop is stopped");
    assert!(matches!(error, BatchError::CpuLimit { .. }), "{error:?}");
    assert!(processed > 0, "the other worker made progress while the loop ran");
}

/// A cache that answers after a long delay, as a backend under stress might.
struct SlowCache(Duration);

#[async_trait]
impl CacheBackend for SlowCache {
    fn kind(&self) -> &'static str {
        "slow"
    }
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, CacheError> {
        tokio::time::sleep(self.0).await;
        Ok(None)
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        tokio::time::sleep(self.0).await;
        Ok(vec![None; keys.len()])
    }
    async fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), CacheError> {
        tokio::time::sleep(self.0).await;
        Ok(())
    }
    async fn set_many(&self, _: &[(String, Vec<u8>)], _: Option<u32>) -> Result<(), CacheError> {
        tokio::time::sleep(self.0).await;
        Ok(())
    }
    async fn incr(&self, _: &str, delta: i64, _: Option<u32>) -> Result<i64, CacheError> {
        tokio::time::sleep(self.0).await;
        Ok(delta)
    }
    async fn delete(&self, _: &str) -> Result<bool, CacheError> {
        tokio::time::sleep(self.0).await;
        Ok(false)
    }
}

#[tokio::test]
async fn a_slow_host_call_is_cut_by_the_wall_clock_timeout() {
    let limits = Limits { call_timeout: Duration::from_millis(300), ..tight() };
    let engine = engine_with(limits);
    let module = load(&engine, "word-count");
    let slow = Arc::new(SlowCache(Duration::from_secs(30)));
    let mut function = FunctionInstance::new(&engine, &module, context("word-count", slow, &[]));
    let error = function.process(&records(&["hello"])).await.expect_err("the call must time out");
    assert!(matches!(error, BatchError::Timeout { limit, .. } if limit == Duration::from_millis(300)), "{error:?}");
    assert!(error.to_string().contains("wall-clock"), "{error}");
}

#[tokio::test]
async fn guest_stdout_and_stderr_go_to_the_log_not_to_the_host_output() {
    capture_log();
    let engine = engine_with(tight());
    let module = load(&engine, "hostile");
    let context = context("stdio-probe", Arc::new(MemoryCache::new()), &[]);
    let mut hostile = FunctionInstance::new(&engine, &module, context);
    let results = hostile.process(&records(&["print"])).await.unwrap();
    assert_eq!(results[0].as_ref().unwrap().len(), 1);

    let log = captured_log();
    let line = |text: &str| {
        log.lines()
            .find(|l| l.contains(text) && l.contains("function=\"stdio-probe\""))
            .unwrap_or_else(|| panic!("{text:?} from stdio-probe not in the log:\n{log}"))
            .to_owned()
    };
    assert!(line("hello from stdout").contains("INFO"));
    assert!(line("hello from stderr").contains("WARN"));
}

#[tokio::test]
async fn a_guest_sees_no_environment_arguments_or_files() {
    // The runtime's own environment, arguments and files must not leak into guests.
    let (mut hostile, _) = instance(&engine_with(tight()), "hostile", &[]);
    let results = hostile.process(&records(&["probe"])).await.unwrap();
    let probe = String::from_utf8(results[0].as_ref().unwrap()[0].value.clone().unwrap()).unwrap();
    assert!(probe.starts_with("env=0 args=0 fs=denied"), "{probe}");
}

#[tokio::test]
async fn a_leaking_instance_is_retired_before_its_memory_limit_and_no_call_fails() {
    // `leak` keeps 1 MiB per record for the instance's life: 40 calls would need 40 MiB.
    let limits = Limits { max_memory_bytes: 16 << 20, ..Limits::default() };
    let engine = engine_with(limits.clone());
    let (mut function, _) = instance(&engine, "hostile", &[]);
    for offset in 0..40 {
        let result = function.process(&[record(offset, "k", "leak")]).await;
        assert!(result.is_ok(), "call {offset}: {result:?}");
    }
    // Each instance lives until its memory passes 3/4 of the limit (12 MiB), then the next
    // call gets a fresh one: no call ever reaches the limit.
    assert_eq!(limits.retire_at_memory_bytes(), 12 << 20);
    assert!(function.retired() >= 3, "retired {} times", function.retired());
    assert_eq!(function.rebuilds(), 0, "no call failed, so nothing was rebuilt");
}
