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
        if let Some(from) = &entry.from_secret {
            let field = format!("spec.data[{i}].fromSecret.namespace");
            tenant
                .check_secret_namespace(from.namespace.as_deref())
                .map_err(InvalidSpec::tenancy(field))?;
        }
        let source = data_source(i, entry)?;
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

/// The one source of data entry `i` (the caller, which knows the tenant, checks a Secret
/// reference's namespace).
fn data_source(i: usize, entry: &DataEntry) -> Result<ValidData, InvalidSpec> {
    match (&entry.from_secret, &entry.generate) {
        (Some(from), None) => Ok(ValidData::FromSecret {
            name: from.name.clone(),
            key: from.key.clone(),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TokenAction as CrdAction;
    use crate::validate::tests_support::{cluster, secret};
    use crate::validate::validate_cluster;

    fn check(s: &SpikeSecret) -> Result<ValidSecret, InvalidSpec> {
        validate_secret(s, &validate_cluster(&cluster("spike-system")).unwrap())
    }

    fn token(agent: &str) -> TokenSpec {
        TokenSpec {
            agent: agent.into(),
            key: Some("password".into()),
            secret_name: "agent-token".into(),
            ttl: "1h".into(),
            action: CrdAction::Read,
            destinations: vec!["api.example.com".into()],
            path_prefixes: vec!["/v1/chat".into()],
        }
    }

    #[test]
    fn a_secret_inside_its_namespace_is_valid() {
        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.ttl = Some("24h".into());
        s.spec.allowed_spiffe_ids = vec!["spiffe://spike.dev/ns/team-a/**".into()];
        s.spec.tokens = vec![token("spiffe://spike.dev/ns/team-a/sa/agent")];
        let v = check(&s).unwrap();
        assert_eq!(v.path.as_str(), "k8s/team-a/db");
        assert_eq!(v.ttl, Some(Duration::from_secs(86_400)));
        assert_eq!(
            v.data[0],
            (
                "password".to_owned(),
                ValidData::FromSecret {
                    name: "db-source".into(),
                    key: "password".into()
                }
            )
        );
        assert_eq!(v.tokens[0].key, "password");
        assert_eq!(v.tokens[0].ttl, Duration::from_secs(3600));
        assert_eq!(
            v.tokens[0].destinations[0].to_string(),
            "api.example.com:443"
        );
    }

    #[test]
    fn tenancy_escapes_are_refused() {
        let err = check(&secret("team-a", "k8s/team-b/db")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.path: path k8s/team-b/db is outside namespace team-a's prefix k8s/team-a/: a resource in this namespace may only touch paths below it"
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.data[0].from_secret.as_mut().unwrap().namespace = Some("team-b".into());
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.data[0].fromSecret.namespace: Secret references are same-namespace only: a resource in namespace team-a cannot read a Secret in namespace team-b"
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.allowed_spiffe_ids = vec!["spiffe://spike.dev/ns/team-b/**".into()];
        assert!(
            check(&s)
                .unwrap_err()
                .to_string()
                .starts_with("spec.allowedSpiffeIds[0]: spiffe://spike.dev/ns/team-b/** can reach identities outside namespace team-a's prefix")
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.tokens = vec![token("spiffe://spike.dev/ns/team-b/sa/agent")];
        assert!(
            check(&s)
                .unwrap_err()
                .to_string()
                .starts_with("spec.tokens[0].agent: ")
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.tokens = vec![token("spiffe://spike.dev/spike/gateway/default")];
        assert!(matches!(check(&s), Err(InvalidSpec::Tenancy { .. })));
    }

    #[test]
    fn data_needs_one_source_per_unique_key() {
        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.data[1].key = "password".into();
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.data: key \"password\" appears more than once"
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.data[1].from_secret = s.spec.data[0].from_secret.clone();
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.data[1]: set exactly one of fromSecret and generate (values never go in the resource)"
        );
        s.spec.data[1].from_secret = None;
        s.spec.data[1].generate = None;
        assert!(matches!(check(&s), Err(InvalidSpec::DataSource(1))));

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.data[1].generate.as_mut().unwrap().length = 8;
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.data[1].generate.length (8) must be between 16 and 4096"
        );
    }

    #[test]
    fn bad_ttls_destinations_and_tokens_say_which_field() {
        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.ttl = Some("0h".into());
        assert!(
            check(&s)
                .unwrap_err()
                .to_string()
                .starts_with("spec.ttl: \"0h\" is not a duration")
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.allowed_destinations = vec!["https://api.example.com/".into()];
        assert!(
            check(&s)
                .unwrap_err()
                .to_string()
                .starts_with("spec.allowedDestinations[0]: destination `https://api.example.com/`")
        );

        let agent = "spiffe://spike.dev/ns/team-a/sa/agent";
        let mut s = secret("team-a", "k8s/team-a/db");
        let mut t = token(agent);
        t.ttl = "0s".into();
        s.spec.tokens = vec![t];
        assert!(
            check(&s)
                .unwrap_err()
                .to_string()
                .starts_with("spec.tokens[0].ttl: ")
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        let mut t = token(agent);
        t.key = Some("nope".into());
        s.spec.tokens = vec![t.clone()];
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.tokens[0].key: names a key that spec.data does not have"
        );
        t.key = None;
        s.spec.tokens = vec![t];
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.tokens[0].key: is required when spec.data has more than one key"
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.tokens = vec![token(agent), token(agent)];
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.tokens: secretName \"agent-token\" appears more than once"
        );

        let mut s = secret("team-a", "k8s/team-a/db");
        let mut t = token(agent);
        t.destinations.clear();
        s.spec.tokens = vec![t];
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.tokens[0]: needs destinations, since spec.allowedDestinations is empty"
        );
        s.spec.allowed_destinations = vec!["api.example.com:8443".into()];
        check(&s).unwrap();

        let mut s = secret("team-a", "k8s/team-a/db");
        s.spec.allowed_spiffe_ids = vec!["spiffe://spike.dev/ns/team-a/sa/web".into()];
        s.spec.tokens = vec![token(agent)];
        assert_eq!(
            check(&s).unwrap_err().to_string(),
            "spec.tokens[0].agent matches none of spec.allowedSpiffeIds"
        );
    }

    #[test]
    fn the_cluster_namespace_writes_any_tenant_path_but_reads_only_its_own_secrets() {
        check(&secret("spike-system", "k8s/team-a/shared/db")).unwrap();
        // Beyond the path root is outside the operator's scope in Nexus.
        assert!(matches!(
            check(&secret("spike-system", "apps/shared/db")),
            Err(InvalidSpec::Tenancy { .. })
        ));
        let mut s = secret("spike-system", "k8s/team-a/shared/db");
        s.spec.data[0].from_secret.as_mut().unwrap().namespace = Some("team-a".into());
        assert!(matches!(check(&s), Err(InvalidSpec::Tenancy { .. })));
    }
}
