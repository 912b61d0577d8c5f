//! Signed checkpoints: the log's head (position, chain hash, time) signed with the server's
//! own Ed25519 key, so anyone holding only the public key can check that a log, a copy of
//! it or an audit bundle holds what the server held.
//!
//! - **Format.** A checkpoint is a C2SP signed note (`signed-note`, the form of
//!   `tlog-checkpoint` used by Go's checksum database and Sigsum): the text
//!   `crm-eventlog\n<position>\n<base64 chain hash>\ntime <RFC 3339>\n`, a blank line, then
//!   one line `— <key name> <base64(key id ‖ signature)>`. The key id is the first four
//!   bytes of SHA-256(name ‖ `\n` ‖ 0x01 ‖ public key), the signature Ed25519 over the text.
//!   The "root hash" is this log's linear chain hash, not a Merkle root: a record is shown
//!   to be under a checkpoint by the chain segment from it to the checkpoint's position.
//! - **Key.** The signing key is a 32-byte seed kept in the key store like a data subject's
//!   key (wrapped by the master key, rotated with it) under the reserved name
//!   [`SIGNING_SUBJECT`], which no stream id can take. [`VerifierKey`] prints the public half
//!   as `<name>+<key id hex>+<base64(0x01 ‖ public key)>` (the signed-note verifier form).
//! - **Kept.** Each checkpoint is a file `<data_dir>/checkpoints/<position>-<hash prefix>.note`,
//!   written under a temporary name, synced and renamed; signing an unchanged head returns
//!   the checkpoint already kept.
//!
//! **Architecture Invariant:** a checkpoint is only ever signed for a head the log holds
//! durably, and its text is all a verifier needs besides the public key.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_eventstore::{record_at, AnyStore, ChainHash, EventStore, Head, Position, ReadError};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::hex;
use crate::keys::{KeyError, KeyStore};

/// The key store's name for the log's signing key (a `$` no stream id may hold).
pub const SIGNING_SUBJECT: &str = "$log-signing";
/// The origin line and key name of every checkpoint this program signs.
pub const ORIGIN: &str = "crm-eventlog";
/// Most checkpoints one listing returns.
pub const CHECKPOINTS_LISTED_MAX: usize = 1_000;
/// Longest checkpoint note read (a note is about 250 bytes).
pub const NOTE_SIZE_MAX_BYTES: usize = 4_096;
/// Signature type byte of Ed25519 in signed-note key ids.
const ED25519_TYPE: u8 = 0x01;
/// The em dash that starts a signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a checkpoint could not be signed, read or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("no key store is open, so there is no signing key: give the master key (`crm keys init` creates one; --master-key-file or CRM_MASTER_KEY)")]
    NoKeyStore,
    #[error("the signing key could not be read or created: {0}")]
    Key(#[from] KeyError),
    #[error("the log is empty: there is no head to sign yet")]
    EmptyLog,
    #[error("{path}: {source}; check the path and its permissions")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a checkpoint note: {0}")]
    Malformed(String),
    #[error("not a verifier key ({0}); give the key `crm keys show` prints: NAME+KEYID+BASE64")]
    BadKey(String),
    #[error("the checkpoint carries no signature by key {key} (it is signed by: {signers}); check that it is this server's checkpoint and that the key is its current one")]
    NotSignedBy { key: String, signers: String },
    #[error("the signature by key {key} does not match the checkpoint's text: the checkpoint was altered after it was signed")]
    BadSignature { key: String },
    #[error("the log ends at position {head}, before the checkpoint's position {position}: this log is not the one the checkpoint was signed for, or it lost records; restore it from a backup or replica")]
    Beyond { position: u64, head: u64 },
    #[error("the log holds chain hash {log} at position {position}, the checkpoint signed {signed}: the log was altered or is another log; restore it from a backup or replica and run `crm verify`")]
    Mismatch {
        position: u64,
        log: String,
        signed: String,
    },
    #[error("reading the log failed: {0}")]
    Read(#[from] ReadError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a checkpoint states: the log's head at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    /// The log's name (`crm-eventlog`).
    pub origin: String,
    /// Position of the newest record covered.
    pub position: u64,
    /// Chain hash of that record (64 hex digits).
    pub hash: String,
    /// When it was signed.
    pub time: DateTime<Utc>,
}

impl Checkpoint {
    /// The head it states.
    ///
    /// # Errors
    /// [`CheckpointError::Malformed`] when the hash is not a chain hash.
    pub fn head(&self) -> Result<Head, CheckpointError> {
        Ok(Head {
            position: Position(self.position),
            hash: ChainHash::from_hex(&self.hash)
                .map_err(|e| CheckpointError::Malformed(e.to_string()))?,
        })
    }

    /// The signed text (the note's body).
    fn text(&self, hash: &ChainHash) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.position,
            BASE64.encode(hash.0),
            self.time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        )
    }
}

