//! The generated CRDs as they ship (the checked-in `crds/*.yaml`): their names, columns and
//! bounds, and their CEL rules evaluated with the `cel` crate against valid and invalid
//! specs, the way the API server evaluates them (each rule with `self` bound to the value at
//! its place in the schema; transition rules only when an old object is given).
#![allow(clippy::unwrap_used)] // Fixture helpers panic when a checked-in file is missing or bad.

use std::path::Path;

use serde_json::{Value, json};

/// A checked-in CRD, as JSON.
fn crd(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn version(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]
}

fn spec_schema(crd: &Value) -> &Value {
    &version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

/// The messages of every CEL rule that `value` breaks under `schema`.
fn cel_errors(schema: &Value, value: &Value, old: Option<&Value>) -> Vec<String> {
    let mut errors = Vec::new();
    walk(schema, value, old, &mut errors);
    errors
}

fn walk(schema: &Value, value: &Value, old: Option<&Value>, errors: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let source = rule["rule"].as_str().unwrap();
        let transition = source.contains("oldSelf");
        if transition && old.is_none() {
            continue;
        }
        let program = cel::Program::compile(source)
            .unwrap_or_else(|e| panic!("rule {source:?} does not compile: {e:?}"));
        let mut ctx = cel::Context::default();
        ctx.add_variable("self", value.clone()).unwrap();
        if let Some(old) = old {
            ctx.add_variable("oldSelf", old.clone()).unwrap();
        }
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                errors.push(rule["message"].as_str().unwrap().to_owned())
            }
            other => panic!("rule {source:?} on {value} gave {other:?}"),
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (name, sub) in props {
            if let Some(v) = obj.get(name) {
                walk(sub, v, old.and_then(|o| o.get(name)), errors);
            }
        }
    }
    if let Some(items) = value.as_array() {
        for item in items {
            walk(&schema["items"], item, None, errors);
        }
    }
}

/// Asserts `value` breaks exactly the rule with `message`.
fn assert_refused(schema: &Value, value: &Value, message: &str) {
    assert_eq!(
        cel_errors(schema, value, None),
        vec![message.to_owned()],
        "{value}"
    );
}

fn with(mut base: Value, pointer: &str, v: Value) -> Value {
    *base
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = v;
    base
}

/// A cluster spec with every default filled in, as the API server stores it.
fn cluster_spec() -> Value {
    let spec: spike_operator::crd::SpikeClusterSpec =
        serde_json::from_value(json!({"trustDomain": "spike.dev"})).unwrap();
    serde_json::to_value(spec).unwrap()
}

fn secret_spec() -> Value {
    let spec: spike_operator::crd::SpikeSecretSpec = serde_json::from_value(json!({
        "clusterRef": {"name": "spike", "namespace": "spike-system"},
        "path": "k8s/team-a/db",
        "data": [
            {"key": "password", "fromSecret": {"name": "db-source", "key": "password"}},
            {"key": "user", "fromSecret": {"name": "db-source", "key": "user"}}
        ],
        "ttl": "24h",
        "allowedSpiffeIds": ["spiffe://spike.dev/ns/team-a/**"],
        "allowedDestinations": ["api.example.com", "[::1]:8443"],
        "tokens": [{
            "agent": "spiffe://spike.dev/ns/team-a/sa/agent",
            "key": "password",
            "secretName": "agent-token",
            "destinations": ["api.example.com:443"],
            "pathPrefixes": ["/v1/chat"]
        }]
    }))
    .unwrap();
    serde_json::to_value(spec).unwrap()
}

fn policy_spec() -> Value {
    json!({
        "clusterRef": {"name": "spike"},
        "spiffeIdPattern": "spiffe://spike.dev/ns/team-a/**",
        "pathPattern": "k8s/team-a/db/*",
        "permissions": ["read", "list"]
    })
}

