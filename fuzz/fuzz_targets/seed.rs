//! `spike seed` files (the CLI's `pilot/src/commands/seed/file.rs`, compiled here by path: the
//! whole CLI is heavy to build under ASan). Arbitrary text never panics the parser or the
//! checks after it. A seed file written here from the fuzz data, with secret values in every
//! YAML spelling (plain, single- and double-quoted with escapes, block scalars, the wrong
//! type), reads back to exactly what was written, and no error of the parser, the policy
//! checks or the secret resolution quotes a value.
#![no_main]

mod common;

/// What `file.rs` takes from the rest of the CLI, reduced to what it uses. These must stay in
/// sync with `pilot/src/client.rs` (`CliError`, `CliResult`) and `pilot/src/cli.rs`
/// (`ttl_seconds`, copied verbatim).
mod client {
    /// The CLI's error, with the one variant the seed file uses.
    #[derive(Debug)]
    pub enum CliError {
        /// Bad input on the command line.
        Usage(String),
    }

    impl std::fmt::Display for CliError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Self::Usage(m) => f.write_str(m),
            }
        }
    }

    pub type CliResult<T> = Result<T, CliError>;
}

mod cli {
    /// Copied from `pilot/src/cli.rs`; keep in sync.
    pub fn ttl_seconds(s: &str) -> Result<u64, String> {
        let secs = match s.parse::<u64>() {
            Ok(n) => n,
            Err(_) => humantime::parse_duration(s)
                .map_err(|e| format!("`{s}`: give seconds or a duration such as 30m ({e})"))?
                .as_secs(),
        };
        if secs == 0 {
            return Err(format!("`{s}`: a TTL must be at least one second"));
        }
        Ok(secs)
    }
}

// The module itself, unchanged. (It must stay compilable on its own imports plus the two
// modules above.)
#[allow(dead_code)]
#[path = "../../pilot/src/commands/seed/file.rs"]
mod file;

use std::path::Path;

use arbitrary::{Result, Unstructured};
use common::{PATH_PIECES, build};
use file::{PolicySpec, check_policies, parse_seed, resolve_secrets};
use libfuzzer_sys::fuzz_target;

/// Starts every secret value; removed from all other fuzz text.
const MARK: &str = "Zq7SeCrEt";
const ORIGIN: &str = "seed.yaml";

fn clean(u: &mut Unstructured<'_>, max: usize) -> Result<String> {
    Ok(common::text(u, max)?.replace(MARK, "~"))
}

