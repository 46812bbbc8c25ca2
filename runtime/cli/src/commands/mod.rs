//! The `sluice` commands, one module per command or small group of commands, and what their
//! output shares: tables, JSON, digests, upload progress.

pub mod deploy;
pub mod dev;
pub mod lifecycle;
pub mod logs;
pub mod ls;
pub mod modules;
pub mod new;
pub mod nodes;
pub mod offsets;
pub mod reload;
pub mod run;
pub mod serve;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Serialize;
use sluice::client::ClientError;

/// A component path: the file given, or the component built from the function folder given.
pub fn component(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_dir() { new::build(path, &Default::default()) } else { Ok(path.to_path_buf()) }
}

/// `KEY=VALUE` settings, as `--config` gives them.
pub fn parse_settings(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut settings = BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--config {pair:?} must be KEY=VALUE");
        };
        settings.insert(key.to_owned(), value.to_owned());
    }
    Ok(settings)
}

/// Runs an upload of `module`, showing its progress on a terminal, then a spinner while the
/// runtime compiles it.
pub fn with_progress<T>(module: &Path, upload: impl FnOnce(&mut dyn FnMut(u64, u64)) -> T) -> T {
    let terminal = std::io::stderr().is_terminal();
    let name = module.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut last_percent = u64::MAX;
    let mut report = |sent: u64, total: u64| {
        if !terminal {
            return;
        }
        let percent = (sent * 100).checked_div(total).unwrap_or(100);
        if percent != last_percent {
            last_percent = percent;
            let step = if percent == 100 { "uploaded; compiling..." } else { "uploading" };
            eprint!("\r{name}: {step} {percent:>3}% of {:.1} MiB   ", total as f64 / (1024.0 * 1024.0));
            let _ = std::io::stderr().flush();
        }
    };
    let result = upload(&mut report);
    if terminal {
        eprintln!();
    }
    result
}

/// Prints an answer as the API's JSON, pretty, its keys sorted.
pub fn print_json(answer: &impl Serialize) -> anyhow::Result<()> {
    // Through a `Value`, whose objects keep their keys sorted: the order `--json` has always
    // printed, whatever the order of the type's fields.
    outln!("{}", serde_json::to_string_pretty(&serde_json::to_value(answer)?)?)?;
    Ok(())
}

/// A failure as `--json` prints it: `{"error": {"code", "message", "status"}}`, the API's error
/// body with the HTTP status added. The code and message are the API's when it answered with
/// an error; otherwise the code says what failed on this side (`unreachable`: nothing listens
/// at the URL; `client_error`: the call could not be made or its answer not read; `error`:
/// anything else, a file that cannot be read, say), the message is the whole error, and there
/// is no status.
pub fn error_json(error: &anyhow::Error) -> serde_json::Value {
    let client = error.chain().find_map(|e| e.downcast_ref::<ClientError>());
    let (code, message, status) = match client {
        Some(ClientError::Api(failure)) => (failure.code.clone(), failure.message.clone(), Some(failure.status)),
        Some(ClientError::Unreachable { .. }) => ("unreachable".to_owned(), format!("{error:#}"), None),
        Some(_) => ("client_error".to_owned(), format!("{error:#}"), None),
        None => ("error".to_owned(), format!("{error:#}"), None),
    };
    let mut detail = serde_json::json!({ "code": code, "message": message });
    if let Some(status) = status {
        detail["status"] = status.into();
    }
    serde_json::json!({ "error": detail })
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", padded.join("  ").trim_end())
    };
    line(headers.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

/// An optional value as a table cell: `-` when absent.
pub fn cell<T: Display>(value: Option<T>) -> String {
    value.map_or("-".into(), |v| v.to_string())
}

/// The name a state or result has in the API's JSON (`running`, `created`, ...).
pub fn wire_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(serde_json::Value::Object(object)) => match object.get("state") {
            // A partition's state is tagged `state`, beside its fields.
            Some(serde_json::Value::String(name)) => name.clone(),
            _ => "-".into(),
        },
        _ => "-".into(),
    }
}

/// `sha256:` and the first 12 hex digits of a digest.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::api::{Applied, PartitionState, PipelineState};

    #[test]
    fn a_json_failure_carries_the_apis_code_message_and_status() {
        let failure = sluice::client::ApiFailure::from_answer(
            404,
            r#"{"error":{"code":"pipeline_not_found","message":"no pipeline named \"x\""}}"#,
        );
        let error = anyhow::Error::new(ClientError::Api(failure)).context("pause x");
        assert_eq!(
            error_json(&error),
            serde_json::json!({"error": {"code": "pipeline_not_found", "message": "no pipeline named \"x\"", "status": 404}})
        );
    }

    #[test]
    fn a_json_failure_without_an_api_answer_says_what_failed_here() {
        let unreachable = anyhow::Error::new(ClientError::Unreachable { url: "http://127.0.0.1:1".into() });
        let printed = error_json(&unreachable);
        assert_eq!(printed["error"]["code"], "unreachable");
        assert!(printed["error"]["message"].as_str().unwrap().contains("http://127.0.0.1:1"), "{printed}");
        assert!(printed["error"].get("status").is_none(), "{printed}");
        assert_eq!(error_json(&anyhow::anyhow!("cannot read m.wasm"))["error"]["code"], "error");
    }

    #[test]
    fn states_and_results_print_as_the_api_names_them() {
        assert_eq!(wire_name(&PipelineState::Stalled), "stalled");
        assert_eq!(wire_name(&Applied::Unchanged), "unchanged");
        assert_eq!(wire_name(&PartitionState::Blocked { offset: 7 }), "blocked");
        assert_eq!(wire_name(&PartitionState::Stopped), "stopped");
    }

    #[test]
    fn a_digest_is_shortened_to_its_first_twelve_hex_digits() {
        assert_eq!(short(&format!("sha256:{}", "ab".repeat(32))), "sha256:abababababab");
        assert_eq!(short("sha256:ab"), "sha256:ab");
    }
}
