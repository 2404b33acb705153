//! Property tests of the glob patterns over secret paths ([`PathPattern`]) and SPIFFE IDs
//! ([`IdPattern`]), against an independent reference written from the `pattern` module's
//! documentation.
//!
//! The reference is the obvious recursive backtracking matcher over `/`-separated segments:
//! a segment without `*` matches only itself, a `*` inside a segment stands for zero or more
//! characters of that one segment, and a segment that is exactly `**` stands for zero or more
//! whole segments; an ID pattern's trust domain is compared literally. It is exponential, so
//! it is only run on the short inputs generated here (a few segments over the letters `a`,
//! `b` and the literal `.`), which make matches common.
//!
//! Proved over generated inputs:
//!
//! - the real matchers (a dynamic program) agree with the reference on paths and on SPIFFE
//!   IDs (including the trust domain's own ID, whose path has no segments), and a reasonable
//!   fraction of the generated cases do match, so agreement is not vacuous;
//! - every path built from a pattern by filling in its wildcards is matched;
//! - `could_match_under` agrees with a reference (the pattern can consume the prefix), and is
//!   true whenever some path below the prefix matches;
//! - `span` holds every path the pattern matches, `matches_everything` is exactly the
//!   all-`**` patterns, and `is_within` implies that every matched path is matched by the
//!   scope;
//! - parsing a valid pattern and displaying it gives back the same text (also through
//!   `FromStr`, serde, and the ID pattern's trust domain and glob accessors);
//! - a string is accepted exactly when the documented rules say it is a valid pattern, and an
//!   invalid one is refused with an error (never a panic), on near-miss and arbitrary input.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::string::{RegexGeneratorStrategy, string_regex};
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};
use spike_core::id::{MAX_SPIFFE_ID_LEN, SpiffeId};
use spike_core::path::{PathPrefix, SecretPath};
use spike_core::pattern::{
    IdPattern, MAX_ID_PATTERN_LEN, MAX_PATH_PATTERN_LEN, MAX_PATTERN_DEPTH, PathPattern, PathSpan,
};

// --- the reference ---

/// Whether the segment pattern `pat` matches the segment `text`: `*` is any run of
/// characters, everything else is literal.
fn ref_segment(pat: &[u8], text: &[u8]) -> bool {
    match pat.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|k| ref_segment(rest, &text[k..])),
        Some((c, rest)) => text.first() == Some(c) && ref_segment(rest, &text[1..]),
    }
}

/// Whether the glob segments `pat` match the path segments `path` exactly.
fn ref_match(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|k| ref_match(rest, &path[k..])),
        Some((seg, rest)) => match path.split_first() {
            Some((first, more)) => {
                ref_segment(seg.as_bytes(), first.as_bytes()) && ref_match(rest, more)
            }
            None => false,
        },
    }
}

/// Whether `pat` can consume all of `prefix` (and so match the prefix itself or some path
/// below it: whatever is left of the pattern can always be completed, since every glob
/// segment matches some valid segment).
fn ref_could_match_under(pat: &[&str], prefix: &[&str]) -> bool {
    let Some((first, more)) = prefix.split_first() else {
        return true;
    };
    match pat.split_first() {
        None => false,
        Some((&"**", rest)) => {
            ref_could_match_under(rest, prefix) || ref_could_match_under(pat, more)
        }
        Some((seg, rest)) => {
            ref_segment(seg.as_bytes(), first.as_bytes()) && ref_could_match_under(rest, more)
        }
    }
}

/// A SPIFFE ID string split by hand: trust domain and path segments (none for the trust
/// domain's own ID).
fn split_id(id: &str) -> (&str, Vec<&str>) {
    let rest = id.strip_prefix("spiffe://").unwrap();
    match rest.split_once('/') {
        Some((td, path)) => (td, path.split('/').collect()),
        None => (rest, Vec::new()),
    }
}

/// Whether the reference matches the ID pattern text `pat` against the ID text `id`.
fn ref_id_match(pat: &str, id: &str) -> bool {
    let (pat_td, glob) = split_id(pat);
    let (id_td, path) = split_id(id);
    pat_td == id_td && ref_match(&glob, &path)
}

