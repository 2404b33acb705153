//! Reading an audit log back and checking its chain.

use std::io::{self, BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};

use super::*;
use crate::id::SpiffeId;
use crate::policy::CallerClass;

/// The action code of every gateway line starts with this (`gateway.read`, ...).
pub const GATEWAY_ACTION_PREFIX: &str = "gateway.";

/// Whose chain a log is: Nexus's own, or one gateway's (under that gateway's key, see
/// [`AuditKey::for_gateway`]). A line of another chain is refused by its owner before its
/// MAC is even checked, so the report says what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOwner {
    /// Nexus's log: no line is a gateway's.
    Nexus,
    /// A gateway's log: every line's caller is this gateway and its action `gateway.*`.
    Gateway(SpiffeId),
}

impl ChainOwner {
    /// The chain `line` claims to be part of: a gateway's when its action is `gateway.*` and
    /// its caller a gateway identity (`spiffe://<td>/spike/gateway/<name>`), Nexus's
    /// otherwise. A claim only: the line's MAC under the owner's key decides.
    pub fn claimed_by(line: &AuditLine) -> Self {
        let gateway = line
            .caller
            .as_deref()
            .filter(|_| line.action.starts_with(GATEWAY_ACTION_PREFIX))
            .and_then(|c| SpiffeId::new(c).ok())
            .filter(|id| CallerClass::of(id) == CallerClass::Gateway);
        match gateway {
            Some(id) => Self::Gateway(id),
            None => Self::Nexus,
        }
    }

    fn owns(&self, line: &AuditLine) -> bool {
        let gateway_action = line.action.starts_with(GATEWAY_ACTION_PREFIX);
        match self {
            Self::Nexus => !gateway_action,
            Self::Gateway(id) => gateway_action && line.caller.as_deref() == Some(id.as_str()),
        }
    }
}

impl std::fmt::Display for ChainOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nexus => f.write_str("Nexus"),
            Self::Gateway(id) => write!(f, "gateway {id}"),
        }
    }
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineProblem {
    /// The log ends without a newline: a torn or partial write.
    #[error("the line is incomplete (no newline at the end of the log)")]
    Incomplete,
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("the line is longer than {MAX_LINE_LEN} bytes")]
    TooLong,
    /// The line is not UTF-8.
    #[error("the line is not UTF-8")]
    NotUtf8,
    /// The line is empty.
    #[error("the line is empty")]
    Empty,
    /// The line is not an audit record.
    #[error("not an audit record ({kind} at column {column})")]
    Malformed {
        /// What kind of problem.
        kind: &'static str,
        /// 1-based column where parsing stopped.
        column: usize,
    },
    /// The MAC does not match the line's contents.
    #[error("the MAC does not match: the line was changed, forged, or the key is wrong")]
    BadMac,
    /// The sequence number breaks continuity.
    #[error(
        "expected seq {expected}, found {found}: a line was removed, inserted, duplicated or moved"
    )]
    SeqMismatch {
        /// The sequence number that should be here.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// `prev` is not the previous line's MAC.
    #[error("prev does not match the previous line's MAC: the chain is broken here")]
    PrevMismatch,
    /// The line belongs to another chain (a Nexus line in a gateway's log, another
    /// gateway's line).
    #[error("not a line of {owner}'s chain: a line of another log was inserted")]
    ForeignLine {
        /// Whose chain is being verified.
        owner: String,
    },
    /// The line at the checkpoint's `seq` has a different MAC.
    #[error("the line at seq {seq} differs from the checkpoint: the log was rewritten")]
    CheckpointMismatch {
        /// The checkpoint's sequence number.
        seq: u64,
    },
}

/// Why a log failed verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Reading the log failed.
    #[error("could not read the audit log: {0}")]
    Io(#[from] io::Error),
    /// A line is bad; every line before it verified.
    #[error("line {line}: {problem}")]
    Line {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        problem: LineProblem,
    },
    /// The log verifies but ends before the checkpoint.
    #[error(
        "the log ends at seq {last_seq} (line {lines}) but the checkpoint is at seq {expected_seq}: lines were removed from the end"
    )]
    Truncated {
        /// Lines in the log.
        lines: u64,
        /// The last sequence number in the log.
        last_seq: u64,
        /// The checkpoint's sequence number.
        expected_seq: u64,
    },
}

