//! Tests of the configuration format, on a demo binary.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::layers::suggest;
use super::reference::expected_row;
use super::*;
use crate::telemetry::LogFormat;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Demo {
    listen: String,
    peers: Vec<String>,
    #[serde(with = "opt_path")]
    data_dir: Option<PathBuf>,
    #[serde(with = "duration")]
    interval: Duration,
    #[serde(with = "log_format")]
    log_format: LogFormat,
    verbose: bool,
    token: String,
    server: DemoServer,
    identity: IdentityConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DemoServer {
    max_body: u64,
    ports: Vec<u16>,
}

impl Default for Demo {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:1".into(),
            peers: Vec::new(),
            data_dir: None,
            interval: Duration::from_secs(2),
            log_format: LogFormat::Text,
            verbose: false,
            token: String::new(),
            server: DemoServer::default(),
            identity: IdentityConfig::default(),
        }
    }
}

impl Default for DemoServer {
    fn default() -> Self {
        Self {
            max_body: 1024,
            ports: vec![1],
        }
    }
}

fn spec() -> Spec {
    Spec::new("demo", "DEMO_")
        .with_identity()
        .path("data_dir")
        .secret("token")
        .env_alias("server.max_body", "DEMO_MAX_BODY")
        .foreign_env("DEMO_OTHER_TOOL")
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn flag(key: &str, value: &str) -> FlagValue {
    FlagValue {
        key: key.into(),
        values: vec![value.into()],
        origin: format!("--{key}"),
        repeated: false,
    }
}

#[test]
fn defaults_without_any_layer() {
    let l: Loaded<Demo> = spec().load(None, &[], &[]).unwrap();
    assert_eq!(l.config, Demo::default());
    assert!(l.warnings.is_empty());
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let f = file(
        "listen = \"file:1\"\npeers = [\"a\", \"b\"]\ninterval = \"5s\"\n\
         [server]\nmax_body = 10\n",
    );
    // File only.
    let l: Loaded<Demo> = spec().load(Some(f.path()), &[], &[]).unwrap();
    assert_eq!(l.config.listen, "file:1");
    assert_eq!(l.config.peers, ["a", "b"]);
    assert_eq!(l.config.interval, Duration::from_secs(5));
    assert_eq!(l.config.server.max_body, 10);
    assert_eq!(l.config.server.ports, [1], "untouched keys keep defaults");
    // Env over file.
    let e = env(&[
        ("DEMO_LISTEN", "env:1"),
        ("DEMO_SERVER_MAX_BODY", "20"),
        ("DEMO_PEERS", "x, y,z"),
        ("DEMO_DATA_DIR", "/var/lib/demo"),
        ("DEMO_VERBOSE", "true"),
        ("DEMO_SERVER_PORTS", "[7, 8]"),
        ("SPIKE_TRUST_DOMAIN", "example.org"),
    ]);
    let l: Loaded<Demo> = spec().load(Some(f.path()), &e, &[]).unwrap();
    assert_eq!(l.config.listen, "env:1");
    assert_eq!(l.config.server.max_body, 20);
    assert_eq!(l.config.peers, ["x", "y", "z"]);
    assert_eq!(l.config.data_dir, Some(PathBuf::from("/var/lib/demo")));
    assert!(l.config.verbose);
    assert_eq!(l.config.server.ports, [7, 8]);
    assert_eq!(l.config.identity.trust_domain.as_str(), "example.org");
    assert_eq!(
        l.config.interval,
        Duration::from_secs(5),
        "file still applies"
    );
    // Flags over env.
    let l: Loaded<Demo> = spec()
        .load(
            Some(f.path()),
            &e,
            &[flag("listen", "flag:1"), flag("server.max_body", "30")],
        )
        .unwrap();
    assert_eq!(l.config.listen, "flag:1");
    assert_eq!(l.config.server.max_body, 30);
}

#[test]
fn env_alias_is_accepted_and_the_documented_name_wins() {
    let l: Loaded<Demo> = spec()
        .load(None, &env(&[("DEMO_MAX_BODY", "5")]), &[])
        .unwrap();
    assert_eq!(l.config.server.max_body, 5);
    let l: Loaded<Demo> = spec()
        .load(
            None,
            &env(&[("DEMO_MAX_BODY", "5"), ("DEMO_SERVER_MAX_BODY", "6")]),
            &[],
        )
        .unwrap();
    assert_eq!(l.config.server.max_body, 6);
}

#[test]
fn unknown_keys_are_rejected_with_a_suggestion() {
    let f = file("[server]\nmax_bdy = 10\n");
    let e = spec().load::<Demo>(Some(f.path()), &[], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{msg}");
    assert!(msg.contains("`server.max_bdy`"), "{msg}");
    assert!(msg.contains("did you mean `server.max_body`"), "{msg}");
    assert!(msg.contains(&f.path().display().to_string()), "{msg}");

    // A key in the wrong section points at the right one.
    let f = file("max_body = 10\n");
    let msg = spec()
        .load::<Demo>(Some(f.path()), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("did you mean `server.max_body`"), "{msg}");

    // An unknown section.
    let f = file("[sever]\nmax_body = 1\n");
    let msg = spec()
        .load::<Demo>(Some(f.path()), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`sever`") && msg.contains("`server`"), "{msg}");

    // A value where a section belongs.
    let f = file("server = 1\n");
    let e = spec().load::<Demo>(Some(f.path()), &[], &[]).unwrap_err();
    assert!(matches!(e, ConfigError::BadValue { .. }), "{e}");

    // --set of an unknown key.
    let e = spec()
        .load::<Demo>(None, &[], &[flag("server.max_bodyy", "1")])
        .unwrap_err();
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e}");
}

#[test]
fn unknown_prefixed_env_is_a_warning_not_silence() {
    let l: Loaded<Demo> = spec()
        .load(
            None,
            &env(&[
                ("DEMO_SERVER_MAX_BDY", "1"),
                ("DEMO_OTHER_TOOL", "x"),
                ("UNRELATED", "y"),
            ]),
            &[],
        )
        .unwrap();
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].contains("DEMO_SERVER_MAX_BDY"));
    assert!(l.warnings[0].contains("DEMO_SERVER_MAX_BODY"));
    assert_eq!(l.config, Demo::default());
}

