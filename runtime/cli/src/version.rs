//! What `sluice version` reports: this runtime's version, the WIT package its functions are
//! built against, and the WebAssembly engine it runs them on. The last two are read at build
//! time (`build.rs`) from `wit/sluice.wit` and `Cargo.lock`, so they cannot drift from what is
//! built.

use serde::Serialize;

/// This runtime's version (the workspace's).
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The newest WIT package functions implement, `name@version` (`sluice:function@0.2.0`);
/// components built for 0.1.0 run too.
pub const WIT_PACKAGE: &str = env!("SLUICE_WIT_PACKAGE");
/// The wasmtime version built in, as locked in `Cargo.lock`.
pub const WASMTIME_VERSION: &str = env!("SLUICE_WASMTIME_VERSION");

/// The versions, as `sluice version --json` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Versions {
    /// [`RUNTIME_VERSION`].
    pub sluice: &'static str,
    /// The version part of [`WIT_PACKAGE`].
    pub wit: &'static str,
    /// [`WIT_PACKAGE`].
    pub wit_package: &'static str,
    /// [`WASMTIME_VERSION`].
    pub wasmtime: &'static str,
}

impl Versions {
    /// This build's versions.
    pub fn of_this_build() -> Versions {
        let wit = WIT_PACKAGE.rsplit_once('@').map_or(WIT_PACKAGE, |(_, version)| version);
        Versions { sluice: RUNTIME_VERSION, wit, wit_package: WIT_PACKAGE, wasmtime: WASMTIME_VERSION }
    }
}

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "sluice {}", self.sluice)?;
        writeln!(f, "WIT package {}", self.wit_package)?;
        write!(f, "wasmtime {}", self.wasmtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace_file(path: &str) -> String {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)).unwrap()
    }

    #[test]
    fn the_wasmtime_version_is_the_one_cargo_lock_builds() {
        let lock = workspace_file("Cargo.lock");
        let entry = format!("name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"\n");
        assert!(lock.contains(&entry), "Cargo.lock does not lock wasmtime {WASMTIME_VERSION}");
        let major = WASMTIME_VERSION.split('.').next().unwrap();
        let manifest = workspace_file("Cargo.toml");
        assert!(manifest.contains(&format!("wasmtime = {{ version = \"{major}")), "wasmtime {major} in Cargo.toml");
    }

    #[test]
    fn the_wit_package_is_the_one_wit_sluice_wit_declares() {
        let wit = workspace_file("wit/sluice.wit");
        assert!(wit.lines().any(|l| l.trim() == format!("package {WIT_PACKAGE};")), "{WIT_PACKAGE}");
        let versions = Versions::of_this_build();
        assert_eq!(format!("sluice:function@{}", versions.wit), WIT_PACKAGE);
        assert_eq!(versions.sluice, env!("CARGO_PKG_VERSION"));
    }
}
