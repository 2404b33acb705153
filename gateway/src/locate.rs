//! Finding reference tokens in an agent's request head, and putting values in their place.
//!
//! A token is looked for where an SDK puts an API key: any header (the `Authorization`
//! header's `Bearer` form as it is, and its `Basic` form inside the base64 of
//! `user:password`), and the query string (percent-decoded). A token in the path is never
//! substituted: a path is logged and cached everywhere. Tokens in a body are the body
//! scanner's business.
//!
//! Each find records its [`TokenLocation`], which Nexus checks against the token's binding on
//! resolution, so the value only ever goes where the binding says.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderValue;
use http::request::Parts;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use spike_core::token::{REF_PREFIX, TOKEN_TEXT_LEN, TokenLocation, TokenRef};
use zeroize::Zeroizing;

use crate::refusal::{Reason, Refusal};

/// One token in a request head.
#[derive(Debug)]
pub struct Found {
    /// The token.
    pub token: TokenRef,
    /// Where it was.
    pub location: TokenLocation,
}

/// Every token text (`$SPIKE{ref:<32 hex>}`) in `bytes`, as (start, token).
pub fn tokens_in(bytes: &[u8]) -> Vec<(usize, TokenRef)> {
    let mut out = Vec::new();
    let prefix = REF_PREFIX.as_bytes();
    let mut from = 0;
    while let Some(i) = find(&bytes[from..], prefix) {
        let start = from + i;
        let end = start + TOKEN_TEXT_LEN;
        if let Some(text) = bytes.get(start..end)
            && let Ok(text) = std::str::from_utf8(text)
            && let Ok(t) = TokenRef::parse(text)
        {
            out.push((start, t));
            from = end;
        } else {
            from = start + 1;
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The tokens of a request head, refusing one in the path.
pub fn tokens_in_head(head: &Parts) -> Result<Vec<Found>, Refusal> {
    let mut found = Vec::new();
    let path = head.uri.path();
    if path.contains("SPIKE") && has_token_text(&percent_decode_str(path).collect::<Vec<u8>>()) {
        return Err(Refusal::new(
            Reason::BadRequest,
            "a reference token in the URL path is never substituted: put it where the API key goes (the Authorization header)",
        ));
    }
    for (name, value) in &head.headers {
        let location = TokenLocation::Header(name.as_str().to_owned());
        let bytes = value.as_bytes();
        for (_, token) in tokens_in(bytes) {
            found.push(Found {
                token,
                location: location.clone(),
            });
        }
        if name == http::header::AUTHORIZATION
            && let Some(decoded) = basic_credentials(bytes)
        {
            for (_, token) in tokens_in(&decoded) {
                found.push(Found {
                    token,
                    location: location.clone(),
                });
            }
        }
    }
    if let Some(q) = head.uri.query() {
        for (name, value) in query_pairs(q) {
            for (_, token) in tokens_in(&value) {
                found.push(Found {
                    token,
                    location: TokenLocation::Query(String::from_utf8_lossy(&name).into_owned()),
                });
            }
        }
    }
    Ok(found)
}

fn has_token_text(b: &[u8]) -> bool {
    !tokens_in(b).is_empty()
}

/// The decoded `user:password` of `Basic <base64>`, wiped on drop.
fn basic_credentials(value: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let rest = value
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case(b"basic "))
        .and(value.get(6..))?;
    let rest = std::str::from_utf8(rest).ok()?.trim();
    BASE64.decode(rest).ok().map(Zeroizing::new)
}

/// The query's `name=value` pairs, percent-decoded (`+` as space, as forms encode it).
fn query_pairs(q: &str) -> Vec<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| -> Vec<u8> { percent_decode_str(&s.replace('+', " ")).collect() };
            (dec(n), Zeroizing::new(dec(v)))
        })
        .collect()
}

/// Characters percent-encoded when a value goes into a query: everything but unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a value cannot be put where its token was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    /// A header value may not hold control characters (CR, LF, NUL, ...): the value would
    /// inject headers.
    #[error("the value cannot go into a header: it holds control characters")]
    NotHeaderSafe,
    /// The header no longer holds the token (it was changed in between).
    #[error("the token is no longer where it was found")]
    Gone,
}

/// `value` with every occurrence of `token`'s text replaced by `secret`: as it is, and in a
/// `Basic` Authorization inside the decoded credentials (re-encoded). Refuses a secret that
/// cannot be a header value. The result holds the secret: it is wiped on drop by the caller's
/// buffer, and `HeaderValue` is marked sensitive so HTTP/2 never indexes it.
pub fn substitute_header(
    value: &HeaderValue,
    token: &TokenRef,
    secret: &[u8],
) -> Result<HeaderValue, SubstituteError> {
    let text = token.to_token_string();
    let text = text.expose_secret().as_bytes();
    let bytes = value.as_bytes();
    let replaced: Zeroizing<Vec<u8>> = if find(bytes, text).is_some() {
        Zeroizing::new(replace_all(bytes, text, secret))
    } else if let Some(creds) = basic_credentials(bytes)
        && find(&creds, text).is_some()
    {
        let inner = Zeroizing::new(replace_all(&creds, text, secret));
        let mut out = Zeroizing::new(b"Basic ".to_vec());
        out.extend_from_slice(BASE64.encode(&inner[..]).as_bytes());
        out
    } else {
        return Err(SubstituteError::Gone);
    };
    let mut v = HeaderValue::from_bytes(&replaced).map_err(|_| SubstituteError::NotHeaderSafe)?;
    v.set_sensitive(true);
    Ok(v)
}