#[test]
fn cluster_rules_accept_the_defaults_and_refuse_bad_specs() {
    let crd = crd("spikeclusters.yaml");
    let schema = spec_schema(&crd);
    let ok = cluster_spec();
    assert_eq!(cel_errors(schema, &ok, None), Vec::<String>::new());
    assert_refused(
        schema,
        &with(ok.clone(), "/keepers/threshold", json!(4)),
        "keepers.threshold must not exceed keepers.replicas",
    );
    assert_refused(
        schema,
        &with(ok.clone(), "/trustDomain", json!("Spike.Dev")),
        "trustDomain must be lowercase letters, digits, '.', '_' and '-' (no scheme)",
    );
    assert_refused(
        schema,
        &with(ok.clone(), "/trustDomain", json!("spiffe://spike.dev")),
        "trustDomain must be lowercase letters, digits, '.', '_' and '-' (no scheme)",
    );
    let two = with(
        ok.clone(),
        "/identity",
        json!({"spireCsi": {"driver": "csi.spiffe.io", "socketName": "s.sock"},
               "hostPath": {"path": "/run/spire", "socketName": "s.sock"}}),
    );
    let identity = "identity must set exactly one of spireCsi, certManagerCsi and hostPath";
    assert_refused(schema, &two, identity);
    assert_refused(schema, &with(ok.clone(), "/identity", json!({})), identity);
    let host = with(
        ok.clone(),
        "/identity",
        json!({"hostPath": {"path": "/run/../etc", "socketName": "s.sock"}}),
    );
    assert_refused(
        schema,
        &host,
        "hostPath.path must be an absolute directory without '.' or '..' segments",
    );
    assert_refused(
        schema,
        &with(ok.clone(), "/nexus/storage/size", json!("lots")),
        "nexus.storage.size must be a quantity such as 1Gi",
    );
    assert_refused(
        schema,
        &with(ok.clone(), "/tenancy/idRoot", json!("spike")),
        "tenancy.idRoot must be one lowercase segment other than 'spike'",
    );
    let cert_manager = with(
        ok.clone(),
        "/identity",
        json!({"certManagerCsi": {
        "driver": "spiffe.csi.cert-manager.io", "certFile": "tls.crt", "keyFile": "../key", "caFile": "ca.crt"}}),
    );
    let mut errors = cel_errors(schema, &cert_manager, None);
    errors.sort();
    assert_eq!(
        errors,
        [
            spike_operator::crd::CERT_MANAGER_REFUSED.to_owned(),
            "keyFile must be a file name".to_owned()
        ]
    );
    // Even well formed, csi-driver-spiffe's IDs cannot name SPIKE's components: refused at
    // admission with the reason and the way out.
    let cert_manager = with(ok, "/identity", json!({"certManagerCsi": {}}));
    assert_refused(
        schema,
        &cert_manager,
        spike_operator::crd::CERT_MANAGER_REFUSED,
    );
}

#[test]
fn gateway_routes_are_checked_before_the_gateway_sees_them() {
    const UPSTREAM: &str = "upstream must be https://host[:port][/path] (or http://), without user or query, such as https://api.groq.com/openai/v1";
    let crd = crd("spikeclusters.yaml");
    let schema = spec_schema(&crd);
    let route = json!({
        "name": "groq",
        "upstream": "https://api.groq.com/openai/v1",
        "rules": [{"method": "POST", "pathPrefix": "/chat/completions", "action": "read"}],
        "allowNetworks": ["10.1.0.0/16"],
        "ca": {"name": "upstream-ca", "key": "ca.pem"}
    });
    let gateway = |routes: Value| {
        let mut spec = cluster_spec();
        spec["gateway"] = json!({"name": "default", "replicas": 1, "routes": routes});
        spec
    };
    let ok = gateway(json!([route]));
    assert_eq!(cel_errors(schema, &ok, None), Vec::<String>::new());
    // The spec type reads what the schema accepts.
    let spec: spike_operator::crd::SpikeClusterSpec = serde_json::from_value(ok).unwrap();
    assert_eq!(
        spec.gateway.unwrap().routes[0].rules[0].path_prefix,
        "/chat/completions"
    );
    assert_refused(
        schema,
        &gateway(json!([route, route])),
        "gateway.routes: each route name must be unique",
    );
    let cases = [
        ("/upstream", json!("ftp://x.example"), UPSTREAM),
        ("/upstream", json!("https://user@x.example/v1"), UPSTREAM),
        ("/upstream", json!("https://x.example/v1?q=1"), UPSTREAM),
        (
            "/name",
            json!("a b"),
            "route name must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'",
        ),
        (
            "/rules/0/method",
            json!("post"),
            "method must be an HTTP method in capitals, such as POST",
        ),
        (
            "/rules/0/pathPrefix",
            json!("chat"),
            "pathPrefix must be a request path such as /chat/completions",
        ),
        (
            "/allowNetworks/0",
            json!("intranet"),
            "allowNetworks must be CIDR networks such as 10.1.0.0/16",
        ),
        (
            "/ca/key",
            json!("../ca"),
            "ca.key must be A-Z, a-z, 0-9, '.', '_' and '-'",
        ),
    ];
    for (pointer, bad, message) in cases {
        let r = with(route.clone(), pointer, bad);
        assert_refused(schema, &gateway(json!([r])), message);
    }
}

