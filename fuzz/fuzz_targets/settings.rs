//! The settings loader (`spike_runtime::config`): defaults < TOML file < environment <
//! flags (`--set`), key by key. Arbitrary TOML text, environment and `--set` input never
//! panic it; no error or warning quotes the value of a key declared secret (`Spec::secret`),
//! wherever that value was given and whatever is wrong with it; the effective configuration
//! takes each secret from the highest layer that set it; and `Spec::render` redacts secrets.
//! That includes a file that is not TOML (`ConfigError::Syntax`): it says where the parser
//! stopped, never what the file holds there.
#![no_main]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use spike_runtime::config::{Spec, add_sets, duration, opt_path};

/// Starts every secret value; the fuzzer's own text never holds it (it is removed there).
const MARK: &str = "Zq7SeCrEt";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Demo {
    listen: String,
    peers: Vec<String>,
    #[serde(with = "opt_path")]
    data_dir: Option<PathBuf>,
    #[serde(with = "duration")]
    interval: Duration,
    verbose: bool,
    token: String,
    pin: u32,
    server: DemoServer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DemoServer {
    max_body: u64,
    ports: Vec<u16>,
    key: String,
    ratio: f64,
}

impl Default for Demo {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:1".into(),
            peers: Vec::new(),
            data_dir: None,
            interval: Duration::from_secs(2),
            verbose: false,
            token: String::new(),
            pin: 0,
            server: DemoServer::default(),
        }
    }
}

impl Default for DemoServer {
    fn default() -> Self {
        Self {
            max_body: 1024,
            ports: vec![1],
            key: String::new(),
            ratio: 0.5,
        }
    }
}

const SECRETS: &[&str] = &["token", "pin", "server.key"];
const KEYS: &[&str] = &[
    "listen",
    "peers",
    "data_dir",
    "interval",
    "verbose",
    "server.max_body",
    "server.ports",
    "server.ratio",
    "token",
    "pin",
    "server.key",
    "server",
    "nope",
    "server.nope",
    "",
];
const ENV: &[&str] = &[
    "FUZZ_LISTEN",
    "FUZZ_PEERS",
    "FUZZ_DATA_DIR",
    "FUZZ_INTERVAL",
    "FUZZ_VERBOSE",
    "FUZZ_SERVER_MAX_BODY",
    "FUZZ_MAX_BODY",
    "FUZZ_SERVER_PORTS",
    "FUZZ_SERVER_RATIO",
    "FUZZ_SERVER",
    "FUZZ_LISTN",
    "OTHER_VAR",
    "FUZZ_OTHER_TOOL",
];

fn spec() -> Spec {
    Spec::new("fuzz", "FUZZ_")
        .path("data_dir")
        .secret("token")
        .secret("pin")
        .secret("server.key")
        .env_alias("server.max_body", "FUZZ_MAX_BODY")
        .foreign_env("FUZZ_OTHER_TOOL")
}

/// Fuzz text without the mark.
fn clean(u: &mut Unstructured<'_>, max: usize) -> Result<String> {
    Ok(common::text(u, max)?.replace(MARK, "~"))
}

/// Where a secret's value is given, and how.
enum Layer {
    None,
    File,
    Env,
    Set,
}

/// The TOML spelling of a secret value: mostly a string (valid for `token` and `server.key`,
/// the wrong type for `pin`), or a wrong type that still holds the mark.
fn toml_value(u: &mut Unstructured<'_>, value: &str) -> Result<String> {
    let quoted = toml::Value::String(value.to_owned()).to_string();
    Ok(match u.int_in_range(0..=4)? {
        0 | 1 => quoted,
        2 => format!("[{quoted}]"),
        3 => format!("{{ v = {quoted} }}"),
        _ => format!("'{value}'"),
    })
}

fn run(u: &mut Unstructured<'_>, file: &Path) -> Result<()> {
    let mut toml_text = String::new();
    let mut env = Vec::new();
    let mut sets = Vec::new();
    let mut expected = Vec::new();
    for key in SECRETS {
        let value = format!("{MARK}{}", clean(u, 12)?.replace(['\r', '\n'], " "));
        let layer = match u.int_in_range(0..=3)? {
            0 => Layer::None,
            1 => Layer::File,
            2 => Layer::Env,
            _ => Layer::Set,
        };
        match layer {
            Layer::None => {}
            Layer::File => {
                toml_text.push_str(&format!("{key} = {}\n", toml_value(u, &value)?));
            }
            Layer::Env => env.push((spec().env_name(key), value.clone())),
            Layer::Set => sets.push(format!("{key}={value}")),
        }
        expected.push((key, value));
    }
    toml_text.push_str(&clean(u, 200)?);
    for _ in 0..u.int_in_range(0..=3)? {
        env.push(((*u.choose(ENV)?).to_owned(), clean(u, 20)?));
    }
    for _ in 0..u.int_in_range(0..=2)? {
        sets.push(format!("{}{}", u.choose(KEYS)?, clean(u, 20)?));
    }
    // The environment and flags apply in order, so the last of each wins: shuffle a little.
    if u.arbitrary()? {
        env.reverse();
    }
    std::fs::write(file, &toml_text).expect("the scratch file is writable");
    let use_file = u.ratio(7, 8)?;

    let spec = spec();
    let mut flags = Vec::new();
    let result = add_sets(&mut flags, &sets)
        .and_then(|()| spec.load::<Demo>(use_file.then_some(file), &env, &flags));
    // Not left behind in the temporary directory.
    let _ = std::fs::remove_file(file);
    match result {
        Err(e) => {
            let shown = format!("{e} / {e:?}");
            assert!(
                !shown.contains(MARK),
                "an error quotes a secret: {shown}\nfile:\n{toml_text}\nenv: {env:?}\nsets: {sets:?}"
            );
        }
        Ok(loaded) => {
            for w in &loaded.warnings {
                assert!(!w.contains(MARK), "a warning quotes a secret: {w}");
            }
            let rendered = spec
                .render(&loaded.config)
                .expect("a loaded configuration renders");
            assert!(
                !rendered.contains(MARK),
                "render shows a secret:\n{rendered}"
            );
            // A secret given by a flag is the effective value (flags are the top layer).
            for (key, value) in &expected {
                let set = sets.iter().rev().find_map(|s| {
                    let (k, v) = s.split_once('=')?;
                    (k.trim() == **key).then_some(v)
                });
                if let Some(v) = set {
                    let got = match **key {
                        "token" => loaded.config.token.clone(),
                        "server.key" => loaded.config.server.key.clone(),
                        _ => continue,
                    };
                    assert_eq!(got, v.trim(), "{key}");
                    let _ = value;
                }
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static FILE: PathBuf =
            std::env::temp_dir().join(format!("spike-fuzz-settings-{}.toml", std::process::id()));
    }
    FILE.with(|f| {
        let _ = run(&mut Unstructured::new(data), f);
    });
});
