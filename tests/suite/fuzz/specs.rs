//! Pipeline specs: JSON as the admin API takes it, TOML as `sluice serve` reads it.
//!
//! Properties: a spec serialises and parses back equal in both forms; no text makes parsing
//! or [`PipelineSpec::validate`] panic; `validate` accepts exactly the specs its rules allow
//! and names the pipeline when it refuses one; a module or cache that cannot be read is
//! refused naming its key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sluice::cache::CacheUrl;
use sluice::pipeline::spec::{CacheSetting, ModuleDigest};
use sluice::pipeline::spec::{FailurePolicy, GroupSettings, Guarantee, PipelineSpec, Processing, StartPosition};
use sluice::serve::ServeConfig;
use sluice_tests::fuzzing::{check, mutated};

const NAME: &str = "[A-Za-z0-9_.-]{1,64}";

/// Valid names: [`NAME`] but `.` and `..`, which would be file names of their own.
fn name() -> impl Strategy<Value = String> {
    NAME.prop_filter("`.` and `..` are not names", |n| n != "." && n != "..")
}

fn topic(prefix: &'static str) -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,40}".prop_map(move |t| format!("{prefix}{t}"))
}

fn start() -> impl Strategy<Value = StartPosition> {
    prop_oneof![
        Just(StartPosition::Earliest),
        Just(StartPosition::Latest),
        (0..=253_402_300_799_999i64).prop_map(StartPosition::Timestamp),
        prop::collection::btree_map(topic("in-"), prop::collection::btree_map(0..=i32::MAX, 0..=i64::MAX, 0..4), 0..3)
            .prop_map(StartPosition::Offsets),
    ]
}

fn processing() -> impl Strategy<Value = Processing> {
    (
        (1..=100_000u64, 1..=16 * 1024 * 1024u64, 0..=60_000u64, 0..=100u32, 1..=60_000u64).prop_flat_map(
            |(size, bytes, linger, retries, backoff)| {
                (Just(size), Just(bytes), Just(linger), Just(retries), Just(backoff), backoff..=600_000u64)
            },
        ),
        prop::sample::select(vec![FailurePolicy::DeadLetter, FailurePolicy::Skip, FailurePolicy::Block]),
        prop::option::of(topic("dlq-")),
        start(),
        prop::sample::select(vec![Guarantee::AtLeastOnce, Guarantee::ExactlyOnce]),
    )
        .prop_map(
            |(
                (batch_size, batch_max_bytes, linger_ms, max_retries, backoff, backoff_max),
                on_failure,
                dlq,
                start,
                guarantee,
            )| {
                Processing {
                    batch_size: batch_size as usize,
                    batch_max_bytes: batch_max_bytes as usize,
                    linger_ms,
                    max_retries,
                    retry_backoff_ms: backoff,
                    retry_backoff_max_ms: backoff_max,
                    on_failure,
                    dead_letter_topic: dlq,
                    start,
                    guarantee,
                }
            },
        )
}

/// Group settings within their documented ranges: a session of 1 s to 1 h, heartbeats from
/// 100 ms to a third of it.
fn group() -> impl Strategy<Value = GroupSettings> {
    (any::<bool>(), 1_000..=3_600_000u64)
        .prop_flat_map(|(static_membership, session)| (Just(static_membership), Just(session), 100..=session / 3))
        .prop_map(|(static_membership, session_timeout_ms, heartbeat_interval_ms)| GroupSettings {
            static_membership,
            session_timeout_ms,
            heartbeat_interval_ms,
        })
}

/// Cache URLs of every backend, with and without credentials and settings.
fn cache() -> impl Strategy<Value = CacheSetting> {
    let host = "[a-z][a-z0-9.-]{0,20}";
    prop_oneof![
        Just("memory://".to_string()),
        (1..=1_048_576u64).prop_map(|mb| format!("memory://?capacity_mb={mb}")),
        (host, 1..=u16::MAX, 0..16u32).prop_map(|(h, port, db)| format!("redis://{h}:{port}/{db}")),
        ("[A-Za-z0-9]{0,12}", "[A-Za-z0-9/?@:]{1,12}", host)
            .prop_map(|(user, password, h)| format!("rediss://{user}:{password}@{h}?timeout_ms=9")),
        (host, 1..=1_024u64).prop_map(|(h, pool)| format!("memcache://{h},{h}x:11300?pool_size={pool}")),
    ]
    .prop_map(|url| url.parse().unwrap_or_else(|e| panic!("{url}: {e}")))
}

