//! Functions from the command line: `sluice new` writes a new stream function (a Rust crate, a
//! Python module or a JavaScript module), and `sluice build` builds one into the WebAssembly
//! component that `sluice run`, `sluice serve` and `sluice deploy` take.
//!
//! This module owns:
//! - the [`Language`]s, and how the language of a function's folder is told (its entry file);
//! - the templates of a new function (`runtime/cli/templates/<language>/`, embedded in the
//!   binary) and their placeholders: `{{name}}`, `{{crate_name}}` (the name with `-` as `_`, as
//!   Rust and the component's file name spell it), `{{sdk_dependency}}` (the `sluice-sdk` line
//!   of `Cargo.toml`, from an [`SdkSource`]) and the pinned tool versions;
//! - which names a function may have ([`validate_name`]);
//! - the cargo invocation that builds a Rust component (`cargo build --release --target
//!   wasm32-wasip2`), and finding the component among cargo's JSON messages. The Python and
//!   JavaScript builds are in [`interpreted`].
//!
//! For Rust it installs nothing: a missing `wasm32-wasip2` target is reported with the command
//! that installs it. For Python and JavaScript, the first build installs the pinned build tool
//! into the function's folder (`.venv`, `node_modules`), as cargo fetches a crate's
//! dependencies. The tools' own messages (progress, compiler errors) go to the user's stderr as
//! they come; stdout is left to the caller.

mod interpreted;

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;

/// The Rust target guest components are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The longest function name, in characters (a pipeline name has the same limit).
pub const MAX_NAME_LEN: usize = 64;

/// The componentize-py version a Python function's template pins and `sluice build` installs
/// when a function pins none: the version Sluice is tested with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The componentize-qjs version a JavaScript function's template pins: the version Sluice is
/// tested with (QuickJS; no leak over a million calls, unlike the StarlingMonkey builds).
pub const COMPONENTIZE_QJS_VERSION: &str = "0.4.5";

/// The contract Python and JavaScript functions are built against, given to their build tools:
/// 0.1.0 (`wit/v0.1/sluice.wit`), record by record, which this `sluice` runs beside 0.2.0. An
/// interpreted function's cost is its interpreter, not the boundary that 0.2.0 makes cheaper,
/// and 0.1.0 reads naturally in both languages (a list of records, each with its own bytes).
pub const WIT: &str = include_str!("../../../../wit/v0.1/sluice.wit");

/// The language a function is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// A Rust crate using the `sluice-sdk` crate, built with cargo.
    Rust,
    /// A Python module, `app.py`, built with componentize-py.
    Python,
    /// A JavaScript module, `app.js`, built with componentize-qjs.
    JavaScript,
}

impl Language {
    /// Every language, in the order a folder's entry files are looked for.
    pub const ALL: [Language; 3] = [Language::Rust, Language::Python, Language::JavaScript];