/// The documented rules for a glob: non-empty `/`-separated segments (so no leading,
/// trailing or doubled `/`), none `.` or `..`, each made of `[A-Za-z0-9._-]` and `*`, with
/// `**` only as a whole segment, and at most [`MAX_PATTERN_DEPTH`] of them.
fn ref_valid_glob(s: &str) -> bool {
    s.split('/').count() <= MAX_PATTERN_DEPTH
        && s.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c))
                && (seg == "**" || !seg.contains("**"))
        })
}

fn ref_valid_path_pattern(s: &str) -> bool {
    s.len() <= MAX_PATH_PATTERN_LEN && ref_valid_glob(s)
}

/// `spiffe://<trust domain>/<glob>`: a trust domain of `[a-z0-9._-]` (1 to 255 bytes, so no
/// wildcard), a non-empty valid glob, at most [`MAX_ID_PATTERN_LEN`] bytes in all.
fn ref_valid_id_pattern(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("spiffe://") else {
        return false;
    };
    let Some((td, glob)) = rest.split_once('/') else {
        return false;
    };
    s.len() <= MAX_ID_PATTERN_LEN
        && !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && ref_valid_glob(glob)
}

// --- strategies ---

/// Proptest's config with `cases` cases and failures saved next to this file (the default
/// looks for a `lib.rs` beside the test, which an integration test does not have).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::with_cases(cases)
    }
}

/// A string strategy for `regex`, compiled once (a bare `&str` strategy compiles its regex
/// again for every value it generates).
fn re(regex: &str) -> RegexGeneratorStrategy<String> {
    string_regex(regex).unwrap()
}

/// A valid pattern segment over `a`, `b`, `.` and `*`: `**` alone, short segments without
/// `**` that are not `.` or `..`, and segments with two or three stars.
fn pattern_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("**".to_owned()),
        1 => Just("*".to_owned()),
        4 => re("[ab*]{1,2}").prop_filter("no **", |s| !s.contains("**")),
        1 => re("[ab*.]{1,3}").prop_filter("a valid segment", |s| {
            !s.contains("**") && s != "." && s != ".."
        }),
        // Several stars in one segment, where the order of the parts between them matters.
        1 => re("\\*?[ab]{1,2}\\*[ab]{1,2}\\*[ab]{1,2}\\*?"),
    ]
}

/// A valid path segment, mostly short over `a` and `b`, sometimes with the literal `.`,
/// sometimes longer (for the segments with several stars).
fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => re("[ab]{1,2}"),
        1 => re("[ab.]{1,3}").prop_filter("not a dot segment", |s| s != "." && s != ".."),
        1 => re("[ab]{3,7}"),
    ]
}

/// The segments of a pattern.
fn glob() -> impl Strategy<Value = Vec<String>> {
    vec(pattern_segment(), 1..=4)
}

fn path() -> impl Strategy<Value = Vec<String>> {
    vec(path_segment(), 1..=4)
}

/// A few paths per pattern, so one case checks several pairs.
fn paths() -> impl Strategy<Value = Vec<Vec<String>>> {
    vec(path(), 8)
}

/// Trust domains, `a.test` the most common, and one that is a prefix of it.
const TRUST_DOMAINS: [&str; 8] = [
    "a.test", "a.test", "a.test", "a.test", "a.test", "a.test", "a.tes", "b.test",
];

/// SPIFFE IDs over the trust domains above; with no segments, the trust domain's own ID.
fn id() -> impl Strategy<Value = String> {
    (select(&TRUST_DOMAINS[..]), vec(path_segment(), 0..=4)).prop_map(|(td, segs)| {
        let path: String = segs.iter().map(|s| format!("/{s}")).collect();
        format!("spiffe://{td}{path}")
    })
}

fn id_pattern() -> impl Strategy<Value = String> {
    (select(&TRUST_DOMAINS[..]), glob())
        .prop_map(|(td, segs)| format!("spiffe://{td}/{}", segs.join("/")))
}