/// A checkpoint with its signed note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedCheckpoint {
    /// What it states.
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// The signed note: the text a verifier checks with the public key alone.
    pub note: String,
}

impl SignedCheckpoint {
    /// Parses a note and checks its signature by `key`.
    ///
    /// # Errors
    /// [`CheckpointError::Malformed`], [`CheckpointError::NotSignedBy`] or
    /// [`CheckpointError::BadSignature`].
    pub fn verify(note: &str, key: &VerifierKey) -> Result<SignedCheckpoint, CheckpointError> {
        let parsed = parse(note)?;
        let Some((_, signature)) = parsed
            .signatures
            .iter()
            .find(|(name, sig)| *name == key.name && sig[..4] == key.id)
        else {
            let signers = parsed
                .signatures
                .iter()
                .map(|(name, sig)| format!("{name}+{}", hex(&sig[..4])))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CheckpointError::NotSignedBy {
                key: key.to_string(),
                signers,
            });
        };
        let bytes: [u8; 64] = signature[4..]
            .try_into()
            .map_err(|_| CheckpointError::Malformed("a signature is not 64 bytes".into()))?;
        key.key
            .verify(parsed.text.as_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| CheckpointError::BadSignature {
                key: key.to_string(),
            })?;
        Ok(SignedCheckpoint {
            checkpoint: parsed.checkpoint,
            note: note.to_owned(),
        })
    }

    /// Checks that `store` holds the checkpoint's head at its position.
    ///
    /// # Errors
    /// [`CheckpointError::Beyond`], [`CheckpointError::Mismatch`] or a read error.
    pub async fn check_log(&self, store: &AnyStore) -> Result<(), CheckpointError> {
        let head = self.checkpoint.head()?;
        let Some(record) = record_at(store, head.position).await? else {
            return Err(CheckpointError::Beyond {
                position: head.position.0,
                head: store.head().position.0,
            });
        };
        if record.hash != head.hash {
            return Err(CheckpointError::Mismatch {
                position: head.position.0,
                log: record.hash.to_hex(),
                signed: head.hash.to_hex(),
            });
        }
        Ok(())
    }
}

/// A note split into its checkpoint, signed text and signatures (name, key id ‖ signature).
struct Parsed {
    checkpoint: Checkpoint,
    text: String,
    signatures: Vec<(String, Vec<u8>)>,
}

fn parse(note: &str) -> Result<Parsed, CheckpointError> {
    let malformed = |what: &str| CheckpointError::Malformed(what.to_owned());
    if note.len() > NOTE_SIZE_MAX_BYTES {
        return Err(malformed("longer than a checkpoint note can be"));
    }
    let (text, signatures) = note
        .split_once("\n\n")
        .ok_or_else(|| malformed("no blank line between the text and its signatures"))?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let origin = lines.next().unwrap_or_default().to_owned();
    if origin.is_empty() {
        return Err(malformed("no origin line"));
    }
    let position: u64 = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| malformed("the second line is not a position"))?;
    let hash = lines
        .next()
        .and_then(|l| BASE64.decode(l).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(ChainHash)
        .ok_or_else(|| malformed("the third line is not a base64 chain hash"))?;
    let mut time = None;
    for line in lines {
        if let Some(t) = line.strip_prefix("time ") {
            time = DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|t| t.with_timezone(&Utc));
        }
    }
    let time = time.ok_or_else(|| malformed("no `time` line"))?;
    let mut sigs = Vec::new();
    for line in signatures.lines().filter(|l| !l.is_empty()) {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| malformed("a signature line does not start with an em dash"))?;
        let (name, sig) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("a signature line has no key name"))?;
        let sig = BASE64
            .decode(sig)
            .ok()
            .filter(|s| s.len() == 68)
            .ok_or_else(|| malformed("a signature is not base64 of a key id and 64 bytes"))?;
        sigs.push((name.to_owned(), sig));
    }
    if sigs.is_empty() {
        return Err(malformed("no signature line"));
    }
    let checkpoint = Checkpoint {
        origin,
        position,
        hash: hash.to_hex(),
        time,
    };
    // The text must be exactly what this program signs (no stray lines).
    if checkpoint.text(&hash) != text {
        return Err(malformed("the text has lines a checkpoint does not have"));
    }
    Ok(Parsed {
        checkpoint,
        text,
        signatures: sigs,
    })
}

