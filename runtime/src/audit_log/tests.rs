//! The writer's tests: format, chain checks, group commit, reopening, failures.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use spike_core::id::SpiffeId;
use time::OffsetDateTime;

const T: Duration = Duration::from_secs(60);

fn key() -> AuditKey {
    AuditKey::new(&[7; 32])
}

fn record(i: usize) -> AuditRecord {
    let id = SpiffeId::new(&format!("spiffe://spike.dev/app/{}", i % 5)).unwrap();
    let r = AuditRecord::new(
        if i.is_multiple_of(2) {
            "secret.get"
        } else {
            "secret.put"
        },
        if i.is_multiple_of(3) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        if i.is_multiple_of(3) {
            "policy_denied"
        } else {
            "ok"
        },
    )
    .with_caller(id)
    .with_path(format!("db/item-{i}"));
    if i.is_multiple_of(4) {
        r
    } else {
        r.with_status(200)
    }
}

/// A sealed log of `n` lines, one string per line (without newlines).
fn log(n: usize, key: &AuditKey) -> Vec<String> {
    let mut chain = Chain::new(key.clone());
    (0..n)
        .map(|i| chain.seal(record(i)).to_json_line().trim_end().to_owned())
        .collect()
}

fn join(lines: &[String]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

fn bad_line(r: Result<VerifyReport, VerifyError>) -> (u64, LineProblem) {
    match r {
        Err(VerifyError::Line { line, problem }) => (line, problem),
        other => panic!("expected a bad line, got {other:?}"),
    }
}

#[test]
fn line_format() {
    let mut chain = Chain::new(key());
    let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    let id = SpiffeId::new("spiffe://spike.dev/app").unwrap();
    let line = chain.seal_at(
        AuditRecord::new("secret.get", Decision::Allow, "ok")
            .with_caller(id)
            .with_path("db/x")
            .with_status(200),
        t,
    );
    let json = line.to_json_line();
    assert!(json.ends_with('\n'));
    let prefix = concat!(
        r#"{"seq":1,"time":"2023-11-14T22:13:20.000000Z","caller":"spiffe://spike.dev/app","#,
        r#""action":"secret.get","path":"db/x","decision":"allow","reason":"ok","status":200,"#,
        r#""prev":"0000000000000000000000000000000000000000000000000000000000000000","mac":""#
    );
    assert!(json.starts_with(prefix), "{json}");
    let bare = chain.seal_at(AuditRecord::new("status", Decision::Error, "sealed"), t);
    let json = bare.to_json_line();
    assert!(json.contains(r#""caller":null"#), "{json}");
    assert!(
        !json.contains("\"path\"") && !json.contains("\"status\":"),
        "{json}"
    );
    assert_eq!(bare.prev, line.mac);
    assert_eq!(AuditLine::parse(json.trim_end()).unwrap(), bare);
    // The MAC depends on the key.
    assert_ne!(bare.compute_mac(&AuditKey::new(&[8; 32])), bare.mac);
    assert_eq!(format!("{:?}", key()), "AuditKey(..)");
}

#[test]
fn long_paths_are_capped() {
    let r = AuditRecord::new("secret.get", Decision::Deny, "invalid_path")
        .with_path("é".repeat(MAX_AUDIT_PATH_LEN));
    let p = r.path().unwrap();
    assert!(p.len() <= MAX_AUDIT_PATH_LEN && p.ends_with("..."));
}

#[test]
fn round_trip_verifies() {
    let k = key();
    let lines = log(300, &k);
    let report = verify(&join(&lines)[..], &k).unwrap();
    assert_eq!(report.lines, 300);
    let last = AuditLine::parse(&lines[299]).unwrap();
    assert_eq!(report.head, last.checkpoint());
    assert_eq!(report.head.seq, 300);
    assert_eq!(
        verify_against(&join(&lines)[..], &k, &report.head).unwrap(),
        report
    );
    // A checkpoint in the middle is fine too: the log grew since.
    let mid = AuditLine::parse(&lines[99]).unwrap().checkpoint();
    assert_eq!(verify_against(&join(&lines)[..], &k, &mid).unwrap(), report);
    let empty = verify(&b""[..], &k).unwrap();
    assert_eq!(
        empty,
        VerifyReport {
            lines: 0,
            head: Checkpoint::GENESIS
        }
    );
}

#[test]
fn detects_edited_fields() {
    let k = key();
    for (from, to) in [
        ("secret.get", "secret.put"),
        ("\"allow\"", "\"deny\""),
        ("db/item-4", "db/item-X"),
        ("app/4", "app/3"),
        ("\"seq\":5", "\"seq\":5.0"),
    ] {
        let mut lines = log(10, &k);
        assert!(lines[4].contains(from), "{from} not in {}", lines[4]);
        lines[4] = lines[4].replacen(from, to, 1);
        let (n, problem) = bad_line(verify(&join(&lines)[..], &k));
        assert_eq!(n, 5, "{from}");
        assert!(
            matches!(problem, LineProblem::BadMac | LineProblem::Malformed { .. }),
            "{from}: {problem:?}"
        );
    }
    // Adding a field is rejected even though the MAC covers only known fields.
    let mut lines = log(10, &k);
    lines[2] = lines[2].replacen("{", "{\"value\":\"hunter2\",", 1);
    assert!(matches!(
        bad_line(verify(&join(&lines)[..], &k)),
        (3, LineProblem::Malformed { .. })
    ));
    // Dropping an optional field changes the MAC input.
    let mut lines = log(10, &k);
    lines[1] = lines[1].replacen(",\"status\":200", "", 1);
    assert_eq!(
        bad_line(verify(&join(&lines)[..], &k)),
        (2, LineProblem::BadMac)
    );
}

#[test]
fn detects_removed_reordered_duplicated_lines() {
    let k = key();
    let mut deleted = log(10, &k);
    deleted.remove(4);
    assert_eq!(
        bad_line(verify(&join(&deleted)[..], &k)),
        (
            5,
            LineProblem::SeqMismatch {
                expected: 5,
                found: 6
            }
        )
    );
    let mut first_deleted = log(10, &k);
    first_deleted.remove(0);
    assert_eq!(
        bad_line(verify(&join(&first_deleted)[..], &k)),
        (
            1,
            LineProblem::SeqMismatch {
                expected: 1,
                found: 2
            }
        )
    );
    let mut swapped = log(10, &k);
    swapped.swap(3, 4);
    assert_eq!(
        bad_line(verify(&join(&swapped)[..], &k)),
        (
            4,
            LineProblem::SeqMismatch {
                expected: 4,
                found: 5
            }
        )
    );
    let mut dup = log(10, &k);
    let copy = dup[4].clone();
    dup.insert(5, copy);
    assert_eq!(
        bad_line(verify(&join(&dup)[..], &k)),
        (
            6,
            LineProblem::SeqMismatch {
                expected: 6,
                found: 5
            }
        )
    );
}

#[test]
fn detects_inserted_and_spliced_lines() {
    let k = key();
    // A forged line from someone without the key.
    let mut forged = log(10, &k);
    let mut other_chain = Chain::new(AuditKey::new(&[9; 32]));
    for i in 0..5 {
        other_chain.seal(record(i));
    }
    let fake = other_chain.seal(record(99));
    forged.insert(5, fake.to_json_line().trim_end().to_owned());
    assert_eq!(
        bad_line(verify(&join(&forged)[..], &k)),
        (6, LineProblem::BadMac)
    );
    // A genuine line from another log under the same key, spliced in at the right seq.
    let mut spliced = log(10, &k);
    let mut other = Chain::new(k.clone());
    for i in 0..4 {
        other.seal(record(i + 50));
    }
    spliced[4] = other.seal(record(4)).to_json_line().trim_end().to_owned();
    assert_eq!(
        bad_line(verify(&join(&spliced)[..], &k)),
        (5, LineProblem::PrevMismatch)
    );
    // Garbage.
    let mut garbage = log(10, &k);
    garbage[2] = "this is not json".to_owned();
    assert!(matches!(
        bad_line(verify(&join(&garbage)[..], &k)),
        (3, LineProblem::Malformed { .. })
    ));
    let mut blank = log(10, &k);
    blank.insert(7, String::new());
    assert_eq!(
        bad_line(verify(&join(&blank)[..], &k)),
        (8, LineProblem::Empty)
    );
    let mut binary = join(&log(3, &k));
    binary.extend_from_slice(b"\xff\xfe\n");
    assert_eq!(bad_line(verify(&binary[..], &k)), (4, LineProblem::NotUtf8));
    let mut huge = join(&log(3, &k));
    huge.extend(std::iter::repeat_n(b'x', MAX_LINE_LEN + 10));
    huge.push(b'\n');
    assert_eq!(bad_line(verify(&huge[..], &k)), (4, LineProblem::TooLong));
    // Wrong key: the first line already fails.
    assert_eq!(
        bad_line(verify(&join(&log(3, &k))[..], &AuditKey::new(&[1; 32]))),
        (1, LineProblem::BadMac)
    );
}

#[test]
fn detects_truncation_against_a_checkpoint() {
    let k = key();
    let lines = log(10, &k);
    let head = verify(&join(&lines)[..], &k).unwrap().head;
    let cut = &lines[..8];
    // Without a checkpoint the shorter chain is valid...
    assert_eq!(verify(&join(cut)[..], &k).unwrap().lines, 8);
    // ...with one, the cut is found, pointing at the first missing line.
    let err = verify_against(&join(cut)[..], &k, &head).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Truncated {
                lines: 8,
                last_seq: 8,
                expected_seq: 10
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.first_bad_line(), Some(9));
    let err = verify_against(&b""[..], &k, &head).unwrap_err();
    assert_eq!(err.first_bad_line(), Some(1));
    // A log rewritten after the checkpoint was taken (e.g. rebuilt with the key).
    let mut rewritten = log(10, &k);
    let mut chain = Chain::new(k.clone());
    for (i, line) in rewritten.iter_mut().enumerate() {
        *line = chain
            .seal(record(i + 1))
            .to_json_line()
            .trim_end()
            .to_owned();
    }
    assert_eq!(
        bad_line(verify_against(&join(&rewritten)[..], &k, &head)),
        (10, LineProblem::CheckpointMismatch { seq: 10 })
    );
    // A torn last line.
    let mut torn = join(&lines);
    torn.truncate(torn.len() - 5);
    assert_eq!(
        bad_line(verify(&torn[..], &k)),
        (10, LineProblem::Incomplete)
    );
    let cp: Checkpoint = serde_json::from_str(&serde_json::to_string(&head).unwrap()).unwrap();
    assert_eq!(cp, head);
}

fn read_log(path: &Path, k: &AuditKey) -> VerifyReport {
    verify(File::open(path).unwrap(), k).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_form_one_valid_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let k = key();
    let w = AuditWriter::open(&path, k.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                let cp = w.append(record(t * 100 + i)).await.unwrap();
                seqs.push(cp);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = tokio::time::timeout(T, t).await.unwrap().unwrap();
        // Each task's own appends are ordered.
        assert!(seqs.windows(2).all(|w| w[0].seq < w[1].seq));
        all.extend(seqs);
    }
    let seqs: HashSet<u64> = all.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (1..=800).collect());
    let report = read_log(&path, &k);
    assert_eq!(report.lines, 800);
    let last = all.iter().max_by_key(|c| c.seq).unwrap();
    assert_eq!(report.head, *last);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    w.close().await;
    assert!(matches!(w.append(record(0)).await, Err(AuditError::Closed)));
}

#[tokio::test]
async fn reopen_continues_the_chain_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let k = key();
    let w = AuditWriter::open(&path, k.clone()).await.unwrap();
    for i in 0..10 {
        w.append(record(i)).await.unwrap();
    }
    assert!(matches!(
        AuditWriter::open(&path, k.clone()).await,
        Err(AuditError::Locked)
    ));
    w.close().await;
    let w = AuditWriter::open(&path, k.clone()).await.unwrap();
    let cp = w.append(record(10)).await.unwrap();
    assert_eq!(cp.seq, 11);
    for i in 11..20 {
        w.append(record(i)).await.unwrap();
    }
    w.close().await;
    let report = read_log(&path, &k);
    assert_eq!(report.lines, 20);
    assert_eq!(report.head.seq, 20);
    assert!(verify_against(File::open(&path).unwrap(), &k, &cp).is_ok());
}

async fn write_log(path: &Path, n: usize) {
    let w = AuditWriter::open(path, key()).await.unwrap();
    for i in 0..n {
        w.append(record(i)).await.unwrap();
    }
    w.close().await;
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[tokio::test]
async fn refuses_a_corrupt_tail() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();

    let garbage = dir.path().join("garbage.log");
    write_log(&garbage, 3).await;
    append_bytes(&garbage, b"{\"seq\":4}\n");
    assert!(matches!(
        AuditWriter::open(&garbage, k.clone()).await,
        Err(AuditError::CorruptTail(LineProblem::Malformed { .. }))
    ));

    let edited = dir.path().join("edited.log");
    write_log(&edited, 3).await;
    let text = std::fs::read_to_string(&edited).unwrap();
    std::fs::write(&edited, text.replace("item-2", "item-9")).unwrap();
    assert!(matches!(
        AuditWriter::open(&edited, k.clone()).await,
        Err(AuditError::CorruptTail(LineProblem::BadMac))
    ));

    let wrong_key = dir.path().join("wrong-key.log");
    write_log(&wrong_key, 3).await;
    assert!(matches!(
        AuditWriter::open(&wrong_key, AuditKey::new(&[3; 32])).await,
        Err(AuditError::CorruptTail(LineProblem::BadMac))
    ));

    let blank = dir.path().join("blank.log");
    write_log(&blank, 3).await;
    append_bytes(&blank, b"\n");
    assert!(matches!(
        AuditWriter::open(&blank, k.clone()).await,
        Err(AuditError::CorruptTail(LineProblem::Empty))
    ));

    let dir_path = dir.path().join("a-directory");
    std::fs::create_dir(&dir_path).unwrap();
    assert!(AuditWriter::open(&dir_path, k.clone()).await.is_err());

    // Refusing changed nothing.
    assert!(
        std::fs::read_to_string(&garbage)
            .unwrap()
            .ends_with("{\"seq\":4}\n")
    );
}

#[tokio::test]
async fn torn_tail_is_refused_unless_repair_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let k = key();
    write_log(&path, 5).await;
    let good_len = std::fs::metadata(&path).unwrap().len();
    append_bytes(&path, b"{\"seq\":6,\"time\":\"20");
    assert!(matches!(
        AuditWriter::open(&path, k.clone()).await,
        Err(AuditError::TornTail)
    ));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len + 19);
    let options = WriterOptions {
        repair_torn_tail: true,
        ..WriterOptions::default()
    };
    let w = AuditWriter::open_with(&path, k.clone(), options.clone(), None)
        .await
        .unwrap();
    assert_eq!(w.append(record(5)).await.unwrap().seq, 6);
    w.close().await;
    assert_eq!(read_log(&path, &k).lines, 6);

    // A log that is one fragment is cut to empty and starts over.
    let frag = dir.path().join("fragment.log");
    std::fs::write(&frag, b"{\"seq\":1").unwrap();
    let w = AuditWriter::open_with(&frag, k.clone(), options, None)
        .await
        .unwrap();
    assert_eq!(w.append(record(0)).await.unwrap().seq, 1);
    w.close().await;
    assert_eq!(read_log(&frag, &k).lines, 1);
}

