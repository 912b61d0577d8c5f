//! The key store of personal data (crypto-shredding): one data key per data subject
//! (a contact, a lead, an agent), kept apart from the log under `<data_dir>/keys`, each
//! wrapped by the master key; personal fields are sealed with their subject's key, and a
//! subject is erased by destroying its key.
//!
//! - **Files.** A subject's key is the file `<sha256(subject)>.key`: the subject's id
//!   (a stream id such as `contact-c1`, never personal data; 2-byte length, then the bytes),
//!   then the data key sealed by the master key with the subject as associated data (format
//!   version byte, 24-byte nonce, ciphertext). Its erasure leaves `<sha256(subject)>.erased` in its place, so an erased subject
//!   and a lost key file are told apart: the first reads as erased, the second is an error
//!   naming the subject, never a silent erasure.
//! - **Durability.** A key is written to a temporary file, synced, renamed into place and
//!   the directory synced before [`KeyStore::key_for`] returns it, so a key is durable before
//!   any event sealed with it can be appended. Erasure overwrites the key file with zeros,
//!   syncs, writes and syncs the tombstone, removes the key file and syncs the directory.
//! - **Sealing.** [`seal`] and [`open`] use XChaCha20-Poly1305 (RustCrypto) with a
//!   synthetic nonce (see [`seal`]) and the event id and field name as associated data, so a sealed value cannot be
//!   moved to another event or field unnoticed; altered bytes fail authentication
//!   ([`KeyError::Tampered`]), never decrypt to other text.
//!
//! **Architecture Invariant:** no key, wrapped or not, is ever written to the log, a log
//! line or an error message; [`MasterKey`] and [`DataKey`] print as `***`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::envelope::{hex, unhex};

/// Variable holding the master key (64 hex characters), when no file is named.
pub const MASTER_KEY_ENV: &str = "CRM_MASTER_KEY";
/// Bytes of a key.
pub const KEY_BYTES: usize = 32;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 24;
/// Format version of key files and sealed values.
pub const FORMAT_VERSION: u8 = 1;

/// Why a key could not be had, or a value not be sealed or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No master key was given.
    #[error("no master key: personal data is encrypted at rest with keys wrapped by a master key; give it as a file or as {MASTER_KEY_ENV} (64 hex characters, e.g. from `openssl rand -hex 32`), kept apart from the data directory")]
    NoMasterKey,
    /// The master key is not 32 bytes in hex.
    #[error("the master key from {0} is not 64 hex characters (32 bytes)")]
    BadMasterKey(String),
    /// A key file or the master key file could not be read or written.
    #[error("key store {path}: {source}; check the directory exists, is writable by this user and the disk is not full")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file exists but cannot be unwrapped: damaged, or wrapped by another master key.
    #[error("the data key of subject `{0}` cannot be unwrapped: the key file is damaged or was wrapped by another master key; restore the key store from the backup that matches this master key")]
    Damaged(String),
    /// Neither a key nor an erasure is recorded for a subject that has sealed data.
    #[error("the data key of subject `{0}` is missing and no erasure of it is recorded: the key store is incomplete; restore it from backup (a restored key store must be followed by re-applying the erasures recorded in the log)")]
    Missing(String),
    /// A subject id longer than a key file can record.
    #[error("subject id of {0} bytes is longer than the key store accepts (65,535)")]
    SubjectTooLong(usize),
    /// A sealed value failed authentication.
    #[error("a sealed personal field failed authentication (altered, truncated, or moved from another event or field)")]
    Tampered,
    /// The system gave no random bytes.
    #[error("no random bytes for a key or nonce: {0}")]
    Random(getrandom::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
    Ok(bytes)
}

/// The key that wraps every data key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; KEY_BYTES]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// A new random master key.
    ///
    /// # Errors
    /// [`KeyError::Random`].
    pub fn generate() -> Result<MasterKey, KeyError> {
        Ok(MasterKey(random()?))
    }

    /// The key from 64 hex characters (surrounding white space ignored); `from` names the
    /// source in errors.
    ///
    /// # Errors
    /// [`KeyError::BadMasterKey`].
    pub fn from_hex(text: &str, from: &str) -> Result<MasterKey, KeyError> {
        unhex(text.trim())
            .ok()
            .and_then(|bytes| <[u8; KEY_BYTES]>::try_from(bytes).ok())
            .map(MasterKey)
            .ok_or_else(|| KeyError::BadMasterKey(from.to_owned()))
    }

    /// The key from `file` if given, else from `env(MASTER_KEY_ENV)`.
    ///
    /// # Errors
    /// [`KeyError::NoMasterKey`], [`KeyError::Io`], [`KeyError::BadMasterKey`].
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<MasterKey, KeyError> {
        if let Some(file) = file {
            let text = fs::read_to_string(file).map_err(io(file))?;
            return MasterKey::from_hex(&text, &file.display().to_string());
        }
        let text = env(MASTER_KEY_ENV)
            .filter(|t| !t.trim().is_empty())
            .ok_or(KeyError::NoMasterKey)?;
        MasterKey::from_hex(&text, MASTER_KEY_ENV)
    }

    /// The key as hex, to store it in a secret manager.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

