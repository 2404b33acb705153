//! Reading an audit log back and checking its chain.

use std::io::{self, BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};

use super::*;

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
    verify_inner(reader, key, None)
}

/// Like [`verify`], and also checks that the log reaches `checkpoint` and that its line at
/// `checkpoint.seq` has `checkpoint.mac`. Lines after the checkpoint are allowed (the log
/// grew since) and verified.
pub fn verify_against<R: Read>(
    reader: R,
    key: &AuditKey,
    checkpoint: &Checkpoint,
) -> Result<VerifyReport, VerifyError> {
    verify_inner(reader, key, Some(checkpoint))
}

fn verify_inner<R: Read>(
    reader: R,
    key: &AuditKey,
    checkpoint: Option<&Checkpoint>,
) -> Result<VerifyReport, VerifyError> {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    let mut head = Checkpoint::GENESIS;
    let mut lines = 0u64;
    loop {
        let status = read_line_bounded(&mut reader, &mut buf)?;
        let Some(status) = status else { break };
        lines += 1;
        let bad = |problem| VerifyError::Line {
            line: lines,
            problem,
        };
        match status {
            LineStatus::Complete => {}
            LineStatus::Incomplete => return Err(bad(LineProblem::Incomplete)),
            LineStatus::TooLong => return Err(bad(LineProblem::TooLong)),
        }
        let text = std::str::from_utf8(&buf).map_err(|_| bad(LineProblem::NotUtf8))?;
        let line = AuditLine::parse(text).map_err(bad)?;
        if !line.mac_is_valid(key) {
            return Err(bad(LineProblem::BadMac));
        }
        let expected = head.seq.saturating_add(1);
        if line.seq != expected {
            return Err(bad(LineProblem::SeqMismatch {
                expected,
                found: line.seq,
            }));
        }
        if line.prev != head.mac {
            return Err(bad(LineProblem::PrevMismatch));
        }
        if let Some(cp) = checkpoint
            && cp.seq == line.seq
            && cp.mac != line.mac
        {
            return Err(bad(LineProblem::CheckpointMismatch { seq: cp.seq }));
        }
        head = line.checkpoint();
    }
    // A checkpoint the log reached was compared on its line above; one beyond the end means
    // lines were cut off.
    if let Some(cp) = checkpoint
        && head.seq < cp.seq
    {
        return Err(VerifyError::Truncated {
            lines,
            last_seq: head.seq,
            expected_seq: cp.seq,
        });
    }
    Ok(VerifyReport { lines, head })
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
