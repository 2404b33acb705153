//! Containment of glob languages: does every sequence of segments an *inner* glob matches
//! also match an *outer* one? Nexus uses it to bound what a scoped policy administrator may
//! grant ([`crate::policy::AdminScope`]).
//!
//! # Why checking a few representative sequences is exact
//!
//! Pick a character `c` of the segment alphabet that the outer glob never names. Then:
//!
//! - For an inner single segment `a`, the *representative* `a` with each `*` replaced by `c`
//!   matches an outer segment `b` exactly when every segment `a` matches does: `c` can only
//!   be absorbed by one of `b`'s stars, which would absorb any other text as well. So no
//!   segment that `a` matches is matched by fewer outer segments than the representative.
//! - For an inner `**`, the representative segment is `c` itself, which only the outer
//!   segments made of stars alone (`*`, `**`) match: the fewest possible.
//!
//! The outer glob's matcher is monotone (a segment matched by more outer segments can only
//! reach more positions), so if some inner sequence escapes the outer glob, the sequence of
//! representatives of the same shape escapes too. What is left is how many segments each
//! inner `**` stands for: the walk below follows every count at once, as the set of outer
//! configurations reachable, which is finite and closed under one more `c`.
//!
//! It is exact for SPIKE's globs with two conservative corners, both answering "not within":
//! an outer glob that uses every character of the alphabet (no `c` exists), and a walk that
//! would need more than [`MAX_CONFIGURATIONS`] configurations (far beyond any real pattern).
//! Depth and length limits of real paths are ignored, which can only make it answer "not
//! within" for a sequence too long to exist.

use std::collections::HashSet;

use super::{Glob, Seg};
use crate::path::is_segment_byte;

/// Bound on the configurations one containment check may explore.
const MAX_CONFIGURATIONS: usize = 4096;

/// Where the outer matcher may be after some inner prefix: its reachable positions, and
/// whether that prefix holds at least one segment.
type Configuration = (Vec<bool>, bool);

/// True when every sequence `inner` matches is matched by `outer`. `empty_is_member` says
/// whether the empty sequence exists in the language (an ID with an empty path does; a secret
/// path never has zero segments).
pub(super) fn within(inner: &Glob, outer: &Glob, empty_is_member: bool) -> bool {
    let Some(fresh) = fresh_char(outer) else {
        return false;
    };
    let fresh_segment = fresh.to_string();
    let mut start = vec![false; outer.len() + 1];
    start[0] = true;
    outer.close_any(&mut start);
    let mut configs: HashSet<Configuration> = HashSet::from([(start, false)]);
    for seg in &inner.0 {
        configs = match seg {
            Seg::Any => match repeat_closure(outer, configs, &fresh_segment) {
                Some(c) => c,
                None => return false,
            },
            Seg::Literal(l) => step_all(outer, &configs, l),
            Seg::Wild(w) => step_all(outer, &configs, &w.replace('*', &fresh_segment)),
        };
        // A dead configuration after a segment: that prefix can be completed (every inner
        // segment matches something) into a sequence the outer glob refuses.
        if configs.iter().any(|(reach, _)| !reach.iter().any(|&b| b)) {
            return false;
        }
    }
    configs
        .iter()
        .all(|(reach, nonempty)| (!*nonempty && !empty_is_member) || reach[outer.len()])
}

/// A segment-alphabet character that no segment of `outer` names.
fn fresh_char(outer: &Glob) -> Option<char> {
    let used = |b: u8| {
        outer.0.iter().any(|s| match s {
            Seg::Literal(t) | Seg::Wild(t) => t.as_bytes().contains(&b),
            Seg::Any => false,
        })
    };
    (0..=u8::MAX)
        .find(|&b| b != b'*' && is_segment_byte(b) && !used(b))
        .map(char::from)
}

/// Every configuration after one more segment `s`.
fn step_all(outer: &Glob, configs: &HashSet<Configuration>, s: &str) -> HashSet<Configuration> {
    configs
        .iter()
        .map(|(reach, _)| {
            let mut next = vec![false; reach.len()];
            outer.advance(reach, s, &mut next);
            (next, true)
        })
        .collect()
}

/// Every configuration after zero or more further `s` segments (an inner `**`), or `None`
/// past the exploration bound.
fn repeat_closure(
    outer: &Glob,
    configs: HashSet<Configuration>,
    s: &str,
) -> Option<HashSet<Configuration>> {
    let mut all = configs.clone();
    let mut frontier = configs;
    while !frontier.is_empty() {
        let next = step_all(outer, &frontier, s);
        frontier = next.into_iter().filter(|c| !all.contains(c)).collect();
        all.extend(frontier.iter().cloned());
        if all.len() > MAX_CONFIGURATIONS {
            return None;
        }
    }
    Some(all)
}