/// A real file whose next append writes half its buffer and then fails, like a full disk.
struct FlakyFile {
    file: File,
    /// 0: work; 1: fail the next append; 2: fail the next append and the rollback.
    fail: Arc<AtomicU8>,
}

impl LogFile for FlakyFile {
    fn append(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) == 0 {
            return self.file.append(buf, sync);
        }
        self.file.write_all(&buf[..buf.len() / 2])?;
        Err(io::Error::other("injected: no space left on device"))
    }

    fn truncate_durably(&mut self, len: u64) -> io::Result<()> {
        if self.fail.swap(0, Ordering::SeqCst) == 2 {
            return Err(io::Error::other("injected: rollback failed"));
        }
        self.file.truncate_durably(len)
    }

    fn rotate(&mut self, files: &LogFiles) -> io::Result<()> {
        self.file.rotate(files)
    }
}

async fn flaky_writer(path: &Path) -> (AuditWriter, Arc<AtomicU8>) {
    let options = WriterOptions::default();
    let files = LogFiles::new(path);
    let c = open_log(files.clone(), key(), &options, None).unwrap();
    let fail = Arc::new(AtomicU8::new(0));
    let flaky = Committer {
        file: FlakyFile {
            file: c.file,
            fail: fail.clone(),
        },
        files: c.files,
        _lock: c._lock,
        chain: c.chain,
        key: c.key,
        anchor: c.anchor,
        checkpointers: c.checkpointers,
        len: c.len,
        max_file_bytes: c.max_file_bytes,
        poisoned: c.poisoned,
        stats: c.stats,
        syncer: c.syncer,
    };
    let w = AuditWriter::spawn(flaky, files, options).unwrap();
    (w, fail)
}

