//! `spike seed` and `spike policy apply`: secrets and policies from a YAML file, idempotently.
//!
//! The file is read and checked whole before anything is sent: every path, policy and value
//! source must be valid, or nothing is written. Policies go first (one request each; Nexus
//! answers `unchanged` for an identical one), then secrets in batches through
//! `POST /v1/secrets/batch`, several in flight. Nexus compares each secret with its current
//! version, so seeding the same file twice writes nothing the second time, and `--dry-run`
//! asks Nexus to compare without writing, so no value is ever printed or sent back.
//!
//! The schema is in docs/seeding.md.

mod apply;
mod file;
mod report;

pub use apply::*;
pub use file::*;
pub use report::*;

use std::path::Path;

use crate::cli::{Output, SeedArgs};
use crate::client::{CliError, CliResult, Nexus};

/// `spike seed -f FILE`, with the file already read and checked by [`load`] (before any
/// SVID is fetched, so the file's mistakes show even without a server).
pub async fn run(nexus: &Nexus, out: Output, args: SeedArgs, seed: Loaded) -> CliResult<()> {
    let Loaded {
        specs,
        parsed,
        secrets: items,
    } = seed;
    let policies = apply_policies(nexus, &specs, &parsed, args.upload.dry_run).await?;
    let secrets = if items.is_empty() {
        Vec::new()
    } else {
        upload(
            nexus,
            items,
            UploadOptions {
                dry_run: args.upload.dry_run,
                batch_size: args.upload.batch_size,
                progress: out == Output::Text && !args.upload.no_progress,
                parallel: args.upload.parallel,
            },
        )
        .await?
    };
    report(
        out,
        args.upload.dry_run,
        args.upload.quiet,
        &policies,
        &secrets,
    )
}

/// `spike policy apply -f FILE`.
pub async fn apply(nexus: &Nexus, out: Output, file: &Path, dry_run: bool) -> CliResult<()> {
    let origin = file.display().to_string();
    let text = read_input(file)?;
    let seed = parse_seed(&text, &origin)?;
    drop(text);
    if !seed.secrets.is_empty() {
        return Err(CliError::Usage(format!(
            "{origin} also has secrets; `spike policy apply` applies policies only: use `spike seed -f {origin}` for both"
        )));
    }
    if seed.policies.is_empty() {
        return Err(CliError::Usage(format!(
            "{origin} has no policies (expected a top-level `policies:` list)"
        )));
    }
    let parsed = check_policies(&seed.policies, &origin)?;
    let policies = apply_policies(nexus, &seed.policies, &parsed, dry_run).await?;
    report(out, dry_run, false, &policies, &[])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use spike_core::api::BatchPutItem;

    fn env(name: &str) -> Option<String> {
        (name == "DB_PASS").then(|| "from-env".to_owned())
    }

    #[test]
    fn parses_the_documented_example() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), "-----BEGIN-----\nx\n").unwrap();
        let yaml = r#"
