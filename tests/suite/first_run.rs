//! `make run`, the first thing a newcomer types, installs and builds only what the demo needs.

use std::path::Path;
use std::process::Command;

/// The commands `make -n TARGET` would run from the workspace's root.
fn planned(target: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("make").arg("-n").arg(target).current_dir(root).output().expect("make runs");
    assert!(output.status.success(), "make -n {target}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn make_run_installs_nothing_only_the_tests_need_and_builds_one_function() {
    let plan = planned("run");
    for test_only in ["tansu", "apt-get", "memcached", "redis"] {
        assert!(!plan.contains(test_only), "make run would touch {test_only}:\n{plan}");
    }
    let guest_builds: Vec<&str> = plan.lines().filter(|l| l.contains("--target wasm32-wasip2")).collect();
    assert_eq!(guest_builds.len(), 1, "{plan}");
    assert!(guest_builds[0].ends_with("-p word-count"), "{plan}");
    assert!(plan.contains("rustup target add wasm32-wasip2"), "{plan}");
}

#[test]
fn make_test_still_installs_the_test_services_and_every_guest() {
    let plan = planned("test");
    assert!(plan.contains("tansu") && plan.contains("apt-get"), "{plan}");
    assert!(plan.contains("-p hostile"), "{plan}");
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == "make test"), ".ci/run runs make test");
}