#[tokio::test]
async fn failed_write_is_rolled_back_and_the_chain_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let k = key();
    let (w, fail) = flaky_writer(&path).await;
    for i in 0..3 {
        w.append(record(i)).await.unwrap();
    }
    fail.store(1, Ordering::SeqCst);
    let err = w.append(record(3)).await.unwrap_err();
    assert!(matches!(err, AuditError::Write(_)), "{err:?}");
    assert!(err.to_string().contains("no space left"));
    // The half-written line was cut off, and the next line takes its seq.
    assert_eq!(read_log(&path, &k).lines, 3);
    assert_eq!(w.append(record(4)).await.unwrap().seq, 4);
    w.close().await;
    assert_eq!(read_log(&path, &k).lines, 4);
}

#[tokio::test]
async fn failed_rollback_poisons_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let (w, fail) = flaky_writer(&path).await;
    w.append(record(0)).await.unwrap();
    fail.store(2, Ordering::SeqCst);
    assert!(matches!(
        w.append(record(1)).await,
        Err(AuditError::Write(_))
    ));
    // Even though the disk "works" again, the writer no longer trusts the file.
    assert!(matches!(
        w.append(record(2)).await,
        Err(AuditError::Poisoned)
    ));
    w.close().await;
    // The torn tail left behind is refused on reopen rather than continued.
    assert!(matches!(
        AuditWriter::open(&path, key()).await,
        Err(AuditError::TornTail)
    ));
}

