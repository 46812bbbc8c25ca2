//! The Redis backend: one multiplexed, reconnecting connection shared by every pipeline.
//!
//! Owns the mapping of each cache call onto Redis commands and of Redis failures onto
//! [`CacheError`]. It does not check keys, values or TTLs ([`super::Cache`] did).
//!
//! - `get` is `GET`, `get-many` one `MGET`, `set` is `SET [EX ttl]`, `set-many` one pipeline of
//!   `SET`s, `delete` is `DEL`.
//! - `incr` is `INCRBY`, which gives the signed 64-bit meaning, creates a missing key at 0, keeps
//!   the key's expiry, refuses text that is not a canonical decimal and refuses overflow without
//!   writing anything. A TTL must apply only when the call creates the counter, so with a TTL the
//!   call is the transaction `MULTI; SET key 0 EX ttl NX; INCRBY key delta; EXEC`. `SET .. NX`
//!   creates the counter with its expiry only when it is missing and is a no-op otherwise; inside
//!   `MULTI` nothing runs between the two commands, so a counter cannot expire between them and
//!   come back without a TTL. This was chosen over a Lua script because scripts see integer
//!   replies as Lua numbers (doubles), which lose precision above 2^53, and over
//!   `EXPIRE key ttl NX`, which would also add a TTL to an existing counter that has none.
//!   Without a TTL, the call is a bare `INCRBY`.
//! - `incr-many` is one pipeline (one transaction with a TTL) of the same commands, in order, so a
//!   repeated key sees its earlier increments.
//! - A call's effects ([`CacheBackend::apply`]) are one `MULTI`/`EXEC` transaction of the same
//!   commands (`SET [EX]`, `DEL`, `[SET key 0 EX ttl NX;] INCRBY`), sent in one round trip: no
//!   other client sees part of them, and no other command runs between them. Redis does not roll
//!   a transaction back, so an `INCRBY` refused inside it (a value another writer made not a
//!   number since the call read it) leaves the other effects applied; the refusal is reported.
//!
//! Every call runs under the configured timeout; a call that misses it, or finds the server
//! unreachable, fails with [`CacheError::Unavailable`]. The connection reconnects by itself on
//! the next call after the server comes back.

use std::collections::HashMap;
use std::fmt;
#[cfg(feature = "redis")]
use std::future::Future;
use std::time::Duration;

#[cfg(feature = "redis")]
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
#[cfg(feature = "redis")]
use ::redis::{
    Client, Cmd, ConnectionAddr, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    RedisResult, ServerErrorKind,
};
#[cfg(feature = "redis")]
use async_trait::async_trait;
#[cfg(feature = "redis")]
use tokio::time::Instant;

use super::{CacheBackend, CacheError, Effect, Fence, FencePosition, Fenced};

/// Where and how to reach a Redis server. Built from a `redis://` URL by [`super::CacheUrl`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database number (`SELECT`).
    pub db: i64,
    /// ACL user name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Deadline of each cache call, from the first byte sent to the last byte read.
    pub timeout: Duration,
    /// Deadline of one connection attempt.
    pub connect_timeout: Duration,
    /// TLS (`rediss://`), or plain TCP when `None`.
    pub tls: Option<RedisTls>,
}

/// TLS settings of a `rediss://` connection. The server's certificate and host name are always
/// verified.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisTls {
    /// A PEM file of the certificate authority to trust; the system's roots when `None`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl RedisConfig {
    /// Default port.
    pub const DEFAULT_PORT: u16 = 6379;
    /// Default deadline of a cache call: 500 ms. A cache call on loopback or in one data center
    /// takes well under a millisecond; a call that takes this long means the server is in
    /// trouble, and the record is better retried later than left waiting.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
    /// Default deadline of a connection attempt: 500 ms.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

    /// A configuration for `host:port`, database 0, no credentials, default timeouts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        RedisConfig {
            host: host.into(),
            port,
            db: 0,
            username: None,
            password: None,
            timeout: Self::DEFAULT_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            tls: None,
        }
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("address", &self.address())
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

#[cfg(feature = "redis")]
/// A cache backend on a Redis server. Cheap to share: every pipeline uses the same multiplexed
/// connection, which pipelines concurrent calls on one socket.
#[derive(Clone)]
pub struct RedisCache {
    connection: ConnectionManager,
    /// `redis at host:port`, for messages.
    label: String,
    timeout: Duration,
}

#[cfg(feature = "redis")]
impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache").field("server", &self.label).field("timeout", &self.timeout).finish()
    }
}

