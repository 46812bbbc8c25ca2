//! `sluice deploy`: upload a function and create or update a pipeline running it, in one call.

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use super::{component, parse_settings, print_json, short, wire_name, with_progress};
use crate::DeployArgs;

/// Builds the spec from `--spec` and the flags, and deploys it with the module.
pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let spec = spec(&args)?;
    let module = component(&args.module)?;
    let answer = with_progress(&module, |progress| args.client.client().deploy(&spec, &module, progress))?;
    if args.client.json {
        return print_json(&answer);
    }
    outln!(
        "pipeline {}: {}, module {} (revision {})",
        args.name,
        wire_name(&answer.result),
        short(&answer.pipeline.module),
        answer.pipeline.revision
    )?;
    Ok(())
}

/// The spec to send: the `--spec` file's object (any field the runtime reads, checked by the
/// runtime, not here), with the flags' fields put over it and no `module` (the uploaded one
/// runs).
fn spec(args: &DeployArgs) -> anyhow::Result<Map<String, Value>> {
    let spec: Value = match &args.spec {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("cannot read spec {}", path.display()))?,
        )
        .with_context(|| format!("spec {} is not JSON", path.display()))?,
        None => json!({}),
    };
    let Value::Object(mut object) = spec else {
        anyhow::bail!("the spec must be a JSON object");
    };
    object.insert("name".into(), args.name.clone().into());
    if !args.inputs.is_empty() {
        object.insert("inputs".into(), json!(args.inputs));
    }
    if !args.outputs.is_empty() {
        let mut outputs = Map::new();
        for output in &args.outputs {
            let (name, topic) = output.split_once('=').unwrap_or(("default", output.as_str()));
            outputs.insert(name.to_string(), topic.into());
        }
        object.insert("outputs".into(), Value::Object(outputs));
    }
    for (field, value) in [("cache", &args.cache), ("namespace", &args.namespace)] {
        if let Some(value) = value {
            object.insert(field.into(), value.clone().into());
        }
    }
    if !args.config.is_empty() {
        object.insert("config".into(), json!(parse_settings(&args.config)?));
    }
    if args.on_failure.is_some() || args.batch_size.is_some() {
        let processing = object.entry("processing").or_insert_with(|| json!({}));
        if let Some(policy) = &args.on_failure {
            processing["on_failure"] = policy.clone().into();
        }
        if let Some(size) = args.batch_size {
            processing["batch_size"] = size.into();
        }
    }
    object.remove("module");
    Ok(object)
}
