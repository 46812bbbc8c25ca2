//! A cache server that goes away makes calls fail fast with `unavailable` (never hang), and the
//! same backend works again once the server is back, without being rebuilt. Also: connecting to
//! a server that is not there, and a Redis URL's password and database.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sluice::cache::{self, Cache, CacheBackend, CacheError, Namespace};
use sluice_tests::servers::{MemcachedServer, RedisServer};

/// The per-call deadline the tests configure.
const TIMEOUT: &str = "timeout_ms=300&connect_timeout_ms=300";

/// Far longer than any call may take: only a hang trips it (this is not a speed check).
const HANG: Duration = Duration::from_secs(20);

/// A Redis or Memcached server the tests can take down.
enum Server {
    Redis(RedisServer),
    Memcached(MemcachedServer),
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::Redis(server) => format!("{}?{TIMEOUT}", server.url()),
            Server::Memcached(server) => format!("{}?{TIMEOUT}", server.url()),
        }
    }

    fn stop(&mut self) {
        match self {
            Server::Redis(server) => server.stop(),
            Server::Memcached(server) => server.stop(),
        }
    }

    fn restart(&mut self) {
        match self {
            Server::Redis(server) => server.restart(),
            Server::Memcached(server) => server.restart(),
        }
    }

    fn pause(&self) {
        match self {
            Server::Redis(server) => server.pause(),
            Server::Memcached(server) => server.pause(),
        }
    }

    fn resume(&self) {
        match self {
            Server::Redis(server) => server.resume(),
            Server::Memcached(server) => server.resume(),
        }
    }
}

async fn connected(server: &Server) -> (Arc<dyn CacheBackend>, Cache) {
    let backend = cache::connect(&server.url()).await.expect("connect");
    let cache = Cache::new(Arc::clone(&backend), Namespace::new("resilience").unwrap());
    (backend, cache)
}

/// Awaits `call`, failing the test if it hangs.
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, call).await.unwrap_or_else(|_| panic!("{what} hung"))
}

/// Every kind of call, each expected to fail with `unavailable`; returns how many were made.
async fn every_call_is_unavailable(cache: &Cache) -> u64 {
    let results: Vec<(&str, Result<(), CacheError>)> = vec![
        ("get", bounded("get", cache.get("k")).await.map(drop)),
        ("get-many", bounded("get-many", cache.get_many(&["k".into(), "j".into()])).await.map(drop)),
        ("set", bounded("set", cache.set("k", b"v", Some(60))).await),
        ("set-many", bounded("set-many", cache.set_many(&[("k".into(), b"v".to_vec())], None)).await),
        ("incr", bounded("incr", cache.incr("n", 1, None)).await.map(drop)),
        ("incr negative", bounded("incr", cache.incr("n", -1, None)).await.map(drop)),
        (
            "incr-many",
            bounded("incr-many", cache.incr_many(&[("n".into(), 1), ("m".into(), -1)], None)).await.map(drop),
        ),
        ("delete", bounded("delete", cache.delete("k")).await.map(drop)),
    ];
    for (call, result) in &results {
        assert!(matches!(result, Err(CacheError::Unavailable(_))), "{call} while the server is away: {result:?}");
    }
    results.len() as u64
}

/// Every kind of call works, on a server that holds nothing yet.
async fn every_call_works(cache: &Cache) {
    assert_eq!(bounded("get", cache.get("k")).await, Ok(None));
    assert_eq!(bounded("set", cache.set("k", b"v", None)).await, Ok(()));
    assert_eq!(
        bounded("get-many", cache.get_many(&["k".into(), "j".into()])).await,
        Ok(vec![Some(b"v".to_vec()), None])
    );
    assert_eq!(bounded("set-many", cache.set_many(&[("j".into(), b"w".to_vec())], None)).await, Ok(()));
    assert_eq!(bounded("incr", cache.incr("n", 2, None)).await, Ok(2));
    assert_eq!(bounded("incr", cache.incr("n", -5, None)).await, Ok(-3));
    assert_eq!(bounded("incr-many", cache.incr_many(&[("n".into(), 1), ("m".into(), 1)], None)).await, Ok(vec![-2, 1]));
    assert_eq!(bounded("delete", cache.delete("k")).await, Ok(true));
}

async fn outage_then_recovery(mut server: Server) {
    let (_backend, cache) = connected(&server).await;
    every_call_works(&cache).await;

    server.stop();
    let calls = every_call_is_unavailable(&cache).await;
    let stats = cache.stats().snapshot();
    assert_eq!(stats.unavailable, calls);
    assert_eq!(stats.connection_errors, calls, "a stopped server refuses connections: {stats:?}");

    server.restart();
    every_call_works(&cache).await;
    assert_eq!(cache.stats().snapshot().unavailable, calls, "no call failed after the restart");
}

