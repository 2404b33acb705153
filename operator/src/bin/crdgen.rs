//! `crdgen`: writes the CustomResourceDefinitions to `crds/` and `charts/spike/crds/`.
//!
//! `crdgen` (re)writes the files; `crdgen --check` writes nothing and fails, naming each file,
//! when a checked-in manifest differs from what the Rust types generate (CI's drift check).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use spike_operator::crd::manifests::{OUTPUT_DIRS, render};

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(_) => {
            eprintln!("usage: crdgen [--check]");
            return ExitCode::from(2);
        }
    };
    let root = workspace_root();
    let files = match render() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for dir in OUTPUT_DIRS {
        for (name, content) in &files {
            let path = root.join(dir).join(name);
            let shown = Path::new(dir).join(name);
            let result = if check {
                check_file(&path, content, &shown)
            } else {
                write_file(&path, content)
            };
            if let Err(msg) = result {
                eprintln!("crdgen: {}: {msg}", shown.display());
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The workspace root, where `crds/` and `charts/` live: the operator crate's parent.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn check_file(path: &Path, want: &str, shown: &Path) -> Result<(), String> {
    match std::fs::read_to_string(path) {
        Ok(have) if have == want => Ok(()),
        Ok(_) => Err(format!(
            "differs from the Rust types; run `cargo run -p spike-operator --bin crdgen` and commit {}",
            shown.display()
        )),
        Err(e) => Err(format!(
            "cannot read it ({e}); run `cargo run -p spike-operator --bin crdgen`"
        )),
    }
}

fn write_file(path: &Path, content: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create its directory: {e}"))?;
    }
    std::fs::write(path, content).map_err(|e| format!("cannot write it: {e}"))
}