fn small_files() -> WriterOptions {
    WriterOptions {
        max_file_bytes: 2048,
        ..WriterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_continues_across_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let k = key();
    let w = AuditWriter::open_with(&path, k.clone(), small_files(), None)
        .await
        .unwrap();
    for i in 0..60 {
        w.append(record(i)).await.unwrap();
    }
    w.close().await;
    let files = LogFiles::new(&path);
    let rotated = files.rotated().unwrap();
    assert!(rotated.len() >= 3, "{rotated:?}");
    assert_eq!(rotated[0].0, 1);
    // Every file verifies as one chain, in order; the live one alone does not.
    let report = verify_files(&files, &k, None).unwrap();
    assert_eq!(report.lines, 60);
    assert!(verify(File::open(&path).unwrap(), &k).is_err());
    // Reopening continues after the newest line, even right after a rotation.
    let w = AuditWriter::open_with(&path, k.clone(), small_files(), None)
        .await
        .unwrap();
    assert_eq!(w.append(record(60)).await.unwrap().seq, 61);
    w.close().await;
    // A rotated file removed from the middle breaks the chain there.
    std::fs::remove_file(&rotated[1].1).unwrap();
    let err = verify_files(&files, &k, None).unwrap_err();
    assert!(err.file.is_some(), "{err}");
}

/// A checkpoint store in memory (Nexus's is its data store).
#[derive(Default)]
struct MemoryCheckpoints(std::sync::Mutex<Option<Vec<u8>>>);

impl CheckpointStore for MemoryCheckpoints {
    fn load(&self) -> Result<Option<Vec<u8>>, CheckpointStoreError> {
        Ok(self.0.lock().unwrap().clone())
    }

    fn save(&self, sealed: Vec<u8>) -> Result<(), CheckpointStoreError> {
        *self.0.lock().unwrap() = Some(sealed);
        Ok(())
    }
}

async fn anchored(
    path: &Path,
    store: &Arc<MemoryCheckpoints>,
    options: WriterOptions,
) -> Result<AuditWriter, AuditError> {
    let store: Arc<dyn CheckpointStore> = store.clone();
    AuditWriter::open_with(path, key(), options, Some(Anchor::new(store))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_tail_while_closed_is_refused_until_the_loss_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let store = Arc::new(MemoryCheckpoints::default());
    let w = anchored(&path, &store, WriterOptions::default())
        .await
        .unwrap();
    for i in 0..10 {
        w.append(record(i)).await.unwrap();
    }
    w.close().await;
    // Cut the last three lines: a valid, shorter chain.
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: String = text.lines().take(7).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, kept).unwrap();
    let err = anchored(&path, &store, WriterOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Lost {
                expected_seq: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(LOSS_RUNBOOK), "{err}");
    // Accepting another seq does not accept this loss.
    let wrong = WriterOptions {
        accept_loss_at: Some(9),
        ..WriterOptions::default()
    };
    assert!(anchored(&path, &store, wrong).await.is_err());
    let accept = WriterOptions {
        accept_loss_at: Some(10),
        ..WriterOptions::default()
    };
    let w = anchored(&path, &store, accept.clone()).await.unwrap();
    // The loss is the first new line, and the chain stays verifiable.
    assert_eq!(w.append(record(10)).await.unwrap().seq, 9);
    w.close().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let loss = text.lines().nth(7).unwrap();
    assert!(loss.contains(LOSS_ACCEPTED_ACTION), "{loss}");
    assert!(loss.contains("\"lines_lost\":3"), "{loss}");
    assert_eq!(read_log(&path, &key()).lines, 9);
    // The acceptance is one-shot: the new checkpoint is reached, the flag changes nothing.
    let w = anchored(&path, &store, accept).await.unwrap();
    w.close().await;
    assert_eq!(read_log(&path, &key()).lines, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_log_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let store = Arc::new(MemoryCheckpoints::default());
    let w = anchored(&path, &store, WriterOptions::default())
        .await
        .unwrap();
    w.append(record(0)).await.unwrap();
    w.close().await;
    std::fs::remove_file(&path).unwrap();
    let err = anchored(&path, &store, WriterOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty or missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_stored_checkpoint_is_refused_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let store = Arc::new(MemoryCheckpoints::default());
    let w = anchored(&path, &store, WriterOptions::default())
        .await
        .unwrap();
    w.append(record(0)).await.unwrap();
    w.close().await;
    // Someone without the key moves the checkpoint back to seq 0.
    store
        .save(Checkpoint::GENESIS.seal(&AuditKey::new(&[1; 32])))
        .unwrap();
    let err = anchored(&path, &store, WriterOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::BadCheckpoint(_)), "{err}");
    let accept = WriterOptions {
        accept_loss_at: Some(UNUSABLE_CHECKPOINT),
        ..WriterOptions::default()
    };
    let w = anchored(&path, &store, accept).await.unwrap();
    w.close().await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(LOSS_ACCEPTED_ACTION), "{text}");
    assert!(
        anchored(&path, &store, WriterOptions::default())
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_log_answers_on_write_and_syncs_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway-audit.log");
    let k = key();
    let batched = WriterOptions {
        durability: Durability::Batched(Duration::from_millis(20)),
        max_file_bytes: 2048,
        ..WriterOptions::default()
    };
    let w = AuditWriter::open_with(&path, k.clone(), batched.clone(), None)
        .await
        .unwrap();
    for i in 0..40 {
        w.append(record(i)).await.unwrap();
    }
    // Answered lines are in the file (the OS's cache) before any sync: a crash of the
    // process loses none of them; rotation happened with the chain intact.
    let files = LogFiles::new(&path);
    assert!(!files.rotated().unwrap().is_empty());
    assert_eq!(verify_files(&files, &k, None).unwrap().lines, 40);
    w.close().await;
    // Reopened, the chain continues after its verified last line.
    let w = AuditWriter::open_with(&path, k.clone(), batched, None)
        .await
        .unwrap();
    assert_eq!(w.append(record(40)).await.unwrap().seq, 41);
    w.close().await;
    assert_eq!(verify_files(&files, &k, None).unwrap().lines, 41);
}

/// The checkpoints a sink received, opened under `k` (every line must be one).
fn shipped(text: &str, k: &AuditKey) -> Vec<Checkpoint> {
    text.lines()
        .map(|l| Checkpoint::open_shipped(l, k).unwrap().unwrap())
        .collect()
}

fn shipping(sink: CheckpointSink, every: Duration) -> WriterOptions {
    WriterOptions {
        ship: Some(ShipTo { sink, every }),
        ..WriterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_shipped_to_a_file_at_most_once_per_interval_and_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let sink = dir.path().join("checkpoints");
    // As often as heads come: each shipped head is on the chain, in order, the last at the
    // log's end.
    let w = AuditWriter::open_with(
        &path,
        key(),
        shipping(CheckpointSink::File(sink.clone()), Duration::ZERO),
        None,
    )
    .await
    .unwrap();
    let mut heads = vec![Checkpoint::GENESIS];
    for i in 0..20 {
        heads.push(w.append(record(i)).await.unwrap());
    }
    w.close().await;
    assert_eq!(
        std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let got = shipped(&std::fs::read_to_string(&sink).unwrap(), &key());
    assert_eq!(got.first(), Some(&Checkpoint::GENESIS));
    assert_eq!(got.last(), heads.last());
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "{got:?}");
    assert!(got.iter().all(|c| heads.contains(c)));
    let k = key();
    let mut v = ChainVerifier::new(&k).reaching(got);
    v.read(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(v.finish().unwrap().head, *heads.last().unwrap());

    // Once an hour: reopening ships where the log resumes, then only the close ships.
    let w = AuditWriter::open_with(
        &path,
        key(),
        shipping(
            CheckpointSink::File(sink.clone()),
            Duration::from_secs(3600),
        ),
        None,
    )
    .await
    .unwrap();
    let mut last = Checkpoint::GENESIS;
    for i in 0..50 {
        last = w.append(record(i)).await.unwrap();
    }
    w.close().await;
    let all = shipped(&std::fs::read_to_string(&sink).unwrap(), &key());
    assert_eq!(&all[all.len() - 2..], &[*heads.last().unwrap(), last]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_shipped_to_syslog_as_datagrams() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("log");
    let daemon = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    daemon.set_read_timeout(Some(T)).unwrap();
    let w = AuditWriter::open_with(
        dir.path().join("audit.log"),
        key(),
        shipping(CheckpointSink::Syslog(socket), Duration::ZERO),
        None,
    )
    .await
    .unwrap();
    let head = w.append(record(0)).await.unwrap();
    w.close().await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.last() != Some(&head) {
        let n = daemon.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        let prefix = format!(
            "<85>spike-audit[{}]: spike-audit-checkpoint ",
            std::process::id()
        );
        assert!(msg.starts_with(&prefix), "{msg}");
        got.push(Checkpoint::open_shipped(msg, &key()).unwrap().unwrap());
    }
    assert_eq!(got.first(), Some(&Checkpoint::GENESIS));
}

#[tokio::test]
async fn a_sink_that_cannot_be_written_stops_the_writer_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let err = AuditWriter::open_with(
        dir.path().join("audit.log"),
        key(),
        shipping(
            CheckpointSink::Syslog(dir.path().join("no-daemon")),
            Duration::ZERO,
        ),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("audit checkpoint sink syslog:"),
        "{err}"
    );
}