#[test]
fn secret_rules_accept_a_full_spec_and_refuse_bad_ones() {
    let crd = crd("spikesecrets.yaml");
    let schema = spec_schema(&crd);
    let ok = secret_spec();
    assert_eq!(cel_errors(schema, &ok, None), Vec::<String>::new());
    let path = "path must be '/'-separated segments of A-Z, a-z, 0-9, '.', '_' and '-', without a leading '/' or '.'/'..' segments";
    for bad in [
        "/k8s/team-a/db",
        "k8s/team-a/../db",
        "k8s//db",
        "k8s/team-a/",
        "k8s/a b",
        "..",
    ] {
        assert_refused(schema, &with(ok.clone(), "/path", json!(bad)), path);
    }
    let one_source = "each data entry needs exactly one of fromSecret and generate";
    let both = with(
        ok.clone(),
        "/data/0",
        json!({"key": "password", "fromSecret": {"name": "db-source", "key": "password"},
               "generate": {"length": 32, "alphabet": "Hex"}}),
    );
    assert_refused(schema, &both, one_source);
    let mixed = "data entries must all use fromSecret or all use generate: put generated keys in a SpikeSecret of their own";
    let none = with(ok.clone(), "/data/1", json!({"key": "salt"}));
    assert_eq!(
        cel_errors(schema, &none, None),
        [mixed.to_owned(), one_source.to_owned()]
    );
    let generated = json!({"key": "salt", "generate": {"length": 32, "alphabet": "Hex"}});
    assert_refused(
        schema,
        &with(ok.clone(), "/data/1", generated.clone()),
        mixed,
    );
    let all_generated = with(
        with(ok.clone(), "/data/1", generated),
        "/data/0",
        json!({"key": "pepper", "generate": {"length": 16}}),
    );
    assert_eq!(
        cel_errors(schema, &all_generated, None),
        Vec::<String>::new()
    );
    let ttl = "ttl must be a positive number and one unit of s, m, h or d, such as 24h";
    for bad in ["0h", "1h30m", "24", "-1h", "1w"] {
        assert_refused(schema, &with(ok.clone(), "/ttl", json!(bad)), ttl);
    }
    assert_refused(
        schema,
        &with(ok.clone(), "/tokens/0/ttl", json!("0s")),
        "token ttl must be a positive number and one unit of s, m, h or d, such as 1h",
    );
    assert_refused(
        schema,
        &with(
            ok.clone(),
            "/allowedSpiffeIds/0",
            json!("spiffe://spike.dev/ns/a**"),
        ),
        "allowedSpiffeIds must be SPIFFE ID patterns such as spiffe://example.org/ns/team-a/**",
    );
    assert_refused(
        schema,
        &with(
            ok.clone(),
            "/allowedDestinations/0",
            json!("https://api.example.com"),
        ),
        "allowedDestinations must be host or host:port, such as api.example.com:443",
    );
    assert_refused(
        schema,
        &with(ok.clone(), "/tokens/0/agent", json!("spiffe://spike.dev")),
        "agent must be a SPIFFE ID such as spiffe://example.org/ns/team-a/sa/agent",
    );
    assert_refused(
        schema,
        &with(
            ok.clone(),
            "/data/0/fromSecret",
            json!({"name": "db-source", "key": "password", "namespace": "Team_B"}),
        ),
        "fromSecret.namespace must be a Kubernetes namespace name",
    );
    // The path is immutable: an update that moves it is refused, one that keeps it is not.
    let moved = with(ok.clone(), "/path", json!("k8s/team-a/other"));
    assert_eq!(
        cel_errors(schema, &moved, Some(&ok)),
        vec!["path is immutable: create a new SpikeSecret instead".to_owned()]
    );
    assert_eq!(cel_errors(schema, &ok, Some(&ok)), Vec::<String>::new());
}