#[cfg(feature = "redis")]
impl RedisCache {
    /// Connects to the server of `config` and checks that it answers (`PING`), so a wrong
    /// address or password is reported here rather than on the first record.
    pub async fn connect(config: &RedisConfig) -> Result<Self, CacheError> {
        let scheme = if config.tls.is_some() { "rediss" } else { "redis" };
        let label = format!("{scheme} at {}", config.address());
        let mut settings = RedisConnectionInfo::default().set_db(config.db);
        if let Some(username) = &config.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
        let address = match config.tls {
            None => ConnectionAddr::Tcp(config.host.clone(), config.port),
            Some(_) => ConnectionAddr::TcpTls {
                host: config.host.clone(),
                port: config.port,
                insecure: false,
                tls_params: None,
            },
        };
        let info = address
            .into_connection_info()
            .map_err(|e| CacheError::InvalidArgument(format!("{label}: {e}")))?
            .set_redis_settings(settings);
        let ca_file = config.tls.as_ref().and_then(|tls| tls.ca_file.as_ref());
        let client = match ca_file {
            None => Client::open(info),
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    CacheError::InvalidArgument(format!("{label}: cannot read ca_file {}: {e}", path.display()))
                })?;
                Client::build_with_tls(info, ::redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })
            }
        }
        .map_err(|e| CacheError::InvalidArgument(format!("{label}: {e}")))?;
        // No retries inside the manager: a call during an outage fails at once (and starts a
        // new connection attempt) instead of waiting out a backoff schedule, and the first call
        // after the server is back reconnects.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.timeout));
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| CacheError::InvalidArgument(format!("{label}: {e}")))?;
        let cache = RedisCache { connection, label, timeout: config.timeout };
        cache.query::<String>(&::redis::cmd("PING")).await?;
        Ok(cache)
    }

    /// Runs one call under the deadline and maps its failure. `request` is called again, once,
    /// when the connection was refused: nothing was sent, and the manager has started a new
    /// connection attempt, so the first call after the server is back succeeds.
    async fn call<T, F, Fut>(&self, request: F) -> Result<T, CacheError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut refused = false;
        loop {
            match tokio::time::timeout_at(deadline, request(self.connection.clone())).await {
                Err(_) => return Err(CacheError::timed_out(&self.label, self.timeout)),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if error.is_connection_refusal() && !refused => refused = true,
                Ok(Err(error)) => return Err(self.map_error(&error)),
            }
        }
    }

    fn map_error(&self, error: &RedisError) -> CacheError {
        let label = &self.label;
        if error.is_timeout() {
            return CacheError::timed_out(label, self.timeout);
        }
        match error.kind() {
            ErrorKind::Io => CacheError::Unavailable(format!("{label} is not reachable: {error}")),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown,
            ) => CacheError::Unavailable(format!("{label} is not ready: {error}")),
            _ => CacheError::Other(format!("{label}: {error}")),
        }
    }

    /// Runs one command that does not touch a counter.
    async fn query<T: FromRedisValue>(&self, command: &Cmd) -> Result<T, CacheError> {
        self.call(|mut connection| async move { command.query_async(&mut connection).await }).await
    }

    /// The error of `INCRBY key delta` that failed with `error`.
    fn increment_error(&self, key: &str, delta: i64, error: &RedisError) -> CacheError {
        if refused_counter(error) {
            CacheError::NotANumber(format!(
                "incr of {key:?} by {delta} on {}: the value is not a signed 64-bit decimal integer, or the result \
                 overflows ({error})",
                self.label
            ))
        } else {
            self.map_error(error)
        }
    }

    /// Applies `entries` in order in one round trip and returns each result, or the failure of
    /// the first entry that failed (the ones after it ran too; see the module docs).
    async fn increments(&self, entries: &[(&str, i64)], ttl_seconds: Option<u32>) -> Result<Vec<i64>, CacheError> {
        let mut pipe = ::redis::pipe();
        if let Some(ttl) = ttl_seconds {
            pipe.atomic();
            for (key, delta) in entries {
                pipe.cmd("SET").arg(*key).arg(0).arg("EX").arg(ttl).arg("NX").ignore();
                pipe.cmd("INCRBY").arg(*key).arg(*delta);
            }
        } else {
            for (key, delta) in entries {
                pipe.cmd("INCRBY").arg(*key).arg(*delta);
            }
        }
        pipe.ignore_errors();
        let pipe = &pipe;
        let results: Vec<RedisResult<i64>> =
            self.call(|mut connection| async move { pipe.query_async(&mut connection).await }).await?;
        if results.len() != entries.len() {
            return Err(CacheError::Other(format!(
                "{} answered {} results to {} increments",
                self.label,
                results.len(),
                entries.len()
            )));
        }
        results
            .into_iter()
            .zip(entries)
            .map(|(result, (key, delta))| result.map_err(|error| self.increment_error(key, *delta, &error)))
            .collect()
    }
}