/// Specs that follow every rule of `validate`, with any text where the rules allow any.
fn valid_spec() -> impl Strategy<Value = PipelineSpec> {
    (
        name(),
        prop::collection::vec(topic("in-"), 1..4),
        prop::collection::btree_map("[a-z]{1,10}", topic("out-"), 0..3),
        topic("out-"),
        any::<Vec<u8>>().prop_map(|bytes| ModuleDigest::of(&bytes)),
        cache(),
        prop::option::of(any::<String>()),
        prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
        (processing(), group()),
    )
        .prop_map(|(name, inputs, mut outputs, default, module, cache, namespace, config, (processing, group))| {
            outputs.insert("default".into(), default);
            let mut processing = processing;
            if matches!(cache.url(), CacheUrl::Memcached(_)) {
                // Exactly-once needs a cache with atomic multi-key writes (refused: spec tests).
                processing.guarantee = Guarantee::AtLeastOnce;
            }
            PipelineSpec { name, inputs, outputs, module, cache, namespace, config, processing, group }
        })
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_table<K: ToString, V>(map: &BTreeMap<K, V>, value: impl Fn(&V) -> String) -> String {
    let entries: Vec<String> =
        map.iter().map(|(k, v)| format!("{} = {}", toml_string(&k.to_string()), value(v))).collect();
    format!("{{ {} }}", entries.join(", "))
}

/// `spec` written by hand in the TOML form the serve config documents.
fn to_toml(spec: &PipelineSpec) -> String {
    let p = &spec.processing;
    let mut out = String::new();
    out.push_str(&format!("name = {}\n", toml_string(&spec.name)));
    let inputs: Vec<String> = spec.inputs.iter().map(|t| toml_string(t)).collect();
    out.push_str(&format!("inputs = [{}]\n", inputs.join(", ")));
    out.push_str(&format!("outputs = {}\n", toml_table(&spec.outputs, |t| toml_string(t))));
    out.push_str(&format!("module = {}\n", toml_string(spec.module.as_str())));
    let cache = serde_json::to_value(&spec.cache).expect("a cache URL serialises");
    out.push_str(&format!("cache = {}\n", toml_string(cache.as_str().expect("as text"))));
    if let Some(namespace) = &spec.namespace {
        out.push_str(&format!("namespace = {}\n", toml_string(namespace)));
    }
    out.push_str(&format!("config = {}\n", toml_table(&spec.config, |v| toml_string(v))));
    let on_failure = match p.on_failure {
        FailurePolicy::DeadLetter => "dead-letter",
        FailurePolicy::Skip => "skip",
        FailurePolicy::Block => "block",
    };
    let start = match &p.start {
        StartPosition::Earliest => "\"earliest\"".to_string(),
        StartPosition::Latest => "\"latest\"".to_string(),
        StartPosition::Timestamp(ms) => format!("{{ timestamp = {ms} }}"),
        StartPosition::Offsets(topics) => {
            format!("{{ offsets = {} }}", toml_table(topics, |partitions| toml_table(partitions, i64::to_string)))
        }
    };
    let guarantee = match p.guarantee {
        Guarantee::AtLeastOnce => "at-least-once",
        Guarantee::ExactlyOnce => "exactly-once",
    };
    let dlq =
        p.dead_letter_topic.as_ref().map(|t| format!(", dead_letter_topic = {}", toml_string(t))).unwrap_or_default();
    out.push_str(&format!(
        "processing = {{ batch_size = {}, batch_max_bytes = {}, linger_ms = {}, max_retries = {}, retry_backoff_ms = {}, \
         retry_backoff_max_ms = {}, on_failure = \"{on_failure}\", start = {start}, guarantee = \"{guarantee}\"{dlq} }}\n",
        p.batch_size, p.batch_max_bytes, p.linger_ms, p.max_retries, p.retry_backoff_ms, p.retry_backoff_max_ms
    ));
    let g = &spec.group;
    out.push_str(&format!(
        "group = {{ static_membership = {}, session_timeout_ms = {}, heartbeat_interval_ms = {} }}\n",
        g.static_membership, g.session_timeout_ms, g.heartbeat_interval_ms
    ));
    out
}

/// Whether `spec` follows the rules `validate` documents, decided independently of it.
fn follows_the_rules<M>(spec: &PipelineSpec<M>) -> bool {
    let allowed = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let topic = |s: &str| !s.is_empty() && s.len() <= 249 && allowed(s);
    let dlq = spec.processing.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dlq", spec.name));
    let p = &spec.processing;
    let start = match &p.start {
        StartPosition::Earliest | StartPosition::Latest => true,
        StartPosition::Timestamp(ms) => (0..=253_402_300_799_999).contains(ms),
        StartPosition::Offsets(topics) => {
            topics.values().flatten().all(|(partition, offset)| *partition >= 0 && *offset >= 0)
        }
    };
    (1..=64).contains(&spec.name.len())
        && allowed(&spec.name)
        && spec.name != "."
        && spec.name != ".."
        && !spec.inputs.is_empty()
        && spec.outputs.contains_key("default")
        && spec.inputs.iter().chain(spec.outputs.values()).all(|t| topic(t))
        && topic(&dlq)
        && !spec.inputs.iter().any(|t| spec.outputs.values().any(|o| o == t))
        && (1..=100_000).contains(&p.batch_size)
        && (1..=16 * 1024 * 1024).contains(&p.batch_max_bytes)
        && p.linger_ms <= 60_000
        && p.max_retries <= 100
        && (1..=60_000).contains(&p.retry_backoff_ms)
        && (p.retry_backoff_ms..=600_000).contains(&p.retry_backoff_max_ms)
        && start
        && (1_000..=3_600_000).contains(&spec.group.session_timeout_ms)
        && (100..=spec.group.session_timeout_ms / 3).contains(&spec.group.heartbeat_interval_ms)
}

/// Checks what `validate` says of a spec that parsed.
fn validated<M: std::fmt::Debug>(spec: &PipelineSpec<M>) -> Result<(), TestCaseError> {
    match spec.validate() {
        Ok(()) => prop_assert!(follows_the_rules(spec), "{:?} was accepted", spec),
        Err(error) => {
            prop_assert!(!follows_the_rules(spec), "{:?} was refused: {}", spec, error);
            prop_assert_eq!(&error.pipeline, &spec.name);
            prop_assert!(!error.reason.is_empty());
            prop_assert!(
                error.to_string().contains(&format!("{:?}", spec.name)),
                "{} does not name the pipeline",
                error
            );
        }
    }
    Ok(())
}

#[test]
fn a_valid_spec_is_accepted_and_parses_back_equal_from_json_and_from_toml() {
    check("spec_round_trip", 256, valid_spec(), |spec| {
        prop_assert_eq!(spec.validate(), Ok(()));
        let json = serde_json::to_string(&spec).expect("a spec serialises");
        let from_json: PipelineSpec = serde_json::from_str(&json)
            .map_err(|e| TestCaseError::fail(format!("JSON {json} does not parse back: {e}")))?;
        prop_assert_eq!(&from_json, &spec);
        // The admin API parses a body to a JSON value first.
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let from_value: PipelineSpec = serde_json::from_value(value)
            .map_err(|e| TestCaseError::fail(format!("JSON value {json} does not parse back: {e}")))?;
        prop_assert_eq!(&from_value, &spec);
        let toml = to_toml(&spec);
        let from_toml: PipelineSpec =
            toml::from_str(&toml).map_err(|e| TestCaseError::fail(format!("TOML\n{toml}\ndoes not parse: {e}")))?;
        prop_assert_eq!(&from_toml, &spec);
        let config = format!("[kafka]\nbrokers = \"127.0.0.1:9092\"\n\n[[pipeline]]\n{toml}");
        let serve: ServeConfig = toml::from_str(&config)
            .map_err(|e| TestCaseError::fail(format!("serve config\n{config}\ndoes not parse: {e}")))?;
        // The config file names a module file: here, one named like the digest.
        let declared = spec.clone().with_module(PathBuf::from(spec.module.as_str()));
        prop_assert_eq!(&serve.pipelines, &vec![declared]);
        Ok(())
    });
}

#[test]
fn validate_accepts_exactly_the_specs_its_rules_allow_and_names_the_pipeline_it_refuses() {
    let text = prop_oneof![any::<String>(), NAME, "[a-z.]{0,3}", "[A-Za-z0-9_.-]{240,260}"];
    let specs = (
        valid_spec(),
        prop::option::of(text.clone()),
        prop::option::of(prop::collection::vec(text.clone(), 0..3)),
        prop::option::of(prop::collection::btree_map("[a-z]{0,8}", text.clone(), 0..3)),
        prop::option::of(prop::option::of(text)),
        prop::option::of((0usize..3, 0usize..3)),
    )
        .prop_map(|(mut spec, name, inputs, outputs, dlq, batch)| {
            if let Some(name) = name {
                spec.name = name;
            }
            if let Some(inputs) = inputs {
                spec.inputs = inputs;
            }
            if let Some(outputs) = outputs {
                spec.outputs = outputs;
            }
            if let Some(dlq) = dlq {
                spec.processing.dead_letter_topic = dlq;
            }
            if let Some((size, bytes)) = batch {
                spec.processing.batch_size = size;
                spec.processing.batch_max_bytes = bytes;
            }
            spec
        });
    check("spec_validate", 1024, specs, |spec| validated(&spec));
}

/// Tokens of specs, for mutations.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"=",
    b"\n",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\"default\"",
    b"\"processing\"",
    b"\"start\"",
    b"{\"offsets\":{\"t\":{\"0\":1}}}",
    b"{\"timestamp\":1}",
    b"\"latest\"",
    b"\"dead-letter\"",
    b"\\u0000",
    b"\\ud800",
    b"[[pipeline]]",
    b"[kafka]",
    b"inputs = []",
    b"batch_size = 0",
    b"9223372036854775808",
];

