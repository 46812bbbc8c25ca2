//! The part of memcached's meta protocol the backend speaks, and one connection that speaks it.
//!
//! Requests are encoded by hand into one buffer per server and written in one go; replies come
//! back in the same order, exactly one per request, and are read while the requests are still
//! being written (so a large batch cannot fill both socket buffers and stall). Errors that
//! memcached reports as a bare line (`CLIENT_ERROR ...`, which carries no opaque token) keep
//! their position in the batch, so one refused `ma` does not lose the replies after it.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::limits;

/// Largest data block a reply may announce; anything larger means the stream is corrupt.
const MAX_REPLY_DATA_BYTES: usize = limits::MAX_VALUE_BYTES + 1024;

/// Longest reply header line accepted.
const MAX_REPLY_LINE_BYTES: usize = 4096;

/// One meta command.
#[derive(Debug, Clone, Copy)]
pub(super) enum Request<'a> {
    /// `mg <key> v f [c t]`: the value and its client flags, plus its CAS and remaining TTL when
    /// `cas_and_ttl` is set.
    Get { key: &'a str, cas_and_ttl: bool },
    /// `ms <key> <len> [F<flags>] [T<ttl>] [ME | C<cas>]`: stores `prefix` (when present) then
    /// `value`. No `T` means no expiry.
    Set { key: &'a str, prefix: Option<u8>, value: &'a [u8], flags: u32, ttl: Option<u32>, condition: Condition },
    /// `ma <key> N<ttl> J<delta> D<delta> v`: adds `delta` to a stored unsigned decimal, or creates
    /// the item holding `delta` with TTL `vivify_ttl` (0: no expiry) when it is missing.
    Increment { key: &'a str, delta: u64, vivify_ttl: u32 },
    /// `md <key>`.
    Delete { key: &'a str },
    /// `mn`: answers `MN`; checks that a server is alive.
    Noop,
}

/// When an `ms` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Condition {
    /// Always.
    Always,
    /// Only when the key is missing (`ME`, add).
    Missing,
    /// Only when the item's CAS is still this one.
    Unchanged(u64),
}

impl Request<'_> {
    /// The key this request is routed by (`None` for [`Request::Noop`]).
    pub(super) fn key(&self) -> Option<&str> {
        match self {
            Request::Get { key, .. }
            | Request::Set { key, .. }
            | Request::Increment { key, .. }
            | Request::Delete { key } => Some(key),
            Request::Noop => None,
        }
    }

    /// Appends the wire form of this request to `out`.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = match *self {
            Request::Get { key, cas_and_ttl } => {
                write!(out, "mg {key} v f{}\r\n", if cas_and_ttl { " c t" } else { "" })
            }
            Request::Set { key, prefix, value, flags, ttl, condition } => {
                let _ = write!(out, "ms {key} {}", value.len() + usize::from(prefix.is_some()));
                if flags != 0 {
                    let _ = write!(out, " F{flags}");
                }
                if let Some(ttl) = ttl {
                    let _ = write!(out, " T{ttl}");
                }
                let _ = match condition {
                    Condition::Always => Ok(()),
                    Condition::Missing => write!(out, " ME"),
                    Condition::Unchanged(cas) => write!(out, " C{cas}"),
                };
                out.extend_from_slice(b"\r\n");
                out.extend(prefix);
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
            Request::Increment { key, delta, vivify_ttl } => {
                write!(out, "ma {key} N{vivify_ttl} J{delta} D{delta} v\r\n")
            }
            Request::Delete { key } => write!(out, "md {key}\r\n"),
            Request::Noop => write!(out, "mn\r\n"),
        };
    }
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// `VA`: a value, with the flags asked for.
    Value { data: Vec<u8>, flags: u32, cas: Option<u64>, ttl: Option<i64> },
    /// `HD`: done.
    Done,
    /// `EN`: `mg` found nothing.
    Miss,
    /// `NF`: the item to change was not found.
    NotFound,
    /// `NS`: not stored (an add found the key).
    NotStored,
    /// `EX`: the item's CAS changed.
    Exists,
    /// `MN`: answer to `mn`.
    Noop,
    /// `CLIENT_ERROR ...` or `ERROR`: the server refused the command (for `ma`: the stored value
    /// is not an unsigned decimal).
    ClientError(String),
    /// `SERVER_ERROR ...`.
    ServerError(String),
}

/// Why an exchange failed.
#[derive(Debug)]
pub(super) enum ExchangeError {
    /// The connection failed or closed.
    Io(io::Error),
    /// The server sent something that is not a meta reply: the stream can no longer be trusted.
    Protocol(String),
}

impl From<io::Error> for ExchangeError {
    fn from(error: io::Error) -> Self {
        ExchangeError::Io(error)
    }
}

/// One TCP connection to a memcached server.
pub(super) struct Connection {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Connection {
    /// Connects to `address` (`host:port`).
    pub(super) async fn open(address: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Connection { reader: BufReader::with_capacity(64 * 1024, read), writer: write })
    }