    /// The name `--lang` takes: `rust`, `python` or `js`.
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "js",
        }
    }

    /// The file that marks a function's folder as being of this language.
    pub fn entry_file(self) -> &'static str {
        match self {
            Language::Rust => "Cargo.toml",
            Language::Python => "app.py",
            Language::JavaScript => "app.js",
        }
    }

    /// The language of the function in `dir`, told by the first entry file found
    /// (`Cargo.toml`, `app.py`, `app.js`).
    ///
    /// # Errors
    ///
    /// None of them is in `dir`.
    pub fn of_function(dir: &Path) -> anyhow::Result<Language> {
        Language::ALL.into_iter().find(|language| dir.join(language.entry_file()).is_file()).ok_or_else(|| {
            anyhow!(
                "no Cargo.toml in {} (nor app.py or app.js): `sluice build` builds a function's folder \
                 (`sluice new <name> [--lang python|js]` creates one)",
                dir.display()
            )
        })
    }

    /// The files of a new function: each path in its folder, and its template.
    fn templates(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Language::Rust => RUST_TEMPLATES,
            Language::Python => PYTHON_TEMPLATES,
            Language::JavaScript => JS_TEMPLATES,
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Language {
    type Err = anyhow::Error;

    /// `rust`, `python` (or `py`), `js` (or `javascript`), in any case.
    fn from_str(text: &str) -> anyhow::Result<Language> {
        match text.to_ascii_lowercase().as_str() {
            "rust" | "rs" => Ok(Language::Rust),
            "python" | "py" => Ok(Language::Python),
            "js" | "javascript" => Ok(Language::JavaScript),
            _ => bail!("unknown language {text:?}: the languages are rust, python and js"),
        }
    }
}

/// The sample records every template carries, for `sluice run`.
const SAMPLE: &str = include_str!("../../templates/guest/sample.jsonl.tmpl");

/// The files of a new Python function.
const PYTHON_TEMPLATES: &[(&str, &str)] = &[
    ("app.py", include_str!("../../templates/python/app.py.tmpl")),
    ("requirements.txt", include_str!("../../templates/python/requirements.txt.tmpl")),
    ("README.md", include_str!("../../templates/python/README.md.tmpl")),
    (".gitignore", include_str!("../../templates/python/gitignore.tmpl")),
    ("sample.jsonl", SAMPLE),
];

/// The files of a new JavaScript function.
const JS_TEMPLATES: &[(&str, &str)] = &[
    ("app.js", include_str!("../../templates/js/app.js.tmpl")),
    ("package.json", include_str!("../../templates/js/package.json.tmpl")),
    ("README.md", include_str!("../../templates/js/README.md.tmpl")),
    (".gitignore", include_str!("../../templates/js/gitignore.tmpl")),
    ("sample.jsonl", SAMPLE),
];

/// The files of a new Rust crate: the path in the crate, and its template.
const RUST_TEMPLATES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../templates/guest/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("../../templates/guest/src/lib.rs.tmpl")),
    ("README.md", include_str!("../../templates/guest/README.md.tmpl")),
    (".gitignore", include_str!("../../templates/guest/gitignore.tmpl")),
    ("sample.jsonl", SAMPLE),
];

/// Names a crate cannot take: Rust keywords, the crates every Rust program may use, and the
/// generated crate's own dependencies (compared with `-` read as `_`).
const RESERVED_NAMES: &[&str] = &[
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "Self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
    "serde_json",
    "sluice_sdk",
];

/// Where a generated crate gets the `sluice-sdk` crate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A local copy of the SDK: the folder holding its `Cargo.toml`. The generated crate names
    /// it by absolute path, so the crate can live anywhere on the same machine.
    Path(PathBuf),
    /// A git repository holding the SDK, at a fixed revision.
    Git {
        /// The repository's URL.
        url: String,
        /// The revision: a commit hash, or a tag or other reference git resolves.
        rev: String,
    },
}

impl SdkSource {
    /// The `sluice-sdk = { ... }` line of the generated `Cargo.toml`.
    fn dependency_line(&self) -> anyhow::Result<String> {
        match self {
            SdkSource::Path(path) => {
                let path = std::path::absolute(path)
                    .with_context(|| format!("cannot make the SDK path {} absolute", path.display()))?;
                if !path.join("Cargo.toml").is_file() {
                    bail!("no sluice-sdk crate at {}: the folder has no Cargo.toml", path.display());
                }
                let text = path.to_str().ok_or_else(|| {
                    anyhow!("the SDK path {} is not UTF-8, which Cargo.toml requires", path.display())
                })?;
                Ok(format!("sluice-sdk = {{ path = {} }}", toml_string(text)))
            }
            SdkSource::Git { url, rev } => {
                Ok(format!("sluice-sdk = {{ git = {}, rev = {} }}", toml_string(url), toml_string(rev)))
            }
        }
    }
}

/// The SDK in the source tree this `sluice` was built from (`sdk/` beside `runtime/`), when it
/// is still there: what `sluice new` uses unless told otherwise.
pub fn default_sdk() -> Option<SdkSource> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk")).canonicalize().ok()?;
    dir.join("Cargo.toml").is_file().then_some(SdkSource::Path(dir))
}

/// Checks that `name` can name a function's crate: 1 to [`MAX_NAME_LEN`] ASCII letters,
/// digits, `-` or `_`, starting with a letter, and not a Rust keyword or the name of a crate
/// the function depends on (`std`, `sluice-sdk`, `serde_json`, ...).
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    validate_name_in(name, Language::Rust)
}