impl VerifyError {
    /// The first bad (or, for truncation, first missing) line number, 1-based.
    pub fn first_bad_line(&self) -> Option<u64> {
        match self {
            Self::Io(_) => None,
            Self::Line { line, .. } => Some(*line),
            Self::Truncated { lines, .. } => Some(lines + 1),
        }
    }
}

/// A log that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyReport {
    /// Number of lines.
    pub lines: u64,
    /// The last line's position ([`Checkpoint::GENESIS`] for an empty log).
    pub head: Checkpoint,
}

/// Verifies a whole log from its first line: every line parses, carries a valid MAC, follows
/// the previous one in `seq` and `prev`. Stops at the first bad line. Cannot detect lines cut
/// off the end; see [`verify_against`].
pub fn verify<R: Read>(reader: R, key: &AuditKey) -> Result<VerifyReport, VerifyError> {
    let mut v = ChainVerifier::new(key);
    v.read(reader)?;
    v.finish()
}

/// Like [`verify`], and also checks that the log reaches `checkpoint` and that its line at
/// `checkpoint.seq` has `checkpoint.mac`. Lines after the checkpoint are allowed (the log
/// grew since) and verified.
pub fn verify_against<R: Read>(
    reader: R,
    key: &AuditKey,
    checkpoint: &Checkpoint,
) -> Result<VerifyReport, VerifyError> {
    let mut v = ChainVerifier::against(key, *checkpoint);
    v.read(reader)?;
    v.finish()
}

/// Checks a chain read in pieces (the files of a rotated log, oldest first), streaming: it
/// holds one line at a time, never a whole file. Line numbers count across the pieces.
#[derive(Debug)]
pub struct ChainVerifier<'k> {
    key: &'k AuditKey,
    owner: ChainOwner,
    /// Positions the chain must pass through, sorted by `seq`: the one stored with the data
    /// and those shipped to a second sink. More than one at a `seq` can only all match if
    /// they are equal.
    checkpoints: Vec<Checkpoint>,
    head: Checkpoint,
    lines: u64,
    buf: Vec<u8>,
}

impl<'k> ChainVerifier<'k> {
    /// A verifier of a chain starting at its first line.
    pub fn new(key: &'k AuditKey) -> Self {
        Self {
            key,
            owner: ChainOwner::Nexus,
            checkpoints: Vec::new(),
            head: Checkpoint::GENESIS,
            lines: 0,
            buf: Vec::new(),
        }
    }

    /// Like [`ChainVerifier::new`], and [`finish`](Self::finish) also requires the chain to
    /// reach `checkpoint` (see [`verify_against`]).
    pub fn against(key: &'k AuditKey, checkpoint: Checkpoint) -> Self {
        Self::new(key).reaching([checkpoint])
    }

    /// Also requires the chain to pass through each of `checkpoints` (shipped to a second
    /// sink): the line at each one's `seq` must have its MAC, and [`finish`](Self::finish)
    /// fails if the chain ends before the last.
    pub fn reaching(mut self, checkpoints: impl IntoIterator<Item = Checkpoint>) -> Self {
        self.checkpoints.extend(checkpoints);
        self.checkpoints.sort_by_key(|c| c.seq);
        self
    }

    /// A verifier of a chain's continuation: its first line must follow `head`, the last line
    /// of the `lines` lines verified before (a long copy checked piece by piece, each piece
    /// in its own call). Line numbers continue from `lines`.
    pub fn after(key: &'k AuditKey, head: Checkpoint, lines: u64) -> Self {
        Self {
            head,
            lines,
            ..Self::new(key)
        }
    }

    /// Verifies `owner`'s chain (Nexus's by default): a line of another chain is
    /// [`LineProblem::ForeignLine`]. `key` must be the owner's.
    pub fn owned_by(mut self, owner: ChainOwner) -> Self {
        self.owner = owner;
        self
    }

