//! `spike cipher encrypt|decrypt`: encrypt and decrypt data through Nexus's cipher API.
//!
//! Input comes from a file (`-f`) or stdin, output goes to a file (`--out`, written atomically
//! with mode 0600) or stdout; both are binary-safe. Ciphertexts are binary by default, or one
//! line of base64 with `--base64`; decrypt takes either form (and the JSON that `-o json`
//! prints). See `docs/cipher.md`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};
use http::Method;
use spike_core::api::{DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse};
use spike_core::secret::SecretBytes;
use zeroize::Zeroizing;

use crate::cli::Output;
use crate::client::{CliError, CliResult, Nexus};

/// Most input read. Nexus takes 1 MiB of data per call by default; this only keeps a wrong
/// input (a disk image on stdin) from being read into memory whole.
const MAX_INPUT: u64 = 16 << 20;

/// `spike cipher ...`
#[derive(Debug, Subcommand)]
pub enum CipherCmd {
    /// Encrypt data under Nexus's cipher key, bound to a context you hold `cipher` on.
    ///
    /// Examples:
    ///   spike cipher encrypt --context apps/billing/cards -f card.json --out card.enc
    ///   tar c data | spike cipher encrypt --context apps/backup > data.enc
    ///   spike cipher encrypt --context apps/web/session --base64 < token   # one text line
    ///
    /// At most 1 MiB per call. For larger data, encrypt it with a key of your own and
    /// encrypt that key here (see docs/cipher.md).
    #[command(verbatim_doc_comment)]
    Encrypt(EncryptArgs),
    /// Decrypt data made by `spike cipher encrypt`, under the same context.
    ///
    /// Takes binary or base64 ciphertexts (and the JSON `-o json` prints). Examples:
    ///   spike cipher decrypt --context apps/billing/cards -f card.enc --out card.json
    ///   spike cipher decrypt --context apps/backup < data.enc | tar x
    #[command(verbatim_doc_comment)]
    Decrypt(DecryptArgs),
}

/// Where the data comes from and goes, and the context.
#[derive(Debug, Args)]
pub struct CipherIo {
    /// The context (required, here or in SPIKE_CIPHER_CONTEXT): a path-shaped name you hold
    /// the `cipher` permission on (e.g. `apps/billing/cards`). The ciphertext opens only under
    /// the same context.
    // Not `required` for clap: its usage line would then demand the flag even of whoever set
    // the variable.
    #[arg(long, env = "SPIKE_CIPHER_CONTEXT", value_name = "PATH")]
    pub context: Option<String>,
    /// Read the input from this file (default, or `-`: stdin).
    #[arg(short = 'f', long = "file", value_name = "IN")]
    pub file: Option<PathBuf>,
    /// Write the output to this file (default: stdout). Replaced atomically, mode 0600.
    /// Binary output is not written to a terminal unless this is `-`.
    #[arg(long = "out", value_name = "OUT")]
    pub out: Option<PathBuf>,
}

/// `spike cipher encrypt`
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Input, output and context.
    #[command(flatten)]
    pub io: CipherIo,
    /// Bind the ciphertext to this SPIFFE ID as well: only the same identity can decrypt it
    /// (and only with `cipher` on the same context).
    #[arg(long)]
    pub bind_caller: bool,
    /// Write the ciphertext as one line of base64 instead of binary.
    #[arg(long)]
    pub base64: bool,
}

/// `spike cipher decrypt`
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Input, output and context.
    #[command(flatten)]
    pub io: CipherIo,
}

impl CipherIo {
    /// The context, from the flag or the environment.
    fn take_context(&mut self) -> CliResult<String> {
        self.context.take().ok_or_else(|| {
            CliError::Usage(
                "a context is needed: give --context PATH or set SPIKE_CIPHER_CONTEXT".into(),
            )
        })
    }
}