async fn pause_then_resume(server: Server) {
    let (_backend, cache) = connected(&server).await;
    cache.set("k", b"v", None).await.unwrap();

    server.pause();
    let result = bounded("get", cache.get("k")).await;
    assert!(matches!(&result, Err(e) if e.is_timeout()), "get from a frozen server: {result:?}");
    let result = bounded("incr", cache.incr("n", 1, None)).await;
    assert!(matches!(&result, Err(e) if e.is_timeout()), "incr on a frozen server: {result:?}");
    let stats = cache.stats().snapshot();
    assert_eq!((stats.unavailable, stats.timeouts, stats.connection_errors), (2, 2, 0), "{stats:?}");
    assert_eq!(stats.latency.count, 3);

    server.resume();
    assert_eq!(bounded("get", cache.get("k")).await, Ok(Some(b"v".to_vec())));
    // The timed-out incr reached the server's socket, so the server may have applied it once it
    // ran again: a timeout leaves a write's outcome unknown, which at-least-once retries absorb.
    let after = bounded("incr", cache.incr("n", 1, None)).await;
    assert!(matches!(after, Ok(1 | 2)), "{after:?}");
}

#[tokio::test]
async fn redis_calls_fail_fast_with_unavailable_while_the_server_is_down_and_work_again_after_it_restarts() {
    outage_then_recovery(Server::Redis(RedisServer::start())).await;
}

#[tokio::test]
async fn memcached_calls_fail_fast_with_unavailable_while_the_server_is_down_and_work_again_after_it_restarts() {
    outage_then_recovery(Server::Memcached(MemcachedServer::start())).await;
}

#[tokio::test]
async fn redis_calls_to_a_frozen_server_time_out_as_unavailable_and_work_again_when_it_resumes() {
    pause_then_resume(Server::Redis(RedisServer::start())).await;
}

#[tokio::test]
async fn memcached_calls_to_a_frozen_server_time_out_as_unavailable_and_work_again_when_it_resumes() {
    pause_then_resume(Server::Memcached(MemcachedServer::start())).await;
}

#[tokio::test]
async fn one_memcached_server_down_fails_only_the_keys_it_holds() {
    let first = MemcachedServer::start();
    let mut second = MemcachedServer::start();
    let url = format!("memcache://{},{}?{TIMEOUT}", first.address(), second.address());
    let backend = cache::connect(&url).await.expect("connect");
    let cache = Cache::new(backend, Namespace::new("spread").unwrap());
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        cache.set(key, key.as_bytes(), None).await.unwrap();
    }

    second.stop();
    let mut kept = 0;
    for key in &keys {
        match bounded("get", cache.get(key)).await {
            Ok(value) => {
                assert_eq!(value.as_deref(), Some(key.as_bytes()));
                kept += 1;
            }
            Err(error) => assert!(error.is_unavailable(), "{error:?}"),
        }
    }
    assert!(0 < kept && kept < keys.len(), "rendezvous hashing put {kept} of {} keys on the live server", keys.len());
    let result = bounded("get-many", cache.get_many(&keys)).await;
    assert!(matches!(result, Err(CacheError::Unavailable(_))), "a batch touching the stopped server fails: {result:?}");

    second.restart();
    let values = bounded("get-many", cache.get_many(&keys)).await.expect("both servers answer again");
    let found = values.iter().filter(|value| value.is_some()).count();
    assert_eq!(found, kept, "the live server kept its keys; the restarted one is empty");
}

#[tokio::test]
async fn connecting_to_a_server_that_is_not_there_is_unavailable_and_names_it() {
    let mut redis = RedisServer::start();
    let mut memcached = MemcachedServer::start();
    let (redis_url, memcached_url) = (redis.url(), memcached.url());
    redis.stop();
    memcached.stop();
    for url in [redis_url, memcached_url] {
        let error = bounded("connect", cache::connect(&url)).await.map(|_| ()).expect_err("nothing listens there");
        let address = url.split("://").nth(1).unwrap();
        assert!(error.is_unavailable() && error.to_string().contains(address), "{url}: {error}");
    }
}

#[tokio::test]
async fn redis_urls_choose_the_database_and_carry_the_password() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret:@"]);
    let base = format!("127.0.0.1:{}", server.port());
    let wrong = bounded("connect", cache::connect(&format!("redis://:nope@{base}"))).await.map(drop);
    assert!(matches!(&wrong, Err(CacheError::Other(m)) if !m.contains("nope")), "{wrong:?}");
    let missing = bounded("connect", cache::connect(&format!("redis://{base}"))).await.map(drop);
    assert!(missing.is_err(), "no password: {missing:?}");

    let db3 = cache::connect(&format!("redis://:s3cret%3A%40@{base}/3")).await.expect("connect to db 3");
    let db0 = cache::connect(&format!("redis://default:s3cret%3A%40@{base}")).await.expect("connect to db 0");
    let (in3, in0) = (Cache::new(db3, Namespace::new("ns").unwrap()), Cache::new(db0, Namespace::new("ns").unwrap()));
    in3.set("k", b"three", None).await.unwrap();
    assert_eq!(in0.get("k").await, Ok(None), "database 0 does not see database 3");
    assert_eq!(in3.get("k").await, Ok(Some(b"three".to_vec())));
}
