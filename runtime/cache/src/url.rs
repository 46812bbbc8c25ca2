//! Cache URLs: which backend a pipeline's cache lives in, and its settings, in one string.
//! [`CacheUrl`] documents the forms and the settings.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "memcached")]
use super::MemcachedCache;
#[cfg(feature = "redis")]
use super::RedisCache;
use super::{CacheBackend, CacheError, MemcachedConfig, MemoryCache, RedisConfig, RedisTls};

/// A parsed cache URL: which backend a pipeline's cache lives in, and its settings.
///
/// | form | backend |
/// |---|---|
/// | `memory://` | [`MemoryCache`], in this process |
/// | `redis://[user[:password]@]host[:port][/db]` | [`RedisCache`], port 6379, database 0 by default |
/// | `rediss://...[?ca_file=PATH]` | Redis over TLS; the server certificate is verified against `ca_file` or the system's roots |
/// | `memcache://host[:port][,host[:port]...]` (or `memcached://`) | [`MemcachedCache`], port 11211 by default |
///
/// Settings go in the query string; each has a default and a range, and a URL with an unknown
/// setting, a setting that does not apply to its backend or a value out of range is refused
/// with a message naming it:
///
/// | setting | backends | default | range |
/// |---|---|---|---|
/// | `timeout_ms`: deadline of each call | redis, memcache | 500 | 1 to 60,000 |
/// | `connect_timeout_ms`: deadline of a connection attempt | redis, memcache | 500 | 1 to 60,000 |
/// | `pool_size`: connections per server | memcache | 8 | 1 to 1,024 |
/// | `capacity_mb`: bound on keys plus values | memory | 256 | 1 to 1,048,576 |
///
/// A user name or password in a `redis://` URL is percent-decoded (`%40` for `@`), and so is
/// `ca_file`. The user information ends at the URL's last `@`, so a password may hold `/`, `?`
/// or `@` as they are. User information never appears in an error message, in the URL shown
/// back ([`fmt::Display`]) or anywhere else the URL leaves the process ([`redact_url`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUrl {
    /// `memory://`: a cache in this process, holding at most `capacity_bytes`.
    Memory {
        /// Bound on keys plus values.
        capacity_bytes: u64,
    },
    /// `redis://`: a Redis server.
    Redis(RedisConfig),
    /// `memcache://`: one or more memcached servers.
    Memcached(MemcachedConfig),
}

/// Connects to the cache at `url` (see [`CacheUrl`] for the forms): the backend that a
/// pipeline's [`super::Cache`] handles share.
pub async fn connect(url: &str) -> Result<Arc<dyn CacheBackend>, CacheError> {
    CacheUrl::parse(url)?.connect().await
}

/// Longest `timeout_ms` (and `connect_timeout_ms`) a cache URL may set: one minute.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Most connections `pool_size` may ask for per Memcached server.
pub const MAX_POOL_SIZE: u64 = 1_024;
/// Largest `capacity_mb` of the in-memory cache: 1 TiB.
pub const MAX_CAPACITY_MB: u64 = 1_048_576;

