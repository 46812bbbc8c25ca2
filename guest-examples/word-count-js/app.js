// Word count, in JavaScript: the word-count example (../word-count) written against the WIT
// alone, with the same outputs, cache contents and errors (and log lines, but for words Rust
// escapes).
//
// The value must be UTF-8 text; a null value produces nothing. Words are the whitespace-separated
// parts of the text with ASCII punctuation trimmed from both ends, lowercased; empty ones are
// skipped. All of a record's words are counted with one `incrMany` call (keys `wc:<word>`, no
// TTL), then each occurrence is emitted in order with key = the word and value = its count after
// that occurrence, as decimal text. A word whose count reaches 1,000, 10,000, 100,000 and so on
// is logged at `info`.
//
// Built with componentize-qjs (QuickJS): `s64` is a Number, an `option`'s none is null, and
// there is no TextEncoder or TextDecoder, so UTF-8 is done at the bottom of this file.

import { incrMany } from 'sluice:function/cache@0.1.0';
import { log } from 'sluice:function/log@0.1.0';

// The most entries one `incrMany` call takes.
const MAX_BATCH_ENTRIES = 1000;
// The smallest count that is logged: from there, each power of ten.
const FIRST_LOGGED_COUNT = 1000;
// Unicode White_Space, as Rust's `split_whitespace` splits on (JavaScript's \s also matches
// U+FEFF, which is not white space).
const WHITESPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;
// ASCII punctuation at either end of a word.
const PUNCTUATION = /^[!-\/:-@\[-`{-~]+|[!-\/:-@\[-`{-~]+$/g;
// What each cache error is called in a record's error message.
const CACHE_ERRORS = {
  'unavailable': 'cache unavailable: ',
  'invalid-key': 'invalid cache key: ',
  'too-large': 'cache value too large: ',
  'not-a-number': 'cache value is not a number: ',
  'invalid-argument': 'invalid cache argument: ',
  'other': 'cache error: ',
};

const fatal = (message) => ({ tag: 'err', val: { message, retryable: false } });

// The lowercase words of `text`, without surrounding ASCII punctuation.
function words(text) {
  return text
    .split(WHITESPACE)
    .map((part) => part.replace(PUNCTUATION, '').toLowerCase())
    .filter((word) => word !== '');
}

// Whether reaching `count` is worth a log line: 1,000, 10,000, 100,000, ...
function isMilestone(count) {
  let milestone = FIRST_LOGGED_COUNT;
  while (milestone < count) milestone *= 10;
  return milestone === count;
}

// Counts the record's words: its result, (word, count) per occurrence.
function countWords(record) {
  if (record.value == null) return { tag: 'ok', val: [] };
  const text = utf8Decode(record.value);
  if (text == null) return fatal(`record at offset ${record.offset}: value is not UTF-8 text`);
  const found = words(text);
  const outputs = [];
  // One round trip per record; a record of more words than one call takes is split.
  for (let start = 0; start < found.length; start += MAX_BATCH_ENTRIES) {
    const chunk = found.slice(start, start + MAX_BATCH_ENTRIES);
    let counts;
    try {
      counts = incrMany(chunk.map((word) => [`wc:${word}`, 1]), null);
    } catch (error) {
      const why = error.payload ?? { tag: 'other', val: String(error) };
      const message = (CACHE_ERRORS[why.tag] ?? 'cache error: ') + why.val;
      return { tag: 'err', val: { message, retryable: why.tag === 'unavailable' } };
    }
    chunk.forEach((word, i) => {
      if (isMilestone(counts[i])) log('info', `the word ${JSON.stringify(word)} has been counted ${counts[i]} times`);
      outputs.push({ key: utf8Encode(word), value: utf8Encode(String(counts[i])), headers: [] });
    });
  }
  return { tag: 'ok', val: outputs };
}

// One batch of one partition's records, in offset order: one result per record. An exception
// that escapes it fails the whole call, so each record is guarded.
export function process(batch) {
  return batch.map((record) => {
    try {
      return countWords(record);
    } catch (error) {
      // Out of memory or stack: a limit, not the record's fault. The call traps, its cache
      // writes are dropped, and the runtime tries the record again on a fresh instance.
      if (error instanceof RangeError || error?.name === 'InternalError') throw error;
      return fatal(`record at offset ${record.offset}: ${error}`);
    }
  });
}

// `text` as UTF-8 bytes.
function utf8Encode(text) {
  const bytes = [];
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(bytes);
}

// `bytes` read as UTF-8 text, or null when they are not well-formed UTF-8.
function utf8Decode(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    let more, c, min;
    if (b < 0x80) { text += String.fromCharCode(b); i += 1; continue; }
    else if (b >= 0xc2 && b < 0xe0) { more = 1; c = b & 31; min = 0x80; }
    else if (b >= 0xe0 && b < 0xf0) { more = 2; c = b & 15; min = 0x800; }
    else if (b >= 0xf0 && b < 0xf5) { more = 3; c = b & 7; min = 0x10000; }
    else return null;
    for (let k = 1; k <= more; k++) {
      const next = bytes[i + k];
      if (next === undefined || (next & 0xc0) !== 0x80) return null;
      c = (c << 6) | (next & 63);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c < 0xe000)) return null;
    text += String.fromCodePoint(c);
    i += more + 1;
  }
  return text;
}