/// Runs a cipher subcommand.
pub async fn run(nexus: &Nexus, out: Output, cmd: CipherCmd) -> CliResult<()> {
    let json = wants_json(out)?;
    match cmd {
        CipherCmd::Encrypt(mut args) => {
            let context = args.io.take_context()?;
            let mut input = read_input(args.io.file.as_deref())?;
            let req = EncryptRequest {
                context,
                // Moved, not copied: the request now owns (and wipes) the only copy.
                plaintext: SecretBytes::new(std::mem::take(&mut *input)),
                bind_caller: args.bind_caller,
            };
            let resp: EncryptResponse = nexus
                .call(Method::POST, "/v1/cipher/encrypt", Some(&req))
                .await?;
            let bytes = if json {
                json_line(&resp)?
            } else if args.base64 {
                format!("{}\n", resp.ciphertext).into_bytes()
            } else {
                BASE64.decode(resp.ciphertext.as_bytes()).map_err(|_| {
                    CliError::Other(anyhow::anyhow!(
                        "unexpected answer from Nexus: the ciphertext is not base64"
                    ))
                })?
            };
            write_output(args.io.out.as_deref(), &bytes)
        }
        CipherCmd::Decrypt(mut args) => {
            let context = args.io.take_context()?;
            let input = read_input(args.io.file.as_deref())?;
            let ciphertext = ciphertext_of(&input)?;
            let req = DecryptRequest {
                context,
                ciphertext,
            };
            let resp: DecryptResponse = nexus
                .call(Method::POST, "/v1/cipher/decrypt", Some(&req))
                .await?;
            if json {
                let doc = Zeroizing::new(json_line(&resp)?);
                write_output(args.io.out.as_deref(), &doc)
            } else {
                write_output(args.io.out.as_deref(), resp.plaintext.expose_secret())
            }
        }
    }
}

/// Whether to write the JSON answer instead of the data itself. Checked before any call, so a
/// wrong flag costs nothing.
// Other structured formats may join `Output`; the cipher writes data or JSON only.
#[allow(unreachable_patterns)]
fn wants_json(out: Output) -> CliResult<bool> {
    match out {
        Output::Text => Ok(false),
        Output::Json => Ok(true),
        _ => Err(CliError::Usage(
            "spike cipher writes the data itself, or its JSON answer with -o json".into(),
        )),
    }
}

/// The whole input, from `file` or stdin, in a buffer wiped on drop.
fn read_input(file: Option<&Path>) -> CliResult<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    let read = match file.filter(|p| p.as_os_str() != "-") {
        None => std::io::stdin()
            .lock()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut buf),
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", p.display())))?;
            // Sized up front, so growing the buffer leaves no stray copies of the data.
            let len = f.metadata().map(|m| m.len()).unwrap_or(0).min(MAX_INPUT);
            buf.reserve_exact(usize::try_from(len).unwrap_or(0));
            f.take(MAX_INPUT + 1).read_to_end(&mut buf)
        }
    };
    read.map_err(|e| CliError::Usage(format!("cannot read the input: {e}")))?;
    if buf.len() as u64 > MAX_INPUT {
        return Err(CliError::Usage(format!(
            "the input is larger than {} MiB; the cipher API takes at most 1 MiB per call: \
             encrypt large data with a key of your own and encrypt that key (see docs/cipher.md)",
            MAX_INPUT >> 20
        )));
    }
    Ok(buf)
}

/// The base64 ciphertext in a decrypt's input: binary (it starts with a format byte, never a
/// printable character), base64 text, or the JSON document `encrypt -o json` prints.
fn ciphertext_of(input: &[u8]) -> CliResult<String> {
    let Some(&first) = input.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(CliError::Usage(
            "no input: pass the ciphertext with -f FILE or on stdin".into(),
        ));
    };
    if first == b'{' {
        let doc: EncryptResponse = serde_json::from_slice(input).map_err(|_| {
            CliError::Usage(
                "the input looks like JSON but is not the output of `spike cipher encrypt -o json`"
                    .into(),
            )
        })?;
        return Ok(doc.ciphertext);
    }
    let is_base64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if is_base64(&first) {
        let text: Vec<u8> = input
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if text.iter().all(is_base64) && BASE64.decode(&text).is_ok() {
            // Sent as is: the server decodes it.
            return String::from_utf8(text)
                .map_err(|_| CliError::Usage("the input is not valid base64".into()));
        }
        return Err(CliError::Usage(
            "the input is neither a binary ciphertext nor valid base64".into(),
        ));
    }
    Ok(BASE64.encode(input))
}

fn json_line<T: serde::Serialize>(value: &T) -> CliResult<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(value).map_err(|e| CliError::Other(e.into()))?;
    v.push(b'\n');
    Ok(v)
}

