//! Fuzzing the cache URL parser: it takes text from operators and from the admin API.
//!
//! Properties: no text makes it panic; a refusal is an `invalid-argument` naming the URL and
//! never showing a password; a URL that parses is shown back ([`fmt::Display`]) as a URL that
//! parses to the same settings, with the password hidden.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use sluice_fuzzing::{check, mutated};

/// Pieces that make random text look like a cache URL, so that mutations reach deep checks.
const TOKENS: &[&[u8]] = &[
    b"://",
    b"redis",
    b"rediss",
    b"memcache",
    b"memcached",
    b"memory",
    b"@",
    b":",
    b"/",
    b"?",
    b"&",
    b"=",
    b"#",
    b"%",
    b"%40",
    b"%zz",
    b"%f",
    b"[",
    b"]",
    b"[::1]",
    b",",
    b"timeout_ms=",
    b"connect_timeout_ms=",
    b"pool_size=",
    b"capacity_mb=",
    b"ca_file=",
    b"65535",
    b"65536",
    b"0",
    b"18446744073709551616",
    b"\xc3\xa9",
];

/// Valid URLs of every form, the corpus the mutations start from.
const CORPUS: &[&str] = &[
    "memory://",
    "memory://?capacity_mb=64",
    "redis://127.0.0.1",
    "redis://app:p%40ss@10.0.0.5:6380/3?timeout_ms=250&connect_timeout_ms=1000",
    "redis://:secret@[::1]:7000",
    "rediss://cache.example:6380/1?ca_file=/etc/ca.pem&timeout_ms=20",
    "memcache://a:11211,b,[::1]:11300?pool_size=4&timeout_ms=100",
    "memcached://cache-1/",
];

fn refusal(url: &str, result: &Result<CacheUrl, CacheError>) -> Result<(), TestCaseError> {
    if let Err(error) = result {
        let CacheError::InvalidArgument(message) = error else {
            return Err(TestCaseError::fail(format!("{url:?} was refused as {error:?}, not invalid-argument")));
        };
        prop_assert!(message.starts_with("cache URL \""), "{url:?}: {message:?} does not name the URL");
        prop_assert!(
            message.len() > "cache URL \"\": ".len() + redact_url(url).len(),
            "{url:?}: {message:?} says nothing"
        );
    }
    Ok(())
}

/// The settings of `url` with its user info taken out, to compare a URL with the one it is
/// shown as.
fn without_user_info(url: &CacheUrl) -> CacheUrl {
    match url {
        CacheUrl::Redis(config) => CacheUrl::Redis(RedisConfig { username: None, password: None, ..config.clone() }),
        other => other.clone(),
    }
}

/// A URL that parses is shown back as one that parses to the same settings, its user info (if
/// any) hidden as `***`.
fn shown_back_the_same(url: &str, parsed: &CacheUrl) -> Result<(), TestCaseError> {
    let shown = parsed.to_string();
    let reparsed = CacheUrl::parse(&shown)
        .map_err(|e| TestCaseError::fail(format!("{url:?} is shown as {shown:?}, which does not parse: {e}")))?;
    prop_assert_eq!(without_user_info(&reparsed), without_user_info(parsed), "{:?} is shown as {:?}", url, shown);
    if let CacheUrl::Redis(RedisConfig { username, password, .. }) = parsed
        && (username.is_some() || password.is_some())
    {
        let CacheUrl::Redis(config) = &reparsed else { unreachable!() };
        prop_assert_eq!(
            (config.username.as_deref(), config.password.as_deref()),
            (Some("***"), None),
            "{:?} is shown as {:?}",
            url,
            shown
        );
    }
    Ok(())
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn any_text_is_parsed_or_refused_with_a_message_naming_the_url() {
    let text = prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop_oneof![any::<u8>().prop_map(|b| vec![b]), prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec)],
            0..24
        )
        .prop_map(|parts| String::from_utf8_lossy(&parts.concat()).into_owned()),
    ];
    check("cache_url_any_text", 512, text, |url| {
        let result = CacheUrl::parse(&url);
        refusal(&url, &result)?;
        if let Ok(parsed) = &result {
            shown_back_the_same(&url, parsed)?;
        }
        Ok(())
    });
}

#[test]
fn mutated_valid_urls_are_parsed_and_shown_back_the_same_or_refused() {
    let urls = prop::sample::select(CORPUS).prop_flat_map(|url| mutated(url.as_bytes().to_vec(), TOKENS));
    check("cache_url_mutated", 512, urls, |bytes| {
        let url = String::from_utf8_lossy(&bytes).into_owned();
        let result = CacheUrl::parse(&url);
        refusal(&url, &result)?;
        if let Ok(parsed) = &result {
            shown_back_the_same(&url, parsed)?;
        }
        Ok(())
    });
}

/// A host as a URL writes it: a name, an IPv4 address or a bracketed IPv6 address.
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9][a-z0-9_.-]{0,20}",
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        "[0-9a-f]{0,4}(:[0-9a-f]{0,4}){1,7}".prop_map(|v6| format!("[{v6}]")),
    ]
}

