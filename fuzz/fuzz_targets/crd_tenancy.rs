//! The tenancy rules the operator applies to `SpikeSecret` and `SpikePolicy` resources
//! (`spike_core::tenancy`; the operator crate itself is too heavy to build for fuzzing), and
//! the scoped-administrator rules beside them (`spike_core::admin_scope`). Nothing panics;
//! whatever a tenant accepts stays inside its namespace's prefix (the tenancy root for the
//! cluster's namespace): a path strictly below it, every path a path pattern matches, every
//! ID an ID pattern matches, and an exact ID (never a reserved one); `super` only from the
//! cluster's namespace; Secret references only to the tenant's own namespace. An accepted
//! admin scope never reaches SPIKE's own IDs, and a policy it lets through lies within it on
//! every sample path and ID.
#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use common::{PATH_PIECES, build, instantiate};
use libfuzzer_sys::fuzz_target;
use spike_core::admin_scope::AdminScope;
use spike_core::id::{Builtin, SpiffeId, TrustDomain};
use spike_core::path::{PathLimits, PathPrefix, SecretPath};
use spike_core::pattern::{IdPattern, PathPattern};
use spike_core::policy::{Permission, Permissions};
use spike_core::tenancy::{TenancyRoots, Tenant};

const TD: &str = "spike.dev";
const NS_PIECES: &[&str] = &["team-a", "spike-system", "a", "-", "0", "A", ".", "b"];
const ROOT_PIECES: &[&str] = &["k8s", "ns", "spike", "tenants", ".", "-", "/", "*", "X"];
const PERMS: [Permission; 8] = [
    Permission::Read,
    Permission::Write,
    Permission::List,
    Permission::Delete,
    Permission::Token,
    Permission::Resolve,
    Permission::Cipher,
    Permission::Super,
];

fn path_from(segs: &[String]) -> Option<SecretPath> {
    SecretPath::parse_with(&segs.join("/"), &PathLimits::CEILING).ok()
}

fn id_from(td: &str, segs: &[String]) -> Option<SpiffeId> {
    let path = if segs.is_empty() {
        String::new()
    } else {
        format!("/{}", segs.join("/"))
    };
    SpiffeId::new(&format!("spiffe://{td}{path}")).ok()
}