/// The query `q` with `token`'s text in parameter `name` replaced by `secret`,
/// percent-encoded (so no value can add parameters). Other parameters are kept byte for byte.
pub fn substitute_query(q: &str, name: &str, token: &TokenRef, secret: &[u8]) -> Zeroizing<String> {
    let text = token.to_token_string();
    let text = text.expose_secret().as_bytes();
    let mut out = Zeroizing::new(String::with_capacity(q.len() + secret.len() * 3));
    for (i, pair) in q.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n_dec: Vec<u8> = percent_decode_str(&n.replace('+', " ")).collect();
        let v_dec = Zeroizing::new(percent_decode_str(&v.replace('+', " ")).collect::<Vec<u8>>());
        if n_dec == name.as_bytes() && find(&v_dec, text).is_some() {
            let replaced = Zeroizing::new(replace_all(&v_dec, text, secret));
            out.push_str(n);
            out.push('=');
            for chunk in percent_encoding::percent_encode(&replaced, QUERY_VALUE) {
                out.push_str(chunk);
            }
        } else {
            out.push_str(pair);
        }
    }
    out
}

/// `hay` with every `needle` replaced by `with`.
pub fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len() + with.len());
    let mut rest = hay;
    while let Some(i) = find(rest, needle) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(with);
        rest = &rest[i + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Percent-encodes a query parameter value (used by tests and the proxy alike).
pub fn encode_query_value(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::Request;

    use super::*;

    fn token(n: u8) -> (TokenRef, String) {
        let text = format!("$SPIKE{{ref:{}}}", hex::encode([n; 16]));
        (TokenRef::parse(&text).unwrap(), text)
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn tokens_are_found_in_bearer_basic_other_headers_and_the_query() {
        let (t1, s1) = token(1);
        let (t2, s2) = token(2);
        let (t3, s3) = token(3);
        let basic = format!("Basic {}", BASE64.encode(format!("user:{s2}")));
        let q = format!("/r/a/x?key={}&other=1", encode_query_value(&s3));
        let h = head(
            &q,
            &[
                ("authorization", &format!("Bearer {s1}")),
                ("x-api-key", &s1),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ],
        );
        let found = tokens_in_head(&h).unwrap();
        let seen: Vec<(bool, String)> = found
            .iter()
            .map(|f| (f.token == t1, f.location.to_string()))
            .collect();
        assert!(
            seen.contains(&(true, "header:authorization".into())),
            "{seen:?}"
        );
        assert!(
            seen.contains(&(true, "header:x-api-key".into())),
            "{seen:?}"
        );
        let h = head("/r/a/x", &[("authorization", &basic)]);
        let found = tokens_in_head(&h).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].token == t2);
        let h = head(&q, &[]);
        let found = tokens_in_head(&h).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].token == t3);
        assert_eq!(found[0].location.to_string(), "query:key");
        // Near misses are no tokens.
        for near in [
            "$SPIKE{ref:0101}",
            "$SPIKE{ref:ABABABABABABABABABABABABABABABAB}",
            "SPIKE{ref:}",
        ] {
            assert!(tokens_in(near.as_bytes()).is_empty(), "{near}");
        }
        // In the path: refused, raw or encoded.
        let h = head(&format!("/r/a/{}", encode_query_value(&s1)), &[]);
        assert_eq!(tokens_in_head(&h).unwrap_err().reason, Reason::BadRequest);
    }

    #[test]
    fn values_replace_tokens_where_they_were_and_cannot_inject() {
        let (t, s) = token(7);
        let v = HeaderValue::from_str(&format!("Bearer {s}")).unwrap();
        let out = substitute_header(&v, &t, b"sk-real").unwrap();
        assert_eq!(out.as_bytes(), b"Bearer sk-real");
        assert!(out.is_sensitive());
        let basic =
            HeaderValue::from_str(&format!("Basic {}", BASE64.encode(format!("u:{s}")))).unwrap();
        let out = substitute_header(&basic, &t, b"pw").unwrap();
        assert_eq!(
            out.as_bytes(),
            format!("Basic {}", BASE64.encode("u:pw")).as_bytes()
        );
        for evil in [&b"sk\r\nX-Evil: 1"[..], b"sk\0", b"sk\n"] {
            assert_eq!(
                substitute_header(&v, &t, evil).unwrap_err(),
                SubstituteError::NotHeaderSafe
            );
        }
        let q = format!("a=1&key={}&b=%20", encode_query_value(&s));
        let out = substitute_query(&q, "key", &t, b"v&evil=1 #");
        assert_eq!(&*out, "a=1&key=v%26evil%3D1%20%23&b=%20");
    }
}