/// A path made from `glob` by filling in its wildcards: a `*` gets up to two characters (often
/// none), a `**` up to two whole segments. May be invalid (no segments, an empty or `.`
/// segment): callers skip it.
fn instance_of(glob: Vec<String>) -> impl Strategy<Value = Vec<String>> {
    let parts: Vec<BoxedStrategy<Vec<String>>> = glob
        .into_iter()
        .map(|seg| {
            if seg == "**" {
                vec(path_segment(), 0..=2).boxed()
            } else {
                let stars = seg.matches('*').count();
                let fill = prop_oneof![
                    1 => Just(String::new()),
                    4 => re("[ab]{1,2}"),
                    1 => re("[ab.]{1,2}"),
                ];
                vec(fill, stars)
                    .prop_map(move |fills| {
                        let mut out = String::new();
                        for (i, piece) in seg.split('*').enumerate() {
                            if i > 0 {
                                out.push_str(&fills[i - 1]);
                            }
                            out.push_str(piece);
                        }
                        vec![out]
                    })
                    .boxed()
            }
        })
        .collect();
    parts.prop_map(|p| p.into_iter().flatten().collect())
}

/// An instance of `glob` (see [`instance_of`]) after at most one small edit: a character
/// changed or added, a segment dropped or repeated. Such paths match, or only just miss.
fn near_instance_of(glob: Vec<String>) -> impl Strategy<Value = Vec<String>> {
    (
        instance_of(glob),
        0..5u8,
        any::<Index>(),
        any::<Index>(),
        select(vec!['a', 'b', '.']),
    )
        .prop_map(|(mut segs, edit, at_seg, at_char, ch)| {
            if segs.is_empty() {
                if edit != 0 {
                    segs.push(ch.to_string());
                }
                return segs;
            }
            let i = at_seg.index(segs.len());
            match edit {
                0 => {}
                1 if !segs[i].is_empty() => {
                    let j = at_char.index(segs[i].len());
                    segs[i].replace_range(j..=j, &ch.to_string());
                }
                1 | 2 => segs[i].push(ch),
                3 => {
                    segs.remove(i);
                }
                _ => {
                    let copy = segs[i].clone();
                    segs.insert(i, copy);
                }
            }
            segs
        })
}

/// Pattern-like strings that are often just barely invalid: segments drawn mostly from good
/// ones and sometimes from bad ones, sometimes with a leading or trailing `/`.
fn near_miss_glob() -> impl Strategy<Value = String> {
    const GOOD: [&str; 7] = ["a", "b-*", "*", "**", "*.key", "A_9", "x.*.y"];
    const BAD: [&str; 10] = ["***", "a**", "**b", ".", "..", "", "a?", "é", " ", "a\u{0}"];
    let segment = prop_oneof![4 => select(&GOOD[..]), 1 => select(&BAD[..])];
    (
        vec(segment, 1..=4),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(segs, lead, trail)| {
            let mut s = segs.join("/");
            if lead {
                s.insert(0, '/');
            }
            if trail {
                s.push('/');
            }
            s
        })
}

/// Strings to parse as path patterns: near misses, small-alphabet noise, arbitrary text, and
/// strings around the length and depth limits.
fn path_pattern_candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => near_miss_glob(),
        3 => re("[ab*/.?é-]{0,10}"),
        2 => re("(?s).{0,16}"),
        1 => (MAX_PATTERN_DEPTH - 1..=MAX_PATTERN_DEPTH + 1).prop_map(|n| vec!["a"; n].join("/")),
        1 => (MAX_PATH_PATTERN_LEN - 1..=MAX_PATH_PATTERN_LEN + 1).prop_map(|n| "a".repeat(n)),
    ]
}

/// Strings to parse as ID patterns: a scheme, a trust domain and a glob, each often slightly
/// wrong, plus arbitrary text and strings around the length limit.
fn id_pattern_candidate() -> impl Strategy<Value = String> {
    const SCHEMES: [&str; 4] = ["spiffe://", "spiffe://", "spiffe://", "SPIFFE://"];
    const TDS: [&str; 8] = [
        "a.test",
        "a.test",
        "b_c-1.x",
        "a",
        "A.test",
        "*.test",
        "a.test:443",
        "",
    ];
    prop_oneof![
        6 => (select(&SCHEMES[..]), select(&TDS[..]), prop::bool::weighted(0.9), near_miss_glob())
            .prop_map(|(scheme, td, slash, glob)| {
                format!("{scheme}{td}{}{glob}", if slash { "/" } else { "" })
            }),
        2 => re("spiffe://[a.*/]{0,10}"),
        1 => re("(?s).{0,24}"),
        1 => (MAX_ID_PATTERN_LEN - 1..=MAX_ID_PATTERN_LEN + 1)
            .prop_map(|n| format!("spiffe://a.test/{}", "a".repeat(n - "spiffe://a.test/".len()))),
    ]
}

