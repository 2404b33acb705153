//! Secret paths, path prefixes, and path and SPIFFE-ID patterns (`spike_core::path`,
//! `spike_core::pattern`): parsing never panics; what parses renders back to the same text,
//! which parses to the same value; a pattern only matches paths inside its span and under
//! every prefix of them; and when containment says pattern B lies within pattern A, every
//! sample B matches (paths instantiated from B's own wildcards, from A's, and from the data)
//! is matched by A too.
#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use common::{PATH_PIECES, build, instantiate, json_round_trip};
use libfuzzer_sys::fuzz_target;
use spike_core::id::SpiffeId;
use spike_core::path::{PathLimits, PathPrefix, SecretPath};
use spike_core::pattern::{IdPattern, PathPattern, PathSpan};

/// Trust domains for ID patterns: two, so that a mismatch is reached too.
const TDS: &[&str] = &["spike.dev", "other.test"];

fn check_path(s: &str) -> Option<SecretPath> {
    let by_ceiling = SecretPath::parse_with(s, &PathLimits::CEILING);
    let p = match SecretPath::parse(s) {
        Ok(p) => p,
        Err(_) => return by_ceiling.ok(),
    };
    // The default limits are within the ceilings.
    assert!(
        by_ceiling.is_ok(),
        "{s:?} parses by default but not under the ceilings"
    );
    assert_eq!(p.as_str(), s);
    assert_eq!(SecretPath::parse(&p.to_string()).as_ref(), Ok(&p));
    assert_eq!(SecretPath::try_from(s.to_owned()).as_ref(), Ok(&p));
    assert_eq!(json_round_trip(&p), p);
    assert_eq!(p.depth(), p.segments().count());
    assert!(
        p.segments()
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
    );
    let prefix = PathPrefix::parse(s).expect("a path is a prefix");
    assert!(prefix.contains(&p) && p.is_under(&PathPrefix::ROOT));
    if let Some(parent) = p.parent() {
        assert_eq!(parent.depth() + 1, p.depth());
        assert!(p.is_under(&PathPrefix::from(parent.clone())));
        assert!(!parent.is_under(&prefix));
    }
    Some(p)
}

fn check_prefix(s: &str) {
    if let Ok(prefix) = PathPrefix::parse(s) {
        assert_eq!(prefix.as_str(), s);
        assert_eq!(prefix.is_root(), s.is_empty());
        assert_eq!(PathPrefix::parse(&prefix.to_string()).as_ref(), Ok(&prefix));
        assert_eq!(json_round_trip(&prefix), prefix);
    }
}

fn check_path_pattern(s: &str) -> Option<PathPattern> {
    let p = PathPattern::parse(s).ok()?;
    assert_eq!(p.as_str(), s);
    let again = PathPattern::parse(&p.to_string()).expect("a pattern's text parses");
    assert_eq!(again, p);
    assert_eq!(json_round_trip(&p), p);
    assert!(p.is_within(&p), "{s} is not within itself");
    let everything = PathPattern::parse("**").expect("** parses");
    assert!(p.is_within(&everything), "{s} is not within **");
    // `**` (and only spellings of it) matches every path; `*/**` does too without saying so.
    assert!(!p.matches_everything() || everything.is_within(&p), "{s}");
    Some(p)
}

/// What `pattern` matching `path` implies.
fn matched(pattern: &PathPattern, path: &SecretPath) {
    assert!(
        pattern.span().covers(&PathSpan::Exactly(path.clone())),
        "{pattern} matches {path} outside its span {:?}",
        pattern.span()
    );
    let mut prefix = Some(path.clone());
    while let Some(p) = prefix {
        assert!(
            pattern.could_match_under(&PathPrefix::from(p.clone())),
            "{pattern} matches {path} but says it cannot match under {p}"
        );
        prefix = p.parent();
    }
    assert!(pattern.could_match_under(&PathPrefix::ROOT));
}