version: 1
policies:
  - name: web-read
    spiffeIdPattern: spiffe://spike.dev/ns/web/**
    pathPattern: apps/web/**
    permissions: [read, list]
secrets:
  - path: apps/web/db
    data:
      user: alice
      port: "5432"
      pass:
        valueFrom: {env: DB_PASS}
      cert:
        valueFrom:
          file: cert.pem
      multi: |
        line one
        line two
"#;
        let seed = parse_seed(yaml, "seed.yaml").unwrap();
        let parsed = check_policies(&seed.policies, "seed.yaml").unwrap();
        assert_eq!(parsed.len(), 1);
        let items = resolve_secrets(seed.secrets, dir.path(), "seed.yaml", &env).unwrap();
        assert_eq!(items.len(), 1);
        let d = &items[0].data;
        assert_eq!(d.get("user").unwrap().expose_secret(), "alice");
        assert_eq!(d.get("port").unwrap().expose_secret(), "5432");
        assert_eq!(d.get("pass").unwrap().expose_secret(), "from-env");
        assert_eq!(
            d.get("cert").unwrap().expose_secret(),
            "-----BEGIN-----\nx\n"
        );
        assert_eq!(
            d.get("multi").unwrap().expose_secret(),
            "line one\nline two\n"
        );
    }

    #[test]
    fn a_seed_entry_carries_the_secrets_scope() {
        let yaml = r#"
secrets:
  - path: groq-api-key
    data: {value: gsk_x}
    ttl: 30m
    allowedSpiffeIds: ["spiffe://poc.local/agents/**"]
    allowedDestinations: [api.groq.com]
  - path: plain
    data: {value: x}
    ttl: 3600
  - path: untouched
    data: {value: zz}
"#;
        let seed = parse_seed(yaml, "seed.yaml").unwrap();
        let env = |_: &str| None;
        let items = resolve_secrets(seed.secrets, Path::new("."), "seed.yaml", &env).unwrap();
        let scope = items[0].scope.as_ref().unwrap();
        assert_eq!(scope.ttl_seconds, Some(1800));
        assert_eq!(
            scope.allowed_spiffe_ids.as_deref().unwrap(),
            ["spiffe://poc.local/agents/**"]
        );
        assert_eq!(
            scope.allowed_destinations.as_deref().unwrap(),
            ["api.groq.com"]
        );
        assert_eq!(items[1].scope.as_ref().unwrap().ttl_seconds, Some(3600));
        assert!(
            items[2].scope.is_none(),
            "what a file leaves out, Nexus keeps"
        );
        let bad = "secrets:\n  - path: a\n    data: {value: x}\n    ttl: soon\n";
        let seed = parse_seed(bad, "seed.yaml").unwrap();
        let e = resolve_secrets(seed.secrets, Path::new("."), "seed.yaml", &env).unwrap_err();
        assert!(e.to_string().contains("secret `a` ttl"), "{e}");
    }

    #[test]
    fn errors_point_at_the_place_and_never_quote_values() {
        for (yaml, expect) in [
            (
                "secrets:\n  - path: a\n    data:\n      k: 12345678\n",
                "quote numbers",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: s3cretvalue\n    extra: s3cretvalue\n",
                "unknown field `extra`",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: [s3cretvalue]\n",
                "line 4",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: {valueFrom: {nope: s3cretvalue}}\n",
                "valueFrom",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: \"s3cretvalue\n",
                "line",
            ),
            (
                "secrets:\n  - path: a\n    data:\n      k: s3cretvalue\n      k: s3cretvalue2\n",
                "line 5 column 7: duplicate key `k`",
            ),
            ("version: 2\n", "version 2"),
        ] {
            let e = parse_seed(yaml, "f.yaml").unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
            // The position once, not again at the end; no advice meant for the library's users.
            assert_eq!(
                e.matches("line ").count().min(1),
                e.matches("line ").count(),
                "{e}"
            );
            assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
            assert!(!e.contains("12345678"), "{e}");
            assert!(e.contains(expect), "{e:?} lacks {expect:?}");
        }
    }

    #[test]
    fn bad_secrets_and_policies_stop_the_run() {
        let check = |yaml: &str, expect: &str| {
            let seed = parse_seed(yaml, "f").unwrap();
            let e = check_policies(&seed.policies, "f")
                .and_then(|_| resolve_secrets(seed.secrets, Path::new("."), "f", &env))
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{e:?} lacks {expect:?}");
            assert!(!e.contains("s3cret"), "{e}");
        };
        check(
            "secrets:\n  - {path: a/b, data: {k: s3cret}}\n  - {path: a/b, data: {k: s3cret}}\n",
            "defined twice",
        );
        check("secrets:\n  - {path: '../x', data: {k: s3cret}}\n", "path");
        check("secrets:\n  - {path: a, data: {}}\n", "no data");
        check(
            "secrets:\n  - {path: a, data: {k: {valueFrom: {env: NOPE_NOT_SET}}}}\n",
            "NOPE_NOT_SET is not set",
        );
        check(
            "secrets:\n  - {path: a, data: {k: {valueFrom: {file: /nonexistent/x}}}}\n",
            "cannot read /nonexistent/x",
        );
        check(
            "policies:\n  - {name: p, spiffeIdPattern: 'spiffe://x/**', pathPattern: 'a/**', permissions: [reed]}\n",
            "unknown permission `reed`",
        );
        check(
            "policies:\n  - {name: p, spiffeIdPattern: 'spiffe://x/**', pathPattern: 'a/**', permissions: [read]}\n  - {name: p, spiffeIdPattern: 'spiffe://x/**', pathPattern: 'a/**', permissions: [read]}\n",
            "defined twice",
        );
    }

    #[test]
    fn batches_respect_count_and_size() {
        let item = |i: usize, len: usize| BatchPutItem {
            path: format!("p/{i}"),
            data: [("k", "v".repeat(len).as_str())].into_iter().collect(),
            cas: None,
            scope: None,
        };
        let chunks = split((0..1001).map(|i| item(i, 10)).collect(), 500);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 1]
        );
        let chunks = split((0..10).map(|i| item(i, 1 << 20)).collect(), 500);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 10);
    }
}