/// The public half of a signing key, with its name and key id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519_TYPE]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

impl VerifierKey {
    fn new(name: &str, key: VerifyingKey) -> VerifierKey {
        VerifierKey {
            name: name.to_owned(),
            id: key_id(name, &key),
            key,
        }
    }

    /// The key id, 8 hex digits.
    pub fn id(&self) -> String {
        hex(&self.id)
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut typed = vec![ED25519_TYPE];
        typed.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex(&self.id),
            BASE64.encode(typed)
        )
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl FromStr for VerifierKey {
    type Err = CheckpointError;

    fn from_str(text: &str) -> Result<VerifierKey, CheckpointError> {
        let bad = |what: &str| CheckpointError::BadKey(what.to_owned());
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("it has not three parts joined by `+`"));
        };
        let typed = BASE64
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let (&kind, key) = typed.split_first().ok_or_else(|| bad("the key is empty"))?;
        if kind != ED25519_TYPE {
            return Err(bad("not an Ed25519 key"));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not a valid Ed25519 key"))?;
        let verifier = VerifierKey::new(name, key);
        if verifier.id() != id.to_ascii_lowercase() {
            return Err(bad("its key id does not match its name and key"));
        }
        Ok(verifier)
    }
}

/// The log's signing key.
pub struct CheckpointSigner {
    key: SigningKey,
    verifier: VerifierKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointSigner({})", self.verifier)
    }
}

impl CheckpointSigner {
    /// The signing key kept in `keys`, created (and made durable) the first time.
    ///
    /// # Errors
    /// [`CheckpointError::Key`] when the key store cannot be read or written.
    pub fn from_keys(keys: &KeyStore) -> Result<CheckpointSigner, CheckpointError> {
        let seed = keys
            .key_for(SIGNING_SUBJECT)?
            .ok_or_else(|| CheckpointError::Key(KeyError::Missing(SIGNING_SUBJECT.to_owned())))?;
        Ok(CheckpointSigner::from_seed(seed.secret_bytes()))
    }

    /// The signing key of the key store `store` was opened with.
    ///
    /// # Errors
    /// [`CheckpointError::NoKeyStore`] when the log was opened without a master key.
    pub fn of(store: &AnyStore) -> Result<CheckpointSigner, CheckpointError> {
        let keys = crate::personal::PersonalSealer::of(store)
            .and_then(crate::personal::PersonalSealer::keys)
            .ok_or(CheckpointError::NoKeyStore)?;
        CheckpointSigner::from_keys(keys)
    }

    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> CheckpointSigner {
        let key = SigningKey::from_bytes(seed);
        let verifier = VerifierKey::new(ORIGIN, key.verifying_key());
        CheckpointSigner { key, verifier }
    }

    /// The public half.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// Signs `head` at `time`.
    pub fn sign(&self, head: Head, time: DateTime<Utc>) -> SignedCheckpoint {
        let checkpoint = Checkpoint {
            origin: ORIGIN.to_owned(),
            position: head.position.0,
            hash: head.hash.to_hex(),
            time,
        };
        let text = checkpoint.text(&head.hash);
        let signature = self.key.sign(text.as_bytes());
        let mut sig = self.verifier.id.to_vec();
        sig.extend_from_slice(&signature.to_bytes());
        let note = format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.verifier.name,
            BASE64.encode(sig)
        );
        SignedCheckpoint { checkpoint, note }
    }
}

/// The checkpoints kept in a directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