#[cfg(feature = "redis")]
/// Whether a failed `INCRBY` refused the stored value or the result: "value is not an integer
/// or out of range", "increment or decrement would overflow".
fn refused_counter(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(ServerErrorKind::ResponseError))
        && error.detail().is_some_and(|detail| detail.contains("not an integer") || detail.contains("overflow"))
}

#[cfg(feature = "redis")]
#[async_trait]
impl CacheBackend for RedisCache {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.query(::redis::cmd("GET").arg(key)).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.query(::redis::cmd("MGET").arg(keys)).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        let mut command = ::redis::cmd("SET");
        command.arg(key).arg(value);
        if let Some(ttl) = ttl_seconds {
            command.arg("EX").arg(ttl);
        }
        self.query(&command).await
    }

    async fn set_many(&self, entries: &[(String, Vec<u8>)], ttl_seconds: Option<u32>) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        for (key, value) in entries {
            let command = pipe.cmd("SET").arg(key).arg(value);
            if let Some(ttl) = ttl_seconds {
                command.arg("EX").arg(ttl);
            }
            command.ignore();
        }
        let pipe = &pipe;
        self.call(|mut connection| async move { pipe.query_async::<()>(&mut connection).await }).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl_seconds: Option<u32>) -> Result<i64, CacheError> {
        let values = self.increments(&[(key, delta)], ttl_seconds).await?;
        Ok(values[0])
    }

    async fn incr_many(&self, entries: &[(String, i64)], ttl_seconds: Option<u32>) -> Result<Vec<i64>, CacheError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<(&str, i64)> = entries.iter().map(|(key, delta)| (key.as_str(), *delta)).collect();
        self.increments(&entries, ttl_seconds).await
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.query::<u64>(::redis::cmd("DEL").arg(key)).await? > 0)
    }

    async fn apply(&self, effects: &[Effect]) -> Result<(), CacheError> {
        if effects.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        let mut increments = Vec::new();
        for effect in effects {
            match effect {
                Effect::Set { key, value, ttl } => {
                    let command = pipe.cmd("SET").arg(key).arg(value);
                    if let Some(ttl) = ttl {
                        command.arg("EX").arg(*ttl);
                    }
                    command.ignore();
                }
                Effect::Delete { key } => {
                    pipe.cmd("DEL").arg(key).ignore();
                }
                Effect::Incr { key, delta, ttl } => {
                    if let Some(ttl) = ttl {
                        pipe.cmd("SET").arg(key).arg(0).arg("EX").arg(*ttl).arg("NX").ignore();
                    }
                    pipe.cmd("INCRBY").arg(key).arg(*delta);
                    increments.push((key.as_str(), *delta));
                }
            }
        }
        pipe.ignore_errors();
        let pipe = &pipe;
        let results: Vec<RedisResult<i64>> =
            self.call(|mut connection| async move { pipe.query_async(&mut connection).await }).await?;
        if results.len() != increments.len() {
            return Err(CacheError::Other(format!(
                "{} answered {} results to a transaction of {} increments",
                self.label,
                results.len(),
                increments.len()
            )));
        }
        for (result, (key, delta)) in results.into_iter().zip(increments) {
            result.map_err(|error| self.increment_error(key, delta, &error))?;
        }
        Ok(())
    }

    /// One `EVAL` of [`APPLY_FENCED`]: Redis runs a script with nothing else in between, so
    /// reading the position, the writes and the new position are one atomic step. A refused
    /// `INCRBY` (the value is not a number) does not stop the others, as in `apply`, and is
    /// reported after the position has moved: a retry would not apply it either.
    async fn apply_fenced(&self, effects: &[Effect], fence: &Fence) -> Result<Fenced, CacheError> {
        let mut eval = ::redis::cmd("EVAL");
        eval.arg(APPLY_FENCED).arg(effects.len() + 2).arg(&fence.key).arg(before_key(&fence.key));
        for effect in effects {
            eval.arg(effect.key());
        }
        eval.arg(fence.first).arg(fence.last);
        for effect in effects {
            match effect {
                Effect::Set { value, ttl, .. } => eval.arg("set").arg(value.as_slice()).arg(ttl.unwrap_or(0)),
                Effect::Delete { .. } => eval.arg("del").arg("").arg(0),
                Effect::Incr { delta, ttl, .. } => eval.arg("incr").arg(*delta).arg(ttl.unwrap_or(0)),
            };
        }
        let answer: Vec<::redis::Value> = self.query(&eval).await?;
        match answer.as_slice() {
            [::redis::Value::Int(-1)] => Ok(Fenced::Applied),
            [::redis::Value::Int(applied_through)] => Ok(Fenced::Skipped { applied_through: *applied_through }),
            [::redis::Value::Int(-1), refused, reason] => {
                let key = String::from_redis_value(refused.clone()).unwrap_or_default();
                let reason = String::from_redis_value(reason.clone()).unwrap_or_default();
                Err(CacheError::NotANumber(format!(
                    "incr of {key:?} on {}: the value is not a signed 64-bit decimal integer, or the result overflows \
                     ({reason}); the call's other writes were applied",
                    self.label
                )))
            }
            other => Err(CacheError::Other(format!("{} answered {other:?} to an exactly-once apply", self.label))),
        }
    }

    fn supports_fences(&self) -> bool {
        true
    }

    async fn fence_position(&self, key: &str) -> Result<Option<FencePosition>, CacheError> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("GET").arg(key).cmd("HGETALL").arg(before_key(key));
        let pipe = &pipe;
        let (position, before): (Option<String>, HashMap<String, Vec<u8>>) =
            self.call(|mut connection| async move { pipe.query_async(&mut connection).await }).await?;
        let Some(position) = position else { return Ok(None) };
        let applied_through = position.parse().map_err(|_| {
            CacheError::NotANumber(format!("the applied position at {key:?} on {} is not an offset", self.label))
        })?;
        let mut before: HashMap<String, Option<Vec<u8>>> = before
            .into_iter()
            .map(|(key, image)| match image.split_first() {
                Some((b'=', value)) => (key, Some(value.to_vec())),
                _ => (key, None),
            })
            .collect();
        let applied_from = before
            .remove("")
            .flatten()
            .and_then(|first| String::from_utf8(first).ok()?.parse().ok())
            .unwrap_or(applied_through);
        Ok(Some(FencePosition { applied_through, applied_from, before }))
    }
}

