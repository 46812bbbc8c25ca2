//! `sluice modules`: the modules stored on the runtime.

use sluice::api::ModuleList;

use super::{print_json, print_table};
use crate::ClientArgs;

/// Lists the stored modules.
pub fn modules(args: &ClientArgs) -> anyhow::Result<()> {
    let modules = args.client().list_modules()?;
    if args.json {
        return print_json(&ModuleList { modules });
    }
    let rows: Vec<Vec<String>> =
        modules.iter().map(|m| vec![m.digest.clone(), m.size.to_string(), m.uploaded_at.to_string()]).collect();
    print_table(&["DIGEST", "BYTES", "UPLOADED (UNIX S)"], &rows)?;
    Ok(())
}
