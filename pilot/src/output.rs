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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use spike_core::api::{GetSecretResponse, PolicyResponse};
    use spike_core::policy::Permission;
    use spike_core::secret::{SecretMap, SecretString};

    use super::*;

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