/// Sample paths for `a` and `b`: instantiated from both globs, plus one from the data.
fn samples(u: &mut Unstructured<'_>, globs: &[&str]) -> Result<Vec<SecretPath>> {
    let mut out = Vec::new();
    for glob in globs {
        for _ in 0..3 {
            if let Ok(p) =
                SecretPath::parse_with(&instantiate(u, glob)?.join("/"), &PathLimits::CEILING)
            {
                out.push(p);
            }
        }
    }
    if let Ok(p) = SecretPath::parse(&build(u, PATH_PIECES, 8)?) {
        out.push(p);
    }
    Ok(out)
}

fn path_patterns(u: &mut Unstructured<'_>) -> Result<()> {
    let a_src = build(u, PATH_PIECES, 10)?;
    let b_src = build(u, PATH_PIECES, 10)?;
    check_path(&a_src);
    check_prefix(&a_src);
    let (Some(a), b) = (check_path_pattern(&a_src), check_path_pattern(&b_src)) else {
        return Ok(());
    };
    let Some(b) = b else {
        for p in samples(u, &[&a_src])? {
            if a.matches(&p) {
                matched(&a, &p);
            }
        }
        return Ok(());
    };
    let b_in_a = b.is_within(&a);
    let a_in_b = a.is_within(&b);
    for p in samples(u, &[&b_src, &a_src])? {
        let (in_a, in_b) = (a.matches(&p), b.matches(&p));
        if in_a {
            matched(&a, &p);
        }
        if in_b {
            matched(&b, &p);
        }
        assert!(
            !b_in_a || !in_b || in_a,
            "{b} is within {a}, matches {p}, but {a} does not"
        );
        assert!(
            !a_in_b || !in_a || in_b,
            "{a} is within {b}, matches {p}, but {b} does not"
        );
    }
    Ok(())
}

fn id_of(td: &str, segments: &[String]) -> Option<SpiffeId> {
    let s = if segments.is_empty() {
        format!("spiffe://{td}")
    } else {
        format!("spiffe://{td}/{}", segments.join("/"))
    };
    SpiffeId::new(&s).ok()
}

fn id_patterns(u: &mut Unstructured<'_>) -> Result<()> {
    let mut srcs = [String::new(), String::new()];
    for s in &mut srcs {
        *s = if u.ratio(1, 6)? {
            build(u, PATH_PIECES, 12)?
        } else {
            format!("spiffe://{}/{}", u.choose(TDS)?, build(u, PATH_PIECES, 10)?)
        };
    }
    let parsed: Vec<Option<IdPattern>> = srcs
        .iter()
        .map(|s| {
            let p = IdPattern::parse(s).ok()?;
            assert_eq!(p.as_str(), s);
            assert_eq!(IdPattern::parse(&p.to_string()).as_ref().ok(), Some(&p));
            assert_eq!(json_round_trip(&p), p);
            assert_eq!(
                format!("spiffe://{}/{}", p.trust_domain_name(), p.path_glob()),
                *s
            );
            assert!(p.is_within(&p), "{s} is not within itself");
            Some(p)
        })
        .collect();
    let [Some(a), Some(b)] = &parsed[..] else {
        return Ok(());
    };
    let b_in_a = b.is_within(a);
    let mut ids = Vec::new();
    for p in [a, b] {
        for _ in 0..3 {
            let segs = instantiate(u, p.path_glob())?;
            if let Some(id) = id_of(p.trust_domain_name(), &segs) {
                ids.push(id);
            }
        }
        ids.extend(id_of(p.trust_domain_name(), &[]));
    }
    for id in &ids {
        for p in [a, b] {
            if p.matches(id) {
                // What a pattern matches is an ID of its trust domain whose path is an ID
                // path, and it lies under the pattern's literal prefix.
                assert_eq!(id.trust_domain_name(), p.trust_domain_name());
                let segs: Vec<&str> = id.path().split('/').skip(1).collect();
                let literal: Vec<&str> = p.literal_prefix().collect();
                assert!(
                    segs.starts_with(&literal),
                    "{p} matches {id} outside its literal prefix"
                );
                assert!(
                    p.could_match_under(&segs),
                    "{p} matches {id} but not under it"
                );
            }
        }
        assert!(
            !b_in_a || !b.matches(id) || a.matches(id),
            "{b} is within {a}, matches {id}, but {a} does not"
        );
    }
    Ok(())
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    if u.arbitrary()? {
        path_patterns(u)
    } else {
        id_patterns(u)
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
