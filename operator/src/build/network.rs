//! The NetworkPolicies: every SPIKE pod of the cluster denies all traffic but what its
//! component needs.
//!
//! | pods | ingress | egress |
//! |-|-|-|
//! | keepers | Nexus's pods, API port | DNS only |
//! | Nexus | every pod of every namespace, API port (workloads of every tenant) | keepers' API port, DNS |
//! | bootstrap | none | Nexus's API port, DNS |
//! | gateway | every pod of every namespace, agents' port | anywhere (its routes' upstreams) |
//!
//! Health ports have no rule: kubelet probes come from the node, which NetworkPolicy always
//! allows, and a policy cannot name "the kubelet" any more precisely. A metrics scraper needs
//! its own policy. Bootstrap never reaches the keepers: Nexus sends them their shares.
//! DNS is allowed to any destination on port 53, since the resolver's namespace and labels
//! differ per cluster.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::{self, GATEWAY_PORT, KEEPER_API_PORT, NEXUS_API_PORT};

use super::Ctx;
use super::meta::{Component, cluster_labels, match_labels, selector_labels};

/// The policies, each named in [`super::ClusterObjects`].
pub struct Policies {
    /// Denies every pod of the cluster all ingress and egress.
    pub default_deny: NetworkPolicy,
    /// Keepers: from Nexus only.
    pub keeper: NetworkPolicy,
    /// Nexus: its API from anywhere in the cluster, to the keepers.
    pub nexus: NetworkPolicy,
    /// Bootstrap: to Nexus.
    pub bootstrap: NetworkPolicy,
    /// The gateway, when there is one.
    pub gateway: Option<NetworkPolicy>,
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

fn dns() -> NetworkPolicyEgressRule {
    let port = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.into()),
        ..NetworkPolicyPort::default()
    };
    NetworkPolicyEgressRule {
        ports: Some(vec![port("UDP"), port("TCP")]),
        to: None,
    }
}

/// Pods of `component` of this cluster (in its namespace: a peer without a namespace
/// selector is the policy's namespace).
fn pods(ctx: &Ctx<'_>, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(match_labels(selector_labels(ctx.name, component))),
        ..NetworkPolicyPeer::default()
    }
}

/// Every pod of every namespace.
fn anywhere_in_the_cluster() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }
}

fn policy(
    ctx: &Ctx<'_>,
    name: String,
    component: Component,
    selector: LabelSelector,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ctx.meta(name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(egress),
        }),
    }
}

fn component_policy(
    ctx: &Ctx<'_>,
    name: String,
    component: Component,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    let selector = match_labels(selector_labels(ctx.name, component));
    policy(ctx, name, component, selector, ingress, egress)
}

