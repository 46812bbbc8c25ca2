//! Fuzzing the reader of memcached replies: the bytes come from the network, from a server
//! that may be another program, a corrupt stream or a proxy gone wrong.
//!
//! Properties: no bytes make the reader panic or buffer more than one line and one bounded
//! value; a stream of valid replies reads back as the same replies, and the reader stops at
//! the last byte of each reply (it never reads into the next one); a broken stream is an
//! error naming what is wrong, not a wrong reply.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use sluice_fuzzing::{check, mutated};

/// Tokens of the meta protocol, for mutations.
const TOKENS: &[&[u8]] = &[
    b"VA ",
    b"HD",
    b"EN",
    b"NF",
    b"NS",
    b"EX",
    b"MN",
    b"ERROR",
    b"CLIENT_ERROR ",
    b"SERVER_ERROR ",
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"f",
    b"c",
    b"t",
    b"-1",
    b"1000000",
    b"1001024",
    b"1001025",
    b"18446744073709551615",
    b"99999999999999999999",
    b"4294967296",
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime")
}

/// The wire form of `reply`, as memcached writes it.
fn encode(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    match reply {
        Reply::Value { data, flags, cas, ttl } => {
            out.extend_from_slice(format!("VA {} f{flags}", data.len()).as_bytes());
            if let Some(cas) = cas {
                out.extend_from_slice(format!(" c{cas}").as_bytes());
            }
            if let Some(ttl) = ttl {
                out.extend_from_slice(format!(" t{ttl}").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
        }
        Reply::Done => out.extend_from_slice(b"HD"),
        Reply::Miss => out.extend_from_slice(b"EN"),
        Reply::NotFound => out.extend_from_slice(b"NF"),
        Reply::NotStored => out.extend_from_slice(b"NS"),
        Reply::Exists => out.extend_from_slice(b"EX"),
        Reply::Noop => out.extend_from_slice(b"MN"),
        Reply::ClientError(message) if message == "ERROR" => out.extend_from_slice(b"ERROR"),
        Reply::ClientError(message) => out.extend_from_slice(format!("CLIENT_ERROR {message}").as_bytes()),
        Reply::ServerError(message) => out.extend_from_slice(format!("SERVER_ERROR {message}").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        4 => (prop::collection::vec(any::<u8>(), 0..300), any::<u32>(), prop::option::of(any::<u64>()), prop::option::of(any::<i64>()))
            .prop_map(|(data, flags, cas, ttl)| Reply::Value { data, flags, cas, ttl }),
        1 => Just(Reply::Done),
        1 => Just(Reply::Miss),
        1 => Just(Reply::NotFound),
        1 => Just(Reply::NotStored),
        1 => Just(Reply::Exists),
        1 => Just(Reply::Noop),
        1 => "[ -~]{0,60}".prop_map(Reply::ClientError),
        1 => "[ -~]{0,60}".prop_map(Reply::ServerError),
    ]
}

/// Reads replies from `stream` until it fails or ends; checks what every reply may hold.
fn read_all(runtime: &tokio::runtime::Runtime, stream: &[u8]) -> Result<(), TestCaseError> {
    let mut reader = stream;
    let mut line = Vec::new();
    loop {
        let before = reader.len();
        match runtime.block_on(read_reply(&mut reader, &mut line)) {
            Ok(reply) => {
                prop_assert!(reader.len() < before, "a reply was read from no bytes");
                if let Reply::Value { data, .. } = &reply {
                    prop_assert!(data.len() <= MAX_REPLY_DATA_BYTES);
                }
                prop_assert!(line.len() <= MAX_REPLY_LINE_BYTES, "a line of {} bytes was buffered", line.len());
            }
            Err(ExchangeError::Io(error)) => {
                prop_assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{}", error);
                return Ok(());
            }
            Err(ExchangeError::Protocol(message)) => {
                prop_assert!(!message.is_empty());
                return Ok(());
            }
        }
    }
}

#[test]
fn any_bytes_from_a_server_are_read_as_replies_or_refused_without_panic() {
    let runtime = runtime();
    let streams = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|tokens| tokens.concat()),
    ];
    check("memcached_reply_any_bytes", 1024, streams, |stream| read_all(&runtime, &stream));
}

#[test]
fn mutated_reply_streams_are_read_as_replies_or_refused_without_panic() {
    let runtime = runtime();
    let streams = prop::collection::vec(reply(), 1..6)
        .prop_flat_map(|replies| mutated(replies.iter().flat_map(encode).collect(), TOKENS));
    check("memcached_reply_mutated", 1024, streams, |stream| read_all(&runtime, &stream));
}

#[test]
fn valid_replies_read_back_the_same_and_the_reader_stops_at_their_last_byte() {
    let runtime = runtime();
    let cases = (prop::collection::vec(reply(), 1..8), prop::collection::vec(any::<u8>(), 0..64));
    check("memcached_reply_round_trip", 512, cases, |(replies, rest)| {
        let mut stream: Vec<u8> = replies.iter().flat_map(encode).collect();
        stream.extend_from_slice(&rest);
        let mut reader = stream.as_slice();
        let mut line = Vec::new();
        for expected in &replies {
            let read = runtime
                .block_on(read_reply(&mut reader, &mut line))
                .map_err(|e| TestCaseError::fail(format!("{expected:?} is not read back: {e:?}")))?;
            prop_assert_eq!(&read, expected);
        }
        prop_assert_eq!(reader, rest.as_slice(), "the reader did not stop at the end of the last reply");
        Ok(())
    });
}

#[test]
fn a_reply_cut_short_is_an_error_never_a_reply() {
    let runtime = runtime();
    let cases = reply().prop_flat_map(|reply| {
        let encoded = encode(&reply);
        let len = encoded.len();
        (Just(encoded), 0..len)
    });
    check("memcached_reply_cut_short", 512, cases, |(encoded, cut)| {
        let mut reader = &encoded[..cut];
        let result = runtime.block_on(read_reply(&mut reader, &mut Vec::new()));
        prop_assert!(
            result.is_err(),
            "{:?} cut to {} bytes was read as {:?}",
            String::from_utf8_lossy(&encoded),
            cut,
            result
        );
        Ok(())
    });
}