    /// Lines verified so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Verifies every line of `reader`, continuing the chain from the pieces read before.
    /// Each piece must end with a newline. Stops at the first bad line.
    pub fn read<R: Read>(&mut self, reader: R) -> Result<(), VerifyError> {
        let mut reader = BufReader::new(reader);
        while let Some(status) = read_line_bounded(&mut reader, &mut self.buf)? {
            self.lines += 1;
            let line = self.lines;
            let bad = |problem| VerifyError::Line { line, problem };
            match status {
                LineStatus::Complete => {}
                LineStatus::Incomplete => return Err(bad(LineProblem::Incomplete)),
                LineStatus::TooLong => return Err(bad(LineProblem::TooLong)),
            }
            let text = std::str::from_utf8(&self.buf).map_err(|_| bad(LineProblem::NotUtf8))?;
            let parsed = AuditLine::parse(text).map_err(bad)?;
            self.check(&parsed).map_err(bad)?;
            self.head = parsed.checkpoint();
        }
        Ok(())
    }

    fn check(&self, line: &AuditLine) -> Result<(), LineProblem> {
        if !self.owner.owns(line) {
            return Err(LineProblem::ForeignLine {
                owner: self.owner.to_string(),
            });
        }
        if !line.mac_is_valid(self.key) {
            return Err(LineProblem::BadMac);
        }
        let expected = self.head.seq.saturating_add(1);
        if line.seq != expected {
            return Err(LineProblem::SeqMismatch {
                expected,
                found: line.seq,
            });
        }
        if line.prev != self.head.mac {
            return Err(LineProblem::PrevMismatch);
        }
        let from = self.checkpoints.partition_point(|c| c.seq < line.seq);
        if self.checkpoints[from..]
            .iter()
            .take_while(|c| c.seq == line.seq)
            .any(|c| c.mac != line.mac)
        {
            return Err(LineProblem::CheckpointMismatch { seq: line.seq });
        }
        Ok(())
    }

    /// The report so far, without the check that the chain reaches its checkpoints: for a
    /// piece of a copy that more pieces follow.
    pub fn progress(&self) -> VerifyReport {
        VerifyReport {
            lines: self.lines,
            head: self.head,
        }
    }

    /// The report, once every piece was read: fails if the chain ends before the checkpoint.
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        // A checkpoint the chain reached was compared on its line; one beyond the end means
        // lines were cut off (or a whole file is missing).
        if let Some(cp) = self.checkpoints.last()
            && self.head.seq < cp.seq
        {
            return Err(VerifyError::Truncated {
                lines: self.lines,
                last_seq: self.head.seq,
                expected_seq: cp.seq,
            });
        }
        Ok(self.progress())
    }
}

enum LineStatus {
    Complete,
    Incomplete,
    TooLong,
}