/// Checks that `name` can name a function in `language`: as [`validate_name`] for Rust; for
/// Python and JavaScript the same characters, without the Rust-only reserved names.
pub fn validate_name_in(name: &str, language: Language) -> anyhow::Result<()> {
    let well_formed = (1..=MAX_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !well_formed {
        bail!(
            "invalid function name {name:?}: a name is 1 to {MAX_NAME_LEN} ASCII letters, digits, '-' or '_', \
             starting with a letter (for example \"click-counter\")"
        );
    }
    if language == Language::Rust && RESERVED_NAMES.contains(&crate_name(name).as_str()) {
        bail!("invalid function name {name:?}: it is a Rust keyword or the name of a crate a function uses");
    }
    Ok(())
}

/// The name as Rust spells the crate, and as the component's file is named in every language
/// (`<target>/wasm32-wasip2/release/<crate_name>.wasm`): `-` becomes `_`.
pub fn crate_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Creates `<parent_dir>/<name>/`, a Rust guest crate that builds and tests as it is:
/// `Cargo.toml`, `src/lib.rs` (a function that counts records per key, with native unit
/// tests), `README.md` (how to test, build, run and deploy it), `.gitignore` and `sample.jsonl`
/// (records for `sluice run`). Returns the crate's folder. [`new_function`] writes the other
/// languages.
///
/// # Errors
///
/// As [`new_function`], and an SDK folder without a `Cargo.toml`.
pub fn new_guest(name: &str, parent_dir: &Path, sdk: &SdkSource) -> anyhow::Result<PathBuf> {
    new_function(name, parent_dir, Language::Rust, Some(sdk))
}

/// Creates `<parent_dir>/<name>/`, a function in `language` that builds as it is, from the
/// language's template: the same function (it counts records per key) in each, with its
/// `README.md`, `.gitignore` and `sample.jsonl`. A Rust crate depends on `sdk`; a Python
/// function pins componentize-py in `requirements.txt`, a JavaScript one componentize-qjs in
/// `package.json`. Returns the function's folder.
///
/// The folder may exist if it is empty; `parent_dir` is created when missing.
///
/// # Errors
///
/// An invalid name (see [`validate_name_in`]), a folder that already has something in it, a Rust
/// crate without an SDK, or a file that cannot be written (nothing is left behind then).
pub fn new_function(
    name: &str,
    parent_dir: &Path,
    language: Language,
    sdk: Option<&SdkSource>,
) -> anyhow::Result<PathBuf> {
    validate_name_in(name, language)?;
    let sdk_dependency = match (language, sdk) {
        (Language::Rust, Some(sdk)) => sdk.dependency_line()?,
        (Language::Rust, None) => bail!("a new Rust function needs the sluice-sdk crate to depend on"),
        _ => String::new(),
    };
    let dir = parent_dir.join(name);
    let created = if dir.is_dir() {
        let mut entries = fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            bail!("{} already exists and is not empty: choose another name or folder", dir.display());
        }
        false
    } else if dir.exists() {
        bail!("{} already exists and is not a folder", dir.display());
    } else {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        true
    };
    let crate_name = crate_name(name);
    let placeholders = [
        ("name", name),
        ("crate_name", crate_name.as_str()),
        ("sdk_dependency", sdk_dependency.as_str()),
        ("componentize_py_version", COMPONENTIZE_PY_VERSION),
        ("componentize_qjs_version", COMPONENTIZE_QJS_VERSION),
    ];
    if let Err(error) = write_templates(&dir, language.templates(), &placeholders) {
        // Leave the folder as it was: gone, or empty.
        if created {
            let _ = fs::remove_dir_all(&dir);
        } else if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            }
        }
        return Err(error);
    }
    Ok(dir)
}