/// What [`Checkpoints::sign_head`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Signed {
    /// The checkpoint of the head.
    pub checkpoint: SignedCheckpoint,
    /// False when the head was signed already and that checkpoint is returned.
    pub new: bool,
}

impl Checkpoints {
    /// The checkpoints of the log in `data_dir`: `<data_dir>/checkpoints`.
    pub fn in_data_dir(data_dir: &Path) -> Checkpoints {
        Checkpoints {
            dir: data_dir.join("checkpoints"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Signs the log's durable head now and keeps the checkpoint; an unchanged head returns
    /// the checkpoint kept for it.
    ///
    /// # Errors
    /// [`CheckpointError::EmptyLog`], or the checkpoint could not be written.
    pub fn sign_head(
        &self,
        head: Head,
        signer: &CheckpointSigner,
    ) -> Result<Signed, CheckpointError> {
        if head.position == Position::ZERO {
            return Err(CheckpointError::EmptyLog);
        }
        let path = self.dir.join(file_name(head));
        if let Ok(note) = fs::read_to_string(&path) {
            if let Ok(kept) = SignedCheckpoint::verify(&note, signer.verifier()) {
                return Ok(Signed {
                    checkpoint: kept,
                    new: false,
                });
            }
        }
        let signed = signer.sign(head, Utc::now());
        crate::store::create_owner_only(&self.dir).map_err(io(&self.dir))?;
        let temporary = self.dir.join(format!("{}.new", file_name(head)));
        write_synced(&temporary, signed.note.as_bytes())?;
        fs::rename(&temporary, &path).map_err(io(&path))?;
        #[cfg(unix)]
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(Signed {
            checkpoint: signed,
            new: true,
        })
    }

    /// The kept checkpoints, newest first, at most `limit` (capped at
    /// [`CHECKPOINTS_LISTED_MAX`]), each checked with `verifier`; a note that fails is an
    /// error naming its file.
    ///
    /// # Errors
    /// [`CheckpointError::Io`] or a note that does not verify.
    pub fn list(
        &self,
        verifier: &VerifierKey,
        limit: usize,
    ) -> Result<Vec<SignedCheckpoint>, CheckpointError> {
        let mut names: Vec<String> = match fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".note"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        // Names start with the 20-digit position: the newest sort last.
        names.sort_unstable_by(|a, b| b.cmp(a));
        names
            .into_iter()
            .take(limit.min(CHECKPOINTS_LISTED_MAX))
            .map(|name| {
                let path = self.dir.join(&name);
                let note = read_note(&path)?;
                SignedCheckpoint::verify(&note, verifier)
                    .map_err(|e| CheckpointError::Malformed(format!("{}: {e}", path.display())))
            })
            .collect()
    }
}

/// Checkpoints a server signs: where they are kept, with which key, how often.
#[derive(Debug)]
pub struct Checkpointing {
    /// Where they are kept.
    pub kept: Checkpoints,
    /// The log's signing key.
    pub signer: CheckpointSigner,
    /// How often the head is signed when it moved (`None`: only on demand).
    pub every: Option<std::time::Duration>,
}

impl Checkpointing {
    /// Signs `head` on a blocking thread (the checkpoint file is synced).
    ///
    /// # Errors
    /// As [`Checkpoints::sign_head`].
    pub async fn sign(self: &std::sync::Arc<Self>, head: Head) -> Result<Signed, CheckpointError> {
        let this = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || this.kept.sign_head(head, &this.signer))
            .await
            .map_err(|e| CheckpointError::Io {
                path: self.kept.dir.clone(),
                source: std::io::Error::other(format!("the signing task stopped: {e}")),
            })?
    }

    /// The kept checkpoints, newest first (see [`Checkpoints::list`]), read on a blocking
    /// thread.
    ///
    /// # Errors
    /// As [`Checkpoints::list`].
    pub async fn list(
        self: &std::sync::Arc<Self>,
        limit: usize,
    ) -> Result<Vec<SignedCheckpoint>, CheckpointError> {
        let this = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || this.kept.list(this.signer.verifier(), limit))
            .await
            .map_err(|e| CheckpointError::Io {
                path: self.kept.dir.clone(),
                source: std::io::Error::other(format!("the listing task stopped: {e}")),
            })?
    }

    /// Signs the durable head every [`Checkpointing::every`] when it moved, until `stop`
    /// turns true; a failure is logged and tried again at the next tick.
    pub async fn run_schedule(
        self: std::sync::Arc<Self>,
        store: AnyStore,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(every) = self.every else { return };
        let mut signed: Option<Head> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let head = store.head();
            if head.position == Position::ZERO || signed == Some(head) {
                continue;
            }
            match self.sign(head).await {
                Ok(s) => {
                    tracing::info!(position = head.position.0, new = s.new, "checkpoint signed");
                    signed = Some(head);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "signing a checkpoint failed; trying again at the next tick")
                }
            }
        }
    }
}