/// A pattern source: mostly under a tenancy prefix, so that some are accepted.
fn pattern_src(u: &mut Unstructured<'_>, lead: &str) -> Result<String> {
    let rest = build(u, PATH_PIECES, 5)?;
    Ok(match u.int_in_range(0..=3)? {
        0 => rest,
        _ if rest.is_empty() => lead.to_owned(),
        _ => format!("{lead}/{rest}"),
    })
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let td = TrustDomain::new(TD).expect("valid");
    let roots = if u.ratio(1, 4)? {
        match TenancyRoots::new(&build(u, ROOT_PIECES, 2)?, &build(u, ROOT_PIECES, 2)?) {
            Ok(r) => r,
            Err(_) => return Ok(()),
        }
    } else {
        TenancyRoots::default()
    };
    let ns = build(u, NS_PIECES, 3)?;
    let cluster_ns = if u.arbitrary()? {
        ns.clone()
    } else {
        build(u, NS_PIECES, 3)?
    };
    let Ok(tenant) = Tenant::new(&ns, &cluster_ns, td.clone(), roots.clone()) else {
        return Ok(());
    };
    let cluster = tenant.is_cluster_namespace();
    assert_eq!(cluster, ns == cluster_ns);
    let reach = if cluster {
        PathPrefix::parse(roots.path_root()).expect("a root is a path")
    } else {
        tenant.path_prefix().clone()
    };
    assert_eq!(
        tenant.path_prefix().as_str(),
        format!("{}/{ns}", roots.path_root())
    );
    let id_reach = if cluster {
        format!("spiffe://{TD}/{}/", roots.id_root())
    } else {
        tenant.id_prefix()
    };
    let inside_id = |id: &SpiffeId| {
        id.as_str().starts_with(&id_reach) || id.as_str() == id_reach.trim_end_matches('/')
    };
    let lead = if cluster {
        roots.path_root().to_owned()
    } else {
        format!("{}/{ns}", roots.path_root())
    };
    let id_lead = format!("{}/{ns}", roots.id_root());

    // An exact path.
    let path = pattern_src(u, &lead)?;
    if let Ok(p) = tenant.check_path(&path) {
        assert!(
            reach.contains(&p) && reach.as_path() != Some(&p),
            "{ns}: {p} accepted"
        );
    }
    // A path pattern: every path it matches is inside.
    let src = pattern_src(u, &lead)?;
    if let Ok(pattern) = tenant.check_path_pattern(&src) {
        for _ in 0..4 {
            if let Some(p) = path_from(&instantiate(u, pattern.as_str())?)
                && pattern.matches(&p)
            {
                assert!(reach.contains(&p), "{ns}: {pattern} accepted, matches {p}");
            }
        }
    }
    // An ID pattern: every ID it matches is inside.
    let src = format!("spiffe://{TD}/{}", pattern_src(u, &id_lead)?);
    let src = if u.ratio(1, 8)? {
        src.replace(TD, "other.test")
    } else {
        src
    };
    if let Ok(pattern) = tenant.check_id_pattern(&src) {
        assert_eq!(pattern.trust_domain_name(), TD);
        for _ in 0..4 {
            if let Some(id) = id_from(TD, &instantiate(u, pattern.path_glob())?)
                && pattern.matches(&id)
            {
                assert!(inside_id(&id), "{ns}: {pattern} accepted, matches {id}");
            }
        }
        if let Some(id) = id_from(TD, &[]) {
            assert!(
                !pattern.matches(&id) || inside_id(&id),
                "{ns}: {pattern} matches the td"
            );
        }
    }
    // An exact ID.
    let src = format!("spiffe://{TD}/{}", pattern_src(u, &id_lead)?);
    if let Ok(id) = tenant.check_id(&src) {
        assert!(id.as_str().starts_with(&id_reach), "{ns}: {id} accepted");
        assert!(!Builtin::is_reserved(&id, &td));
    }
    // Permissions and Secret references.
    let perms: Permissions = PERMS
        .iter()
        .copied()
        .filter(|_| u.arbitrary().unwrap_or(false))
        .collect();
    if tenant.check_permissions(perms).is_ok() && perms.contains(Permission::Super) {
        assert!(
            cluster,
            "{ns}: super granted outside the cluster's namespace"
        );
    }
    let referenced = build(u, NS_PIECES, 2)?;
    assert_eq!(
        tenant.check_secret_namespace(Some(&referenced)).is_ok(),
        referenced == ns
    );
    assert!(tenant.check_secret_namespace(None).is_ok());

    // A scoped administrator.
    let scope_paths = pattern_src(u, &lead)?;
    let scope_ids = format!("spiffe://{TD}/{}", pattern_src(u, &id_lead)?);
    if let Ok(scope) = AdminScope::parse(&scope_paths, &scope_ids, &td) {
        assert!(!scope.path_scope().matches_everything());
        assert_eq!(scope.id_scope().trust_domain_name(), TD);
        for _ in 0..3 {
            if let Some(id) = id_from(TD, &instantiate(u, scope.id_scope().path_glob())?)
                && scope.id_scope().matches(&id)
            {
                assert!(!Builtin::is_reserved(&id, &td), "{scope_ids} reaches {id}");
            }
        }
        let (Ok(p), Ok(i)) = (
            PathPattern::parse(&pattern_src(u, &lead)?),
            IdPattern::parse(&format!("spiffe://{TD}/{}", pattern_src(u, &id_lead)?)),
        ) else {
            return Ok(());
        };
        if scope.check_parts(&p, &i, perms).is_ok() {
            assert!(!perms.contains(Permission::Resolve));
            for _ in 0..3 {
                if let Some(path) = path_from(&instantiate(u, p.as_str())?)
                    && p.matches(&path)
                {
                    assert!(
                        scope.path_scope().matches(&path),
                        "{p} within {scope_paths}: {path}"
                    );
                    for perm in Permissions::from(spike_core::admin_scope::DATA_PERMISSIONS).iter()
                    {
                        assert!(scope.allows(&path, perm));
                    }
                }
                if let Some(id) = id_from(TD, &instantiate(u, i.path_glob())?)
                    && i.matches(&id)
                {
                    assert!(
                        scope.id_scope().matches(&id),
                        "{i} within {scope_ids}: {id}"
                    );
                }
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