/// One subject's data key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; KEY_BYTES]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(***)")
    }
}

impl DataKey {
    /// The key's bytes, for the key store's other uses (the log's signing key is a seed
    /// kept as a data key). Never printed, logged or written outside the key store.
    pub(crate) fn secret_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

/// `FORMAT_VERSION || nonce || ciphertext` of `plaintext` under `cipher` with `aad` and a
/// random nonce.
fn seal_with(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    seal_with_nonce(cipher, random()?, aad, plaintext)
}

fn seal_with_nonce(
    cipher: &XChaCha20Poly1305,
    nonce: [u8; NONCE_BYTES],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| KeyError::Tampered)?;
    let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
    let Some((&version, rest)) = sealed.split_first() else {
        return Err(KeyError::Tampered);
    };
    if version != FORMAT_VERSION || rest.len() < NONCE_BYTES {
        return Err(KeyError::Tampered);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| KeyError::Tampered)
}

fn field_aad(event_id: Uuid, field: &str) -> Vec<u8> {
    let mut aad = event_id.as_bytes().to_vec();
    aad.extend_from_slice(field.as_bytes());
    aad
}

/// Seals `plaintext`, the value of `field` of event `event_id`, with `key`.
///
/// The nonce is synthetic: a keyed BLAKE3 hash (under a key derived from `key`) of the
/// associated data and the plaintext. Sealing the same value of the same event twice gives
/// the same bytes, so a resent append stays idempotent by event id; two different values
/// never share a nonce (short of a 192-bit collision), so nonce reuse cannot happen.
///
/// # Errors
/// [`KeyError::Tampered`] only if the cipher refuses the input (it does not for these sizes).
pub fn seal(
    key: &DataKey,
    event_id: Uuid,
    field: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let aad = field_aad(event_id, field);
    let nonce_key = blake3::derive_key("crm-eventlog personal-field nonce v1", &key.0);
    let mut hasher = blake3::Hasher::new_keyed(&nonce_key);
    hasher.update(&u64::try_from(aad.len()).unwrap_or(u64::MAX).to_le_bytes());
    hasher.update(&aad);
    hasher.update(plaintext);
    let mut nonce = [0u8; NONCE_BYTES];
    hasher.finalize_xof().fill(&mut nonce);
    seal_with_nonce(
        &XChaCha20Poly1305::new(&key.0.into()),
        nonce,
        &aad,
        plaintext,
    )
}

/// Opens what [`seal`] sealed for the same event and field.
///
/// # Errors
/// [`KeyError::Tampered`] when the bytes were altered or belong to another event, field or
/// key.
pub fn open(
    key: &DataKey,
    event_id: Uuid,
    field: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, KeyError> {
    open_with(
        &XChaCha20Poly1305::new(&key.0.into()),
        &field_aad(event_id, field),
        sealed,
    )
}

/// What the store knows of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectKey {
    /// Its data key.
    Key(DataKey),
    /// It was erased: its key is gone for good.
    Erased,
}

/// The data keys of every subject, in a directory of their own.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
    master: MasterKey,
}

impl KeyStore {
    /// Opens (creating, owner-only) the key store in `dir`.
    ///
    /// # Errors
    /// [`KeyError::Io`].
    pub fn open(dir: &Path, master: MasterKey) -> Result<KeyStore, KeyError> {
        crate::store::create_owner_only(dir).map_err(io(dir))?;
        Ok(KeyStore {
            dir: dir.to_owned(),
            master,
        })
    }

    /// The key store in `dir` without creating it (a reader's view: a missing directory
    /// makes every subject's key missing, an error, never an erasure).
    #[must_use]
    pub fn open_existing(dir: &Path, master: MasterKey) -> KeyStore {
        KeyStore {
            dir: dir.to_owned(),
            master,
        }
    }

