//! Routes: named upstreams agents reach as `/r/<route>/…`, and how each classifies a request's
//! action.
//!
//! Inference APIs are all `POST`, so a method cannot say whether a call only reads. A route's
//! rules map method and path prefix to an action (`POST /v1/chat/completions` → `read`); the
//! first rule that matches decides, longest prefixes should come first. Without a matching
//! rule, `GET`, `HEAD` and `OPTIONS` are `read` and every other method is `write`. A token
//! allows one action, so a token minted for chat completions cannot delete files through the
//! same API.

use http::Method;
use http::uri::PathAndQuery;
use serde::{Deserialize, Serialize};
use spike_core::token::TokenAction;

/// One action rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRule {
    /// The method it applies to (`POST`), or every method when empty.
    #[serde(default)]
    pub method: String,
    /// The path prefix below the route (`/v1/chat/completions`), matched on whole segments.
    pub path_prefix: String,
    /// The action of matching requests.
    pub action: TokenAction,
}

impl ActionRule {
    fn matches(&self, method: &Method, path: &str) -> bool {
        let method_ok = self.method.is_empty() || self.method.eq_ignore_ascii_case(method.as_str());
        method_ok && under(path, &self.path_prefix)
    }
}

/// Whether `path` is `prefix` or below it, on segment boundaries (`/v1/chat` covers
/// `/v1/chat/x`, not `/v1/chatter`).
pub fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The action of a request by `rules`, or by its method when no rule matches.
pub fn classify(rules: &[ActionRule], method: &Method, path: &PathAndQuery) -> TokenAction {
    let path = path.path();
    rules
        .iter()
        .find(|r| r.matches(method, path))
        .map(|r| r.action)
        .unwrap_or(match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => TokenAction::Read,
            _ => TokenAction::Write,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(method: &str, prefix: &str, action: TokenAction) -> ActionRule {
        ActionRule {
            method: method.into(),
            path_prefix: prefix.into(),
            action,
        }
    }

    #[test]
    fn rules_decide_by_method_and_whole_segments_then_the_method_does() {
        let rules = [
            rule("POST", "/v1/chat/completions", TokenAction::Read),
            rule("", "/v1/organization", TokenAction::Admin),
        ];
        let c = |m: Method, p: &'static str| classify(&rules, &m, &PathAndQuery::from_static(p));
        assert_eq!(c(Method::POST, "/v1/chat/completions"), TokenAction::Read);
        assert_eq!(
            c(Method::POST, "/v1/chat/completions?x=1"),
            TokenAction::Read
        );
        assert_eq!(c(Method::POST, "/v1/chat/completionsX"), TokenAction::Write);
        assert_eq!(
            c(Method::DELETE, "/v1/chat/completions"),
            TokenAction::Write
        );
        assert_eq!(c(Method::GET, "/v1/organization/users"), TokenAction::Admin);
        assert_eq!(c(Method::GET, "/v1/models"), TokenAction::Read);
        assert_eq!(c(Method::HEAD, "/"), TokenAction::Read);
        assert_eq!(c(Method::OPTIONS, "/"), TokenAction::Read);
        assert_eq!(c(Method::PUT, "/v1/files"), TokenAction::Write);
        assert!(under("/a/b", "/"));
        assert!(under("/a/b", "/a/"));
        assert!(!under("/ab", "/a"));
    }
}