#[test]
fn policy_rules_check_pattern_syntax() {
    let crd = crd("spikepolicies.yaml");
    let schema = spec_schema(&crd);
    let ok = policy_spec();
    assert_eq!(cel_errors(schema, &ok, None), Vec::<String>::new());
    for good in ["**", "k8s/team-a/**", "k8s/*/x", "k8s/team-*/db"] {
        let v = with(ok.clone(), "/pathPattern", json!(good));
        assert_eq!(cel_errors(schema, &v, None), Vec::<String>::new(), "{good}");
    }
    let path = "pathPattern must be '/'-separated segments of A-Z, a-z, 0-9, '.', '_', '-' and '*', such as k8s/team-a/db/*; '**' only as a whole segment";
    for bad in [
        "k8s/a**",
        "***",
        "k8s/**x/y",
        "/k8s/**",
        "k8s/./x",
        "k8s/..",
        "k8s/**/",
    ] {
        assert_refused(schema, &with(ok.clone(), "/pathPattern", json!(bad)), path);
    }
    let id = "spiffeIdPattern must be spiffe://<trust-domain>/<glob>, such as spiffe://example.org/ns/team-a/**; '**' only as a whole segment";
    for bad in [
        "spiffe://*.dev/ns/a/**",
        "spiffe://spike.dev",
        "spiffe://spike.dev/",
        "spike.dev/ns/a",
        "spiffe://spike.dev/ns/a**",
        "spiffe://Spike.dev/ns/a",
    ] {
        assert_refused(
            schema,
            &with(ok.clone(), "/spiffeIdPattern", json!(bad)),
            id,
        );
    }
    let grant = "permissions: 'resolve' is never granted through the operator (gateway policies are a Nexus administrator's, granted with spike policy create)";
    for bad in [json!(["resolve"]), json!(["read", "resolve"])] {
        assert_refused(schema, &with(ok.clone(), "/permissions", bad), grant);
    }
}

#[test]
fn every_crd_has_names_columns_and_the_status_subresource() {
    for (file, kind, plural, short, columns) in [
        (
            "spikeclusters.yaml",
            "SpikeCluster",
            "spikeclusters",
            "spkc",
            &["Ready", "Phase", "Age"][..],
        ),
        (
            "spikesecrets.yaml",
            "SpikeSecret",
            "spikesecrets",
            "spks",
            &["Ready", "Path", "Version", "Age"][..],
        ),
        (
            "spikepolicies.yaml",
            "SpikePolicy",
            "spikepolicies",
            "spkp",
            &["Ready", "Version", "Age"][..],
        ),
    ] {
        let crd = crd(file);
        assert_eq!(crd["metadata"]["name"], format!("{plural}.spike.spiffe.io"));
        let spec = &crd["spec"];
        assert_eq!(spec["group"], "spike.spiffe.io");
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["kind"], kind);
        assert_eq!(spec["names"]["plural"], plural);
        assert_eq!(spec["names"]["shortNames"], json!([short]));
        assert_eq!(spec["names"]["categories"], json!(["spike"]));
        let v = version(&crd);
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["served"], true);
        assert_eq!(v["storage"], true);
        assert_eq!(v["subresources"]["status"], json!({}));
        let names: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, columns, "{file}");
        assert_eq!(
            v["additionalPrinterColumns"][0]["jsonPath"],
            ".status.conditions[?(@.type==\"Ready\")].status"
        );
    }
}

