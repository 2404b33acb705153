//! SPIKE's Kubernetes operator.
//!
//! `crd`: the three custom resources (`SpikeCluster`, `SpikeSecret`, `SpikePolicy`) and their
//! schemas, which `crdgen` writes to `crds/` and the chart. `nexus`: what the `SpikeSecret` and
//! `SpikePolicy` controllers write to Nexus, as `/spike/operator`, with compare-and-set.
//! `validate`: the controllers' pure validate step (tenancy above all). `names`: the names of
//! the objects a `SpikeCluster` owns, and Nexus's address. `build`: the `SpikeCluster`
//! controller's pure build step, every object it applies (StatefulSets, Services, the settings
//! ConfigMap, NetworkPolicies, the bootstrap Job, SPIRE registrations). `runtime`: leader
//! election on a Lease and the `/healthz`, `/readyz` and `/metrics` server.

pub mod build;
pub mod crd;
pub mod names;
pub mod nexus;
pub mod runtime;
pub mod validate;
