//! The `spike` CLI's configuration, in the format every SPIKE binary shares
//! ([`spike_runtime::config`]): defaults, then `--config FILE` (or `SPIKE_CLI_CONFIG`), then
//! environment variables, then flags.
//!
//! The CLI's flags are global (they may follow the subcommand) and keep the defaults and
//! environment variables clap shows in `--help`; only the values typed on the command line
//! count as the flag layer ([`GivenFlags`]), so the file can still override a default. A flag
//! sets the key its clap argument id names (`nexus`, `identity.svid_cert`, ...).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spike_runtime::config::{ConfigError, FlagValue, IdentityConfig, Loaded, Spec};

use crate::cli::{Cli, GlobalArgs, Output};

/// The `spike` configuration file. Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CliSettings {
    /// Nexus address (`host:port`).
    pub nexus: String,
    /// Per-request timeout.
    #[serde(with = "spike_runtime::config::duration")]
    pub timeout: Duration,
    /// Output format of read commands.
    #[serde(with = "output_format")]
    pub output: Output,
    /// `[identity]`: where the CLI's SVID comes from.
    pub identity: IdentityConfig,
}

impl Default for CliSettings {
    fn default() -> Self {
        Self {
            nexus: "127.0.0.1:8553".into(),
            timeout: Duration::from_secs(30),
            output: Output::Text,
            identity: IdentityConfig::default(),
        }
    }
}

/// How the `spike` keys map to environment variables. `nexus` keeps its long-standing
/// `SPIKE_NEXUS_ADDR`; the prefix `SPIKE_CLI_` keeps the CLI's own variables (and its file,
/// `SPIKE_CLI_CONFIG`) apart from the services' (`SPIKE_NEXUS_*`, `SPIKE_KEEPER_*`,
/// `SPIKE_CONFIG`), which share its shells.
pub fn spec() -> Spec {
    Spec::new("spike", "SPIKE_CLI_")
        .with_identity()
        .env_of(&<Cli as clap::CommandFactory>::command())
}

/// The `spike` command, its `--help` showing the defaults of [`CliSettings`].
pub fn command() -> Result<clap::Command, ConfigError> {
    spec().show_defaults::<CliSettings>(<Cli as clap::CommandFactory>::command())
}

/// Loads the effective settings of a command line with the process environment.
pub fn load(global: &GlobalArgs) -> Result<Loaded<CliSettings>, ConfigError> {
    load_with_env(global, &spike_runtime::config::process_env())
}

/// Loads the effective settings of a command line with the environment `env`.
pub fn load_with_env(
    global: &GlobalArgs,
    env: &[(String, String)],
) -> Result<Loaded<CliSettings>, ConfigError> {
    let mut flags = global.given.0.clone();
    spike_runtime::config::add_sets(&mut flags, &global.set)?;
    spec().load(global.config.as_deref(), env, &flags)
}

/// The configuration flags typed on the command line (clap's defaults and environment
/// variables are left to the loader, so that the configuration file sits between them and the
/// flags). [`crate::cli::Cli::try_parse_recording`] fills it in.
#[derive(Debug, Clone, Default)]
pub struct GivenFlags(Vec<FlagValue>);

impl GivenFlags {
    /// The flags of `matches` that set a key.
    pub fn from_matches(
        cmd: &clap::Command,
        matches: &clap::ArgMatches,
    ) -> Result<Self, ConfigError> {
        spike_runtime::config::flag_values::<CliSettings>(cmd, matches).map(Self)
    }

    /// The keys set by flags, in the order of the configuration's keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|f| f.key.as_str())
    }
}

/// Serde for [`Output`]: `"text"`, `"json"` or `"yaml"`.
mod output_format {
    use clap::ValueEnum;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::cli::Output;