/// Reads one line into `buf` (without the newline), never holding more than
/// [`MAX_LINE_LEN`] bytes. `None` at the end of input.
fn read_line_bounded<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<LineStatus>> {
    buf.clear();
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok((!buf.is_empty()).then_some(LineStatus::Incomplete));
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if buf.len() + i > MAX_LINE_LEN {
                    return Ok(Some(LineStatus::TooLong));
                }
                buf.extend_from_slice(&avail[..i]);
                r.consume(i + 1);
                return Ok(Some(LineStatus::Complete));
            }
            None => {
                let n = avail.len();
                if buf.len() + n > MAX_LINE_LEN {
                    return Ok(Some(LineStatus::TooLong));
                }
                buf.extend_from_slice(avail);
                r.consume(n);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn gateway_log(key: &AuditKey, gateway: &SpiffeId, n: usize) -> (Chain, String) {
        let mut chain = Chain::new(key.clone());
        let mut log = String::new();
        for _ in 0..n {
            let r = AuditRecord::new("gateway.read", Decision::Allow, "ok")
                .with_caller(gateway.clone())
                .with_tokens(["ab"], id("spiffe://spike.dev/agents/a"));
            log.push_str(&chain.seal(r).to_json_line());
        }
        (chain, log)
    }

    #[test]
    fn a_gateway_chain_is_claimed_by_its_lines_and_refuses_foreign_ones() {
        let gw = id("spiffe://spike.dev/spike/gateway/gw");
        let key = AuditKey::new(&[1; 32]).for_gateway(&gw);
        let (chain, log) = gateway_log(&key, &gw, 2);
        let first = AuditLine::parse(log.lines().next().unwrap()).unwrap();
        let owner = ChainOwner::claimed_by(&first);
        assert_eq!(owner, ChainOwner::Gateway(gw.clone()));
        let mut v = ChainVerifier::new(&key).owned_by(owner.clone());
        v.read(log.as_bytes()).unwrap();
        assert_eq!(v.finish().unwrap().lines, 2);

        // A line of another caller (even sealed under this key, as by a thief of it) or a
        // non-gateway action in this gateway's chain: refused at its line.
        for record in [
            AuditRecord::new("secret.get", Decision::Allow, "ok").with_caller(gw),
            AuditRecord::new("gateway.read", Decision::Allow, "ok")
                .with_caller(id("spiffe://spike.dev/spike/gateway/other")),
        ] {
            let mut c = Chain::resume(key.clone(), chain.head());
            let mut bad = log.clone();
            bad.push_str(&c.seal(record).to_json_line());
            let mut v = ChainVerifier::new(&key).owned_by(owner.clone());
            let e = v.read(bad.as_bytes()).unwrap_err();
            assert_eq!(e.first_bad_line(), Some(3), "{e}");
            assert!(e.to_string().contains("not a line of gateway"), "{e}");
        }
        // Nexus's own chain takes no gateway line.
        let mut v = ChainVerifier::new(&key);
        let e = v.read(log.as_bytes()).unwrap_err();
        assert_eq!(e.first_bad_line(), Some(1), "{e}");
    }

    #[test]
    fn every_checkpoint_must_be_on_the_chain_and_the_last_reached() {
        let key = AuditKey::new(&[3; 32]);
        let mut chain = Chain::new(key.clone());
        let mut log = String::new();
        let mut heads = Vec::new();
        for _ in 0..5 {
            let line = chain.seal(AuditRecord::new("secret.get", Decision::Allow, "ok"));
            heads.push(line.checkpoint());
            log.push_str(&line.to_json_line());
        }
        let check = |cps: Vec<Checkpoint>| {
            let mut v = ChainVerifier::new(&key).reaching(cps);
            v.read(log.as_bytes()).and_then(|()| v.finish())
        };
        // In any order, repeated, the head itself included.
        let r = check(vec![heads[3], heads[1], heads[1], heads[4]]).unwrap();
        assert_eq!(r.head, heads[4]);
        // One off the chain (another MAC at a seq it has), even beside a good one there.
        let forked = Checkpoint {
            seq: 2,
            mac: AuditMac::from_bytes([1; 32]),
        };
        let e = check(vec![heads[0], heads[1], forked]).unwrap_err();
        assert_eq!(e.first_bad_line(), Some(2), "{e}");
        assert!(e.to_string().contains("differs from the checkpoint"), "{e}");
        // One past the end: the tail was cut.
        let beyond = Checkpoint {
            seq: 9,
            mac: AuditMac::from_bytes([1; 32]),
        };
        let e = check(vec![heads[0], beyond]).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Truncated {
                    expected_seq: 9,
                    last_seq: 5,
                    ..
                }
            ),
            "{e}"
        );
        // A piece of a copy reports its progress without that last check.
        let mut v = ChainVerifier::new(&key).reaching([beyond]);
        v.read(log.as_bytes()).unwrap();
        assert_eq!(v.progress().head, heads[4]);
    }

    #[test]
    fn only_gateway_identities_with_gateway_actions_claim_a_gateway_chain() {
        let key = AuditKey::new(&[2; 32]);
        for (caller, action) in [
            ("spiffe://spike.dev/app", "gateway.read"),
            ("spiffe://spike.dev/spike/gateway/gw", "token.resolve"),
            ("spiffe://spike.dev/spike/gateway/gw/x", "gateway.read"),
        ] {
            let line = Chain::new(key.clone())
                .seal(AuditRecord::new(action, Decision::Allow, "ok").with_caller(id(caller)));
            assert_eq!(
                ChainOwner::claimed_by(&line),
                ChainOwner::Nexus,
                "{caller} {action}"
            );
        }
    }
}
