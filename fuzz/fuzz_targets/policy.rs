//! Policy documents (`spike_core::policy`) read from JSON: parsing never panics; an accepted
//! policy round-trips through serde to an equal policy, agrees with `Policy::parse` of its
//! parts and with the API's `PutPolicyRequest` form, keeps the kind rules (a gateway policy
//! grants only `resolve`, a workload one never does), and a one-policy engine grants nothing
//! outside what the policy's two patterns match (default deny).
#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use common::{PATH_PIECES, build, instantiate, json_round_trip, text};
use libfuzzer_sys::fuzz_target;
use spike_core::api::PutPolicyRequest;
use spike_core::id::SpiffeId;
use spike_core::path::SecretPath;
use spike_core::policy::{CallerClass, Permission, Permissions, Policy, PolicyEngine, PolicyKind};

const PERMISSIONS: &[&str] = &[
    "read", "write", "list", "delete", "token", "resolve", "cipher", "super", "READ", "",
];
const NAMES: &[&str] = &["web", "a.b", "-", "_", "..", ".", "x y", "p1"];

/// A policy document, mostly well-formed, from the fuzz data.
fn document(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    if u.ratio(1, 4)? {
        return Ok(u.bytes(u.len())?.to_vec());
    }
    let mut fields = Vec::new();
    let name = build(u, NAMES, 3)?;
    let id = if u.ratio(1, 3)? {
        format!(
            "spiffe://spike.dev/spike/gateway/{}",
            build(u, PATH_PIECES, 2)?
        )
    } else {
        format!("spiffe://spike.dev/{}", build(u, PATH_PIECES, 6)?)
    };
    let path = build(u, PATH_PIECES, 6)?;
    let perms: Vec<&str> = (0..u.int_in_range(0..=3)?)
        .map(|_| u.choose(PERMISSIONS).copied())
        .collect::<Result<_>>()?;
    fields.push(format!("\"name\":{}", serde_json::Value::from(name)));
    fields.push(format!(
        "\"spiffeIdPattern\":{}",
        serde_json::Value::from(id)
    ));
    fields.push(format!("\"pathPattern\":{}", serde_json::Value::from(path)));
    fields.push(format!("\"permissions\":{}", serde_json::json!(perms)));
    if u.ratio(1, 8)? {
        fields.push(format!("\"{}\":1", text(u, 8)?));
    }
    if u.ratio(1, 8)? {
        fields.pop();
    }
    // Field order does not matter to JSON objects.
    let len = fields.len();
    let rot = u.int_in_range(0..=len)?;
    fields.rotate_left(rot);
    Ok(format!("{{{}}}", fields.join(",")).into_bytes())
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let doc = document(u)?;
    let Ok(policy) = serde_json::from_slice::<Policy>(&doc) else {
        return Ok(());
    };
    let back = json_round_trip(&policy);
    assert_eq!(back, policy);
    assert_eq!(back.kind(), policy.kind());
    let perms: Vec<Permission> = policy.permissions().iter().collect();
    let parsed = Policy::parse(
        policy.name().as_str(),
        policy.spiffe_id_pattern().as_str(),
        policy.path_pattern().as_str(),
        perms.iter().copied(),
    )
    .expect("an accepted policy's parts parse");
    assert_eq!(parsed, policy);
    assert!(!policy.permissions().is_empty());
    match policy.kind() {
        PolicyKind::Gateway => assert_eq!(
            policy.permissions(),
            Permissions::only(Permission::Resolve),
            "{policy:?}: a gateway policy grants resolve alone"
        ),
        _ => assert!(
            !policy.permissions().contains(Permission::Resolve),
            "{policy:?}: resolve is for gateway policies only"
        ),
    }
    // The API's form of the same policy reads back to it.
    let req = PutPolicyRequest {
        spiffe_id_pattern: policy.spiffe_id_pattern().to_string(),
        path_pattern: policy.path_pattern().to_string(),
        permissions: perms,
        create_only: false,
    };
    assert_eq!(json_round_trip(&req), req);

    // Default deny: the engine grants nothing the policy's patterns do not both match.
    let engine = PolicyEngine::new([policy.clone()]);
    let id_glob = policy.spiffe_id_pattern().path_glob().to_owned();
    for _ in 0..3 {
        let id_segs = instantiate(u, &id_glob)?;
        let path_segs = instantiate(u, policy.path_pattern().as_str())?;
        let id = if u.ratio(1, 4)? {
            SpiffeId::new(&format!("spiffe://spike.dev/{}", build(u, PATH_PIECES, 5)?))
        } else {
            SpiffeId::new(&format!("spiffe://spike.dev/{}", id_segs.join("/")))
        };
        let path = if u.ratio(1, 4)? {
            SecretPath::parse(&build(u, PATH_PIECES, 5)?)
        } else {
            SecretPath::parse(&path_segs.join("/"))
        };
        let (Ok(id), Ok(path)) = (id, path) else {
            continue;
        };
        let granted = engine.permissions(&id, &path);
        let applies =
            policy.spiffe_id_pattern().matches(&id) && policy.path_pattern().matches(&path);
        if !applies || CallerClass::of(&id) == CallerClass::Reserved {
            assert!(
                granted.is_empty(),
                "{policy:?} grants {granted} to {id} on {path}"
            );
        }
        for p in granted.iter() {
            assert!(engine.allows(&id, &path, p));
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
