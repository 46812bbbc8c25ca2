"""Word count, in Python: the word-count example (../word-count) written against the WIT alone,
with the same outputs, cache contents and errors (and log lines, but for words Rust escapes).

The value must be UTF-8 text; a null value produces nothing. Words are the whitespace-separated
parts of the text with ASCII punctuation trimmed from both ends, lowercased; empty ones are
skipped. All of a record's words are counted with one `cache.incr_many` call (keys `wc:<word>`,
no TTL), then each occurrence is emitted in order with key = the word and value = its count
after that occurrence, as decimal text. A word whose count reaches 1,000, 10,000, 100,000 and so
on is logged at `info`.
"""

import json
import re
import string

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import cache, log
from wit_world.imports.types import OutputRecord, RecordError

# The most entries one `incr_many` call takes.
MAX_BATCH_ENTRIES = 1000
# The smallest count that is logged: from there, each power of ten.
FIRST_LOGGED_COUNT = 1000
# Unicode White_Space, as Rust's `split_whitespace` splits on (`str.split()` also splits on
# U+001C to U+001F, which are not white space).
WHITESPACE = re.compile("[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
# What each cache error is called in a record's error message.
CACHE_ERRORS = {
    cache.CacheError_Unavailable: "cache unavailable: ",
    cache.CacheError_InvalidKey: "invalid cache key: ",
    cache.CacheError_TooLarge: "cache value too large: ",
    cache.CacheError_NotANumber: "cache value is not a number: ",
    cache.CacheError_InvalidArgument: "invalid cache argument: ",
    cache.CacheError_Other: "cache error: ",
}


def words(text):
    """The lowercase words of `text`, without surrounding ASCII punctuation."""
    trimmed = (part.strip(string.punctuation).lower() for part in WHITESPACE.split(text))
    return [word for word in trimmed if word]


def is_milestone(count):
    """Whether reaching `count` is worth a log line: 1,000, 10,000, 100,000, ..."""
    milestone = FIRST_LOGGED_COUNT
    while milestone < count:
        milestone *= 10
    return milestone == count


def count_words(record):
    """Counts the record's words: Ok with (word, count) per occurrence, or Err saying why not."""
    if record.value is None:
        return Ok([])
    try:
        text = record.value.decode("utf-8")
    except UnicodeDecodeError:
        return Err(RecordError(f"record at offset {record.offset}: value is not UTF-8 text", False))
    found = words(text)
    outputs = []
    # One round trip per record; a record of more words than one call takes is split.
    for start in range(0, len(found), MAX_BATCH_ENTRIES):
        chunk = found[start:start + MAX_BATCH_ENTRIES]
        try:
            counts = cache.incr_many([("wc:" + word, 1) for word in chunk], None)
        except Err as error:
            prefix = CACHE_ERRORS.get(type(error.value), "cache error: ")
            outage = isinstance(error.value, cache.CacheError_Unavailable)
            return Err(RecordError(prefix + error.value.value, outage))
        for word, count in zip(chunk, counts):
            if is_milestone(count):
                log.log(log.Level.INFO, f"the word {json.dumps(word, ensure_ascii=False)} has been counted {count} times")
            outputs.append(OutputRecord(word.encode(), str(count).encode(), [], None))
    return Ok(outputs)


class WitWorld(wit_world.WitWorld):
    """The component's export (componentize-py requires this class name)."""

    def process(self, batch):
        """One batch of one partition's records, in offset order: one result per record."""
        results = []
        for record in batch:
            try:
                results.append(count_words(record))
            except (MemoryError, RecursionError):
                # A limit, not the record's fault: the call traps, its cache writes are dropped,
                # and the runtime tries the record again on a fresh instance.
                raise
            except Exception as error:  # one bad record never traps the whole batch
                message = f"record at offset {record.offset}: {type(error).__name__}: {error}"
                results.append(Err(RecordError(message, False)))
        return results