#[test]
fn bad_values_name_the_key_and_where_it_came_from() {
    let e = spec()
        .load::<Demo>(None, &env(&[("DEMO_SERVER_MAX_BODY", "lots")]), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.max_body"), "{e}");
    assert!(e.contains("DEMO_SERVER_MAX_BODY"), "{e}");
    assert!(e.contains("whole number"), "{e}");

    let f = file("interval = \"soon\"\n");
    let e = spec()
        .load::<Demo>(Some(f.path()), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`interval`"), "{e}");
    assert!(e.contains(&f.path().display().to_string()), "{e}");
    assert!(e.contains("duration"), "{e}");

    let f = file("[server]\nmax_body = \"big\"\n");
    let e = spec()
        .load::<Demo>(Some(f.path()), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.max_body"), "{e}");

    let e = spec()
        .load::<Demo>(None, &[], &[flag("log_format", "xml")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("log_format") && e.contains("--log_format"),
        "{e}"
    );

    let f = file("listen = \n");
    let e = spec().load::<Demo>(Some(f.path()), &[], &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    assert!(e.to_string().contains("line 1"), "{e}");

    let e = spec()
        .load::<Demo>(Some(Path::new("/nonexistent/demo.toml")), &[], &[])
        .unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn a_syntax_error_says_where_but_never_quotes_the_file() {
    for text in [
        "token = Zq7SeCrEt\n",
        "listen = \"0.0.0.0:1\"\ntoken = \"Zq7SeCrEt\n",
        "token = 'Zq7SeCrEt\n",
        "[server\ntoken = Zq7SeCrEt\n",
        "token = \"\"\"Zq7SeCrEt\n",
    ] {
        let f = file(text);
        let e = spec().load::<Demo>(Some(f.path()), &[], &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        let said = e.to_string();
        assert!(!said.contains("Zq7"), "{said}");
        assert!(said.contains("(line "), "{said}");
    }
}

#[test]
fn secret_values_are_never_echoed() {
    // The token is a string, so no type error can quote it; but a secret key's serde
    // message is replaced anyway.
    let f = file("token = 5\n");
    let e = spec()
        .load::<Demo>(Some(f.path()), &[], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`token`") && !e.contains("`5`"), "{e}");
}

#[test]
fn render_redacts_secrets_and_round_trips() {
    let c = Demo {
        token: "hunter2".into(),
        data_dir: Some("/data".into()),
        peers: vec!["a:1".into()],
        ..Demo::default()
    };
    let out = spec().render(&c).unwrap();
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("token = \"[redacted]\""), "{out}");
    assert!(out.contains("[server]"), "{out}");
    // Declaration order is kept.
    assert!(out.find("listen").unwrap() < out.find("peers").unwrap());
    // The output is a valid configuration file.
    let f = file(&out);
    let back: Loaded<Demo> = spec().load(Some(f.path()), &[], &[]).unwrap();
    assert_eq!(back.config.data_dir, c.data_dir);
    assert_eq!(back.config.peers, c.peers);
    assert_eq!(back.config.token, REDACTED);
    // An empty secret shows as empty, not as redacted.
    assert!(
        spec()
            .render(&Demo::default())
            .unwrap()
            .contains("token = \"\"")
    );
}

#[test]
fn identity_needs_all_three_pem_files() {
    let mut id = IdentityConfig {
        svid_cert: Some("c.pem".into()),
        ..IdentityConfig::default()
    };
    assert!(id.to_args().is_err());
    id.svid_key = Some("k.pem".into());
    id.svid_bundle = Some("b.pem".into());
    let args = id.to_args().unwrap();
    assert_eq!(args.svid_cert, Some(PathBuf::from("c.pem")));
    assert!(IdentityConfig::default().to_args().is_ok());
}

fn doc_rows() -> Vec<KeyDoc> {
    let cmd = clap::Command::new("demo").arg(clap::Arg::new("listen").long("listen"));
    spec().reference::<Demo>(&cmd).unwrap()
}

#[test]
fn reference_lists_every_key_with_env_flag_and_default() {
    let rows = doc_rows();
    let listen = rows.iter().find(|r| r.key == "listen").unwrap();
    assert_eq!(listen.env, "DEMO_LISTEN");
    assert_eq!(listen.flag.as_deref(), Some("--listen"));
    assert_eq!(listen.default, "\"0.0.0.0:1\"");
    let td = rows
        .iter()
        .find(|r| r.key == "identity.trust_domain")
        .unwrap();
    assert_eq!(td.env, "SPIKE_TRUST_DOMAIN");
    let body = rows.iter().find(|r| r.key == "server.max_body").unwrap();
    assert_eq!(body.env, "DEMO_SERVER_MAX_BODY");
    assert_eq!(body.flag, None);
    assert_eq!(body.default, "1024");
    assert_eq!(
        rows.iter().find(|r| r.key == "token").unwrap().default,
        REDACTED
    );
}

#[test]
fn doc_check_finds_missing_extra_and_wrong_rows() {
    let rows = doc_rows();
    let table: String = rows
        .iter()
        .map(|r| expected_row(r).replace('…', "Meaning.") + "\n")
        .collect();
    let doc = format!(
        "# Demo\n\n## demo\n\n| Key | Env | Flag | Default | Meaning |\n|-|-|-|-|-|\n{table}\n## other\n| `x` | a | b | c | d |\n"
    );
    check_reference(&doc, "demo", &rows).unwrap();

    let missing = doc.replace(&(expected_row(&rows[0]).replace('…', "Meaning.")), "");
    let e = check_reference(&missing, "demo", &rows).unwrap_err();
    assert!(e.contains("is not documented"), "{e}");

    let extra = doc.replace(
        "\n## other",
        "| `nope` | `DEMO_NOPE` | - | `1` | Gone. |\n## other",
    );
    let e = check_reference(&extra, "demo", &rows).unwrap_err();
    assert!(e.contains("`nope` does not exist"), "{e}");

    let wrong = doc.replace("`1024`", "`2048`");
    let e = check_reference(&wrong, "demo", &rows).unwrap_err();
    assert!(e.contains("server.max_body"), "{e}");

    let no_meaning = doc.replacen("Meaning.", " ", 1);
    assert!(check_reference(&no_meaning, "demo", &rows).is_err());
    assert!(check_reference(&doc, "absent", &rows).is_err());
}

#[test]
fn suggestions_are_close_or_absent() {
    assert_eq!(
        suggest("server.max_bdy", ["server.max_body", "listen"].into_iter()),
        " (did you mean `server.max_body`?)"
    );
    assert_eq!(suggest("completely_different", ["listen"].into_iter()), "");
}

#[test]
fn relative_paths_in_a_file_resolve_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    std::fs::write(
        &path,
        "data_dir = \"data\"\nlisten = \"rel\"\n[identity]\nsvid_cert = \"tls/c.pem\"\n\
         svid_key = \"/abs/k.pem\"\n",
    )
    .unwrap();
    let l: Loaded<Demo> = spec().load(Some(&path), &[], &[]).unwrap();
    assert_eq!(l.config.data_dir, Some(dir.path().join("data")));
    assert_eq!(
        l.config.identity.svid_cert,
        Some(dir.path().join("tls/c.pem"))
    );
    assert_eq!(
        l.config.identity.svid_key,
        Some(PathBuf::from("/abs/k.pem"))
    );
    assert_eq!(
        l.config.listen, "rel",
        "a key that is no path is left alone"
    );
    // From the environment or a flag, a relative path stays relative to the working directory.
    let l: Loaded<Demo> = spec()
        .load(Some(&path), &env(&[("DEMO_DATA_DIR", "here")]), &[])
        .unwrap();
    assert_eq!(l.config.data_dir, Some(PathBuf::from("here")));
}

#[test]
fn each_binary_has_its_own_config_variable() {
    let f = file("listen = \"file:1\"\n");
    let own = f.path().to_str().unwrap();
    assert_eq!(spec().config_env(), "DEMO_CONFIG");
    let l: Loaded<Demo> = spec()
        .load(None, &env(&[("DEMO_CONFIG", own)]), &[])
        .unwrap();
    assert_eq!(l.config.listen, "file:1");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    // The shared SPIKE_CONFIG of older releases: ignored unless the binary opts in.
    let legacy = env(&[(LEGACY_CONFIG_ENV, own)]);
    let l: Loaded<Demo> = spec().load(None, &legacy, &[]).unwrap();
    assert_eq!(l.config, Demo::default());
    let l: Loaded<Demo> = spec().legacy_config_env().load(None, &legacy, &[]).unwrap();
    assert_eq!(l.config.listen, "file:1");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("deprecated") && w.contains("DEMO_CONFIG")),
        "{:?}",
        l.warnings
    );
    // The binary's own variable wins over the shared one; --config over both.
    let other = file("listen = \"other:1\"\n");
    let both = env(&[
        (LEGACY_CONFIG_ENV, other.path().to_str().unwrap()),
        ("DEMO_CONFIG", own),
    ]);
    let l: Loaded<Demo> = spec().legacy_config_env().load(None, &both, &[]).unwrap();
    assert_eq!(l.config.listen, "file:1");
    let l: Loaded<Demo> = spec()
        .legacy_config_env()
        .load(Some(other.path()), &both, &[])
        .unwrap();
    assert_eq!(l.config.listen, "other:1");
}

#[test]
fn a_flag_sets_the_key_its_argument_id_names() {
    let cmd = clap::Command::new("demo")
        .arg(clap::Arg::new("listen").long("listen"))
        .arg(
            clap::Arg::new("server.max_body")
                .long("max-body")
                .env("DEMO_UNUSED_MAX_BODY"),
        )
        .arg(clap::Arg::new("config").long("config"));
    let m = cmd
        .clone()
        .try_get_matches_from(["demo", "--max-body", "7", "--config", "x"])
        .unwrap();
    let flags = flag_values::<Demo>(&cmd, &m).unwrap();
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!(flags[0].key, "server.max_body");
    assert_eq!(flags[0].origin, "--max-body");
    let l: Loaded<Demo> = spec().load(None, &[], &flags).unwrap();
    assert_eq!(l.config.server.max_body, 7);
    let rows = spec().reference::<Demo>(&cmd).unwrap();
    let row = rows.iter().find(|r| r.key == "server.max_body").unwrap();
    assert_eq!(row.flag.as_deref(), Some("--max-body"));
}

#[test]
fn help_shows_the_defaults_without_making_them_flags() {
    let cmd = clap::Command::new("demo")
        .arg(clap::Arg::new("listen").long("listen"))
        .arg(clap::Arg::new("server.max_body").long("max-body"))
        .arg(clap::Arg::new("data_dir").long("data-dir"))
        .arg(clap::Arg::new("token").long("token"));
    let cmd = spec().show_defaults::<Demo>(cmd).unwrap();
    let default = |id: &str| {
        let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
        arg.get_default_values()
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(default("listen"), ["0.0.0.0:1"]);
    assert_eq!(default("server.max_body"), ["1024"]);
    assert!(default("data_dir").is_empty(), "no empty default");
    assert!(default("token").is_empty(), "no secret default");
    // A shown default is not a typed flag: the file still wins over it.
    let m = cmd.clone().try_get_matches_from(["demo"]).unwrap();
    assert!(flag_values::<Demo>(&cmd, &m).unwrap().is_empty());
}