#[test]
fn every_valid_redis_url_parses_to_its_parts_and_is_shown_back_without_its_password() {
    let parts = (
        prop::bool::ANY,
        host(),
        prop::option::of(1u16..),
        prop::option::of(any::<String>()),
        prop::option::of(any::<String>()),
        prop::option::of(any::<u32>()),
        prop::option::of(1u64..=MAX_TIMEOUT_MS),
        prop::option::of("[a-zA-Z0-9/._-]{1,30}"),
    );
    check("cache_url_redis", 512, parts, |(tls, host, port, user, password, db, timeout, ca_file)| {
        let scheme = if tls { "rediss" } else { "redis" };
        let userinfo = match (&user, &password) {
            (None, None) => String::new(),
            (user, None) => format!("{}@", encode(user.as_deref().unwrap_or(""))),
            (user, Some(password)) => format!("{}:{}@", encode(user.as_deref().unwrap_or("")), encode(password)),
        };
        let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
        let db_text = db.map(|d| format!("/{d}")).unwrap_or_default();
        let mut query = Vec::new();
        if let Some(ms) = timeout {
            query.push(format!("timeout_ms={ms}"));
        }
        if let (true, Some(ca_file)) = (tls, &ca_file) {
            query.push(format!("ca_file={ca_file}"));
        }
        let url = format!("{scheme}://{userinfo}{host}{port_text}{db_text}?{}", query.join("&"));
        let parsed = CacheUrl::parse(&url).map_err(|e| TestCaseError::fail(format!("{url:?} is refused: {e}")))?;
        let CacheUrl::Redis(config) = &parsed else { return Err(TestCaseError::fail(format!("{url:?}: {parsed:?}"))) };
        prop_assert_eq!(&config.host, host.trim_start_matches('[').trim_end_matches(']'));
        prop_assert_eq!(config.port, port.unwrap_or(RedisConfig::DEFAULT_PORT));
        prop_assert_eq!(config.db, i64::from(db.unwrap_or(0)));
        prop_assert_eq!(config.username.as_deref(), user.as_deref().filter(|u| !u.is_empty()));
        prop_assert_eq!(config.password.as_deref(), password.as_deref());
        prop_assert_eq!(config.timeout, timeout.map_or(RedisConfig::DEFAULT_TIMEOUT, Duration::from_millis));
        prop_assert_eq!(config.tls.is_some(), tls);
        if tls {
            prop_assert_eq!(
                config.tls.as_ref().unwrap().ca_file.as_deref(),
                ca_file.as_deref().map(std::path::Path::new)
            );
        }
        shown_back_the_same(&url, &parsed)?;
        Ok(())
    });
}

#[test]
fn a_password_never_appears_in_a_refusal_or_in_the_url_shown_back() {
    // A password of 16 characters (so it cannot be found in the URL by chance), in a URL that
    // may be broken anywhere around it.
    let parts = (
        prop::sample::select(&["redis", "rediss", "memcache", "memory", "http", ""][..]),
        "[a-z]{0,6}",
        "[A-Za-z0-9]{16}",
        "[a-z0-9:/?#@=&%\\[\\]]{0,16}",
        "[a-z0-9:/?#@=&%\\[\\]]{0,16}",
    );
    check("cache_url_password", 512, parts, |(scheme, user, password, before_at, after_at)| {
        let url = format!("{scheme}://{user}:{password}{before_at}@{after_at}");
        match CacheUrl::parse(&url) {
            Ok(parsed) => {
                let shown = parsed.to_string();
                prop_assert!(!shown.contains(&password), "{:?} is shown as {:?}", url, shown);
            }
            Err(error) => {
                let message = error.to_string();
                prop_assert!(!message.contains(&password), "{:?} is refused as {:?}", url, message);
            }
        }
        Ok(())
    });
}

#[test]
fn every_valid_memcache_url_lists_its_servers_and_is_shown_back_the_same() {
    let parts = (
        prop::collection::vec((host(), prop::option::of(1u16..)), 1..5),
        prop::option::of(1u64..=MAX_POOL_SIZE),
        prop::bool::ANY,
    );
    check("cache_url_memcache", 512, parts, |(servers, pool_size, trailing_slash)| {
        let list: Vec<String> = servers
            .iter()
            .map(|(host, port)| format!("{host}{}", port.map(|p| format!(":{p}")).unwrap_or_default()))
            .collect();
        let slash = if trailing_slash { "/" } else { "" };
        let query = pool_size.map(|n| format!("?pool_size={n}")).unwrap_or_default();
        let url = format!("memcache://{}{slash}{query}", list.join(","));
        let mut addresses: Vec<String> = servers
            .iter()
            .map(|(host, port)| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = port.unwrap_or(MemcachedConfig::DEFAULT_PORT);
                if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
            })
            .collect();
        let mut unique = addresses.clone();
        unique.sort();
        unique.dedup();
        match CacheUrl::parse(&url) {
            Ok(parsed) => {
                let CacheUrl::Memcached(config) = &parsed else {
                    return Err(TestCaseError::fail(format!("{parsed:?}")));
                };
                prop_assert_eq!(&config.servers, &addresses);
                prop_assert_eq!(
                    config.pool_size as u64,
                    pool_size.unwrap_or(MemcachedConfig::DEFAULT_POOL_SIZE as u64)
                );
                shown_back_the_same(&url, &parsed)?;
            }
            Err(error) => {
                addresses.sort();
                prop_assert!(unique.len() < addresses.len(), "{:?} is refused: {}", url, error);
                prop_assert!(error.to_string().contains("listed twice"), "{:?} is refused: {}", url, error);
            }
        }
        Ok(())
    });
}