// --- a runner that counts ---

/// Runs `test` on `cases` values of `strategy` (failing, with proptest's shrinking, like
/// `proptest!`), and returns how many times `test` reported a hit, out of how many tries.
fn run_counting<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value, &Counter) -> Result<(), TestCaseError>,
) -> (usize, usize) {
    let counter = Counter::default();
    let mut runner = TestRunner::new(ProptestConfig {
        source_file: Some(file!()),
        ..config(cases)
    });
    if let Err(e) = runner.run(&strategy, |v| test(v, &counter)) {
        panic!("{e}");
    }
    (counter.hits.get(), counter.total.get())
}

#[derive(Default)]
struct Counter {
    hits: Cell<usize>,
    total: Cell<usize>,
}

impl Counter {
    fn record(&self, hit: bool) {
        self.total.set(self.total.get() + 1);
        if hit {
            self.hits.set(self.hits.get() + 1);
        }
    }
}

/// Asserts that between `min` and `max` percent of the tries were hits.
fn assert_fraction((hits, total): (usize, usize), min: usize, max: usize, what: &str) {
    assert!(total > 0, "{what}: nothing was tried");
    let pct = hits * 100 / total;
    eprintln!("{what}: {hits} of {total} ({pct}%)");
    assert!(
        (min..=max).contains(&pct),
        "{what}: {hits} of {total} ({pct}%), expected {min}% to {max}%"
    );
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// --- matching agrees with the reference ---

/// The reference itself follows the documentation's table of examples.
#[test]
fn the_reference_follows_the_documented_examples() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("db", &["db"], &["db/a", "dbx", "d"]),
        ("db/*", &["db/a"], &["db", "db/a/b", "dbx/a"]),
        ("db/**", &["db", "db/a", "db/a/b"], &["dbx", "dbx/a"]),
        ("**", &["a", "a/b/c"], &[]),
        (
            "apps/*/creds",
            &["apps/web/creds"],
            &["apps/creds", "apps/a/b/creds"],
        ),
        (
            "apps/**/creds",
            &["apps/creds", "apps/x/y/creds"],
            &["apps/x/creds/y"],
        ),
        (
            "k8s/team-*/**",
            &["k8s/team-a", "k8s/team-/x/y"],
            &["k8s/teams/x"],
        ),
        ("a*b*c", &["abc", "aXbYc", "abcbc"], &["ab", "acb"]),
        ("*.key", &["a.key", ".key"], &["akey", "a.keyx"]),
    ];
    for (pattern, yes, no) in cases {
        let pat: Vec<&str> = pattern.split('/').collect();
        let real = PathPattern::parse(pattern).unwrap();
        for (paths, expected) in [(*yes, true), (*no, false)] {
            for p in paths {
                let segs: Vec<&str> = p.split('/').collect();
                assert_eq!(
                    ref_match(&pat, &segs),
                    expected,
                    "reference: {pattern} vs {p}"
                );
                let path = SecretPath::parse(p).unwrap();
                assert_eq!(real.matches(&path), expected, "{pattern} vs {p}");
            }
        }
    }
    // The trust domain's own ID has no segments: only all-`**` globs match it.
    assert!(ref_id_match("spiffe://a.test/**", "spiffe://a.test"));
    assert!(ref_id_match("spiffe://a.test/**/**", "spiffe://a.test"));
    assert!(!ref_id_match("spiffe://a.test/*", "spiffe://a.test"));
    assert!(!ref_id_match("spiffe://a.test/**", "spiffe://a.tes/x"));
}