    /// The directory holding the key files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many subjects have a key and how many were erased in the key store at `dir` (no
    /// master key needed); the log's signing key is not counted.
    ///
    /// # Errors
    /// [`KeyError::Io`] when the directory cannot be listed.
    pub fn count(dir: &Path) -> Result<(usize, usize), KeyError> {
        let (mut keys, mut erased) = (0usize, 0usize);
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(io(dir)(e)),
        };
        // The log's checkpoint signing key lives here too; it is not a data subject's.
        let signing = hex(&Sha256::digest(
            crate::checkpoint::SIGNING_SUBJECT.as_bytes(),
        ));
        for entry in entries {
            let path = entry.map_err(io(dir))?.path();
            if path.file_stem().and_then(|s| s.to_str()) == Some(signing.as_str()) {
                continue;
            }
            match path.extension().and_then(|e| e.to_str()) {
                Some("key") => keys = keys.saturating_add(1),
                Some("erased") => erased = erased.saturating_add(1),
                _ => {}
            }
        }
        Ok((keys, erased))
    }

    fn file(&self, subject: &str, extension: &str) -> PathBuf {
        self.dir.join(format!(
            "{}.{extension}",
            hex(&Sha256::digest(subject.as_bytes()))
        ))
    }

    /// The subject's key, its erasure, or an error when neither is recorded or the key file
    /// cannot be unwrapped.
    ///
    /// # Errors
    /// [`KeyError::Missing`], [`KeyError::Damaged`], [`KeyError::Io`].
    pub fn get(&self, subject: &str) -> Result<SubjectKey, KeyError> {
        let path = self.file(subject, "key");
        match fs::read(&path) {
            Ok(file) => unwrap_key_file(&self.master, &file)
                .filter(|(stored, _)| stored == subject)
                .map(|(_, key)| SubjectKey::Key(key))
                .ok_or_else(|| KeyError::Damaged(subject.to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.file(subject, "erased").exists() {
                    Ok(SubjectKey::Erased)
                } else {
                    Err(KeyError::Missing(subject.to_owned()))
                }
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The subject's key, created and made durable first if it has none. `None` when the
    /// subject was erased (new personal data for it must be refused).
    ///
    /// # Errors
    /// [`KeyError::Damaged`], [`KeyError::Io`], [`KeyError::Random`].
    pub fn key_for(&self, subject: &str) -> Result<Option<DataKey>, KeyError> {
        match self.get(subject) {
            Ok(SubjectKey::Key(key)) => return Ok(Some(key)),
            Ok(SubjectKey::Erased) => return Ok(None),
            Err(KeyError::Missing(_)) => {}
            Err(e) => return Err(e),
        }
        let key = DataKey(random()?);
        let file = key_file(&self.master, subject, &key)?;
        let path = self.file(subject, "key");
        // A temporary name of this attempt alone, then a link that fails if the key exists:
        // of two writers creating the same subject's key at once (threads or processes
        // sharing the key store), one wins and the other uses the winner's key, so no event
        // is ever sealed with a key that is not the one kept.
        let temporary = self.file(subject, &format!("new-{}", hex(&random::<8>()?)));
        write_synced(&temporary, &file)?;
        let linked = fs::hard_link(&temporary, &path);
        let removed = fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                removed.map_err(io(&temporary))?;
                self.sync_dir()?;
                Ok(Some(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match self.get(subject)? {
                SubjectKey::Key(key) => Ok(Some(key)),
                SubjectKey::Erased => Ok(None),
            },
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Destroys the subject's key for good and records the erasure. `false` when it was
    /// already erased.
    ///
    /// # Errors
    /// [`KeyError::Io`].
    pub fn erase(&self, subject: &str) -> Result<bool, KeyError> {
        let tombstone = self.file(subject, "erased");
        if tombstone.exists() {
            return Ok(false);
        }
        let path = self.file(subject, "key");
        if let Ok(meta) = fs::metadata(&path) {
            let zeros = vec![0u8; usize::try_from(meta.len()).unwrap_or(0)];
            let mut file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            file.write_all(&zeros).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        write_synced(&tombstone, b"erased\n")?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        self.sync_dir()?;
        Ok(true)
    }

    /// Re-wraps every data key under `new_master` (master-key rotation); the number of keys.
    /// Each file is replaced durably; an interruption leaves every key readable by one of
    /// the two master keys, and running it again finishes the job.
    ///
    /// # Errors
    /// [`KeyError::Damaged`] for a key neither master key unwraps, [`KeyError::Io`].
    pub fn rewrap(&mut self, new_master: MasterKey) -> Result<usize, KeyError> {
        let mut count = 0usize;
        let entries = fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("key") {
                continue;
            }
            let name = path.display().to_string();
            let file = fs::read(&path).map_err(io(&path))?;
            // Already under the new key when an earlier rotation was interrupted.
            let (subject, key) = unwrap_key_file(&self.master, &file)
                .or_else(|| unwrap_key_file(&new_master, &file))
                .ok_or(KeyError::Damaged(name))?;
            let rewrapped = key_file(&new_master, &subject, &key)?;
            let temporary = path.with_extension("key.new");
            write_synced(&temporary, &rewrapped)?;
            fs::rename(&temporary, &path).map_err(io(&path))?;
            count = count.saturating_add(1);
        }
        self.sync_dir()?;
        self.master = new_master;
        Ok(count)
    }

    fn sync_dir(&self) -> Result<(), KeyError> {
        #[cfg(unix)]
        {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(())
    }
}

/// The bytes of a key file: the subject, then the key sealed by `master`.
fn key_file(master: &MasterKey, subject: &str, key: &DataKey) -> Result<Vec<u8>, KeyError> {
    let length =
        u16::try_from(subject.len()).map_err(|_| KeyError::SubjectTooLong(subject.len()))?;
    let mut out = length.to_be_bytes().to_vec();
    out.extend_from_slice(subject.as_bytes());
    out.extend_from_slice(&seal_with(&master.cipher(), subject.as_bytes(), &key.0)?);
    Ok(out)
}

/// The subject and key of a key file, when `master` unwraps it.
fn unwrap_key_file(master: &MasterKey, file: &[u8]) -> Option<(String, DataKey)> {
    let (length, rest) = file.split_first_chunk::<2>()?;
    let length = usize::from(u16::from_be_bytes(*length));
    if rest.len() < length {
        return None;
    }
    let (subject, sealed) = rest.split_at(length);
    let subject = std::str::from_utf8(subject).ok()?;
    let key = open_with(&master.cipher(), subject.as_bytes(), sealed).ok()?;
    Some((
        subject.to_owned(),
        DataKey(<[u8; KEY_BYTES]>::try_from(key).ok()?),
    ))
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> KeyStore {
        KeyStore::open(&dir.join("keys"), MasterKey::generate().unwrap()).unwrap()
    }

    /// Every file under `dir`, read whole.
    fn every_file(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(every_file(&path));
            } else {
                out.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_sealed_field_opens_only_for_its_event_field_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = store(dir.path());
        let key = keys.key_for("contact-c1").unwrap().unwrap();
        let event = Uuid::now_v7();
        let sealed = seal(&key, event, "personal", b"Ada Lovelace").unwrap();
        assert!(!contains(&sealed, b"Ada"));
        assert_eq!(
            open(&key, event, "personal", &sealed).unwrap(),
            b"Ada Lovelace"
        );
        assert!(matches!(
            open(&key, Uuid::now_v7(), "personal", &sealed),
            Err(KeyError::Tampered)
        ));
        assert!(matches!(
            open(&key, event, "other", &sealed),
            Err(KeyError::Tampered)
        ));
        let other = keys.key_for("contact-c2").unwrap().unwrap();
        assert!(matches!(
            open(&other, event, "personal", &sealed),
            Err(KeyError::Tampered)
        ));
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 0x01;
            assert!(
                matches!(
                    open(&key, event, "personal", &altered),
                    Err(KeyError::Tampered)
                ),
                "byte {i}"
            );
        }
        assert!(matches!(
            open(&key, event, "personal", &sealed[..10]),
            Err(KeyError::Tampered)
        ));
        // Sealing is deterministic per event, field and value (resent appends stay
        // idempotent), and a different value or event never reuses the nonce.
        assert_eq!(
            seal(&key, event, "personal", b"Ada Lovelace").unwrap(),
            sealed
        );
        let nonce = |s: &[u8]| s[1..=NONCE_BYTES].to_vec();
        let other_value = seal(&key, event, "personal", b"Ada King").unwrap();
        let other_event = seal(&key, Uuid::now_v7(), "personal", b"Ada Lovelace").unwrap();
        assert_ne!(nonce(&other_value), nonce(&sealed));
        assert_ne!(nonce(&other_event), nonce(&sealed));
    }

    #[test]
    fn a_key_is_kept_across_opens_and_erasure_leaves_no_trace_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate().unwrap();
        let keys = KeyStore::open(&dir.path().join("keys"), master.clone()).unwrap();
        let first = keys.key_for("contact-c1").unwrap().unwrap();
        let kept = keys.key_for("contact-c2").unwrap().unwrap();
        let reopened = KeyStore::open(&dir.path().join("keys"), master.clone()).unwrap();
        assert_eq!(reopened.key_for("contact-c1").unwrap(), Some(first.clone()));
        let wrapped = fs::read(reopened.file("contact-c1", "key")).unwrap();

        assert!(reopened.erase("contact-c1").unwrap());
        assert!(
            !reopened.erase("contact-c1").unwrap(),
            "a second erasure changes nothing"
        );
        assert_eq!(reopened.get("contact-c1").unwrap(), SubjectKey::Erased);
        assert_eq!(
            reopened.key_for("contact-c1").unwrap(),
            None,
            "no new key for an erased subject"
        );
        for (path, bytes) in every_file(dir.path()) {
            assert!(
                !contains(&bytes, &first.0),
                "{} holds the erased key",
                path.display()
            );
            assert!(
                !contains(&bytes, &wrapped[2 + "contact-c1".len()..]),
                "{} holds the wrapped key",
                path.display()
            );
        }
        assert_eq!(reopened.get("contact-c2").unwrap(), SubjectKey::Key(kept));
    }

    #[test]
    fn a_lost_or_damaged_key_is_an_error_naming_the_subject_never_an_erasure() {
        let dir = tempfile::tempdir().unwrap();
        let keys = store(dir.path());
        keys.key_for("lead-l1").unwrap();
        keys.key_for("lead-l2").unwrap();
        fs::remove_file(keys.file("lead-l1", "key")).unwrap();
        let missing = keys.get("lead-l1").unwrap_err();
        assert!(
            matches!(&missing, KeyError::Missing(s) if s == "lead-l1"),
            "{missing}"
        );
        let path = keys.file("lead-l2", "key");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let damaged = keys.get("lead-l2").unwrap_err();
        assert!(
            matches!(&damaged, KeyError::Damaged(s) if s == "lead-l2"),
            "{damaged}"
        );
        // Another master key cannot unwrap, and says so.
        keys.key_for("agent-a1").unwrap();
        let other = KeyStore::open(&keys.dir, MasterKey::generate().unwrap()).unwrap();
        assert!(matches!(other.get("agent-a1"), Err(KeyError::Damaged(_))));
    }

    #[test]
    fn writers_creating_one_subjects_key_at_once_all_get_the_kept_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = store(dir.path());
        let got: Vec<DataKey> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| keys.key_for("lead-race").unwrap().unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let kept = match keys.get("lead-race").unwrap() {
            SubjectKey::Key(key) => key,
            SubjectKey::Erased => panic!("not erased"),
        };
        assert!(got.iter().all(|k| *k == kept));
        // No temporary file is left behind.
        assert_eq!(every_file(dir.path()).len(), 1);
    }

    #[test]
    fn rotating_the_master_key_keeps_every_data_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = store(dir.path());
        let a = keys.key_for("contact-a").unwrap().unwrap();
        let b = keys.key_for("contact-b").unwrap().unwrap();
        keys.erase("contact-b").unwrap();
        let new_master = MasterKey::generate().unwrap();
        assert_eq!(keys.rewrap(new_master.clone()).unwrap(), 1);
        let reopened = KeyStore::open(&keys.dir, new_master).unwrap();
        assert_eq!(reopened.get("contact-a").unwrap(), SubjectKey::Key(a));
        assert_eq!(reopened.get("contact-b").unwrap(), SubjectKey::Erased);
        assert_ne!(SubjectKey::Key(b), reopened.get("contact-b").unwrap());
    }

    #[test]
    fn the_master_key_comes_from_a_file_or_the_environment_and_never_prints() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate().unwrap();
        let file = dir.path().join("master.key");
        fs::write(&file, format!("{}\n", master.to_hex())).unwrap();
        assert_eq!(MasterKey::load(Some(&file), |_| None).unwrap(), master);
        let hex_text = master.to_hex();
        assert_eq!(
            MasterKey::load(None, |k| (k == MASTER_KEY_ENV).then(|| hex_text.clone())).unwrap(),
            master
        );
        assert!(matches!(
            MasterKey::load(None, |_| None),
            Err(KeyError::NoMasterKey)
        ));
        assert!(KeyError::NoMasterKey.to_string().contains(MASTER_KEY_ENV));
        assert!(matches!(
            MasterKey::load(None, |_| Some("abc".into())),
            Err(KeyError::BadMasterKey(_))
        ));
        assert_eq!(format!("{master:?}"), "MasterKey(***)");
        assert!(!format!("{master:?}").contains(&master.to_hex()));
    }
}
