//! A `SpikeCluster`'s optional reference-token gateway: how many run, and the named routes
//! (`/r/<route>/…`) agents reach upstreams by. The controller writes them into the gateway's
//! settings file as `[[routes]]` tables (see the gateway's page in `docs/`).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::cluster::ComputeResources;
use super::{CEL_DNS_LABEL, CEL_DNS_SUBDOMAIN, TokenAction, every_item};

/// CEL: a route name, as the gateway accepts it.
const CEL_ROUTE_NAME: &str = "self.matches('^[A-Za-z0-9._-]{1,64}$')";
/// CEL: an upstream `scheme://host[:port][/path]`, without user or query.
const CEL_UPSTREAM: &str =
    "self.matches('^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&()*+,;=:@/-]*)?$')";
/// CEL: an HTTP method token.
const CEL_METHOD: &str = "self.matches('^[A-Z]{1,16}$')";
/// CEL: a request path prefix (`/chat/completions`).
const CEL_PATH_PREFIX: &str = "self.matches('^(/[A-Za-z0-9._~-]+)+$')";
/// CEL: an IPv4 or IPv6 network in CIDR form (or one address); the gateway parses it exactly.
const CEL_NETWORK: &str = "self.matches('^[0-9A-Fa-f.:]+(/[0-9]{1,3})?$')";
/// CEL: a ConfigMap key.
const CEL_CONFIG_KEY: &str = "self.matches('^[A-Za-z0-9._-]{1,253}$')";

/// A reference-token gateway, identity `/spike/gateway/<name>`, shared by the cluster's
/// agents (they reach it over mTLS with their SVIDs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.routes) || self.routes.all(r, self.routes.exists_one(s, s.name == r.name))").message("gateway.routes: each route name must be unique"))]
pub struct GatewaySpec {
    /// The gateway's name, the last segment of its SPIFFE ID.
    #[serde(default = "default_gateway_name")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(CEL_DNS_LABEL).message("gateway.name must be a DNS label"))]
    pub name: String,
    /// How many gateway pods run.
    #[serde(default = "default_gateway_replicas")]
    #[schemars(range(min = 1, max = 32))]
    pub replicas: i32,
    /// Requests and limits for each gateway pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ComputeResources>,
    /// The named routes: `/r/<name>/…` on the gateway goes to the route's upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub routes: Vec<GatewayRoute>,
    /// Also forward absolute-form HTTP/1.1 requests (`GET https://host/…`, an HTTP proxy
    /// client) to public addresses.
    #[serde(default)]
    pub forward_proxy: bool,
}

fn default_gateway_name() -> String {
    "default".into()
}

fn default_gateway_replicas() -> i32 {
    1
}

/// One named route to a fixed upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayRoute {
    /// The route's name: agents use `https://<gateway>/r/<name>/…` as their base URL.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(CEL_ROUTE_NAME).message("route name must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'"))]
    pub name: String,
    /// Where its requests go: `https://host[:port][/path]`; `http://` only with
    /// `allowPlainHttp`.
    #[schemars(length(min = 9, max = 2048))]
    #[x_kube(validation = Rule::new(CEL_UPSTREAM).message("upstream must be https://host[:port][/path] (or http://), without user or query, such as https://api.groq.com/openai/v1"))]
    pub upstream: String,
    /// Which action each request is (method and path prefix below the route); the first that
    /// matches decides. Without a match `GET`, `HEAD` and `OPTIONS` are `read`, the rest
    /// `write`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rules: Vec<RouteRule>,
    /// Networks beyond public addresses the upstream may resolve to (an internal service),
    /// in CIDR form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 2, max = 43)))]
    #[x_kube(validation = Rule::new(every_item(CEL_NETWORK)).message("allowNetworks must be CIDR networks such as 10.1.0.0/16"))]
    pub allow_networks: Vec<String>,
    /// The CA bundle (PEM) that verifies the upstream, from a ConfigMap in the cluster's
    /// namespace; absent: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<ConfigMapKey>,
    /// Substitute into a plain `http://` upstream (only on a network you trust).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Also look for tokens in request bodies (where a token's binding allows it).
    #[serde(default)]
    pub substitute_in_body: bool,
}

/// A rule that names a request's action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteRule {
    /// The HTTP method (`POST`); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(validation = Rule::new(CEL_METHOD).message("method must be an HTTP method in capitals, such as POST"))]
    pub method: Option<String>,
    /// The path prefix below the route, on whole segments (`/chat/completions`).
    #[schemars(length(min = 2, max = 512))]
    #[x_kube(validation = Rule::new(CEL_PATH_PREFIX).message("pathPrefix must be a request path such as /chat/completions"))]
    pub path_prefix: String,
    /// The action such requests are: what a token must allow.
    pub action: TokenAction,
}

/// A key of a ConfigMap in the `SpikeCluster`'s namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKey {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_DNS_SUBDOMAIN).message("ca.name must be a Kubernetes object name"))]
    pub name: String,
    /// The key holding the PEM bundle.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(CEL_CONFIG_KEY).message("ca.key must be A-Z, a-z, 0-9, '.', '_' and '-'"))]
    pub key: String,
}