/// Each case: a pattern, random paths, and paths that match it or only just miss.
#[test]
fn path_matching_agrees_with_the_reference() {
    let strategy = glob().prop_flat_map(|g| {
        let near = vec(near_instance_of(g.clone()), 4);
        (Just(g), paths(), near)
    });
    let counts = run_counting(512, strategy, |(segs, random, near), hits| {
        let text = segs.join("/");
        let pattern = PathPattern::parse(&text).unwrap();
        for p in random.iter().chain(&near) {
            // Some edited instances are not valid paths (no segments, an empty or `.` segment).
            let Ok(path) = SecretPath::parse(&p.join("/")) else {
                continue;
            };
            let expected = ref_match(&refs(&segs), &refs(p));
            hits.record(expected);
            prop_assert_eq!(pattern.matches(&path), expected, "{} vs {}", text, path);
        }
        Ok(())
    });
    assert_fraction(counts, 15, 70, "paths matched");
}

/// Each case: an ID pattern, random IDs, and IDs that match it or only just miss (in the
/// same or another trust domain).
#[test]
fn id_matching_agrees_with_the_reference() {
    let strategy = (select(&TRUST_DOMAINS[..]), glob()).prop_flat_map(|(td, g)| {
        // Mostly the pattern's own trust domain.
        let near_td = prop_oneof![3 => Just(td), 1 => select(&TRUST_DOMAINS[..])];
        let near = vec((near_td, near_instance_of(g.clone())), 3);
        (
            Just(format!("spiffe://{td}/{}", g.join("/"))),
            vec(id(), 6),
            near,
        )
    });
    let counts = run_counting(512, strategy, |(pattern_text, random, near), hits| {
        let pattern = IdPattern::parse(&pattern_text).unwrap();
        let near = near.iter().map(|(td, segs)| {
            let path: String = segs.iter().map(|s| format!("/{s}")).collect();
            format!("spiffe://{td}{path}")
        });
        for text in random.iter().cloned().chain(near) {
            let Ok(id) = SpiffeId::new(&text) else {
                continue;
            };
            let expected = ref_id_match(&pattern_text, &text);
            hits.record(expected);
            prop_assert_eq!(
                pattern.matches(&id),
                expected,
                "{} vs {}",
                pattern_text,
                text
            );
        }
        Ok(())
    });
    assert_fraction(counts, 10, 70, "IDs matched");
}

#[test]
fn filled_in_patterns_match() {
    let strategy = glob().prop_flat_map(|segs| (Just(segs.clone()), instance_of(segs)));
    let counts = run_counting(512, strategy, |(segs, instance), valid| {
        let text = segs.join("/");
        // The reference agrees that filling in wildcards gives a match.
        prop_assert!(ref_match(&refs(&segs), &refs(&instance)));
        let Ok(path) = SecretPath::parse(&instance.join("/")) else {
            valid.record(false);
            return Ok(());
        };
        valid.record(true);
        prop_assert!(
            PathPattern::parse(&text).unwrap().matches(&path),
            "{} vs {}",
            text,
            path
        );
        // And as the path of an ID, under the pattern's trust domain only.
        let pattern = IdPattern::parse(&format!("spiffe://a.test/{text}")).unwrap();
        let id = |td: &str| SpiffeId::new(&format!("spiffe://{td}/{path}")).unwrap();
        prop_assert!(pattern.matches(&id("a.test")));
        prop_assert!(!pattern.matches(&id("a.tes")));
        Ok(())
    });
    // Most instances are valid paths (the others have no segments, or an empty or `.` one).
    assert_fraction(counts, 60, 100, "instances that are valid paths");
}

