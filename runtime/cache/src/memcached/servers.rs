//! The memcached servers of one backend: which server holds a key, and a small pool of
//! connections per server.
//!
//! Keys are spread by rendezvous (highest random weight) hashing: each server scores every key
//! and the highest score wins. Adding or removing a server therefore moves only the keys that
//! server wins or held, about `1/n` of them, and every process with the same server list agrees
//! on the placement without talking to the others.
//!
//! Each server keeps up to `pool_size` connections; a request batch borrows one for one
//! exchange and gives it back only when the exchange completed, so a connection that failed,
//! timed out or was abandoned mid-reply is never reused. An idle connection that the server
//! closed (a restart) is noticed before use and replaced, which is how the backend recovers
//! from an outage without being rebuilt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};

use super::protocol::{Connection, ExchangeError, Reply, Request};
use crate::CacheError;

/// The servers of one backend, with their connections.
pub(super) struct Servers {
    servers: Vec<Server>,
    /// Deadline of one connection attempt.
    connect_timeout: Duration,
    /// The whole call's timeout, for messages.
    timeout: Duration,
}

struct Server {
    address: String,
    /// `memcached at host:port`, for messages.
    label: String,
    /// This server's rendezvous seed, from its address.
    seed: u64,
    idle: Mutex<Vec<Connection>>,
    slots: Arc<Semaphore>,
    pool_size: usize,
}

impl Servers {
    /// Servers at `addresses` (`host:port` each), with up to `pool_size` connections each.
    pub(super) fn new(addresses: &[String], pool_size: usize, timeout: Duration, connect_timeout: Duration) -> Self {
        let servers = addresses
            .iter()
            .map(|address| Server {
                address: address.clone(),
                label: format!("memcached at {address}"),
                seed: mix(fnv1a(address.as_bytes())),
                idle: Mutex::new(Vec::new()),
                slots: Arc::new(Semaphore::new(pool_size)),
                pool_size,
            })
            .collect();
        Servers { servers, connect_timeout, timeout }
    }

    /// How many servers there are.
    pub(super) fn len(&self) -> usize {
        self.servers.len()
    }

    /// The index of the server that holds `key`.
    pub(super) fn route(&self, key: &str) -> usize {
        rendezvous(self.servers.iter().map(|s| s.seed), key)
    }