impl CacheUrl {
    /// Parses `url` (see [`CacheUrl`] for the forms), or says precisely what is wrong with it
    /// ([`CacheError::InvalidArgument`]).
    pub fn parse(url: &str) -> Result<CacheUrl, CacheError> {
        let invalid =
            |problem: String| CacheError::InvalidArgument(format!("cache URL {:?}: {problem}", redact_url(url)));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(invalid("no scheme; use memory://, redis://HOST:PORT or memcache://HOST:PORT".into()));
        };
        if rest.contains('#') {
            return Err(invalid("a fragment ('#...') is not allowed".into()));
        }
        let unknown_scheme = |scheme: &str| {
            invalid(format!("unknown scheme {scheme:?}; use memory://, redis://HOST:PORT or memcache://HOST:PORT"))
        };
        let scheme_name = scheme.to_ascii_lowercase();
        if !matches!(scheme_name.as_str(), "memory" | "redis" | "rediss" | "memcache" | "memcached") {
            return Err(unknown_scheme(&scheme_name));
        }
        // The user information of a Redis URL ends at its last '@', so that a password may
        // hold '/', '?' and '@' unencoded. Other URLs take none, and are refused before any
        // part of them is quoted in a message.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) if scheme_name.starts_with("redis") => (Some(userinfo), rest),
            Some(_) => {
                return Err(invalid(format!(
                    "{scheme_name}:// takes no user name or password (only redis:// and rediss:// do)"
                )));
            }
            None => (None, rest),
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut settings = Settings::parse(query).map_err(&invalid)?;
        let parsed = match scheme_name.as_str() {
            "memory" => {
                if !location.is_empty() && location != "/" {
                    return Err(invalid(format!("memory:// takes no host or path, found {location:?}")));
                }
                let capacity_mb = settings.take("capacity_mb", 1, MAX_CAPACITY_MB).map_err(&invalid)?;
                let capacity_bytes = capacity_mb.map_or(MemoryCache::DEFAULT_CAPACITY_BYTES, |mb| mb * 1024 * 1024);
                CacheUrl::Memory { capacity_bytes }
            }
            "redis" | "rediss" => {
                let mut config = parse_redis(userinfo, location).map_err(&invalid)?;
                if scheme.eq_ignore_ascii_case("rediss") {
                    let ca_file = settings
                        .0
                        .remove("ca_file")
                        .map(|path| percent_decode(&path).map_err(|e| invalid(format!("ca_file: {e}"))))
                        .transpose()?
                        .map(std::path::PathBuf::from);
                    config.tls = Some(RedisTls { ca_file });
                }
                if let Some(ms) = settings.take("timeout_ms", 1, MAX_TIMEOUT_MS).map_err(&invalid)? {
                    config.timeout = Duration::from_millis(ms);
                }
                if let Some(ms) = settings.take("connect_timeout_ms", 1, MAX_TIMEOUT_MS).map_err(&invalid)? {
                    config.connect_timeout = Duration::from_millis(ms);
                }
                CacheUrl::Redis(config)
            }
            "memcache" | "memcached" => {
                let mut config = parse_memcached(location).map_err(&invalid)?;
                if let Some(ms) = settings.take("timeout_ms", 1, MAX_TIMEOUT_MS).map_err(&invalid)? {
                    config.timeout = Duration::from_millis(ms);
                }
                if let Some(ms) = settings.take("connect_timeout_ms", 1, MAX_TIMEOUT_MS).map_err(&invalid)? {
                    config.connect_timeout = Duration::from_millis(ms);
                }
                if let Some(size) = settings.take("pool_size", 1, MAX_POOL_SIZE).map_err(&invalid)? {
                    config.pool_size = usize::try_from(size).unwrap_or(usize::MAX);
                }
                CacheUrl::Memcached(config)
            }
            other => return Err(unknown_scheme(other)),
        };
        settings.finish(scheme).map_err(&invalid)?;
        Ok(parsed)
    }

    /// The backend's kind, as [`CacheBackend::kind`] will name it.
    pub fn kind(&self) -> &'static str {
        match self {
            CacheUrl::Memory { .. } => "memory",
            CacheUrl::Redis(_) => "redis",
            CacheUrl::Memcached(_) => "memcached",
        }
    }

    /// Builds the backend; Redis and Memcached check that their servers answer.
    pub async fn connect(&self) -> Result<Arc<dyn CacheBackend>, CacheError> {
        Ok(match self {
            CacheUrl::Memory { capacity_bytes } => Arc::new(MemoryCache::with_capacity(*capacity_bytes)),
            #[cfg(feature = "redis")]
            CacheUrl::Redis(config) => Arc::new(RedisCache::connect(config).await?),
            #[cfg(feature = "memcached")]
            CacheUrl::Memcached(config) => Arc::new(MemcachedCache::connect(config).await?),
            #[cfg(not(feature = "redis"))]
            CacheUrl::Redis(_) => return Err(missing_backend("redis")),
            #[cfg(not(feature = "memcached"))]
            CacheUrl::Memcached(_) => return Err(missing_backend("memcached")),
        })
    }
}

/// The error of a URL whose backend this build left out.
#[cfg(not(all(feature = "redis", feature = "memcached")))]
fn missing_backend(feature: &str) -> CacheError {
    CacheError::InvalidArgument(format!(
        "this build of Sluice has no {feature} backend (cargo feature `{feature}` of sluice-cache)"
    ))
}

impl FromStr for CacheUrl {
    type Err = CacheError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        CacheUrl::parse(url)
    }
}