#[test]
fn could_match_under_agrees_with_the_reference() {
    let strategy = (glob(), vec(path_segment(), 0..=3), path());
    let counts = run_counting(512, strategy, |(segs, prefix, below), hits| {
        let text = segs.join("/");
        let pattern = PathPattern::parse(&text).unwrap();
        let prefix_text = prefix.join("/");
        let pre = PathPrefix::parse(&prefix_text).unwrap();
        let expected = ref_could_match_under(&refs(&segs), &refs(&prefix));
        hits.record(expected);
        prop_assert_eq!(
            pattern.could_match_under(&pre),
            expected,
            "{} under {:?}",
            text,
            prefix_text
        );
        let id_pattern = IdPattern::parse(&format!("spiffe://a.test/{text}")).unwrap();
        prop_assert_eq!(id_pattern.could_match_under(&refs(&prefix)), expected);
        // Some path below the prefix that matches proves it.
        let mut full = prefix;
        full.extend(below);
        let path = SecretPath::parse(&full.join("/")).unwrap();
        if pattern.matches(&path) {
            prop_assert!(
                pattern.could_match_under(&pre),
                "{} matches {} below {:?}",
                text,
                path,
                prefix_text
            );
        }
        Ok(())
    });
    assert_fraction(counts, 20, 90, "prefixes that could match");
}

proptest! {
    #![proptest_config(config(512))]

    /// Every path a pattern matches lies in its span.
    #[test]
    fn spans_hold_every_match(segs in glob(), paths in paths()) {
        let text = segs.join("/");
        let pattern = PathPattern::parse(&text).unwrap();
        let span = pattern.span();
        for p in &paths {
            let path = SecretPath::parse(&p.join("/")).unwrap();
            if pattern.matches(&path) {
                let held = match &span {
                    PathSpan::Exactly(x) => *x == path,
                    PathSpan::Under(prefix) => path.is_under(prefix),
                };
                prop_assert!(held, "{} matches {} outside its span {:?}", text, path, span);
            }
        }
    }

    /// `matches_everything` is exactly the patterns made only of `**`, and those match every
    /// path.
    #[test]
    fn matches_everything_is_all_double_stars(segs in glob(), paths in paths()) {
        let pattern = PathPattern::parse(&segs.join("/")).unwrap();
        prop_assert_eq!(pattern.matches_everything(), segs.iter().all(|s| s == "**"));
        if pattern.matches_everything() {
            for p in &paths {
                prop_assert!(pattern.matches(&SecretPath::parse(&p.join("/")).unwrap()));
            }
        }
    }

    /// When `inner` lies within `outer`, every path `inner` matches, `outer` matches too; the
    /// same for ID patterns, whose trust domains must then be equal.
    #[test]
    fn within_means_every_match_is_kept(
        inner in glob(),
        outer in glob(),
        paths in paths(),
        tds in (select(&TRUST_DOMAINS[..]), select(&TRUST_DOMAINS[..])),
    ) {
        let (i, o) = (inner.join("/"), outer.join("/"));
        let (pi, po) = (PathPattern::parse(&i).unwrap(), PathPattern::parse(&o).unwrap());
        // Every pattern lies within itself and within `**`.
        prop_assert!(pi.is_within(&pi));
        prop_assert!(pi.is_within(&PathPattern::parse("**").unwrap()));
        if pi.is_within(&po) {
            for p in &paths {
                let path = SecretPath::parse(&p.join("/")).unwrap();
                prop_assert!(!pi.matches(&path) || po.matches(&path), "{} within {}, but {}", i, o, path);
            }
        }
        let ii = IdPattern::parse(&format!("spiffe://{}/{i}", tds.0)).unwrap();
        let io = IdPattern::parse(&format!("spiffe://{}/{o}", tds.1)).unwrap();
        prop_assert!(ii.is_within(&ii));
        if ii.is_within(&io) {
            prop_assert_eq!(tds.0, tds.1);
            for p in &paths {
                let id = SpiffeId::new(&format!("spiffe://{}/{}", tds.0, p.join("/"))).unwrap();
                prop_assert!(!ii.matches(&id) || io.matches(&id));
            }
            let own = SpiffeId::new(&format!("spiffe://{}", tds.0)).unwrap();
            prop_assert!(!ii.matches(&own) || io.matches(&own));
        }
    }
}