    /// Whether an idle connection can be used again: nothing is waiting to be read (a
    /// synchronized connection is quiet between exchanges) and the server has not closed it
    /// (as it does when it restarts). A non-blocking check, no round trip.
    pub(super) fn is_reusable(&self) -> bool {
        if !self.reader.buffer().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.reader.get_ref().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes `payload` (`count` encoded requests) and reads `count` replies, concurrently.
    pub(super) async fn exchange(&mut self, payload: &[u8], count: usize) -> Result<Vec<Reply>, ExchangeError> {
        let write = async {
            self.writer.write_all(payload).await?;
            self.writer.flush().await.map_err(ExchangeError::from)
        };
        let read = async {
            let mut replies = Vec::with_capacity(count);
            let mut line = Vec::with_capacity(128);
            for _ in 0..count {
                replies.push(read_reply(&mut self.reader, &mut line).await?);
            }
            Ok(replies)
        };
        let ((), replies) = tokio::try_join!(write, read)?;
        Ok(replies)
    }
}

/// Reads one reply from `reader`, and not one byte past it. `line` is scratch space.
async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R, line: &mut Vec<u8>) -> Result<Reply, ExchangeError> {
    line.clear();
    let read = (&mut *reader).take(MAX_REPLY_LINE_BYTES as u64).read_until(b'\n', line).await?;
    if read == 0 {
        return Err(ExchangeError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        )));
    }
    let Some(header) = line.strip_suffix(b"\r\n") else {
        return Err(ExchangeError::Protocol(format!(
            "reply line not ended by CRLF: {:?}",
            String::from_utf8_lossy(line)
        )));
    };
    let (mut reply, length) = parse_header(header)?;
    if let Reply::Value { data, .. } = &mut reply {
        data.resize(length + 2, 0);
        reader.read_exact(data).await?;
        if !data.ends_with(b"\r\n") {
            return Err(ExchangeError::Protocol("value block not ended by CRLF".into()));
        }
        data.truncate(length);
    }
    Ok(reply)
}

/// Parses a reply header line (without its CRLF). For `VA`, the returned data is empty and the
/// length of the data block that follows is returned beside it (0 for other replies).
fn parse_header(header: &[u8]) -> Result<(Reply, usize), ExchangeError> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let bad = || ExchangeError::Protocol(format!("unexpected reply {:?}", text(header)));
    let mut tokens = header.split(|&b| b == b' ').filter(|t| !t.is_empty());
    let code = tokens.next().ok_or_else(bad)?;
    let reply = match code {
        b"VA" => {
            let length: usize = number(tokens.next().ok_or_else(bad)?).ok_or_else(bad)?;
            if length > MAX_REPLY_DATA_BYTES {
                return Err(ExchangeError::Protocol(format!("reply announces a value of {length} bytes")));
            }
            let (mut flags, mut cas, mut ttl) = (0, None, None);
            for token in tokens {
                match token.split_first() {
                    Some((b'f', n)) => flags = number(n).ok_or_else(bad)?,
                    Some((b'c', n)) => cas = Some(number(n).ok_or_else(bad)?),
                    Some((b't', n)) => ttl = Some(number(n).ok_or_else(bad)?),
                    _ => {}
                }
            }
            return Ok((Reply::Value { data: Vec::with_capacity(length + 2), flags, cas, ttl }, length));
        }
        b"HD" => Reply::Done,
        b"EN" => Reply::Miss,
        b"NF" => Reply::NotFound,
        b"NS" => Reply::NotStored,
        b"EX" => Reply::Exists,
        b"MN" => Reply::Noop,
        b"ERROR" => Reply::ClientError("ERROR".into()),
        b"CLIENT_ERROR" => Reply::ClientError(text(header.get(13..).unwrap_or_default())),
        b"SERVER_ERROR" => Reply::ServerError(text(header.get(13..).unwrap_or_default())),
        _ => return Err(bad()),
    };
    Ok((reply, 0))
}

fn number<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    std::str::from_utf8(token).ok()?.parse().ok()
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(request: Request<'_>) -> String {
        let mut out = Vec::new();
        request.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn requests_encode_to_meta_commands() {
        assert_eq!(encoded(Request::Get { key: "ns:k", cas_and_ttl: false }), "mg ns:k v f\r\n");
        assert_eq!(encoded(Request::Get { key: "ns:k", cas_and_ttl: true }), "mg ns:k v f c t\r\n");
        let set = Request::Set {
            key: "k",
            prefix: Some(b'#'),
            value: b"007",
            flags: 1,
            ttl: Some(60),
            condition: Condition::Unchanged(42),
        };
        assert_eq!(encoded(set), "ms k 4 F1 T60 C42\r\n#007\r\n");
        let add =
            Request::Set { key: "k", prefix: None, value: b"", flags: 0, ttl: None, condition: Condition::Missing };
        assert_eq!(encoded(add), "ms k 0 ME\r\n\r\n");
        assert_eq!(encoded(Request::Increment { key: "k", delta: 5, vivify_ttl: 0 }), "ma k N0 J5 D5 v\r\n");
        assert_eq!(encoded(Request::Delete { key: "k" }), "md k\r\n");
        assert_eq!(encoded(Request::Noop), "mn\r\n");
    }

    #[test]
    fn reply_headers_parse_with_their_flags() {
        let (Reply::Value { flags, cas, ttl, .. }, length) = parse_header(b"VA 3 f1 c42 t-1").unwrap() else {
            panic!()
        };
        assert_eq!((length, flags, cas, ttl), (3, 1, Some(42), Some(-1)));
        assert_eq!(parse_header(b"HD").unwrap().0, Reply::Done);
        assert_eq!(parse_header(b"EN").unwrap().0, Reply::Miss);
        assert_eq!(parse_header(b"NS").unwrap().0, Reply::NotStored);
        assert_eq!(
            parse_header(b"CLIENT_ERROR cannot increment or decrement non-numeric value").unwrap().0,
            Reply::ClientError("cannot increment or decrement non-numeric value".into())
        );
        assert!(matches!(parse_header(b"VA x"), Err(ExchangeError::Protocol(_))));
        assert!(matches!(parse_header(b"WAT"), Err(ExchangeError::Protocol(_))));
        assert!(matches!(parse_header(b"VA 99999999"), Err(ExchangeError::Protocol(_))));
    }
}