/// Writes `bytes` to stdout, or replaces `out` atomically: a failed call leaves no partial
/// file, and the file is created with mode 0600 since it may hold decrypted data.
fn write_output(out: Option<&Path>, bytes: &[u8]) -> CliResult<()> {
    let io_err = |what: &str, e: std::io::Error| CliError::Other(anyhow::anyhow!("{what}: {e}"));
    match out.filter(|p| p.as_os_str() != "-") {
        None => {
            // Binary on a terminal garbles it (and may drive it with escape sequences): only
            // when `--out -` says so explicitly.
            if out.is_none() && is_binary(bytes) && std::io::stdout().is_terminal() {
                return Err(CliError::Usage(
                    "the output is binary and stdout is a terminal: write it to a file with --out FILE (or pipe it), \
give --out - to print it anyway, or --base64 when encrypting"
                        .into(),
                ));
            }
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .map_err(|e| io_err("cannot write to stdout", e))
        }
        Some(p) => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let shown = p.display().to_string();
            let mut tmp = tempfile::Builder::new()
                .prefix(".spike-cipher-")
                .tempfile_in(dir)
                .map_err(|e| io_err(&format!("cannot write {shown}"), e))?;
            tmp.write_all(bytes)
                .and_then(|()| tmp.as_file().sync_all())
                .map_err(|e| io_err(&format!("cannot write {shown}"), e))?;
            tmp.persist(p)
                .map_err(|e| io_err(&format!("cannot write {shown}"), e.error))?;
            Ok(())
        }
    }
}

/// Whether `bytes` are not text a terminal shows as it is: not UTF-8, or holding control
/// characters other than newline, carriage return and tab.
fn is_binary(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).map_or(true, |s| {
        s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn binary_is_what_a_terminal_would_not_show_as_it_is() {
        assert!(!is_binary(b"plain text\nline two\ttab\r\n"));
        assert!(!is_binary("caf\u{e9}".as_bytes()));
        assert!(is_binary(&[0xff, 0xfe]));
        assert!(is_binary(b"nul\0"));
        assert!(is_binary(b"\x1b[31mred"));
    }

    #[test]
    fn ciphertext_input_forms() {
        let binary = [1u8, 0x38, 0x2a, 0xcf, 0x2d, 0, 0xff, b'A'];
        let b64 = BASE64.encode(binary);
        assert_eq!(ciphertext_of(&binary).unwrap(), b64);
        assert_eq!(
            ciphertext_of(format!("{b64}\n").as_bytes()).unwrap(),
            b64,
            "base64 with a trailing newline"
        );
        let wrapped = format!("  {}\n{}\n", &b64[..4], &b64[4..]);
        assert_eq!(ciphertext_of(wrapped.as_bytes()).unwrap(), b64);
        let doc = format!("{{\n  \"ciphertext\": \"{b64}\"\n}}\n");
        assert_eq!(ciphertext_of(doc.as_bytes()).unwrap(), b64);
        for bad in [&b""[..], b" \n", b"{\"nope\":1}", b"abc$def", b"abc"] {
            assert!(
                matches!(ciphertext_of(bad), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn files_are_written_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plain.bin");
        std::fs::write(&out, b"old").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_output(Some(&out), &[0, 1, 2, 255]).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), [0, 1, 2, 255]);
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory that does not exist: an error, and nothing is created.
        let missing = dir.path().join("nope/plain.bin");
        assert!(write_output(Some(&missing), b"x").is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn input_files_are_read_whole_and_missing_ones_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.bin");
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        std::fs::write(&p, &data).unwrap();
        assert_eq!(*read_input(Some(&p)).unwrap(), data);
        let err = read_input(Some(&dir.path().join("missing"))).unwrap_err();
        assert!(matches!(err, CliError::Usage(_)), "{err}");
    }

    #[test]
    fn command_line_parses() {
        let cli = Cli::try_parse_from([
            "spike",
            "cipher",
            "encrypt",
            "--context",
            "apps/x",
            "-f",
            "in",
            "--out",
            "out",
            "--bind-caller",
            "--base64",
            "-o",
            "json",
        ])
        .unwrap();
        let Some(Command::Cipher(CipherCmd::Encrypt(a))) = cli.command else {
            panic!("not an encrypt");
        };
        assert_eq!(a.io.context.as_deref(), Some("apps/x"));
        assert_eq!(a.io.file.as_deref(), Some(Path::new("in")));
        assert_eq!(a.io.out.as_deref(), Some(Path::new("out")));
        assert!(a.bind_caller && a.base64);
        assert_eq!(cli.global.output, Some(Output::Json));
        // The context is required (flag or SPIKE_CIPHER_CONTEXT), checked by `take_context`.
        let cli = Cli::try_parse_from(["spike", "cipher", "decrypt"]).unwrap();
        let Some(Command::Cipher(CipherCmd::Decrypt(mut a))) = cli.command else {
            panic!("not a decrypt");
        };
        if std::env::var_os("SPIKE_CIPHER_CONTEXT").is_none() {
            let e = a.io.take_context().unwrap_err();
            assert_eq!(e.exit_code(), std::process::ExitCode::from(2));
            assert!(e.to_string().contains("SPIKE_CIPHER_CONTEXT"), "{e}");
        }
    }
}
