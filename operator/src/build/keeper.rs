//! The keepers: a headless Service, a StatefulSet whose ordinals start at 1 so pod
//! `<cluster>-keeper-<i>` is keeper `/spike/keeper/<i>`, and a PodDisruptionBudget.

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetOrdinals, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, Service, TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::{self, KEEPER_API_PORT, KEEPER_HEALTH_PORT};

use super::Ctx;
use super::meta::{Component, match_labels, selector_labels};
use super::pod::{self, PodInput, http_probe};
use super::service::{self, Publish};
use super::settings::KEEPER_FILE;

/// The first ordinal: keeper ids are 1-based (`/spike/keeper/1` ...), and so are the pods.
pub const FIRST_ORDINAL: i32 = 1;

/// The headless Service that gives each keeper pod its DNS name
/// (`<cluster>-keeper-<i>.<cluster>-keeper.<ns>.svc`). It publishes pods that are not ready:
/// a keeper is ready only once Nexus has sent it its share, which Nexus can do only when it
/// can reach the keeper.
pub fn service(ctx: &Ctx<'_>) -> Service {
    service::service(
        ctx,
        names::keeper(ctx.name),
        Component::Keeper,
        ("api", KEEPER_API_PORT),
        Publish::HeadlessNotReadyToo,
    )
}

/// The keeper StatefulSet.
///
/// - `ordinals.start: 1`: pod `<cluster>-keeper-<i>` is keeper `i`, the i-th address of
///   Nexus's `keepers`, with the SPIFFE ID `/spike/keeper/<i>` (a keeper learns its index from
///   that ID, so every keeper reads the same settings).
/// - `podManagementPolicy: Parallel`: no keeper is ready before bootstrap (ready means it holds
///   its share), so ordered start would wait for ever on the first.
/// - Rolling updates one keeper at a time: the next is replaced only once the previous is
///   ready again, that is, once Nexus has re-sent its share.
/// - Required anti-affinity on the node: two keepers on one node would let one node failure
///   take two shares. With more keepers than nodes the extra keepers stay Pending.
/// - Spread over zones where the scheduler can (`ScheduleAnyway`: a one-zone cluster works).
pub fn stateful_set(ctx: &Ctx<'_>) -> StatefulSet {
    let keepers = &ctx.spec.keepers;
    let selector = selector_labels(ctx.name, Component::Keeper);
    let mut template = pod::template(
        PodInput {
            labels: super::meta::labels(ctx.name, Component::Keeper),
            service_account: names::keeper(ctx.name),
            container: "keeper",
            binary: "spike-keeper",
            settings_file: KEEPER_FILE,
            args: Vec::new(),
            ports: vec![
                pod::port("api", KEEPER_API_PORT),
                pod::port("health", KEEPER_HEALTH_PORT),
            ],
            // `/readyz` is 200 only while the keeper holds its share.
            readiness: Some(http_probe("/readyz", "health", 5)),
            liveness: Some(http_probe("/healthz", "health", 10)),
            resources: keepers.resources.as_ref(),
            volumes: Vec::new(),
            mounts: Vec::new(),
            restart_policy: None,
        },
        ctx,
    );
    if let Some(spec) = template.spec.as_mut() {
        if keepers.replicas > 1 {
            spec.affinity = Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![
                        PodAffinityTerm {
                            label_selector: Some(match_labels(selector.clone())),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..PodAffinityTerm::default()
                        },
                    ]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            });
        }
        spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(match_labels(selector.clone())),
            ..TopologySpreadConstraint::default()
        }]);
    }
    StatefulSet {
        metadata: ctx.meta(names::keeper(ctx.name), Component::Keeper),
        spec: Some(StatefulSetSpec {
            replicas: Some(keepers.replicas),
            ordinals: Some(StatefulSetOrdinals {
                start: Some(FIRST_ORDINAL),
            }),
            service_name: Some(names::keeper(ctx.name)),
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    max_unavailable: Some(IntOrString::Int(1)),
                    partition: None,
                }),
            }),
            selector: match_labels(selector),
            template,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// How many keepers a voluntary disruption (a node drain) may take at once: as many as leave
/// `threshold` holding their shares, `replicas - threshold`. Below the threshold a Nexus that
/// restarts cannot rebuild its root key until the keepers have their shares back, which only a
/// running Nexus can give them, so the budget never goes below it. With
/// `replicas == threshold` it is 0: every keeper is needed, and a drain waits until an
/// administrator moves the keeper by hand (run more keepers than the threshold to drain freely).
pub fn max_unavailable(replicas: i32, threshold: i32) -> i32 {
    (replicas - threshold).max(0)
}

