//! Builds of Python and JavaScript functions: the language's module (`app.py`, `app.js`) and the
//! interpreter it runs on become one component, built against the [`WIT`] of contract 0.1.0,
//! which this `sluice` runs beside 0.2.0.
//!
//! - Python: componentize-py, installed into the function's `.venv` from its
//!   `requirements.txt` (or at [`COMPONENTIZE_PY_VERSION`] when it has none).
//! - JavaScript: componentize-qjs (QuickJS), installed into `node_modules` by `npm ci` (with a
//!   `package-lock.json`) or `npm install`, from the function's `package.json`. It builds with
//!   `--sync`: Sluice calls functions synchronously.
//!
//! The tools are installed on the first build, and again when the pins they were installed
//! from change.
//!
//! The tools run in the function's folder; what they print goes to stderr, so a command that
//! prints JSON on stdout (`sluice deploy --json`) stays parseable.

use std::fs;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, anyhow, bail};

use super::{BuildOptions, COMPONENTIZE_PY_VERSION, WASM_TARGET, WIT};

/// The world every function implements.
const WORLD: &str = "processor";

/// Builds the Python function in `dir` (its module `app.py`) with componentize-py.
///
/// # Errors
///
/// No `app.py`; Python or pip missing or failing; componentize-py failing (its messages,
/// above, say why: a syntax error, an import it cannot find, ...).
pub(super) fn build_python(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    require_entry(dir, "app.py", "python")?;
    let dir = &absolute_folder(dir)?;
    let tool = componentize_py(dir)?;
    let (wit, out) = prepare(dir, options)?;
    let mut command = Command::new(&tool);
    command.current_dir(dir).arg("-d").arg(&wit).args(["-w", WORLD, "componentize", "app", "-o"]).arg(&out);
    run(command, "componentize-py", "reinstall it: remove .venv and build again")?;
    Ok(out)
}

/// Builds the JavaScript function in `dir` (its module `app.js`) with componentize-qjs.
///
/// # Errors
///
/// No `app.js` or `package.json`; npm missing or failing; componentize-qjs failing (its
/// messages, above, say why).
pub(super) fn build_javascript(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    require_entry(dir, "app.js", "js")?;
    let dir = &absolute_folder(dir)?;
    let tool = componentize_qjs(dir)?;
    let (wit, out) = prepare(dir, options)?;
    let mut command = Command::new(&tool);
    command
        .current_dir(dir)
        .arg("--wit")
        .arg(&wit)
        .args(["--world", WORLD, "--js", "app.js", "--sync", "-o"])
        .arg(&out);
    run(command, "componentize-qjs", "reinstall it: remove node_modules and build again")?;
    Ok(out)
}

/// Fails unless `dir` has the language's entry file.
fn require_entry(dir: &Path, file: &str, language: &str) -> anyhow::Result<()> {
    if !dir.join(file).is_file() {
        bail!(
            "no {file} in {}: a {language} function is built from its {file} (`sluice new <name> --lang {language}` \
             creates one)",
            dir.display()
        );
    }
    Ok(())
}

/// `dir` as an absolute path, so the tools in it can be run from inside it.
fn absolute_folder(dir: &Path) -> anyhow::Result<PathBuf> {
    dir.canonicalize().with_context(|| format!("cannot find the folder {}", dir.display()))
}

/// Writes the WIT into the target folder and returns its folder, with the path the component
/// is built to (`<target>/wasm32-wasip2/release/<folder name with _>.wasm`, where cargo puts a
/// Rust one).
fn prepare(dir: &Path, options: &BuildOptions) -> anyhow::Result<(PathBuf, PathBuf)> {
    let target = options.target_dir.clone().unwrap_or_else(|| dir.join("target"));
    let target = std::path::absolute(&target).with_context(|| format!("cannot make {} absolute", target.display()))?;
    let name = dir.file_name().and_then(|name| name.to_str()).map(super::crate_name).ok_or_else(|| {
        anyhow!("the folder {} has no name that is UTF-8, and the component is named after it", dir.display())
    })?;
    let wit = target.join("sluice-wit");
    let out_dir = target.join(WASM_TARGET).join("release");
    for folder in [&wit, &out_dir] {
        fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    }
    // Written whole then renamed, so two builds sharing a target folder never read half a file.
    let file = wit.join("sluice.wit");
    if fs::read_to_string(&file).ok().as_deref() != Some(WIT) {
        static STAGED: AtomicU64 = AtomicU64::new(0);
        let n = STAGED.fetch_add(1, Ordering::Relaxed);
        let staged = wit.join(format!("sluice.wit.{}-{n}.tmp", std::process::id()));
        fs::write(&staged, WIT).with_context(|| format!("cannot write {}", staged.display()))?;
        fs::rename(&staged, &file).with_context(|| format!("cannot write {}", file.display()))?;
    }
    let out = out_dir.join(format!("{name}.wasm"));
    Ok((wit, out))
}

