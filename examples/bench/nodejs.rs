//! The Node parent (`bench/node/parent.js`): raw `process.send` and an id
//! map after the 1.0 handshake, against a Node child or our Rust child.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::ours::BenchResult;

/// Requests/s per number in flight (1 = sequential), one value each.
pub struct NodeRun {
    pub rps: Vec<(usize, f64)>,
}

/// Runs `node bench/node/parent.js <sizes> 1 --seq-iters K -- <child...>`.
pub fn run(root: &Path, sizes: &[usize], seq_iters: usize, child: &[&str]) -> BenchResult<NodeRun> {
    let sizes_arg = sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let output = Command::new("node")
        .arg(root.join("bench/node/parent.js"))
        .args([
            sizes_arg.as_str(),
            "1",
            "--seq-iters",
            &seq_iters.to_string(),
            "--",
        ])
        .args(child)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running node: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "node parent with child {child:?} failed ({}); stdout: {stdout}",
            output.status
        ));
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("node parent printed no JSON: {stdout}"))?;
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("node parent output {line:?}: {e}"))?;
    let mut rps = Vec::new();
    for entry in value["results"].as_array().ok_or("no results in node output")? {
        let n = entry["n"].as_u64().ok_or("no n in node output")? as usize;
        let r = entry["rps"][0].as_f64().ok_or("no rps in node output")?;
        rps.push((n, r));
    }
    if rps.len() != sizes.len() {
        return Err(format!(
            "node parent returned {} results for {} sizes",
            rps.len(),
            sizes.len()
        ));
    }
    Ok(NodeRun { rps })
}