// --- parsing and display ---

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn path_patterns_display_as_parsed(segs in glob()) {
        let text = segs.join("/");
        let pattern = PathPattern::parse(&text).unwrap();
        prop_assert_eq!(&pattern.to_string(), &text);
        prop_assert_eq!(pattern.as_str(), text.as_str());
        prop_assert_eq!(&PathPattern::parse(&pattern.to_string()).unwrap(), &pattern);
        prop_assert_eq!(&text.parse::<PathPattern>().unwrap(), &pattern);
        let json = serde_json::to_string(&pattern).unwrap();
        prop_assert_eq!(&json, &serde_json::to_string(&text).unwrap());
        prop_assert_eq!(&serde_json::from_str::<PathPattern>(&json).unwrap(), &pattern);
    }

    #[test]
    fn id_patterns_display_as_parsed(text in id_pattern()) {
        let pattern = IdPattern::parse(&text).unwrap();
        prop_assert_eq!(&pattern.to_string(), &text);
        prop_assert_eq!(pattern.as_str(), text.as_str());
        prop_assert_eq!(
            &format!("spiffe://{}/{}", pattern.trust_domain_name(), pattern.path_glob()),
            &text
        );
        prop_assert_eq!(&IdPattern::parse(&pattern.to_string()).unwrap(), &pattern);
        prop_assert_eq!(&text.parse::<IdPattern>().unwrap(), &pattern);
        let json = serde_json::to_string(&pattern).unwrap();
        prop_assert_eq!(&serde_json::from_str::<IdPattern>(&json).unwrap(), &pattern);
    }
}

/// A path pattern is accepted exactly when the documented rules say so; every refusal is an
/// error with a message, never a panic, and every acceptance displays as written.
#[test]
fn path_pattern_validity_follows_the_rules() {
    let counts = run_counting(1024, path_pattern_candidate(), |text, valid| {
        let expected = ref_valid_path_pattern(&text);
        valid.record(expected);
        match PathPattern::parse(&text) {
            Ok(p) => {
                prop_assert!(expected, "accepted {:?}", text);
                prop_assert_eq!(p.as_str(), text.as_str());
            }
            Err(e) => {
                prop_assert!(!expected, "refused {:?}: {}", text, e);
                prop_assert!(!e.to_string().is_empty());
            }
        }
        // Serde applies the same rules.
        let json = serde_json::to_string(&text).unwrap();
        prop_assert_eq!(serde_json::from_str::<PathPattern>(&json).is_ok(), expected);
        Ok(())
    });
    assert_fraction(counts, 15, 70, "valid path pattern candidates");
}

#[test]
fn id_pattern_validity_follows_the_rules() {
    let counts = run_counting(1024, id_pattern_candidate(), |text, valid| {
        let expected = ref_valid_id_pattern(&text);
        valid.record(expected);
        match IdPattern::parse(&text) {
            Ok(p) => {
                prop_assert!(expected, "accepted {:?}", text);
                prop_assert_eq!(p.as_str(), text.as_str());
            }
            Err(e) => {
                prop_assert!(!expected, "refused {:?}: {}", text, e);
                prop_assert!(!e.to_string().is_empty());
            }
        }
        let json = serde_json::to_string(&text).unwrap();
        prop_assert_eq!(serde_json::from_str::<IdPattern>(&json).is_ok(), expected);
        Ok(())
    });
    assert_fraction(counts, 10, 70, "valid ID pattern candidates");
}

/// The limits are the documented constants, at the exact boundary.
#[test]
fn limits_are_exact() {
    let deep = |n: usize| vec!["a"; n].join("/");
    assert!(PathPattern::parse(&deep(MAX_PATTERN_DEPTH)).is_ok());
    assert!(PathPattern::parse(&deep(MAX_PATTERN_DEPTH + 1)).is_err());
    assert!(PathPattern::parse(&"a".repeat(MAX_PATH_PATTERN_LEN)).is_ok());
    assert!(PathPattern::parse(&"a".repeat(MAX_PATH_PATTERN_LEN + 1)).is_err());
    assert_eq!(MAX_ID_PATTERN_LEN, MAX_SPIFFE_ID_LEN);
    let id = |n: usize| {
        format!(
            "spiffe://a.test/{}",
            "a".repeat(n - "spiffe://a.test/".len())
        )
    };
    assert!(IdPattern::parse(&id(MAX_ID_PATTERN_LEN)).is_ok());
    assert!(IdPattern::parse(&id(MAX_ID_PATTERN_LEN + 1)).is_err());
}