/// The function's componentize-py (`.venv/bin/componentize-py`), installed on first use, and
/// again when `requirements.txt` changed since: a virtual environment made with
/// `python3 -m venv`, then `pip install -r requirements.txt`.
fn componentize_py(dir: &Path) -> anyhow::Result<PathBuf> {
    let tool = dir.join(".venv/bin/componentize-py");
    let pins = fs::read_to_string(dir.join("requirements.txt")).ok();
    let pinned = pins.clone().unwrap_or_else(|| format!("componentize-py=={COMPONENTIZE_PY_VERSION}"));
    let tools = dir.join(".venv");
    if tool.is_file() && still_pinned(&tools, &pinned) {
        return Ok(tool);
    }
    eprintln!("installing componentize-py into {}", tools.display());
    if !tools.join("bin/pip").is_file() {
        let mut venv = Command::new("python3");
        venv.current_dir(dir).args(["-m", "venv", ".venv"]);
        run(venv, "python3 -m venv", "Python 3.10 or later builds Python functions")?;
    }
    let mut pip = Command::new(dir.join(".venv/bin/pip"));
    pip.current_dir(dir).args(["install", "--disable-pip-version-check", "--quiet"]);
    if pins.is_some() {
        pip.args(["-r", "requirements.txt"]);
    } else {
        pip.arg(&pinned);
    }
    run(pip, "pip install", "the virtual environment has no pip: remove .venv and build again")?;
    if !tool.is_file() {
        bail!(
            "requirements.txt in {} does not install componentize-py: add the line componentize-py=={COMPONENTIZE_PY_VERSION}",
            dir.display()
        );
    }
    remember_pins(&tools, &pinned);
    Ok(tool)
}

/// The function's componentize-qjs (`node_modules/.bin/componentize-qjs`), installed on first
/// use, and again when `package.json` or `package-lock.json` changed since, by `npm ci` (with a
/// `package-lock.json`) or `npm install`.
fn componentize_qjs(dir: &Path) -> anyhow::Result<PathBuf> {
    let tool = dir.join("node_modules/.bin/componentize-qjs");
    let Ok(package) = fs::read_to_string(dir.join("package.json")) else {
        bail!(
            "no package.json in {}: it pins the build tool, componentize-qjs (`sluice new <name> --lang js` writes one)",
            dir.display()
        );
    };
    let lock = fs::read_to_string(dir.join("package-lock.json")).ok();
    let pinned = format!("{package}\n{}", lock.as_deref().unwrap_or_default());
    let tools = dir.join("node_modules");
    if tool.exists() && still_pinned(&tools, &pinned) {
        return Ok(tool);
    }
    let verb = if lock.is_some() { "ci" } else { "install" };
    eprintln!("installing componentize-qjs into {} with npm {verb}", tools.display());
    let mut npm = Command::new("npm");
    npm.current_dir(dir).args([verb, "--no-audit", "--no-fund"]);
    run(npm, "npm", "Node.js 18 or later, with npm, builds JavaScript functions")?;
    if !tool.exists() {
        bail!(
            "package.json in {} does not install componentize-qjs: add \"componentize-qjs\": \"{}\" to its \
             devDependencies",
            dir.display(),
            super::COMPONENTIZE_QJS_VERSION
        );
    }
    remember_pins(&tools, &pinned);
    Ok(tool)
}

/// The file, in the folder of installed tools, that holds the pins they were installed from.
const INSTALLED_FROM: &str = ".sluice-installed-from";

/// `false` when `sluice build` installed the tools in `tools` from other pins than `pinned`
/// (tools installed otherwise, by hand or by `make setup`, are taken as they are).
fn still_pinned(tools: &Path, pinned: &str) -> bool {
    fs::read_to_string(tools.join(INSTALLED_FROM)).map_or(true, |installed| installed == pinned)
}

/// Notes that the tools in `tools` were installed from `pinned`. A failure to note it only
/// costs a reinstall, never the build.
fn remember_pins(tools: &Path, pinned: &str) {
    let _ = fs::write(tools.join(INSTALLED_FROM), pinned);
}

/// Runs `command` to its end, its output on stderr; fails naming `what` when it cannot start
/// (with `when_missing`, what to do about it) or does not succeed.
fn run(mut command: Command, what: &str, when_missing: &str) -> anyhow::Result<()> {
    let stderr = std::io::stderr().as_fd().try_clone_to_owned().context("cannot share stderr")?;
    command.stdin(Stdio::null()).stdout(Stdio::from(stderr)).stderr(Stdio::inherit());
    let status = command.status().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow!("cannot run {what}: {} is not installed ({when_missing})", command.get_program().display())
        }
        _ => anyhow!(e).context(format!("cannot run {what}")),
    })?;
    if !status.success() {
        bail!("{what} failed ({status}): its messages are above");
    }
    Ok(())
}
