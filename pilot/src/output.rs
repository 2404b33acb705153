//! Printing for scripts and people.
//!
//! Every read command prints text for people by default, and with `-o json` or `-o yaml` one
//! document with the same fields (camelCase, as in the API) for scripts.

use serde::Serialize;

use crate::cli::Output;

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode output: {e}"),
    }
}

/// Prints `value` as one YAML document on stdout.
pub fn print_yaml<T: Serialize>(value: &T) {
    match to_yaml(value) {
        Ok(s) => print!("{s}"),
        Err(e) => eprintln!("error: cannot encode output: {e}"),
    }
}

/// Encodes `value` as YAML (ending with a newline).
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String, String> {
    let mut s = serde_saphyr::to_string(value).map_err(|e| e.to_string())?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

/// Prints `value` in the structured format `out` names; text output is the caller's.
pub fn print_structured<T: Serialize>(out: Output, value: &T) {
    match out {
        Output::Json => print_json(value),
        Output::Yaml => print_yaml(value),
        Output::Text => debug_assert!(false, "text output is printed by the command"),
    }
}

/// Prints rows under `headers` in columns as wide as their widest cell (two spaces between),
/// the last column unpadded.
pub fn print_table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) {
    print!("{}", table(headers, rows));
}

fn table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers);
    for row in rows {
        out.push_str(&line(std::array::from_fn(|i| row[i].as_str())));
    }
    out
}

/// Prints one `KEY=VALUE` line of a secret: the value as it is when it is one plain line,
/// else quoted and escaped as a JSON string (`"line1\nline2"`), so a reader can tell where it
/// ends and a terminal is never driven by control characters in it.
pub fn print_key_value(key: &str, value: &str) {
    let plain =
        !value.starts_with('"') && value.trim() == value && !value.chars().any(char::is_control);
    if plain {
        println!("{key}={value}");
    } else {
        // A JSON string encoding cannot fail; the copy holds the value, so it is wiped.
        let quoted = zeroize::Zeroizing::new(serde_json::to_string(value).unwrap_or_default());
        println!("{key}={}", quoted.as_str());
    }
}

/// One `KEY=VALUE` line of a secret: the value as it is when it is one plain line, else
/// quoted and escaped as a JSON string (`"line1\nline2"`), so a reader can tell where it ends
/// and a terminal is never driven by control characters in it. The line holds the value, so
/// it is wiped on drop.
pub fn key_value_line(key: &str, value: &str) -> zeroize::Zeroizing<String> {
    let plain =
        !value.starts_with('"') && value.trim() == value && !value.chars().any(char::is_control);
    let mut line = zeroize::Zeroizing::new(String::with_capacity(key.len() + value.len() + 3));
    line.push_str(key);
    line.push('=');
    if plain {
        line.push_str(value);
    } else {
        // Encoding a string as JSON cannot fail.
        let quoted = zeroize::Zeroizing::new(serde_json::to_string(value).unwrap_or_default());
        line.push_str(&quoted);
    }
    line
}

/// An RFC 3339 time for people, to the second and always as wide
/// (`2026-12-01T23:25:28Z`), so columns of times align; the text itself when it does not
/// parse.
pub fn timestamp(time: &str) -> String {
    match humantime::parse_rfc3339_weak(time) {
        Ok(t) => humantime::format_rfc3339_seconds(t).to_string(),
        Err(_) => time.to_owned(),
    }
}

/// How long ago an RFC 3339 `time` was, for people ("3m ago"); the time itself when it does
/// not parse.
pub fn age(time: &str, now: std::time::SystemTime) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(time) else {
        return time.to_owned();
    };
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spike_core::api::{GetSecretResponse, PolicyResponse};
    use spike_core::policy::Permission;
    use spike_core::secret::{SecretMap, SecretString};

    use super::*;

    #[test]
    fn tables_align_and_ages_read_like_people_talk() {
        let rows = [
            ["demo/db".to_owned(), "12".to_owned(), "3m ago".to_owned()],
            ["a".to_owned(), "1".to_owned(), "2d ago".to_owned()],
        ];
        assert_eq!(
            table(["PATH", "VERSION", "UPDATED"], &rows),
            "PATH     VERSION  UPDATED\ndemo/db  12       3m ago\na        1        2d ago\n"
        );
        let now = humantime::parse_rfc3339("2025-01-02T00:00:00Z").unwrap();
        assert_eq!(age("2025-01-01T23:59:30.000000Z", now), "30s ago");
        assert_eq!(age("2025-01-01T23:00:00Z", now), "1h ago");
        assert_eq!(age("2024-12-30T00:00:00Z", now), "3d ago");
        assert_eq!(age("not a time", now), "not a time");
        assert_eq!(
            timestamp("2025-01-01T23:59:30.123456789Z"),
            "2025-01-01T23:59:30Z"
        );
        assert_eq!(timestamp("2025-01-01T23:59:30Z"), "2025-01-01T23:59:30Z");
        assert_eq!(timestamp("not a time"), "not a time");
    }

    #[test]
    fn values_that_are_not_one_plain_line_are_quoted() {
        assert_eq!(*key_value_line("k", "plain value"), "k=plain value");
        assert_eq!(*key_value_line("k", ""), "k=");
        assert_eq!(*key_value_line("k", "line1\nline2"), r#"k="line1\nline2""#);
        assert_eq!(*key_value_line("k", " padded"), r#"k=" padded""#);
        assert_eq!(*key_value_line("k", "\"q\""), r#"k="\"q\"""#);
        assert_eq!(*key_value_line("k", "esc\x1b[2J"), r#"k="esc\u001b[2J""#);
    }

    #[test]
    fn yaml_output_round_trips() {
        let mut data = SecretMap::new();
        for (k, v) in [
            ("plain", "alice"),
            ("multi", "-----BEGIN X-----\nabc\n-----END X-----\n"),
            ("number-like", "007"),
            ("bool-like", "true"),
            ("empty", ""),
            ("quotes", "it's \"quoted\": yes # not a comment"),
            ("unicode", "päss wörd ✓"),
            ("leading space", "  x"),
        ] {
            data.insert(k.to_owned(), SecretString::new(v.to_owned()));
        }
        let resp = GetSecretResponse {
            path: "apps/web/db".into(),
            version: 3,
            data,
            created_at: "2025-01-01T00:00:00Z".into(),
        };
        let text = to_yaml(&resp).unwrap();
        let back: GetSecretResponse = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back.version, 3);
        assert_eq!(back.path, "apps/web/db");
        assert!(
            back.data == resp.data,
            "values differ after a YAML round trip:\n{text}"
        );

        let p = PolicyResponse {
            name: "web".into(),
            spiffe_id_pattern: "spiffe://spike.dev/ns/web/**".into(),
            path_pattern: "apps/*/db".into(),
            permissions: vec![Permission::Read, Permission::List],
            created_at: "t".into(),
            updated_at: "t".into(),
        };
        let text = to_yaml(&vec![p.clone()]).unwrap();
        let back: Vec<PolicyResponse> = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, vec![p]);
    }
}