    pub(super) fn serialize<S: Serializer>(o: &Output, s: S) -> Result<S::Ok, S::Error> {
        match o.to_possible_value() {
            Some(v) => s.serialize_str(v.get_name()),
            None => Err(serde::ser::Error::custom("unnamed output format")),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Output, D::Error> {
        let s = String::deserialize(d)?;
        Output::from_str(s.trim(), true)
            .map_err(|_| serde::de::Error::custom("expected \"text\", \"json\" or \"yaml\""))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use clap::CommandFactory;

    use super::*;

    /// Parses a command line.
    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_recording(std::iter::once("spike").chain(args.iter().copied())).unwrap()
    }

    /// The `[default: ...]` of a flag, as clap shows it.
    fn clap_default(id: &str) -> String {
        let cmd = command().unwrap();
        let arg = cmd.get_arguments().find(|a| a.get_id() == id).unwrap();
        arg.get_default_values()[0].to_str().unwrap().to_owned()
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

    /// The one check of docs/configuration.md: every binary's table lists each of its keys
    /// with the variable, flag and default its declaration gives (the CLI reaches the
    /// services' crates anyway, for `spike dev`).
    #[test]
    fn docs_list_every_key_of_every_binary() {
        use spike_runtime::config::{KeyDoc, check_reference};
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
        )
        .unwrap();
        let tables: [(&str, Vec<KeyDoc>); 5] = [
            (
                "spike-nexus",
                spike_nexus::config::spec()
                    .reference::<spike_nexus::NexusSettings>(&spike_nexus::NexusArgs::command())
                    .unwrap(),
            ),
            (
                "spike-keeper",
                spike_keeper::spec()
                    .reference::<spike_keeper::KeeperSettings>(&spike_keeper::KeeperArgs::command())
                    .unwrap(),
            ),
            (
                "spike-agent",
                spike_agent::config::spec()
                    .reference::<spike_agent::config::AgentSettings>(
                        &spike_agent::config::AgentArgs::command(),
                    )
                    .unwrap(),
            ),
            (
                "spike-gateway",
                spike_gateway::config::spec()
                    .reference::<spike_gateway::config::GatewaySettings>(
                        &spike_gateway::config::GatewayArgs::command(),
                    )
                    .unwrap(),
            ),
            (
                "spike",
                spec().reference::<CliSettings>(&Cli::command()).unwrap(),
            ),
        ];
        let problems: Vec<String> = tables
            .iter()
            .filter_map(|(heading, rows)| check_reference(&doc, heading, rows).err())
            .collect();
        assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    }

    #[test]
    fn defaults_match_the_flags_defaults() {
        let s = load_with_env(&parse(&["status"]).global, &[])
            .unwrap()
            .config;
        assert_eq!(s, CliSettings::default());
        assert_eq!(s.nexus, clap_default("nexus"));
        assert_eq!(
            s.timeout,
            humantime::parse_duration(&clap_default("timeout")).unwrap()
        );
        assert_eq!(clap_default("output"), "text");
        assert_eq!(
            s.identity.trust_domain.as_str(),
            clap_default("identity.trust_domain")
        );
        assert_eq!(
            s.identity.svid_timeout,
            humantime::parse_duration(&clap_default("identity.svid_timeout")).unwrap()
        );
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let f = file(
            "nexus = \"file:1\"\ntimeout = \"5s\"\noutput = \"yaml\"\n\
             [identity]\ntrust_domain = \"file.example\"\nsvid_timeout = \"7s\"\n",
        );
        let path = f.path().display().to_string();

        // File over defaults.
        let cli = parse(&["--config", &path, "status"]);
        let s = load_with_env(&cli.global, &[]).unwrap().config;
        assert_eq!(s.nexus, "file:1");
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.output, Output::Yaml);
        assert_eq!(s.identity.trust_domain.as_str(), "file.example");
        assert_eq!(s.identity.svid_timeout, Duration::from_secs(7));
        assert_eq!(s.identity.svid_cert, None, "untouched keys keep defaults");

        // Environment over file, with the long-standing variable names.
        let e = env(&[
            ("SPIKE_NEXUS_ADDR", "env:1"),
            ("SPIKE_CLI_TIMEOUT", "6s"),
            ("SPIKE_TRUST_DOMAIN", "env.example"),
        ]);
        let s = load_with_env(&cli.global, &e).unwrap().config;
        assert_eq!(s.nexus, "env:1");
        assert_eq!(s.timeout, Duration::from_secs(6));
        assert_eq!(s.identity.trust_domain.as_str(), "env.example");
        assert_eq!(s.output, Output::Yaml, "the file still applies");

        // Flags over environment, also after the subcommand.
        let cli = parse(&[
            "--config",
            &path,
            "secret",
            "get",
            "x",
            "-o",
            "json",
            "--nexus",
            "flag:1",
            "--trust-domain",
            "flag.example",
        ]);
        let s = load_with_env(&cli.global, &e).unwrap().config;
        assert_eq!(s.nexus, "flag:1");
        assert_eq!(s.output, Output::Json);
        assert_eq!(s.identity.trust_domain.as_str(), "flag.example");
        assert_eq!(
            s.timeout,
            Duration::from_secs(6),
            "the environment still applies"
        );

        // A flag given with its default value still beats the file.
        let cli = parse(&["--config", &path, "--output", "text", "status"]);
        let s = load_with_env(&cli.global, &[]).unwrap().config;
        assert_eq!(s.output, Output::Text);

        // --set reaches any key, but not one a flag also sets.
        let cli = parse(&["--config", &path, "status", "--set", "timeout=9s"]);
        let s = load_with_env(&cli.global, &[]).unwrap().config;
        assert_eq!(s.timeout, Duration::from_secs(9));
        let cli = parse(&["--timeout", "1s", "--set", "timeout=9s", "status"]);
        let e = load_with_env(&cli.global, &[]).unwrap_err();
        assert!(matches!(e, ConfigError::Conflict { .. }), "{e}");
    }

    #[test]
    fn spike_cli_config_names_the_file_and_a_services_variable_does_not() {
        let f = file("nexus = \"file:2\"\n");
        let path = f.path().display().to_string();
        let cli = parse(&["status", "--config", &path]);
        assert_eq!(cli.global.config.as_deref(), Some(f.path()));
        let s = load_with_env(&cli.global, &[]).unwrap().config;
        assert_eq!(s.nexus, "file:2");
        let cli = parse(&["status"]);
        let s = load_with_env(&cli.global, &env(&[("SPIKE_CLI_CONFIG", &path)]))
            .unwrap()
            .config;
        assert_eq!(s.nexus, "file:2");
        // A shell exporting a service's file for spike-nexus does not hand it to the CLI.
        let services = env(&[("SPIKE_CONFIG", &path), ("SPIKE_NEXUS_CONFIG", &path)]);
        let l = load_with_env(&cli.global, &services).unwrap();
        assert_eq!(l.config, CliSettings::default());
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn pem_files_combine_across_layers_key_by_key() {
        // Cert and key as flags, the bundle from another layer: clap must not insist on all
        // three flags (it did: "required arguments were not provided").
        let cli = parse(&["--svid-cert", "c.pem", "--svid-key", "k.pem", "status"]);
        let want = (
            Some(PathBuf::from("c.pem")),
            Some(PathBuf::from("k.pem")),
            Some(PathBuf::from("b.pem")),
        );
        let got = |s: CliSettings| {
            (
                s.identity.svid_cert,
                s.identity.svid_key,
                s.identity.svid_bundle,
            )
        };
        let s = load_with_env(&cli.global, &env(&[("SPIKE_SVID_BUNDLE", "b.pem")]))
            .unwrap()
            .config;
        assert_eq!(got(s.clone()), want);
        assert!(s.identity.to_args().is_ok());
        let cli = parse(&[
            "--svid-cert",
            "c.pem",
            "--svid-key",
            "k.pem",
            "status",
            "--set",
            "identity.svid_bundle=b.pem",
        ]);
        assert_eq!(got(load_with_env(&cli.global, &[]).unwrap().config), want);
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("cli.toml");
        std::fs::write(&conf, "[identity]\nsvid_bundle = \"/b.pem\"\n").unwrap();
        let conf = conf.display().to_string();
        let cli = parse(&[
            "--config",
            &conf,
            "--svid-cert",
            "/c.pem",
            "--svid-key",
            "/k.pem",
            "status",
        ]);
        let s = load_with_env(&cli.global, &[]).unwrap().config;
        assert_eq!(
            got(s),
            (
                Some(PathBuf::from("/c.pem")),
                Some(PathBuf::from("/k.pem")),
                Some(PathBuf::from("/b.pem"))
            )
        );
        // Only some of the three in the end is still refused, naming all three.
        let cli = parse(&["--svid-cert", "c.pem", "status"]);
        let e = load_with_env(&cli.global, &[])
            .unwrap()
            .config
            .identity
            .to_args()
            .unwrap_err();
        assert!(e.to_string().contains("identity.svid_bundle"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let f = file("nexus = \"a:1\"\ntimeuot = \"5s\"\n");
        let cli = parse(&["--config", &f.path().display().to_string(), "status"]);
        let e = load_with_env(&cli.global, &[]).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ConfigError::UnknownKey { .. }), "{msg}");
        assert!(msg.contains("`timeuot`"), "{msg}");
        assert!(msg.contains("did you mean `timeout`"), "{msg}");

        let f = file("[identity]\nsvid_crt = \"c.pem\"\n");
        let cli = parse(&["--config", &f.path().display().to_string(), "status"]);
        let msg = load_with_env(&cli.global, &[]).unwrap_err().to_string();
        assert!(msg.contains("did you mean `identity.svid_cert`"), "{msg}");

        let f = file("output = \"xml\"\n");
        let cli = parse(&["--config", &f.path().display().to_string(), "status"]);
        let msg = load_with_env(&cli.global, &[]).unwrap_err().to_string();
        assert!(
            msg.contains("`output`") && msg.contains("\"yaml\""),
            "{msg}"
        );

        let cli = parse(&["--set", "nexsu=a:1", "status"]);
        let e = load_with_env(&cli.global, &[]).unwrap_err();
        assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e}");

        // A stray SPIKE_CLI_ variable is a warning, not silence.
        let cli = parse(&["status"]);
        let l = load_with_env(&cli.global, &env(&[("SPIKE_CLI_TIMOUT", "1s")])).unwrap();
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(
            l.warnings[0].contains("SPIKE_CLI_TIMEOUT"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn only_typed_flags_count_as_flags() {
        let cli = parse(&["status"]);
        assert_eq!(cli.global.given.keys().count(), 0);
        let cli = parse(&["--svid-timeout", "3s", "status", "--timeout", "2s"]);
        let keys: Vec<&str> = cli.global.given.keys().collect();
        assert_eq!(keys, ["timeout", "identity.svid_timeout"]);
    }

    #[test]
    fn print_config_output_is_a_valid_file() {
        let cli = parse(&["-o", "json", "--nexus", "h:1", "status"]);
        let s = load_with_env(&cli.global, &[]).unwrap().config;
        let text = spec().render(&s).unwrap();
        assert!(text.contains("output = \"json\""), "{text}");
        assert!(text.contains("[identity]"), "{text}");
        let f = file(&text);
        let cli = parse(&["--config", &f.path().display().to_string(), "status"]);
        assert_eq!(load_with_env(&cli.global, &[]).unwrap().config, s);
    }
}
