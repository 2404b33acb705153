//! The API contract: `docs/openapi.yaml` fuzzed against a live Nexus over mTLS with
//! schemathesis (PyPI), as a superuser and as a workload with no policy. Every answer must be
//! documented (status, content type, body schema), none may be a 5xx, none may hang.
//!
//! schemathesis comes from the project's `.venv` (`./test.sh` installs it) or from
//! `SPIKE_SCHEMATHESIS`; without it the test says so and is skipped. `./test.sh` runs it in a
//! stage of its own (`--run-ignored only`), each run bounded to 45 s of generated requests
//! (about 5,000 each); `e2e/py/test_openapi.py` checks the document against the routes.

use std::path::{Path, PathBuf};
use std::process::Command;

use spike_e2e::{Cluster, text};

const SUPERUSER: &str = "/spike/pilot/role/superuser";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("SPIKE_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/schemathesis"));
    path.is_file().then_some(path)
}

/// One schemathesis run as `svid`: its exit status and output.
fn fuzz(c: &Cluster, tool: &Path, svid: &spike_agent::PemFiles, seed: &str) -> (bool, String) {
    let out = Command::new(tool)
        .args(["run", "--no-color", "--seed", seed])
        .arg(workspace().join("docs/openapi.yaml"))
        .args(["--url", &format!("https://127.0.0.1:{}", c.nexus_port)])
        .arg("--request-cert")
        .arg(&svid.cert)
        .arg("--request-cert-key")
        .arg(&svid.key)
        // The server's certificate names a SPIFFE ID, not a host name.
        .args(["--tls-verify", "false"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "12",
            "--request-timeout",
            "10",
            "--max-time",
            "45",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(c.dir.path())
        .output()
        .expect("run schemathesis");
    (out.status.success(), text(&out))
}

#[test]
#[ignore = "its own stage of ./test.sh (API contract): it keeps two cores busy"]
fn the_api_answers_as_documented_for_a_superuser_and_a_workload_without_policy() {
    let Some(tool) = schemathesis() else {
        eprintln!("schemathesis is missing (./test.sh installs it into .venv): skipped");
        return;
    };
    let mut c = Cluster::new(1);
    // Most generated requests are invalid, and refusals are rate limited per caller: without
    // room, nearly every answer would be 429 and the routes' own logic untested.
    for class in ["refused", "cipher", "resolve", "restore", "recover"] {
        c.nexus_extra_args.extend([
            "--set".into(),
            format!("rate_limits.{class}.per_minute=10000000"),
            "--set".into(),
            format!("rate_limits.{class}.burst=100000"),
        ]);
    }
    c.start_all(1);
    let admin = c.pki.svid(SUPERUSER);
    // Something to find, so reads are not all 404.
    let put = c.spike(
        &admin,
        &["secret", "put", "app/db", "password=contract-test-value"],
    );
    assert!(put.status.success(), "{}", text(&put));
    let nobody = c.pki.svid("/workload/no-policy");
    for (who, svid) in [
        ("superuser", &admin),
        ("a workload with no policy", &nobody),
    ] {
        let (ok, said) = fuzz(&c, &tool, svid, "1");
        assert!(ok, "{who}:\n{said}");
        // The summary line ("N generated, N passed"), for the stage's log.
        let summary = said
            .lines()
            .find(|l| l.contains("generated,"))
            .unwrap_or("");
        eprintln!("schemathesis as {who}: {}", summary.trim());
        assert!(
            c.readyz().is_some(),
            "Nexus stopped answering after the {who} run"
        );
    }
    // Nothing it sent broke the server: it still serves (the superuser's run may have
    // overwritten the secret, so only a successful answer is asked for).
    let get = c.spike(&admin, &["secret", "list"]);
    assert!(get.status.success(), "{}", text(&get));
}
