//! The one shape every SPIKE Service has: one TCP port, targeted by its name, selecting one
//! component's pods of one cluster.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Ctx;
use super::meta::{Component, selector_labels};

/// How a Service publishes its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// A cluster IP, ready pods only.
    Ready,
    /// A cluster IP, ready or not (a component that must be reached before it is ready).
    NotReadyToo,
    /// Headless (one DNS name per pod), ready or not.
    HeadlessNotReadyToo,
}

/// The Service `name` of `component`, with its one port `port_name` → `port`.
pub fn service(
    ctx: &Ctx<'_>,
    name: String,
    component: Component,
    (port_name, port): (&str, u16),
    publish: Publish,
) -> Service {
    Service {
        metadata: ctx.meta(name, component),
        spec: Some(ServiceSpec {
            cluster_ip: (publish == Publish::HeadlessNotReadyToo).then(|| "None".into()),
            publish_not_ready_addresses: (publish != Publish::Ready).then_some(true),
            selector: Some(selector_labels(ctx.name, component)),
            ports: Some(vec![ServicePort {
                name: Some(port_name.into()),
                port: i32::from(port),
                target_port: Some(IntOrString::String(port_name.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