/// Every string of a spec has a `maxLength` (or is an enum) and every list a `maxItems`, so
/// the API server's CEL cost estimate stays bounded and no field is unbounded input.
#[test]
fn every_spec_string_and_list_is_bounded() {
    fn check(schema: &Value, at: &str, unbounded: &mut Vec<String>) {
        match schema["type"].as_str() {
            Some("string") if schema.get("enum").is_none() && schema.get("maxLength").is_none() => {
                unbounded.push(at.to_owned());
            }
            Some("array") => {
                if schema.get("maxItems").is_none() {
                    unbounded.push(at.to_owned());
                }
                check(&schema["items"], &format!("{at}[]"), unbounded);
            }
            _ => {}
        }
        for (name, sub) in schema["properties"].as_object().into_iter().flatten() {
            check(sub, &format!("{at}.{name}"), unbounded);
        }
    }
    for file in [
        "spikeclusters.yaml",
        "spikesecrets.yaml",
        "spikepolicies.yaml",
    ] {
        let crd = crd(file);
        let root = &version(&crd)["schema"]["openAPIV3Schema"]["properties"];
        let mut unbounded = Vec::new();
        check(&root["spec"], "spec", &mut unbounded);
        check(&root["status"], "status", &mut unbounded);
        assert_eq!(unbounded, Vec::<String>::new(), "{file}");
    }
}

/// The files on disk are what the types generate (what `crdgen --check` checks in CI).
#[test]
fn the_checked_in_crds_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, content) in spike_operator::crd::manifests::render().unwrap() {
        for dir in spike_operator::crd::manifests::OUTPUT_DIRS {
            let have = std::fs::read_to_string(root.join(dir).join(file)).unwrap();
            assert!(have == content, "{dir}/{file} is stale: run crdgen");
        }
    }
}

/// The example resources of `docs/operator/examples/` parse as the types (unknown fields are
/// refused), pass the CEL rules, and pass the controllers' validation, tenancy included.
#[test]
fn the_documented_examples_are_valid() {
    use spike_operator::crd::{SpikeCluster, SpikePolicy, SpikeSecret};
    use spike_operator::validate::{validate_cluster, validate_policy, validate_secret};

    let example = |file: &str| -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/operator/examples")
            .join(file);
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let no_errors = Vec::<String>::new();

    let c = example("spikecluster.yaml");
    let crd_c = crd("spikeclusters.yaml");
    assert_eq!(cel_errors(spec_schema(&crd_c), &c["spec"], None), no_errors);
    let cluster: SpikeCluster = serde_json::from_value(c).unwrap();
    let cluster = validate_cluster(&cluster).unwrap();

    let s = example("spikesecret.yaml");
    let crd_s = crd("spikesecrets.yaml");
    assert_eq!(cel_errors(spec_schema(&crd_s), &s["spec"], None), no_errors);
    let secret: SpikeSecret = serde_json::from_value(s).unwrap();
    validate_secret(&secret, &cluster).unwrap();

    let p = example("spikepolicy.yaml");
    let crd_p = crd("spikepolicies.yaml");
    assert_eq!(cel_errors(spec_schema(&crd_p), &p["spec"], None), no_errors);
    let policy: SpikePolicy = serde_json::from_value(p).unwrap();
    validate_policy(&policy, &cluster).unwrap();
}

/// A literal value has no place in a `SpikeSecret`: the schema has no field for it (the API
/// server prunes it) and the type refuses it without echoing it.
#[test]
fn a_literal_value_is_refused_without_being_echoed() {
    let crd = crd("spikesecrets.yaml");
    let entry = &spec_schema(&crd)["properties"]["data"]["items"]["properties"];
    let fields: Vec<&String> = entry.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["fromSecret", "generate", "key"]);

    let mut spec = secret_spec();
    spec["data"][0] = json!({"key": "password", "value": "hunter2-literal"});
    let err = serde_json::from_value::<spike_operator::crd::SpikeSecretSpec>(spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `value`"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