/// A double-quoted YAML scalar holding exactly `s`.
fn dq(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            // Everything else escaped: controls, and the characters YAML reads as line
            // breaks or byte order marks even inside quotes.
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A secret value in one of YAML's spellings; `None` for a wrong type (which must be refused
/// without quoting the value).
fn value(u: &mut Unstructured<'_>, v: &str, indent: &str) -> Result<(String, bool)> {
    let printable = v.chars().all(|c| c == ' ' || (c.is_ascii_graphic()));
    let plain_ok = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    Ok(match u.int_in_range(0..=5)? {
        0 if plain_ok => (v.to_owned(), true),
        1 if printable && !v.ends_with(' ') => (format!("'{}'", v.replace('\'', "''")), true),
        2 if printable && !v.ends_with(' ') && !v.contains('#') => {
            (format!("|-\n{indent}  {v}"), true)
        }
        3 => (format!("[{}]", dq(v)), false),
        4 => (format!("{{other: {}}}", dq(v)), false),
        _ => (dq(v), true),
    })
}

/// Checks an error message: it must not hold a value.
fn no_value(msg: &str, doc: &str) {
    assert!(
        !msg.contains(MARK),
        "an error quotes a value: {msg}\n---\n{doc}"
    );
}

fn generated(u: &mut Unstructured<'_>) -> Result<()> {
    let mut doc = String::from("version: 1\n");
    let mut policies = Vec::new();
    if u.arbitrary()? {
        doc.push_str("policies:\n");
        for _ in 0..u.int_in_range(1..=2)? {
            let p = PolicySpec {
                name: build(u, &["web", "a", "-", ".", " "], 3)?,
                spiffe_id_pattern: format!("spiffe://spike.dev/{}", build(u, PATH_PIECES, 4)?),
                path_pattern: build(u, PATH_PIECES, 4)?,
                permissions: (0..u.int_in_range(0..=2)?)
                    .map(|_| {
                        u.choose(&["read", "list", " write", "bogus"])
                            .map(|s| (*s).to_owned())
                    })
                    .collect::<Result<_>>()?,
            };
            doc.push_str(&format!(
                "  - name: {}\n    spiffeIdPattern: {}\n    pathPattern: {}\n    permissions: [{}]\n",
                dq(&p.name),
                dq(&p.spiffe_id_pattern),
                dq(&p.path_pattern),
                p.permissions.iter().map(|s| dq(s)).collect::<Vec<_>>().join(", ")
            ));
            policies.push(p);
        }
    }
    let mut secrets = Vec::new();
    doc.push_str("secrets:\n");
    for _ in 0..u.int_in_range(0..=2)? {
        let path = build(u, PATH_PIECES, 4)?;
        doc.push_str(&format!("  - path: {}\n    data:\n", dq(&path)));
        let mut data = Vec::new();
        for _ in 0..u.int_in_range(0..=2)? {
            let key = clean(u, 8)?;
            let v = format!("{MARK}{}", clean(u, 16)?);
            let (spelled, ok) = value(u, &v, "      ")?;
            doc.push_str(&format!("      {}: {spelled}\n", dq(&key)));
            data.push((key, v, ok));
        }
        if u.ratio(1, 4)? {
            let ttl = u.choose(&["3600", "\"30m\"", "0", "\"soon\"", "-1"])?;
            doc.push_str(&format!("    ttl: {ttl}\n"));
        }
        secrets.push((path, data));
    }
    let env = |name: &str| (name == "SET").then(|| format!("{MARK}env"));
    match parse_seed(&doc, ORIGIN) {
        Err(e) => no_value(&e.to_string(), &doc),
        Ok(seed) => {
            // Duplicate data keys are refused by the parser, so every key here is distinct.
            assert_eq!(seed.policies, policies, "\n{doc}");
            assert_eq!(seed.secrets.len(), secrets.len());
            for (s, (path, data)) in seed.secrets.iter().zip(&secrets) {
                assert_eq!(&s.path, path);
                assert_eq!(s.data.len(), data.len(), "\n{doc}");
                for (k, v, ok) in data {
                    assert!(ok, "a value of the wrong type was accepted\n{doc}");
                    match s.data.get(k) {
                        Some(file::SeedValue::Literal(got)) => {
                            assert_eq!(got.expose_secret(), v, "\n{doc}");
                        }
                        other => panic!("{k:?} read as {other:?}\n{doc}"),
                    }
                }
            }
            if let Err(e) = check_policies(&seed.policies, ORIGIN) {
                no_value(&e.to_string(), &doc);
            }
            match resolve_secrets(seed.secrets, Path::new("/nonexistent"), ORIGIN, &env) {
                Err(e) => no_value(&e.to_string(), &doc),
                Ok(items) => {
                    for item in items {
                        assert!(spike_core::path::SecretPath::parse(&item.path).is_ok());
                    }
                }
            }
        }
    }
    Ok(())
}

fn raw(u: &mut Unstructured<'_>) -> Result<()> {
    let text = String::from_utf8_lossy(u.bytes(u.len())?).into_owned();
    if let Ok(seed) = parse_seed(&text, ORIGIN) {
        let _ = check_policies(&seed.policies, ORIGIN);
        // A `valueFrom: {file: ...}` would read whatever the text names (`/dev/zero`...).
        let reads_files = seed.secrets.iter().any(|s| {
            s.data
                .values()
                .any(|v| matches!(v, file::SeedValue::File(_)))
        });
        if reads_files {
            return Ok(());
        }
        let env = |_: &str| None;
        let _ = resolve_secrets(seed.secrets, Path::new("/nonexistent"), ORIGIN, &env);
    }
    Ok(())
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    if u.ratio(1, 3)? { raw(u) } else { generated(u) }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