/// The keepers' PodDisruptionBudget. A keeper that is not ready holds no share, so evicting it
/// costs nothing: `unhealthyPodEvictionPolicy: AlwaysAllow` lets drains through before
/// bootstrap and past a keeper that lost its share.
pub fn disruption_budget(ctx: &Ctx<'_>) -> PodDisruptionBudget {
    let k = &ctx.spec.keepers;
    PodDisruptionBudget {
        metadata: ctx.meta(names::keeper(ctx.name), Component::Keeper),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable(k.replicas, k.threshold))),
            selector: Some(match_labels(selector_labels(ctx.name, Component::Keeper))),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The keeper addresses Nexus is given, in keeper-id order: keeper `i` is pod ordinal `i`.
pub fn addresses(ctx: &Ctx<'_>) -> Vec<String> {
    (FIRST_ORDINAL..FIRST_ORDINAL + ctx.spec.keepers.replicas)
        .map(|i| names::keeper_addr(ctx.name, ctx.namespace, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests_support::{sample, valid};

    #[test]
    fn the_budget_keeps_the_threshold_available() {
        for (replicas, threshold, budget) in [
            (1, 1, 0),
            (2, 2, 0),
            (3, 2, 1),
            (5, 3, 2),
            (5, 1, 4),
            (255, 128, 127),
        ] {
            let m = max_unavailable(replicas, threshold);
            assert_eq!(m, budget, "{replicas}/{threshold}");
            assert!(replicas - m >= threshold);
        }
        let mut c = sample();
        c.spec.keepers.replicas = 5;
        c.spec.keepers.threshold = 3;
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let pdb = disruption_budget(&ctx).spec.unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(2)));
        assert_eq!(
            pdb.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
    }

    #[test]
    fn ordinals_start_at_one_and_are_the_keeper_ids() {
        let c = sample();
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let sts = stateful_set(&ctx).spec.unwrap();
        assert_eq!(sts.ordinals.unwrap().start, Some(1));
        assert_eq!(sts.replicas, Some(3));
        assert_eq!(sts.pod_management_policy.as_deref(), Some("Parallel"));
        let ru = sts.update_strategy.unwrap();
        assert_eq!(ru.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(
            ru.rolling_update.unwrap().max_unavailable,
            Some(IntOrString::Int(1))
        );
        assert_eq!(
            addresses(&ctx),
            vec![
                "spike-keeper-1.spike-keeper.spike-system.svc:8443",
                "spike-keeper-2.spike-keeper.spike-system.svc:8443",
                "spike-keeper-3.spike-keeper.spike-system.svc:8443",
            ]
        );
        assert_eq!(
            addresses(&ctx)[1],
            names::keeper_addr("spike", "spike-system", 2)
        );
    }

    #[test]
    fn keepers_avoid_each_others_nodes_and_spread_over_zones() {
        let mut c = sample();
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let sts = stateful_set(&ctx).spec.unwrap();
        let pod = sts.template.spec.unwrap();
        let term = &pod
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()[0];
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        assert_eq!(term.label_selector, Some(sts.selector));
        let spread = &pod.topology_spread_constraints.unwrap()[0];
        assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(spread.topology_key, "topology.kubernetes.io/zone");

        c.spec.keepers.replicas = 1;
        c.spec.keepers.threshold = 1;
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let one = stateful_set(&ctx).spec.unwrap().template.spec.unwrap();
        assert!(one.affinity.is_none());
    }

    #[test]
    fn the_service_is_headless_and_reaches_keepers_before_they_are_ready() {
        let c = sample();
        let v = valid(&c);
        let ctx = Ctx::new(&c, &v).unwrap();
        let s = service(&ctx).spec.unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"));
        assert_eq!(s.publish_not_ready_addresses, Some(true));
        assert_eq!(s.ports.unwrap()[0].port, 8443);
        let sts = stateful_set(&ctx).spec.unwrap();
        assert_eq!(sts.service_name.as_deref(), Some("spike-keeper"));
        let probe = sts.template.spec.unwrap().containers[0]
            .readiness_probe
            .clone()
            .unwrap();
        assert_eq!(probe.http_get.unwrap().path.as_deref(), Some("/readyz"));
    }
}