/// Where the values before the last fenced apply of the position at `fence_key` are kept: a
/// hash of backend key to `=VALUE`, or `-` for a key that was missing, and of the empty field
/// to `=FIRST`, the first offset of that batch.
fn before_key(fence_key: &str) -> String {
    format!("{fence_key} before")
}

/// The exactly-once apply ([`RedisCache::apply_fenced`]). `KEYS[1]` holds the partition's last
/// applied offset, `KEYS[2]` the values the last applied batch's keys had before it
/// ([`before_key`]); `KEYS[3..]` are the effects' keys. `ARGV[1]`, `ARGV[2]`: the batch's first
/// and last offsets; then three arguments per effect: `set VALUE TTL`, `del "" 0` or
/// `incr DELTA TTL` (TTL 0: none). Answers `{-1}` when applied, `{position}` when the stored
/// position is at or past the first offset (nothing written), `{-1, key, error}` when an
/// increment was refused.
const APPLY_FENCED: &str = r#"
local applied = tonumber(redis.call('GET', KEYS[1]))
if applied and applied >= tonumber(ARGV[1]) then return {applied} end
redis.call('DEL', KEYS[2])
local chunk = 2000
local images = {'', '=' .. ARGV[1]}
for from = 3, #KEYS, chunk do
  local to = math.min(from + chunk - 1, #KEYS)
  local olds = redis.call('MGET', unpack(KEYS, from, to))
  for i = from, to do
    local old = olds[i - from + 1]
    images[#images + 1] = KEYS[i]
    if old then images[#images + 1] = '=' .. old else images[#images + 1] = '-' end
  end
end
for from = 1, #images, 2 * chunk do
  redis.call('HSET', KEYS[2], unpack(images, from, math.min(from + 2 * chunk - 1, #images)))
end
local refused
for i = 3, #KEYS do
  local j = i - 2
  local op, arg, ttl = ARGV[3 * j], ARGV[3 * j + 1], tonumber(ARGV[3 * j + 2])
  if op == 'set' then
    if ttl > 0 then redis.call('SET', KEYS[i], arg, 'EX', ttl) else redis.call('SET', KEYS[i], arg) end
  elseif op == 'del' then
    redis.call('DEL', KEYS[i])
  else
    if ttl > 0 then redis.call('SET', KEYS[i], 0, 'EX', ttl, 'NX') end
    local answer = redis.pcall('INCRBY', KEYS[i], arg)
    if type(answer) == 'table' and answer.err and not refused then refused = {-1, KEYS[i], answer.err} end
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return refused or {-1}
"#;