#[test]
fn any_json_body_is_parsed_and_validated_or_refused_without_panic() {
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        valid_spec().prop_flat_map(|spec| mutated(serde_json::to_vec(&spec).expect("JSON"), TOKENS)),
    ];
    check("spec_json_mutated", 512, bodies, |body| {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body)
            && let Ok(spec) = serde_json::from_value::<PipelineSpec>(value)
        {
            validated(&spec)?;
        }
        if let Ok(spec) = serde_json::from_slice::<PipelineSpec>(&body) {
            validated(&spec)?;
        }
        Ok(())
    });
}

#[test]
fn any_serve_config_text_is_parsed_and_validated_or_refused_without_panic() {
    let texts = valid_spec().prop_flat_map(|spec| {
        let config = format!("[kafka]\nbrokers = \"127.0.0.1:9092\"\n\n[[pipeline]]\n{}", to_toml(&spec));
        mutated(config.into_bytes(), TOKENS)
    });
    check("spec_toml_mutated", 512, texts, |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(config) = toml::from_str::<ServeConfig>(&text) {
            for spec in &config.pipelines {
                validated(spec)?;
            }
        }
        Ok(())
    });
}

#[test]
fn any_text_as_module_or_cache_is_read_or_refused_naming_its_key_and_hiding_user_info() {
    let text = prop_oneof![
        any::<String>(),
        "(sha256:)?[0-9a-fA-F]{60,68}",
        "(redis|rediss|memcache|memory)://[a-z:@/?=&%0-9]{0,30}",
        "redis://u:s3cretpw@[a-z:@/?=&%0-9]{0,20}",
    ];
    let cases = (valid_spec(), text, any::<bool>());
    check("spec_module_and_cache_text", 512, cases, |(spec, text, as_module)| {
        let key = if as_module { "module" } else { "cache" };
        let mut json = serde_json::to_value(&spec).expect("JSON");
        json[key] = text.clone().into();
        match serde_json::from_value::<PipelineSpec>(json) {
            Ok(read) if as_module => prop_assert_eq!(read.module.as_str(), text.to_ascii_lowercase()),
            Ok(read) => prop_assert_eq!(serde_json::to_value(&read.cache).expect("JSON"), text),
            Err(error) => {
                let message = error.to_string();
                prop_assert!(message.starts_with(&format!("{key}: ")), "{} does not name {}", message, key);
                // A module is no secret and is quoted; a cache URL's user info is.
                prop_assert!(as_module || !message.contains("s3cretpw"), "{}", message);
            }
        }
        Ok(())
    });
}