#[cfg(test)]
// Tests may unwrap: a panic is the failure report.
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::pattern::{IdPattern, PathPattern};

    fn within_str(inner: &str, outer: &str) -> bool {
        PathPattern::parse(inner)
            .unwrap()
            .is_within(&PathPattern::parse(outer).unwrap())
    }

    #[test]
    fn path_examples() {
        for (inner, outer) in [
            ("k8s/web/db", "k8s/**"),
            ("k8s/web/**", "k8s/**"),
            ("k8s/**", "k8s/**"),
            ("k8s", "k8s/**"),
            ("k8s/*/x", "k8s/**"),
            ("k8s/team-*/**", "k8s/team-*/**"),
            ("k8s/team-a*/**", "k8s/team-*/**"),
            ("k8s/**/x/**", "k8s/**"),
            ("**", "*/**"),
            ("a*b", "a*"),
            ("**/x", "**"),
        ] {
            assert!(
                within_str(inner, outer),
                "{inner} should lie within {outer}"
            );
        }
        for (inner, outer) in [
            ("apps/**", "k8s/**"),
            ("**", "k8s/**"),
            ("k8s*/x", "k8s/**"),
            ("*/x", "k8s/**"),
            ("k8s/**", "k8s/*"),
            ("k8s/**", "k8s/*/**"),
            ("k8s/team-*/**", "k8s/team-a*/**"),
            ("k8s/*", "k8s/team-*"),
            ("*a", "a*"),
            ("k8s/**/x", "k8s/*/x"),
        ] {
            assert!(
                !within_str(inner, outer),
                "{inner} should not lie within {outer}"
            );
        }
    }

    #[test]
    fn id_examples() {
        let id = |s: &str| IdPattern::parse(s).unwrap();
        let ns = id("spiffe://td/ns/a/**");
        assert!(id("spiffe://td/ns/a/sa/web").is_within(&ns));
        assert!(id("spiffe://td/ns/a/**").is_within(&ns));
        assert!(!id("spiffe://td/ns/b/**").is_within(&ns));
        assert!(!id("spiffe://td/ns/*/**").is_within(&ns));
        assert!(!id("spiffe://td/**").is_within(&ns));
        assert!(!id("spiffe://other/ns/a/**").is_within(&ns));
        // `**` matches the trust domain's own ID (no path); `*/**` does not.
        assert!(!id("spiffe://td/**").is_within(&id("spiffe://td/*/**")));
        assert!(id("spiffe://td/*/**").is_within(&id("spiffe://td/**")));
    }

    #[test]
    fn an_outer_glob_naming_every_character_contains_nothing_wider_than_itself() {
        let every: String = (0..=u8::MAX)
            .filter(|&b| b != b'*' && is_segment_byte(b))
            .map(char::from)
            .collect();
        let outer = format!(
            "*{}",
            every.chars().map(|c| format!("{c}*")).collect::<String>()
        );
        // Conservative corner: no fresh character exists, so the answer is "not within".
        assert!(!within_str("*", &outer));
        assert!(!within_str(&every, &outer));
    }

    // --- against a brute-force reference over a small alphabet ---

    /// Pattern segments over the letters `a` and `b`; `c` stands for every other character.
    const SEGMENTS: [&str; 9] = ["a", "b", "ab", "*", "a*", "*a", "*b", "a*b", "**"];
    /// Every concrete segment of one to three characters over `a`, `b`, `c`.
    fn words() -> Vec<String> {
        let mut out = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..3 {
            out = out
                .iter()
                .flat_map(|w| ['a', 'b', 'c'].map(|ch| format!("{w}{ch}")))
                .collect();
            all.extend(out.iter().cloned());
        }
        all
    }

    /// True when `outer` matches every sequence of 0..=4 concrete segments that `inner`
    /// matches (the empty sequence counted only when `empty`).
    fn brute_within(inner: &Glob, outer: &Glob, words: &[String], empty: bool) -> bool {
        let mut seqs: Vec<Vec<&str>> = vec![Vec::new()];
        if empty && inner.matches([]) && !outer.matches([]) {
            return false;
        }
        for _ in 0..4 {
            seqs = seqs
                .iter()
                .flat_map(|s| {
                    words.iter().map(move |w| {
                        let mut n = s.clone();
                        n.push(w.as_str());
                        n
                    })
                })
                // Prefixes that no longer match the start of `inner` lead nowhere.
                .filter(|s| inner.could_match_extending(s.iter().copied()))
                .collect();
            if seqs
                .iter()
                .any(|s| inner.matches(s.iter().copied()) && !outer.matches(s.iter().copied()))
            {
                return false;
            }
        }
        true
    }

    fn glob() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(&SEGMENTS[..]), 1..=3).prop_map(|s| s.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_the_brute_force_reference(inner in glob(), outer in glob(), empty: bool) {
            let (i, o) = (Glob::compile(&inner).unwrap(), Glob::compile(&outer).unwrap());
            let words = words();
            prop_assert_eq!(
                within(&i, &o, empty),
                brute_within(&i, &o, &words, empty),
                "{} within {} (empty sequence a member: {})", inner, outer, empty
            );
        }
    }
}
