//! The walkthrough of `docs/operator/walkthrough.md`, run for real on a kind cluster: its `sh`
//! blocks, in order, in one `bash -euo pipefail`, so the page and the test cannot drift apart.
//!
//! Ignored by default: it needs docker, kind, kubectl, helm and network access, none of which
//! CI has. Run it with
//! `cargo test -p spike-operator --test kind_walkthrough -- --ignored --nocapture`.
//! The kind cluster `spike` is deleted when the test ends, pass or fail, unless
//! `SPIKE_WALKTHROUGH_KEEP=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate sits in the workspace root")
        .to_path_buf()
}

/// The `sh` code blocks of a Markdown page, in order, but the last one (the clean-up, which
/// the test does itself so it also runs after a failure).
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks.pop();
    blocks
}

/// Deletes the kind cluster when dropped, so a failed step still cleans up.
struct Cluster;

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("SPIKE_WALKTHROUGH_KEEP").is_some() {
            eprintln!("keeping the kind cluster `spike` (SPIKE_WALKTHROUGH_KEEP)");
            return;
        }
        let _ = Command::new("kind")
            .args(["delete", "cluster", "--name", "spike"])
            .status();
    }
}

#[test]
fn the_page_has_the_steps_the_test_runs() {
    let page = std::fs::read_to_string(repo_root().join("docs/operator/walkthrough.md")).unwrap();
    let blocks = sh_blocks(&page);
    assert_eq!(blocks.len(), 8, "one block per numbered step");
    assert!(blocks[0].starts_with("kind create cluster --name spike"));
    assert!(blocks[5].contains("test \"$(kubectl -n team-a logs reader)\" = 'walkthrough-s3cret'"));
    assert!(blocks[7].contains("test \"$(kubectl -n team-a logs agent)\" = 'authorized'"));
}

#[test]
#[ignore = "needs a Kubernetes cluster: kind, docker, kubectl, helm and network access"]
fn walkthrough_on_kind() {
    let root = repo_root();
    let page = std::fs::read_to_string(root.join("docs/operator/walkthrough.md")).unwrap();
    let _cluster = Cluster;
    for (i, block) in sh_blocks(&page).iter().enumerate() {
        eprintln!("--- step {} ---\n{block}", i + 1);
        let status = Command::new("bash")
            .args(["-euo", "pipefail", "-c", block])
            .current_dir(&root)
            .status()
            .expect("bash runs");
        assert!(status.success(), "step {} failed: {status}", i + 1);
    }
}
