//! `sluice reload` and `sluice rollback`: switch a running pipeline to another module.

use std::path::Path;

use sluice::api::ModuleChange;

use super::lifecycle::print_summary;
use super::{component, with_progress};
use crate::{ClientArgs, ReloadArgs, RollbackArgs};

/// Reloads with a component file, a crate folder to build, or the digest of a stored module.
pub fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    let client = args.client.client();
    let answer = if args.module.starts_with("sha256:") {
        client.reload_stored(&args.name, &args.module)?
    } else {
        let module = component(Path::new(&args.module))?;
        with_progress(&module, |progress| client.reload(&args.name, &module, progress))?
    };
    print_change(&args.client, "reloaded", &answer)
}

/// Rolls back to the previous module version, or to `--revision`.
pub fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let answer = args.client.client().rollback(&args.name, args.revision)?;
    print_change(&args.client, "rolled back", &answer)
}

/// Prints the answer of a reload or rollback: `unchanged` when the module named was already
/// running, and the revision it superseded, if any.
fn print_change(args: &ClientArgs, what: &str, answer: &ModuleChange) -> anyhow::Result<()> {
    let what = if answer.applied == sluice::api::Applied::Unchanged { "unchanged" } else { what };
    print_summary(args, what, answer, &answer.pipeline)?;
    if let (false, Some(superseded)) = (args.json, answer.superseded) {
        outln!(
            "revision {superseded} never processed a record: this change replaced it before any partition took it up"
        )?;
    }
    Ok(())
}