impl fmt::Display for CacheUrl {
    /// The URL back, with any user info hidden (as [`redact_url`] hides it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheUrl::Memory { capacity_bytes } => {
                write!(f, "memory://?capacity_mb={}", capacity_bytes / (1024 * 1024))
            }
            CacheUrl::Redis(config) => {
                write!(f, "{}://", if config.tls.is_some() { "rediss" } else { "redis" })?;
                if config.username.is_some() || config.password.is_some() {
                    write!(f, "***@")?;
                }
                write!(
                    f,
                    "{}/{}?timeout_ms={}&connect_timeout_ms={}",
                    config.address(),
                    config.db,
                    config.timeout.as_millis(),
                    config.connect_timeout.as_millis()
                )?;
                if let Some(RedisTls { ca_file: Some(path) }) = &config.tls {
                    write!(f, "&ca_file={}", percent_encode(&path.to_string_lossy(), b"/"))?;
                }
                Ok(())
            }
            CacheUrl::Memcached(config) => write!(
                f,
                "memcache://{}?timeout_ms={}&connect_timeout_ms={}&pool_size={}",
                config.servers.join(","),
                config.timeout.as_millis(),
                config.connect_timeout.as_millis(),
                config.pool_size
            ),
        }
    }
}

/// The query string's settings, taken one by one so that what is left over can be refused.
struct Settings(BTreeMap<String, String>);

impl Settings {
    fn parse(query: &str) -> Result<Self, String> {
        let mut settings = BTreeMap::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(format!("setting {pair:?} has no value; write {pair}=VALUE"));
            };
            if settings.insert(name.to_owned(), value.to_owned()).is_some() {
                return Err(format!("setting {name:?} is given twice"));
            }
        }
        Ok(Settings(settings))
    }

    /// The whole-number setting `name`, checked to be within `min..=max`.
    fn take(&mut self, name: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
        let Some(raw) = self.0.remove(name) else { return Ok(None) };
        match raw.parse::<u64>() {
            Ok(value) if (min..=max).contains(&value) => Ok(Some(value)),
            _ => Err(format!("{name}={raw} is out of range: use a whole number from {min} to {max}")),
        }
    }

    fn finish(self, scheme: &str) -> Result<(), String> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(name) => Err(format!(
                "unknown setting {name:?} for {scheme}://; settings are timeout_ms and connect_timeout_ms \
                 (redis, memcache), ca_file (rediss), pool_size (memcache) and capacity_mb (memory)"
            )),
        }
    }
}

fn parse_redis(userinfo: Option<&str>, location: &str) -> Result<RedisConfig, String> {
    let (host_port, path) = location.split_once('/').unwrap_or((location, ""));
    let (host, port) = parse_host_port(host_port, RedisConfig::DEFAULT_PORT)?;
    let mut config = RedisConfig::new(host, port);
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        let user = percent_decode(user).map_err(|e| format!("user name: {e}"))?;
        config.username = (!user.is_empty()).then_some(user);
        config.password = password.map(|p| percent_decode(p).map_err(|e| format!("password: {e}"))).transpose()?;
    }
    if !path.is_empty() {
        config.db = path
            .parse::<u32>()
            .map_err(|_| format!("database {path:?} is not a number; write redis://HOST:PORT/DB with DB like 0 or 3"))?
            .into();
    }
    Ok(config)
}

