//! Name resolution, behind a trait so tests can answer as a hostile DNS server would (private
//! addresses, answers that change between lookups).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Mutex;

use futures::future::BoxFuture;

/// Resolves a host name to its addresses.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (a normalized name, never an IP literal).
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system's resolver (getaddrinfo, on a blocking thread).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            // The port is irrelevant to the answer; lookup_host needs one.
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Answers from a table, each name with a list of answers used in turn (the last one
/// repeats): a name whose answers differ between lookups is how DNS rebinding looks.
#[derive(Debug, Default)]
pub struct StaticResolver {
    answers: Mutex<HashMap<String, Answers>>,
}

/// One name's answers, and how many lookups there were.
type Answers = (Vec<Vec<IpAddr>>, usize);

impl StaticResolver {
    /// An empty table: every name is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `host` with `answers[0]` first, then `answers[1]`, ..., then the last forever.
    pub fn answer(&self, host: &str, answers: Vec<Vec<IpAddr>>) -> &Self {
        if let Ok(mut t) = self.answers.lock() {
            t.insert(host.to_owned(), (answers, 0));
        }
        self
    }

    /// How many times `host` was looked up.
    pub fn lookups(&self, host: &str) -> usize {
        self.answers
            .lock()
            .ok()
            .and_then(|t| t.get(host).map(|(_, n)| *n))
            .unwrap_or(0)
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let answer = self.answers.lock().ok().and_then(|mut t| {
            let (answers, n) = t.get_mut(host)?;
            let a = answers.get(*n).or(answers.last()).cloned();
            *n += 1;
            a
        });
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_answers_change_in_turn_then_repeat() {
        let r = StaticResolver::new();
        let a: IpAddr = "8.8.8.8".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        r.answer("x.test", vec![vec![a], vec![b]]);
        assert_eq!(r.resolve("x.test").await.unwrap(), vec![a]);
        assert_eq!(r.resolve("x.test").await.unwrap(), vec![b]);
        assert_eq!(r.resolve("x.test").await.unwrap(), vec![b]);
        assert_eq!(r.lookups("x.test"), 3);
        assert!(r.resolve("y.test").await.is_err());
    }

    #[tokio::test]
    async fn the_system_resolver_knows_localhost() {
        let addrs = SystemResolver.resolve("localhost").await.unwrap();
        assert!(addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
        assert!(!addrs.is_empty());
    }
}