/// Writes every template, rendered, into `dir` (empty), never overwriting a file.
fn write_templates(dir: &Path, templates: &[(&str, &str)], placeholders: &[(&str, &str)]) -> anyhow::Result<()> {
    for (relative, template) in templates {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(render(template, placeholders).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `template` with each `{{key}}` of `placeholders` replaced by its value, in one pass (a value
/// is never searched for placeholders). Unknown `{{...}}` are left as they are.
fn render(template: &str, placeholders: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let known = after
            .find("}}")
            .and_then(|end| placeholders.iter().find(|(key, _)| *key == &after[..end]).map(|(_, value)| (end, *value)));
        match known {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` as a TOML basic string, quoted and escaped.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How to build a function.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The target folder: for Rust, cargo's (passed as `CARGO_TARGET_DIR`); `None` leaves it to
    /// cargo (the crate's `target/`, unless the environment or cargo's config say otherwise)
    /// and, for Python and JavaScript, means the function's `target/`.
    pub target_dir: Option<PathBuf>,
    /// The function's language; `None` tells it from the folder ([`Language::of_function`]).
    pub language: Option<Language>,
}

/// Builds the function in `dir` into a component and returns the component's path,
/// `<target>/wasm32-wasip2/release/<name with _>.wasm` in every language.
///
/// # Errors
///
/// A folder of no known language, or the language's build failing (see [`build_guest`] for
/// Rust, [`interpreted`] for Python and JavaScript).
pub fn build_function(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    let language = match options.language {
        Some(language) => language,
        None => Language::of_function(dir)?,
    };
    // A relative target folder is taken from where `sluice build` runs, in every language
    // (cargo, which runs in the function's folder, would take it from there).
    let target_dir = match &options.target_dir {
        Some(target) => {
            Some(std::path::absolute(target).with_context(|| format!("cannot make {} absolute", target.display()))?)
        }
        None => None,
    };
    let options = &BuildOptions { target_dir, language: Some(language) };
    match language {
        Language::Rust => build_guest(dir, options),
        Language::Python => interpreted::build_python(dir, options),
        Language::JavaScript => interpreted::build_javascript(dir, options),
    }
}

/// Builds the guest crate in `dir` into a component with `cargo build --release --target
/// wasm32-wasip2` and returns the component's path (`.../wasm32-wasip2/release/<crate_name>.wasm`).
///
/// Cargo runs in `dir`, so the crate's toolchain file and cargo config apply. Its progress and
/// the compiler's messages go to this process's stderr as they come; its JSON messages on stdout
/// say which files it built. When `dir` is a workspace that builds several components, the
/// crate whose manifest is `dir/Cargo.toml` is the one returned.
///
/// # Errors
///
/// No `Cargo.toml` in `dir`; the `wasm32-wasip2` target not installed (with the `rustup`
/// command that installs it); cargo missing or failing (with its exit status; the reasons are
/// in the messages above); or no component built (the crate type must include `cdylib`).
pub fn build_guest(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no Cargo.toml in {}: `sluice build` builds a guest crate (`sluice new <name>` creates one)",
            dir.display()
        );
    }
    check_wasm_target(dir)?;
    let mut command = Command::new("cargo");
    command
        .current_dir(dir)
        .args(["build", "--release", "--target", WASM_TARGET, "--message-format=json-render-diagnostics"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(target_dir) = &options.target_dir {
        command.env("CARGO_TARGET_DIR", target_dir);
    }
    let mut child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow!("cannot run cargo: it is not on PATH (install Rust from https://rustup.rs)")
        }
        _ => anyhow!(e).context("cannot run cargo"),
    })?;
    let stdout = child.stdout.take().expect("cargo's stdout is piped");
    let mut components = Vec::new();
    let mut read_error = None;
    for line in BufReader::new(stdout).lines() {
        match line {
            Ok(line) => components.extend(component_from_message(&line)),
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
    }
    let status = child.wait().context("cannot wait for cargo")?;
    if let Some(error) = read_error {
        return Err(anyhow!(error).context("cannot read cargo's messages"));
    }
    if !status.success() {
        bail!("cargo build failed in {} ({status}): its messages are above", dir.display());
    }
    choose_component(components, &manifest, dir)
}

/// A component cargo reported building.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BuiltComponent {
    /// The manifest of the package it belongs to.
    manifest_path: PathBuf,
    /// The `.wasm` file.
    wasm: PathBuf,
}

/// The parts of a cargo JSON message this module reads.
#[derive(Debug, Deserialize)]
struct CargoMessage {
    reason: String,
    #[serde(default)]
    manifest_path: Option<PathBuf>,
    #[serde(default)]
    target: Option<CargoTarget>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

/// The build target of a cargo message.
#[derive(Debug, Deserialize)]
struct CargoTarget {
    kind: Vec<String>,
}

/// The component in one line of cargo's stdout: a `compiler-artifact` message of a `cdylib`
/// target with a `.wasm` file. `None` for any other line.
fn component_from_message(line: &str) -> Option<BuiltComponent> {
    let message: CargoMessage = serde_json::from_str(line).ok()?;
    if message.reason != "compiler-artifact" || !message.target?.kind.iter().any(|kind| kind == "cdylib") {
        return None;
    }
    let wasm = message.filenames.into_iter().find(|file| file.extension().is_some_and(|ext| ext == "wasm"))?;
    Some(BuiltComponent { manifest_path: message.manifest_path.unwrap_or_default(), wasm })
}

/// The component of the crate at `manifest`, or the only one built.
fn choose_component(components: Vec<BuiltComponent>, manifest: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let canonical = |path: &Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let wanted = canonical(manifest);
    if let Some(own) = components.iter().find(|c| canonical(&c.manifest_path) == wanted) {
        return Ok(own.wasm.clone());
    }
    match components.as_slice() {
        [] => bail!(
            "cargo built no component in {}: the crate must be a library with crate-type = [\"cdylib\", \"rlib\"] \
             in the [lib] section of its Cargo.toml",
            dir.display()
        ),
        [only] => Ok(only.wasm.clone()),
        several => {
            let list: Vec<String> = several.iter().map(|c| c.wasm.display().to_string()).collect();
            bail!(
                "cargo built {} components in {} ({}): run `sluice build` in the folder of the one you want",
                several.len(),
                dir.display(),
                list.join(", ")
            )
        }
    }
}

/// Fails, with the command that installs it, when the toolchain that cargo uses in `dir` has no
/// standard library for [`WASM_TARGET`]. When rustc cannot say, cargo will.
fn check_wasm_target(dir: &Path) -> anyhow::Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = Command::new(rustc)
        .current_dir(dir)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Ok(());
    };
    let libdir = String::from_utf8_lossy(&output.stdout);
    let libdir = Path::new(libdir.trim());
    if !output.status.success() || libdir.as_os_str().is_empty() || libdir.is_dir() {
        return Ok(());
    }
    bail!(
        "the Rust target {WASM_TARGET} is not installed (no {}): install it with `rustup target add {WASM_TARGET}`",
        libdir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_names_of_1_to_64_characters_starting_with_a_letter() {
        for good in ["a", "click-counter", "Dedup_2", "x1-y_z", &"n".repeat(64)] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
        for bad in ["", "1st", "-x", "_x", "a b", "a.b", "a/b", "../x", "é", "x!", &"n".repeat(65)] {
            let error = validate_name(bad).unwrap_err().to_string();
            assert!(error.contains("1 to 64 ASCII letters"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn keywords_and_the_crates_a_function_uses_are_not_names() {
        for reserved in ["fn", "self", "Self", "test", "std", "sluice-sdk", "sluice_sdk", "serde-json"] {
            let error = validate_name(reserved).unwrap_err().to_string();
            assert!(error.contains("Rust keyword"), "{reserved:?}: {error}");
            for language in [Language::Python, Language::JavaScript] {
                assert!(validate_name_in(reserved, language).is_ok(), "{reserved:?} names a {language} function");
            }
        }
        assert!(validate_name("sluice-sdk-demo").is_ok());
        assert!(validate_name_in("2fast", Language::Python).unwrap_err().to_string().contains("1 to 64 ASCII"));
    }

    #[test]
    fn render_replaces_known_placeholders_once_and_leaves_others() {
        let placeholders = [("name", "a-b"), ("crate_name", "{{name}}")];
        assert_eq!(render("{{name}}/{{crate_name}}", &placeholders), "a-b/{{name}}", "values are not rendered");
        assert_eq!(render("{{other}} {{name", &placeholders), "{{other}} {{name");
        assert_eq!(render("no placeholders {}", &placeholders), "no placeholders {}");
        assert_eq!(render("{{{name}}}", &placeholders), "{{{name}}}", "the first `{{` starts a placeholder");
    }

    fn rendered_in(language: Language, name: &str, sdk: &SdkSource) -> Vec<(&'static str, String)> {
        let line = sdk.dependency_line().unwrap();
        let crate_name = crate_name(name);
        let placeholders = [
            ("name", name),
            ("crate_name", crate_name.as_str()),
            ("sdk_dependency", line.as_str()),
            ("componentize_py_version", COMPONENTIZE_PY_VERSION),
            ("componentize_qjs_version", COMPONENTIZE_QJS_VERSION),
        ];
        language.templates().iter().map(|(path, template)| (*path, render(template, &placeholders))).collect()
    }

    fn rendered(name: &str, sdk: &SdkSource) -> Vec<(&'static str, String)> {
        rendered_in(Language::Rust, name, sdk)
    }

    #[test]
    fn every_template_placeholder_is_rendered() {
        let sdk = SdkSource::Git { url: "https://example.com/sluice.git".into(), rev: "v0.1.0".into() };
        for language in Language::ALL {
            let files = rendered_in(language, "click-counter", &sdk);
            assert!(files.iter().any(|(path, _)| *path == language.entry_file()), "{language} has its entry file");
            for (path, text) in files {
                // JavaScript's template literals are `${...}`, never `{{`.
                assert!(!text.contains("{{"), "{language}: {path} keeps a placeholder");
            }
        }
    }

    #[test]
    fn the_python_and_javascript_templates_pin_their_build_tools() {
        let sdk = SdkSource::Git { url: "https://example.com/sluice.git".into(), rev: "v0.1.0".into() };
        let file = |language, wanted: &str| {
            rendered_in(language, "click-counter", &sdk).into_iter().find(|(path, _)| *path == wanted).unwrap().1
        };
        let requirements = file(Language::Python, "requirements.txt");
        assert!(requirements.lines().any(|line| line == format!("componentize-py=={COMPONENTIZE_PY_VERSION}")));
        let package: serde_json::Value = serde_json::from_str(&file(Language::JavaScript, "package.json")).unwrap();
        assert_eq!(package["name"], "click-counter");
        assert_eq!(package["devDependencies"]["componentize-qjs"], COMPONENTIZE_QJS_VERSION, "an exact version");
        assert!(file(Language::JavaScript, "README.md").contains("target/wasm32-wasip2/release/click_counter.wasm"));
    }

    #[test]
    fn languages_are_named_as_lang_takes_them_and_told_by_their_entry_file() {
        for language in Language::ALL {
            assert_eq!(language.name().parse::<Language>().unwrap(), language);
        }
        assert_eq!("Python".parse::<Language>().unwrap(), Language::Python);
        assert_eq!("javascript".parse::<Language>().unwrap(), Language::JavaScript);
        let error = "go".parse::<Language>().unwrap_err().to_string();
        assert!(error.contains("rust, python and js"), "{error}");

        let dir = tempfile::tempdir().unwrap();
        let error = Language::of_function(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no Cargo.toml in") && error.contains("app.py"), "{error}");
        fs::write(dir.path().join("app.js"), "").unwrap();
        assert_eq!(Language::of_function(dir.path()).unwrap(), Language::JavaScript);
        fs::write(dir.path().join("app.py"), "").unwrap();
        assert_eq!(Language::of_function(dir.path()).unwrap(), Language::Python);
        fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        assert_eq!(Language::of_function(dir.path()).unwrap(), Language::Rust);
    }

    #[test]
    fn the_wit_given_to_the_build_tools_is_contract_0_1_which_this_sluice_runs() {
        assert!(WIT.contains("package sluice:function@0.1.0;"));
        assert!(WIT.contains("world processor"));
    }

    #[test]
    fn the_manifest_names_the_crate_and_its_sdk_and_is_a_workspace_of_its_own() {
        let sdk = default_sdk().expect("the SDK is beside the runtime");
        let SdkSource::Path(sdk_dir) = &sdk else { panic!("a path") };
        assert!(sdk_dir.is_absolute() && sdk_dir.ends_with("sdk"), "{}", sdk_dir.display());
        let files = rendered("click-counter", &sdk);
        let manifest: toml::Table = toml::from_str(&files[0].1).unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("click-counter"));
        assert_eq!(manifest["lib"]["crate-type"], toml::Value::Array(vec!["cdylib".into(), "rlib".into()]));
        assert_eq!(manifest["dependencies"]["sluice-sdk"]["path"].as_str(), sdk_dir.to_str());
        assert!(manifest["workspace"].as_table().is_some_and(|t| t.is_empty()));
        assert!(manifest["profile"]["release"].is_table());
        let readme = &files.iter().find(|(path, _)| *path == "README.md").unwrap().1;
        assert!(readme.contains("target/wasm32-wasip2/release/click_counter.wasm"));
    }

    #[test]
    fn a_git_sdk_is_a_git_dependency_at_a_revision() {
        let sdk = SdkSource::Git { url: "https://example.com/sluice.git".into(), rev: "abc123".into() };
        assert_eq!(
            sdk.dependency_line().unwrap(),
            r#"sluice-sdk = { git = "https://example.com/sluice.git", rev = "abc123" }"#
        );
        let missing = SdkSource::Path(PathBuf::from("/nonexistent/sdk"));
        assert!(missing.dependency_line().unwrap_err().to_string().contains("no sluice-sdk crate at /nonexistent/sdk"));
    }

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_control_characters() {
        let text = "C:\\Users\\\"me\"\n\tsdk é";
        let document = format!("value = {}", toml_string(text));
        let parsed: toml::Table = toml::from_str(&document).unwrap();
        assert_eq!(parsed["value"].as_str(), Some(text));
    }

    #[test]
    fn cargo_messages_name_the_component_of_a_cdylib() {
        let artifact = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/f#0.1.0",
            "manifest_path":"/w/f/Cargo.toml","target":{"kind":["cdylib","rlib"],"crate_types":["cdylib","rlib"],
            "name":"f"},"filenames":["/t/wasm32-wasip2/release/f.wasm","/t/wasm32-wasip2/release/libf.rlib"],
            "fresh":false}"#
            .replace('\n', "");
        assert_eq!(
            component_from_message(&artifact),
            Some(BuiltComponent {
                manifest_path: "/w/f/Cargo.toml".into(),
                wasm: "/t/wasm32-wasip2/release/f.wasm".into()
            })
        );
        let rlib = artifact.replace(r#"["cdylib","rlib"]"#, r#"["lib"]"#);
        assert_eq!(component_from_message(&rlib), None);
        assert_eq!(component_from_message(r#"{"reason":"build-finished","success":true}"#), None);
        assert_eq!(component_from_message("not json"), None);
    }

    #[test]
    fn the_crate_s_own_component_wins_else_the_only_one() {
        let dir = Path::new("/nonexistent/w");
        let component =
            |manifest: &str, wasm: &str| BuiltComponent { manifest_path: manifest.into(), wasm: wasm.into() };
        let a = component("/nonexistent/w/a/Cargo.toml", "/t/a.wasm");
        let b = component("/nonexistent/w/b/Cargo.toml", "/t/b.wasm");
        let own = Path::new("/nonexistent/w/b/Cargo.toml");
        assert_eq!(choose_component(vec![a.clone(), b.clone()], own, dir).unwrap(), PathBuf::from("/t/b.wasm"));
        let root = Path::new("/nonexistent/w/Cargo.toml");
        assert_eq!(choose_component(vec![a.clone()], root, dir).unwrap(), PathBuf::from("/t/a.wasm"));
        let several = choose_component(vec![a, b], root, dir).unwrap_err().to_string();
        assert!(several.contains("built 2 components"), "{several}");
        let none = choose_component(vec![], root, dir).unwrap_err().to_string();
        assert!(none.contains("cdylib"), "{none}");
    }
}