fn parse_memcached(location: &str) -> Result<MemcachedConfig, String> {
    let location = location.strip_suffix('/').unwrap_or(location);
    if location.contains('/') {
        return Err("memcache:// takes no path; list servers as memcache://HOST:PORT,HOST:PORT".into());
    }
    let mut servers = Vec::new();
    for server in location.split(',') {
        let (host, port) = parse_host_port(server, MemcachedConfig::DEFAULT_PORT)?;
        let address = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        if servers.contains(&address) {
            return Err(format!("server {address} is listed twice"));
        }
        servers.push(address);
    }
    Ok(MemcachedConfig::new(servers))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    if text.is_empty() {
        return Err("no host; write HOST or HOST:PORT".into());
    }
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(|| format!("host {text:?} has no closing ']'"))?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(|| format!("unexpected {after:?} after [{host}]"))?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in {text:?}"));
    }
    if let Some(c) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))) {
        return Err(format!("host {host:?} contains {c:?}"));
    }
    let port = match port {
        None => default_port,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("port {port:?} of {host} is not a number from 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte =
                hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("a '%' is not followed by two hex digits")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decodes to invalid UTF-8".to_owned())
}

/// `text` with every byte but ASCII letters, digits, `-._~` and `keep` percent-encoded.
fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || keep.contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `url` as it may leave the process (in an API answer, an error, a log line): any user info
/// (a user name, a password, or a password given where the user name goes) replaced by `***`.
///
/// This is the one redaction of cache URLs; only the stored spec on disk keeps the URL whole.
/// It works on any text, parsed or not: without `://` the whole text is taken, so a URL with
/// its scheme forgotten is hidden too; everything before the last `@` is user info, as the
/// parser reads it, so a password holding `/`, `?` or `@` is hidden whole.
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // The user info ends at the last '@' (a password may hold '/', '?' or '@').
    match rest.rfind('@') {
        Some(at) => format!("{prefix}***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn error(url: &str) -> String {
        match CacheUrl::parse(url) {
            Err(CacheError::InvalidArgument(message)) => message,
            other => panic!("{url}: expected an invalid-argument error, got {other:?}"),
        }
    }

    #[test]
    fn every_backend_parses_with_its_defaults() {
        assert_eq!(
            CacheUrl::parse("memory://").unwrap(),
            CacheUrl::Memory { capacity_bytes: MemoryCache::DEFAULT_CAPACITY_BYTES }
        );
        assert_eq!(CacheUrl::parse("redis://127.0.0.1").unwrap(), CacheUrl::Redis(RedisConfig::new("127.0.0.1", 6379)));
        assert_eq!(
            CacheUrl::parse("memcache://cache-1").unwrap(),
            CacheUrl::Memcached(MemcachedConfig::new(["cache-1:11211"]))
        );
    }

    #[test]
    fn redis_urls_carry_credentials_database_and_settings() {
        let CacheUrl::Redis(config) =
            CacheUrl::parse("redis://app:p%40ss:w@10.0.0.5:6380/3?timeout_ms=250&connect_timeout_ms=1000").unwrap()
        else {
            panic!()
        };
        assert_eq!(config.host, "10.0.0.5");
        assert_eq!(config.port, 6380);
        assert_eq!(config.db, 3);
        assert_eq!(config.username.as_deref(), Some("app"));
        assert_eq!(config.password.as_deref(), Some("p@ss:w"));
        assert_eq!(config.timeout, Duration::from_millis(250));
        assert_eq!(config.connect_timeout, Duration::from_secs(1));

        let CacheUrl::Redis(config) = CacheUrl::parse("redis://:secret@[::1]:7000").unwrap() else { panic!() };
        assert_eq!(
            (config.host.as_str(), config.port, config.username, config.password.as_deref()),
            ("::1", 7000, None, Some("secret"))
        );
    }

    #[test]
    fn memcache_urls_list_servers_and_pool_settings() {
        let CacheUrl::Memcached(config) =
            CacheUrl::parse("memcache://a:11211,b,[::1]:11300?pool_size=4&timeout_ms=100").unwrap()
        else {
            panic!()
        };
        assert_eq!(config.servers, ["a:11211", "b:11211", "[::1]:11300"]);
        assert_eq!(config.pool_size, 4);
        assert_eq!(config.timeout, Duration::from_millis(100));
    }

    #[test]
    fn bad_urls_are_refused_with_what_is_wrong() {
        let cases = [
            ("localhost:6379", "no scheme"),
            ("http://x", "unknown scheme \"http\""),
            ("redis://", "no host"),
            ("redis://h:0", "port \"0\" of h is not a number from 1 to 65535"),
            ("redis://h:99999", "port \"99999\""),
            ("redis://h/x", "database \"x\" is not a number"),
            ("redis://h?timeout_ms=0", "timeout_ms=0 is out of range: use a whole number from 1 to 60000"),
            ("redis://h?timeout_ms=fast", "timeout_ms=fast is out of range"),
            ("redis://h?pool_size=4", "unknown setting \"pool_size\" for redis://"),
            ("redis://h?timeout_ms=1&timeout_ms=2", "\"timeout_ms\" is given twice"),
            ("redis://h?verbose", "setting \"verbose\" has no value"),
            ("rediss://h?ca=x", "unknown setting \"ca\" for rediss://"),
            ("memcache://a,,b", "no host"),
            ("memcache://a,a:11211", "server a:11211 is listed twice"),
            ("memcache://u:p@a", "takes no user name or password"),
            ("memcache://a/x", "takes no path"),
            ("memcache://a?pool_size=0", "pool_size=0 is out of range"),
            ("memory://host", "memory:// takes no host or path"),
            ("memory://?capacity_mb=0", "capacity_mb=0 is out of range"),
            ("redis://h?timeout_ms=60001", "timeout_ms=60001 is out of range: use a whole number from 1 to 60000"),
            ("memcache://a?pool_size=1025", "pool_size=1025 is out of range: use a whole number from 1 to 1024"),
            (
                "memory://?capacity_mb=1048577",
                "capacity_mb=1048577 is out of range: use a whole number from 1 to 1048576",
            ),
            ("redis://h w", "host \"h w\" contains ' '"),
        ];
        for (url, expected) in cases {
            let message = error(url);
            assert!(message.contains(expected), "{url}: {message:?} does not say {expected:?}");
        }
    }

    #[test]
    fn a_url_with_a_user_name_is_shown_back_as_one_that_parses() {
        // Found by fuzzing: the name was shown as it was decoded, `redis://%@a...`, which does
        // not parse. User info is now hidden whole.
        let url = CacheUrl::parse("redis://%25@a?").unwrap();
        let shown = url.to_string();
        assert!(shown.starts_with("redis://***@a:6379/0?"), "{shown}");
        let (CacheUrl::Redis(config), CacheUrl::Redis(again)) = (url, CacheUrl::parse(&shown).unwrap()) else {
            panic!()
        };
        assert_eq!(RedisConfig { username: config.username.clone(), ..again }, config);
    }

    #[test]
    fn a_rediss_url_is_shown_back_as_rediss_with_its_ca_file() {
        // Found by fuzzing: TLS and the CA file were lost, `redis://:***@[::1]:7000/0?...`.
        let url = CacheUrl::parse("rediss://:secret@[::1]:7000?ca_file=/etc/ca%40x%26y.pem").unwrap();
        let CacheUrl::Redis(config) = &url else { panic!() };
        assert_eq!(config.tls, Some(RedisTls { ca_file: Some("/etc/ca@x&y.pem".into()) }));
        let shown = url.to_string();
        assert!(shown.starts_with("rediss://***@[::1]:7000/0?") && shown.ends_with("&ca_file=/etc/ca%40x%26y.pem"));
        let CacheUrl::Redis(again) = CacheUrl::parse(&shown).unwrap() else { panic!() };
        assert_eq!(RedisConfig { username: None, password: config.password.clone(), ..again }, *config);
    }

    #[test]
    fn a_password_may_hold_slash_question_mark_and_at_unencoded() {
        let CacheUrl::Redis(config) = CacheUrl::parse("redis://u:pa/ss?w@rd@h:7/2?timeout_ms=9").unwrap() else {
            panic!()
        };
        assert_eq!(
            (config.password.as_deref(), config.host.as_str(), config.port, config.db),
            (Some("pa/ss?w@rd"), "h", 7, 2)
        );
        assert_eq!(config.timeout, Duration::from_millis(9));
        let message = error("redis://u:pa/ss?w@rd@h:x");
        assert!(!message.contains("ss?w") && message.contains("redis://***@h:x"), "{message}");
    }

    #[test]
    fn a_url_that_takes_no_password_is_refused_without_quoting_it() {
        // Found by fuzzing: the refusal quoted the password (`found ":AaAaa0a00AAaaaAA@"`).
        for url in ["memory://:AaAaa0a00AAaaaAA@", "memcache://:aaA0aaaaaAaAA00A?=@", "memory://?:AaAaa0a00AAaaaAA@"] {
            let message = error(url);
            assert!(!message.contains("aaaa") && !message.contains("Aaa0"), "{message}");
            assert!(message.contains("takes no user name or password"), "{message}");
        }
    }

    #[test]
    fn passwords_never_appear_in_errors_or_display() {
        let message = error("redis://app:hunter2@h:1/x");
        assert!(!message.contains("hunter2") && !message.contains("app"), "{message}");
        assert!(message.contains("redis://***@h:1/x"), "{message}");
        let shown = CacheUrl::parse("redis://app:hunter2@h").unwrap().to_string();
        assert!(!shown.contains("hunter2") && shown.starts_with("redis://***@h:6379/"), "{shown}");
        let message = error("app:hunter2@h:1");
        assert!(!message.contains("hunter2"), "without a scheme too: {message}");
    }

    #[test]
    fn redaction_hides_all_user_info_and_keeps_the_rest() {
        for (url, shown) in [
            ("redis://app:hunter2@h:6380/2?timeout_ms=5", "redis://***@h:6380/2?timeout_ms=5"),
            ("rediss://:hunter2@h", "rediss://***@h"),
            ("redis://hunter2@h", "redis://***@h"),
            ("redis://a:p@ss@h/0", "redis://***@h/0"),
            ("app:hunter2@h", "***@h"),
            // As the parser reads it: everything before the last '@' is user info.
            ("redis://h:6379/0?ca_file=/a@b", "redis://***@b"),
            ("memory://", "memory://"),
            ("memcache://a:1,b:2", "memcache://a:1,b:2"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