/// Every policy of the cluster.
pub fn policies(ctx: &Ctx<'_>) -> Policies {
    let default_deny = policy(
        ctx,
        names::default_deny(ctx.name),
        Component::Network,
        match_labels(cluster_labels(ctx.name)),
        Vec::new(),
        Vec::new(),
    );
    let keeper = component_policy(
        ctx,
        names::keeper(ctx.name),
        Component::Keeper,
        vec![NetworkPolicyIngressRule {
            from: Some(vec![pods(ctx, Component::Nexus)]),
            ports: Some(vec![tcp(KEEPER_API_PORT)]),
        }],
        vec![dns()],
    );
    let nexus = component_policy(
        ctx,
        names::nexus(ctx.name),
        Component::Nexus,
        vec![NetworkPolicyIngressRule {
            from: Some(vec![anywhere_in_the_cluster()]),
            ports: Some(vec![tcp(NEXUS_API_PORT)]),
        }],
        vec![
            NetworkPolicyEgressRule {
                to: Some(vec![pods(ctx, Component::Keeper)]),
                ports: Some(vec![tcp(KEEPER_API_PORT)]),
            },
            dns(),
        ],
    );
    let bootstrap = component_policy(
        ctx,
        names::bootstrap(ctx.name),
        Component::Bootstrap,
        Vec::new(),
        vec![
            NetworkPolicyEgressRule {
                to: Some(vec![pods(ctx, Component::Nexus)]),
                ports: Some(vec![tcp(NEXUS_API_PORT)]),
            },
            dns(),
        ],
    );
    let gateway = ctx.spec.gateway.as_ref().map(|_| {
        component_policy(
            ctx,
            names::gateway(ctx.name),
            Component::Gateway,
            vec![NetworkPolicyIngressRule {
                from: Some(vec![anywhere_in_the_cluster()]),
                ports: Some(vec![tcp(GATEWAY_PORT)]),
            }],
            // Its routes' upstreams are anywhere; the gateway itself decides what leaves.
            vec![NetworkPolicyEgressRule::default()],
        )
    });
    Policies {
        default_deny,
        keeper,
        nexus,
        bootstrap,
        gateway,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests_support::{sample, valid};

    fn selects(policy: &NetworkPolicy) -> std::collections::BTreeMap<String, String> {
        policy
            .spec
            .as_ref()
            .unwrap()
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .clone()
            .unwrap()
    }

    #[test]
    fn default_deny_covers_every_pod_and_allows_nothing() {
        let c = sample();
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let p = policies(&ctx);
        let spec = p.default_deny.spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        assert_eq!(spec.ingress.as_deref(), Some(&[][..]));
        assert_eq!(spec.egress.as_deref(), Some(&[][..]));
        let deny = selects(&p.default_deny);
        for component in [
            Component::Keeper,
            Component::Nexus,
            Component::Bootstrap,
            Component::Gateway,
        ] {
            let pod_labels = crate::build::meta::labels("spike", component);
            assert!(deny.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        }
        assert!(p.gateway.is_none());
    }

    #[test]
    fn keepers_hear_only_nexus_and_bootstrap_reaches_only_nexus() {
        let c = sample();
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let p = policies(&ctx);
        let k = p.keeper.spec.as_ref().unwrap();
        let rule = &k.ingress.as_ref().unwrap()[0];
        assert_eq!(rule.from.as_ref().unwrap().len(), 1);
        assert_eq!(
            rule.from.as_ref().unwrap()[0].pod_selector,
            Some(match_labels(selector_labels("spike", Component::Nexus)))
        );
        assert!(rule.from.as_ref().unwrap()[0].namespace_selector.is_none());
        assert_eq!(rule.ports.as_ref().unwrap(), &vec![tcp(8443)]);
        assert_eq!(
            selects(&p.keeper),
            selector_labels("spike", Component::Keeper)
        );

        let b = p.bootstrap.spec.as_ref().unwrap();
        assert!(b.ingress.as_ref().unwrap().is_empty());
        let to = &b.egress.as_ref().unwrap()[0];
        assert_eq!(to.ports.as_ref().unwrap(), &vec![tcp(8553)]);

        let n = p.nexus.spec.as_ref().unwrap();
        let api = &n.ingress.as_ref().unwrap()[0];
        assert_eq!(api.ports.as_ref().unwrap(), &vec![tcp(8553)]);
        assert_eq!(
            api.from.as_ref().unwrap()[0].namespace_selector,
            Some(LabelSelector::default())
        );
    }

    #[test]
    fn the_gateway_gets_a_policy_when_it_runs() {
        let mut c = sample();
        c.spec.gateway = Some(serde_json::from_value(serde_json::json!({})).unwrap());
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let g = policies(&ctx).gateway.unwrap();
        let spec = g.spec.unwrap();
        assert_eq!(
            spec.ingress.unwrap()[0].ports.as_ref().unwrap(),
            &vec![tcp(8480)]
        );
        assert_eq!(
            spec.egress.unwrap(),
            vec![NetworkPolicyEgressRule::default()]
        );
    }
}