    /// Sends `requests`, each to the server of its key, in one exchange per server (the
    /// exchanges run concurrently), and returns one reply per request, in order. Fails as a whole
    /// when any server fails; requests sent to the others may have been applied.
    pub(super) async fn exchange_all(
        &self,
        requests: &[Request<'_>],
        deadline: Instant,
    ) -> Result<Vec<Reply>, CacheError> {
        if self.servers.len() == 1 {
            return self.exchange(0, requests.iter(), deadline).await;
        }
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        for (index, request) in requests.iter().enumerate() {
            groups[request.key().map_or(0, |key| self.route(key))].push(index);
        }
        let exchanges =
            groups.iter().enumerate().filter(|(_, group)| !group.is_empty()).map(|(server, group)| async move {
                let replies = self.exchange(server, group.iter().map(|&i| &requests[i]), deadline).await?;
                Ok::<_, CacheError>(group.iter().copied().zip(replies))
            });
        let mut ordered: Vec<Option<Reply>> = vec![None; requests.len()];
        for answered in join_all(exchanges).await {
            for (index, reply) in answered? {
                ordered[index] = Some(reply);
            }
        }
        Ok(ordered.into_iter().map(|reply| reply.expect("every request has a reply")).collect())
    }

    /// Sends `requests` to server `index` in one exchange; the same order of replies.
    pub(super) async fn exchange<'r>(
        &self,
        index: usize,
        requests: impl Iterator<Item = &'r Request<'r>>,
        deadline: Instant,
    ) -> Result<Vec<Reply>, CacheError> {
        let server = &self.servers[index];
        let mut payload = Vec::new();
        let mut count = 0;
        for request in requests {
            request.encode(&mut payload);
            count += 1;
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        let exchange = async {
            let (mut connection, permit) = self.checkout(server).await?;
            let replies = connection.exchange(&payload, count).await.map_err(|error| match error {
                ExchangeError::Io(e) => {
                    CacheError::Unavailable(format!("{} dropped the connection: {e}", server.label))
                }
                ExchangeError::Protocol(message) => {
                    CacheError::Other(format!("{} sent an unexpected reply: {message}", server.label))
                }
            })?;
            server.give_back(connection);
            drop(permit);
            Ok(replies)
        };
        timeout_at(deadline, exchange).await.unwrap_or_else(|_| Err(CacheError::timed_out(&server.label, self.timeout)))
    }

    /// A connection to `server`, idle or new, with the slot it occupies.
    async fn checkout(&self, server: &Server) -> Result<(Connection, OwnedSemaphorePermit), CacheError> {
        let permit = Arc::clone(&server.slots).acquire_owned().await.expect("the pool's semaphore is never closed");
        loop {
            let idle = server.idle.lock().expect("pool lock").pop();
            match idle {
                Some(connection) if connection.is_reusable() => return Ok((connection, permit)),
                Some(_stale) => continue,
                None => break,
            }
        }
        match tokio::time::timeout(self.connect_timeout, Connection::open(&server.address)).await {
            Ok(Ok(connection)) => Ok((connection, permit)),
            Ok(Err(e)) => Err(CacheError::Unavailable(format!("{} is not reachable: {e}", server.label))),
            Err(_) => Err(CacheError::timed_out(&server.label, self.connect_timeout)),
        }
    }
}

impl Server {
    fn give_back(&self, connection: Connection) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.pool_size {
            idle.push(connection);
        }
    }
}

/// The index of the seed that scores `key` highest (the first on a tie).
fn rendezvous(seeds: impl Iterator<Item = u64>, key: &str) -> usize {
    let key_hash = fnv1a(key.as_bytes());
    let mut best = (0, 0);
    for (index, seed) in seeds.enumerate() {
        let score = mix(key_hash ^ seed);
        if index == 0 || score > best.1 {
            best = (index, score);
        }
    }
    best.0
}

/// 64-bit FNV-1a: stable across processes, versions and platforms (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A 64-bit finalizer (MurmurHash3's `fmix64`): spreads every input bit over the output, so
/// scores of nearby keys and servers are unrelated.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(addresses: &[&str]) -> Vec<u64> {
        addresses.iter().map(|a| mix(fnv1a(a.as_bytes()))).collect()
    }

    #[test]
    fn rendezvous_spreads_keys_evenly() {
        let seeds = seeds(&["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]);
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[rendezvous(seeds.iter().copied(), &format!("ns:key-{i}"))] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_server_moves_only_the_keys_it_wins() {
        let before = seeds(&["a:11211", "b:11211", "c:11211"]);
        let after = seeds(&["a:11211", "b:11211", "c:11211", "d:11211"]);
        let mut moved = 0;
        for i in 0..20_000 {
            let key = format!("ns:key-{i}");
            let (old, new) = (rendezvous(before.iter().copied(), &key), rendezvous(after.iter().copied(), &key));
            if old != new {
                assert_eq!(new, 3, "{key} moved between servers that stayed");
                moved += 1;
            }
        }
        assert!((4_000..6_000).contains(&moved), "{moved} of 20000 keys moved; about a quarter should");
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let before = seeds(&["a:11211", "b:11211", "c:11211"]);
        let after = seeds(&["a:11211", "c:11211"]);
        for i in 0..20_000 {
            let key = format!("ns:key-{i}");
            let old = rendezvous(before.iter().copied(), &key);
            let new = rendezvous(after.iter().copied(), &key);
            if old != 1 {
                assert_eq!(new, if old == 0 { 0 } else { 1 }, "{key} moved off a server that stayed");
            }
        }
    }
}
