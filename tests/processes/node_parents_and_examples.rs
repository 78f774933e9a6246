//! The Node parent's conformance run against the Rust children, and the
//! example programs run as pairs.

use std::process::Command;

use crate::common::{example, js_peer, node};

/// The Node parent's conformance run (`peer.js parent`) against the
/// example `program`, a Rust child.
fn run_node_parent(node: &std::path::Path, parent_args: &[&str], program: &str, child: &[&str]) {
    let output = Command::new(node)
        .arg(js_peer())
        .arg("parent")
        .args(parent_args)
        .arg("--")
        .arg(example(program))
        .args(child)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node parent failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for check in [
        "handshake",
        "echo",
        "concurrent",
        "out_of_order",
        "callback",
        "plain",
        "error",
    ] {
        assert!(
            stdout.contains(&format!("PASS {check}")),
            "{check} missing:\n{stdout}"
        );
    }
    assert!(stdout.contains("DONE"), "{stdout}");
}

#[test]
fn node_parent_with_rust_child() {
    let Some(node) = node() else { return };
    run_node_parent(&node, &[], "rust_peer", &[]);
}

#[test]
fn one_dot_zero_node_parent_with_rust_child() {
    let Some(node) = node() else { return };
    run_node_parent(&node, &["--v1"], "rust_peer", &[]);
}

/// The same checks against a child written with the blocking API.
#[test]
fn node_parent_with_a_blocking_rust_child() {
    let Some(node) = node() else { return };
    run_node_parent(&node, &[], "blocking_peer", &[]);
    run_node_parent(&node, &["--v1"], "blocking_peer", &[]);
}

/// The seed log, then the other direction; every parent/child pair of
/// examples, Rust or Node, prints all of it.
const EXAMPLE_LOG: &[&str] = &[
    "[parent] Hands have been shaken! Now I know that the child process listens to my requests",
    "[parent] Sending request:  (REQUEST FROM parent)",
    "[child]  Got request:      (REQUEST FROM parent)",
    "[child]  Sending response: (RESPONSE FROM child TO (REQUEST FROM parent))",
    "[parent] Got response:     (RESPONSE FROM child TO (REQUEST FROM parent))",
    "[child]  Response sent:    (RESPONSE FROM child TO (REQUEST FROM parent))",
    "[child]  Sending request:  (REQUEST FROM child)",
    "[parent] Got request:      (REQUEST FROM child)",
    "[parent] Sending response: (RESPONSE FROM parent TO (REQUEST FROM child))",
    "[child]  Got response:     (RESPONSE FROM parent TO (REQUEST FROM child))",
];

/// Runs an example pair to completion and checks that it succeeded and
/// printed the whole log (lines of the two processes may interleave).
fn assert_prints_the_example_log(command: &mut Command) {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{:?} failed:\n{stdout}\n{stderr}",
        command
    );
    for line in EXAMPLE_LOG {
        assert!(
            stdout.lines().any(|l| l == *line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn the_parent_example_prints_the_seed_log() {
    assert_prints_the_example_log(&mut Command::new(example("parent")));
}

#[test]
fn the_parent_example_names_the_signal_when_its_child_dies() {
    let output = Command::new(example("parent"))
        .args(["sh", "-c", "kill -9 $$"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("killed by signal 9 (SIGKILL)"), "{stderr}");
}

#[test]
fn the_examples_interoperate_with_node() {
    let Some(node) = node() else { return };
    let root = env!("CARGO_MANIFEST_DIR");
    // Rust parent, Node child.
    assert_prints_the_example_log(
        Command::new(example("parent"))
            .arg(&node)
            .arg(format!("{root}/examples/node/child.js")),
    );
    // Node parent, Rust child.
    assert_prints_the_example_log(
        Command::new(&node)
            .arg(format!("{root}/examples/node/parent.js"))
            .arg(example("child")),
    );
    // Node parent, Node child: the Node examples agree with ours.
    assert_prints_the_example_log(Command::new(&node).arg(format!("{root}/examples/node/parent.js")));
}
