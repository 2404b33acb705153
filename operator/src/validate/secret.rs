//! Validating a `SpikeSecret` against its cluster's tenancy.

use std::collections::BTreeSet;
use std::time::Duration;

use spike_core::id::SpiffeId;
use spike_core::path::SecretPath;
use spike_core::pattern::IdPattern;
use spike_core::token::{Destination, TokenAction};

use super::{InvalidSpec, ValidCluster, namespace_of, parse_duration};
use crate::crd::{Alphabet, DataEntry, SpikeSecret, TokenSpec};

/// Shortest generated value: 16 characters of even the hex alphabet are 64 bits.
pub const MIN_GENERATED_LEN: u32 = 16;
/// Longest generated value.
pub const MAX_GENERATED_LEN: u32 = 4096;

/// Where one key's value comes from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidData {
    /// A key of a Kubernetes Secret in the resource's namespace.
    FromSecret {
        /// The Secret's name.
        name: String,
        /// The key in it.
        key: String,
    },
    /// A random value of `length` characters from `alphabet`.
    Generate {
        /// Characters.
        length: u32,
        /// Drawn from.
        alphabet: Alphabet,
    },
}

/// One token to keep minted, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// The agent it is bound to.
    pub agent: SpiffeId,
    /// The data key it stands for.
    pub key: String,
    /// The Kubernetes Secret it is written to.
    pub secret_name: String,
    /// How long each token lives.
    pub ttl: Duration,
    /// The action it allows.
    pub action: TokenAction,
    /// Where it may be sent (empty: the secret's allowed destinations).
    pub destinations: Vec<Destination>,
    /// Request paths it is limited to.
    pub path_prefixes: Vec<String>,
}

/// A `SpikeSecret` that stays inside its namespace's tenancy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSecret {
    /// The path in Nexus.
    pub path: SecretPath,
    /// Each key and its source, in the spec's order.
    pub data: Vec<(String, ValidData)>,
    /// How long each version lives.
    pub ttl: Option<Duration>,
    /// Who may read it.
    pub allowed_spiffe_ids: Vec<IdPattern>,
    /// Where its tokens may be sent.
    pub allowed_destinations: Vec<Destination>,
    /// The tokens to keep minted.
    pub tokens: Vec<ValidToken>,
}

/// Checks a `SpikeSecret` against `cluster`: path and SPIFFE IDs under the namespace's
/// prefixes, sources in the namespace, durations and destinations that parse.
pub fn validate_secret(
    secret: &SpikeSecret,
    cluster: &ValidCluster,
) -> Result<ValidSecret, InvalidSpec> {
    let tenant = cluster.tenant(namespace_of(&secret.metadata)?)?;
    let spec = &secret.spec;
    let path = tenant
        .check_path(&spec.path)
        .map_err(InvalidSpec::tenancy("spec.path"))?;

    let mut keys = BTreeSet::new();
    let mut data = Vec::with_capacity(spec.data.len());
    for (i, entry) in spec.data.iter().enumerate() {
        if !keys.insert(entry.key.as_str()) {
            return Err(InvalidSpec::DuplicateKey(entry.key.clone()));
        }
        let source = data_source(i, entry, |ns| {
            tenant
                .check_secret_namespace(ns)
                .map_err(InvalidSpec::tenancy(format!(
                    "spec.data[{i}].fromSecret.namespace"
                )))
        })?;
        data.push((entry.key.clone(), source));
    }

    let ttl = spec
        .ttl
        .as_deref()
        .map(|t| parse_duration("spec.ttl", t))
        .transpose()?;
    let allowed_spiffe_ids = spec
        .allowed_spiffe_ids
        .iter()
        .enumerate()
        .map(|(i, p)| {
            tenant
                .check_id_pattern(p)
                .map_err(InvalidSpec::tenancy(format!("spec.allowedSpiffeIds[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let allowed_destinations =
        destinations("spec.allowedDestinations", &spec.allowed_destinations)?;

    let mut secret_names = BTreeSet::new();
    let mut tokens = Vec::with_capacity(spec.tokens.len());
    for (i, t) in spec.tokens.iter().enumerate() {
        if !secret_names.insert(t.secret_name.as_str()) {
            return Err(InvalidSpec::DuplicateTokenSecret(t.secret_name.clone()));
        }
        let agent = tenant
            .check_id(&t.agent)
            .map_err(InvalidSpec::tenancy(format!("spec.tokens[{i}].agent")))?;
        if !allowed_spiffe_ids.is_empty() && !allowed_spiffe_ids.iter().any(|p| p.matches(&agent)) {
            return Err(InvalidSpec::TokenAgentNotAllowed(i));
        }
        let token = ValidToken {
            agent,
            key: token_key(i, t, &spec.data)?,
            secret_name: t.secret_name.clone(),
            ttl: parse_duration(&format!("spec.tokens[{i}].ttl"), &t.ttl)?,
            action: t.action.into(),
            destinations: destinations(&format!("spec.tokens[{i}].destinations"), &t.destinations)?,
            path_prefixes: t.path_prefixes.clone(),
        };
        if token.destinations.is_empty() && allowed_destinations.is_empty() {
            return Err(InvalidSpec::TokenDestinations(i));
        }
        tokens.push(token);
    }

    Ok(ValidSecret {
        path,
        data,
        ttl,
        allowed_spiffe_ids,
        allowed_destinations,
        tokens,
    })
}

/// The one source of data entry `i`; `check_namespace` vets a Secret reference's namespace.
fn data_source(
    i: usize,
    entry: &DataEntry,
    check_namespace: impl FnOnce(Option<&str>) -> Result<(), InvalidSpec>,
) -> Result<ValidData, InvalidSpec> {
    match (&entry.from_secret, &entry.generate) {
        (Some(from), None) => {
            check_namespace(from.namespace.as_deref())?;
            Ok(ValidData::FromSecret {
                name: from.name.clone(),
                key: from.key.clone(),
            })
        }
        (None, Some(g)) => {
            if !(MIN_GENERATED_LEN..=MAX_GENERATED_LEN).contains(&g.length) {
                return Err(InvalidSpec::GenerateLength {
                    index: i,
                    length: g.length,
                    min: MIN_GENERATED_LEN,
                    max: MAX_GENERATED_LEN,
                });
            }
            Ok(ValidData::Generate {
                length: g.length,
                alphabet: g.alphabet,
            })
        }
        _ => Err(InvalidSpec::DataSource(i)),
    }
}

/// The data key token `i` stands for: the one named, or the secret's only key.
fn token_key(i: usize, token: &TokenSpec, data: &[DataEntry]) -> Result<String, InvalidSpec> {
    let reason = |r: &str| InvalidSpec::TokenKey {
        index: i,
        reason: r.to_owned(),
    };
    match (&token.key, data) {
        (Some(k), _) if data.iter().any(|d| d.key == *k) => Ok(k.clone()),
        (Some(_), _) => Err(reason("names a key that spec.data does not have")),
        (None, [only]) => Ok(only.key.clone()),
        (None, _) => Err(reason("is required when spec.data has more than one key")),
    }
}

fn destinations(field: &str, items: &[String]) -> Result<Vec<Destination>, InvalidSpec> {
    items
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Destination::parse(d).map_err(|source| InvalidSpec::Destination {
                field: format!("{field}[{i}]"),
                source,
            })
        })
        .collect()
}