/// Reads a note file, refusing one larger than a note can be.
///
/// # Errors
/// [`CheckpointError::Io`] or [`CheckpointError::Malformed`].
pub fn read_note(path: &Path) -> Result<String, CheckpointError> {
    let bytes = fs::read(path).map_err(io(path))?;
    if bytes.len() > NOTE_SIZE_MAX_BYTES {
        return Err(CheckpointError::Malformed(format!(
            "{} is {} bytes, larger than a checkpoint note",
            path.display(),
            bytes.len()
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| CheckpointError::Malformed(format!("{} is not UTF-8 text", path.display())))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    use std::io::Write as _;
    let mut file = fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn file_name(head: Head) -> String {
    format!("{:020}-{}.note", head.position.0, &head.hash.to_hex()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(n: u64) -> Head {
        Head {
            position: Position(n),
            hash: ChainHash([u8::try_from(n % 251).unwrap_or(0); 32]),
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_with_the_public_key_alone() {
        let signer = CheckpointSigner::from_seed(&[7; 32]);
        let signed = signer.sign(head(42), Utc::now());
        let printed = signer.verifier().to_string();
        let key: VerifierKey = printed.parse().unwrap();
        assert_eq!(&key, signer.verifier());
        let checked = SignedCheckpoint::verify(&signed.note, &key).unwrap();
        assert_eq!(checked.checkpoint.position, 42);
        assert_eq!(checked.checkpoint.head().unwrap(), head(42));
        assert!(signed.note.starts_with("crm-eventlog\n42\n"));
    }

    #[test]
    fn an_altered_note_or_another_key_is_refused_with_the_reason() {
        let signer = CheckpointSigner::from_seed(&[7; 32]);
        let other = CheckpointSigner::from_seed(&[8; 32]);
        let signed = signer.sign(head(42), Utc::now());
        let moved = signed.note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            SignedCheckpoint::verify(&moved, signer.verifier()),
            Err(CheckpointError::BadSignature { .. })
        ));
        assert!(matches!(
            SignedCheckpoint::verify(&signed.note, other.verifier()),
            Err(CheckpointError::NotSignedBy { .. })
        ));
        let extra = signed.note.replacen("time ", "extra line\ntime ", 1);
        assert!(matches!(
            SignedCheckpoint::verify(&extra, signer.verifier()),
            Err(CheckpointError::Malformed(_))
        ));
        let bad_key = signer.verifier().to_string().replacen('+', "+0", 1);
        assert!(matches!(
            bad_key.parse::<VerifierKey>(),
            Err(CheckpointError::BadKey(_))
        ));
    }

    #[test]
    fn checkpoints_are_kept_once_per_head_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Checkpoints::in_data_dir(dir.path());
        let signer = CheckpointSigner::from_seed(&[9; 32]);
        assert!(matches!(
            kept.sign_head(Head::default(), &signer),
            Err(CheckpointError::EmptyLog)
        ));
        let first = kept.sign_head(head(5), &signer).unwrap();
        assert!(first.new);
        let again = kept.sign_head(head(5), &signer).unwrap();
        assert!(!again.new);
        assert_eq!(again.checkpoint, first.checkpoint);
        kept.sign_head(head(12), &signer).unwrap();
        let listed = kept.list(signer.verifier(), 10).unwrap();
        let positions: Vec<u64> = listed.iter().map(|c| c.checkpoint.position).collect();
        assert_eq!(positions, [12, 5]);
        assert_eq!(kept.list(signer.verifier(), 1).unwrap().len(), 1);
    }
}
