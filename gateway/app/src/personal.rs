//! Personal data at rest and on the way out: the [`PersonalSealer`] every append of the log
//! passes through, and [`as_seen`], the one function every read path shows an event with.
//!
//! - **Writing.** An event whose payload holds a plain `personal` value (see
//!   [`crm_domain::personal`]) is rewritten before it reaches the log: the value's JSON is
//!   sealed with the data key of the event's stream (its data subject, e.g. `contact-c1`),
//!   created and made durable first if the subject has none, and stored as
//!   `{"sealed_with": SUBJECT, "ciphertext": BASE64}`. The rest of the payload keeps its bytes
//!   and order. A sealed value is accepted only if it opens with this key store (a resent or
//!   replicated event); a subject whose key was destroyed takes no new personal data.
//! - **Erasing.** Once an erasure event ([`crm_domain::personal::SUBJECTS`]) is durable, the
//!   subject's key is destroyed. [`PersonalSealer::reconcile`] replays the erasures recorded
//!   since its checkpoint when the log is opened, so an erasure whose key destruction was
//!   interrupted, or undone by restoring an older key store, is applied again before anything
//!   is read.
//! - **Reading.** [`as_seen`] shows a sealed value opened for a reader allowed to see
//!   personal data, [`Marker::Erased`] once the key is destroyed, [`Marker::Masked`] for a
//!   reader without the permission and [`Marker::Sealed`] when no master key was given. A
//!   value that fails authentication, or whose key is missing or damaged, is an error naming
//!   the event's position and subject: never text, never a silent "erased".
//!
//! **Architecture Invariant:** nothing here logs or returns a personal value except
//! [`as_seen`] for a reader allowed to see it; the broker, the projections and their
//! snapshots only ever get the stored (sealed) form, which domain decoding reads as `None`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use crm_domain::personal::{is_erasure, Marker, SealedPersonalData, StoredPersonalData};
use crm_domain::PERSONAL_DATA_FIELD;
use crm_eventstore::{
    record_at, AnyStore, Corruption, EventStore, Position, ProposedEvent, ReadError, RecordedEvent,
    SealPlan, SealRefusal, Sealer, StreamId,
};
use serde::de::{MapAccess, Visitor};
use serde::Deserializer as _;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::keys::{self, DataKey, KeyError, KeyStore, SubjectKey};

/// Unwrapped data keys kept in memory, at most; the cache is emptied when it is full.
const KEY_CACHE_ENTRIES_MAX: usize = 65_536;
/// Events read per page while reconciling erasures.
const RECONCILE_PAGE_EVENTS: usize = 1024;
/// File of the key store recording up to where the log's erasures were applied.
const RECONCILED_FILE: &str = "erasures.reconciled";

/// Why an event could not be shown: its sealed personal value is unreadable.
#[derive(Debug, thiserror::Error)]
#[error("event at position {position} of stream `{stream}`: {source}")]
pub struct RevealError {
    /// The event's position.
    pub position: u64,
    /// The event's stream (the data subject).
    pub stream: String,
    /// What is wrong with the key or the sealed bytes.
    #[source]
    pub source: KeyError,
}

/// Why the key store could not be brought in line with the log's erasures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The log could not be read.
    #[error("reading the log's erasures failed: {0}")]
    Read(#[from] ReadError),
    /// A key could not be destroyed.
    #[error(
        "applying the erasure of `{subject}` recorded at position {position} failed: {source}"
    )]
    Erase {
        /// The subject.
        subject: String,
        /// The erasure event's position.
        position: u64,
        /// Why.
        #[source]
        source: KeyError,
    },
}

/// The sealer of personal fields (see the module docs). Without a key store (no master key
/// was given) it seals nothing: an event with plain personal data is refused, and sealed
/// values are shown as [`Marker::Sealed`].
pub struct PersonalSealer {
    keys: Option<KeyStore>,
    cache: Mutex<HashMap<String, DataKey>>,
}

impl fmt::Debug for PersonalSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PersonalSealer")
            .field("keys", &self.keys.as_ref().map(KeyStore::dir))
            .finish_non_exhaustive()
    }
}

impl PersonalSealer {
    /// A sealer over `keys` (`None`: no master key was given).
    #[must_use]
    pub fn new(keys: Option<KeyStore>) -> PersonalSealer {
        PersonalSealer {
            keys,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The sealer set on `store`, if it is one.
    #[must_use]
    pub fn of(store: &AnyStore) -> Option<&PersonalSealer> {
        store
            .sealer()
            .and_then(|s| s.as_any().downcast_ref::<PersonalSealer>())
    }

    /// The key store, `None` without a master key.
    #[must_use]
    pub fn keys(&self) -> Option<&KeyStore> {
        self.keys.as_ref()
    }

    fn cached(&self, subject: &str) -> Option<DataKey> {
        self.cache.lock().ok()?.get(subject).cloned()
    }

    fn remember(&self, subject: &str, key: &DataKey) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= KEY_CACHE_ENTRIES_MAX {
                cache.clear();
            }
            cache.insert(subject.to_owned(), key.clone());
        }
    }

    /// What the key store knows of `subject`.
    fn subject_key(&self, keys: &KeyStore, subject: &str) -> Result<SubjectKey, KeyError> {
        if let Some(key) = self.cached(subject) {
            return Ok(SubjectKey::Key(key));
        }
        let known = keys.get(subject)?;
        if let SubjectKey::Key(key) = &known {
            self.remember(subject, key);
        }
        Ok(known)
    }

    /// Destroys `subject`'s key; `false` when it was already erased.
    ///
    /// # Errors
    /// [`KeyError::NoMasterKey`] without a key store, [`KeyError::Io`].
    pub fn erase(&self, subject: &str) -> Result<bool, KeyError> {
        let keys = self.keys.as_ref().ok_or(KeyError::NoMasterKey)?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(subject);
        }
        let erased = keys.erase(subject)?;
        if erased {
            tracing::info!(subject, "personal data key destroyed");
            metrics::counter!("crm_personal_keys_destroyed_total").increment(1);
        }
        Ok(erased)
    }

    /// Whether `subject` was erased (its key destroyed).
    fn is_erased(&self, subject: &str) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|keys| matches!(self.subject_key(keys, subject), Ok(SubjectKey::Erased)))
    }

    fn seal_event(&self, stream: &StreamId, event: &mut ProposedEvent) -> Result<(), SealRefusal> {
        let Some((mut entries, at)) = personal_entry(&event.payload) else {
            return Ok(());
        };
        let subject = stream.as_str();
        let Ok(stored) = serde_json::from_str::<StoredPersonalData>(entries[at].1.get()) else {
            // Not a personal value at all: the domain refuses such payloads; the log
            // stores what it is given.
            return Ok(());
        };
        let keys = self.keys.as_ref();
        match stored {
            StoredPersonalData::Withheld(_) => Ok(()),
            StoredPersonalData::Sealed(sealed) => {
                let opened = keys
                    .ok_or(KeyError::NoMasterKey)
                    .and_then(|keys| self.open(keys, event.event_id.0, subject, &sealed));
                match opened {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(SealRefusal::refused(format!(
                        "event {} carries personal data of `{subject}`, whose key was destroyed (erased); leave its personal field out",
                        event.event_id
                    ))),
                    Err(e) => Err(SealRefusal::refused(format!(
                        "event {} carries personal data sealed with a key this key store does not hold ({e}); export it revealed (`crm events --json` with the master key) or leave its personal field out",
                        event.event_id
                    ))),
                }
            }
            StoredPersonalData::Plain(_) => {
                let keys =
                    keys.ok_or_else(|| SealRefusal::refused(KeyError::NoMasterKey.to_string()))?;
                // The cached key, else the key store's (created and made durable if the
                // subject has none yet).
                let key = match self.cached(subject) {
                    Some(key) => key,
                    None => {
                        let key = keys
                            .key_for(subject)
                            .map_err(|e| SealRefusal::unavailable(e.to_string()))?
                            .ok_or_else(|| {
                                SealRefusal::refused(format!(
                                    "the personal data of `{subject}` was erased; it takes no new personal data (record a new {} instead)",
                                    stream.category()
                                ))
                            })?;
                        self.remember(subject, &key);
                        key
                    }
                };
                let plaintext = entries[at].1.get().as_bytes();
                let ciphertext = keys::seal(&key, event.event_id.0, PERSONAL_DATA_FIELD, plaintext)
                    .map_err(|e| SealRefusal::unavailable(e.to_string()))?;
                let sealed = SealedPersonalData {
                    sealed_with: subject.to_owned(),
                    ciphertext: base64::engine::general_purpose::STANDARD.encode(ciphertext),
                };
                entries[at].1 = serde_json::value::to_raw_value(&sealed)
                    .map_err(|e| SealRefusal::refused(format!("sealing failed: {e}")))?;
                event.payload = write_object(&entries);
                Ok(())
            }
        }
    }

    /// The plain JSON of `sealed`, `None` when its subject was erased.
    fn open(
        &self,
        keys: &KeyStore,
        event_id: Uuid,
        subject: &str,
        sealed: &SealedPersonalData,
    ) -> Result<Option<Box<RawValue>>, KeyError> {
        if sealed.sealed_with != subject {
            return Err(KeyError::Tampered);
        }
        let key = match self.subject_key(keys, subject)? {
            SubjectKey::Key(key) => key,
            SubjectKey::Erased => return Ok(None),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| KeyError::Tampered)?;
        let plain = keys::open(&key, event_id, PERSONAL_DATA_FIELD, &bytes)?;
        let text = String::from_utf8(plain).map_err(|_| KeyError::Tampered)?;
        RawValue::from_string(text)
            .map(Some)
            .map_err(|_| KeyError::Tampered)
    }

    /// Destroys the key of every subject whose erasure the log records after the key
    /// store's checkpoint (all of them when the checkpoint does not match this log), then
    /// moves the checkpoint to the head. The number of keys destroyed.
    ///
    /// A damaged record does not stop the open (the damage is for the reads, `crm verify`
    /// and `crm serve` to report, with its position): it is skipped with an error in the
    /// log, the records around it are reconciled, and the checkpoint stays where it was, so
    /// that the first open after the log is restored reads that record too.
    ///
    /// # Errors
    /// [`ReconcileError`]; the checkpoint then stays where it was.
    pub async fn reconcile(&self, store: &AnyStore) -> Result<usize, ReconcileError> {
        let Some(keys) = self.keys.as_ref() else {
            return Ok(0);
        };
        // No key store at all (a reader of a copy without one): no key to destroy.
        if !keys.dir().exists() {
            return Ok(0);
        }
        let checkpoint = keys.dir().join(RECONCILED_FILE);
        let mut next = Position::FIRST;
        if let Some((position, hash)) = read_checkpoint(&checkpoint) {
            match record_at(store, Position(position)).await {
                Ok(Some(record)) if record.hash.to_hex() == hash => {
                    next = Position(position.saturating_add(1));
                }
                Ok(_) | Err(ReadError::Corrupt { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let head = store.head();
        let mut destroyed = 0usize;
        let mut damaged = None;
        while next <= head.position {
            let page = match store.read_all(next, RECONCILE_PAGE_EVENTS).await {
                Ok(page) => page,
                Err(ReadError::Corrupt { position, reason }) => {
                    tracing::error!(
                        position = position.0,
                        %reason,
                        "the log is damaged: the record at this position cannot be read, so an erasure it may record is not applied; restore the log from a replica or backup"
                    );
                    damaged.get_or_insert(position);
                    // The records before the damaged one, in this page.
                    let before = usize::try_from(position.0.saturating_sub(next.0))
                        .unwrap_or(RECONCILE_PAGE_EVENTS)
                        .min(RECONCILE_PAGE_EVENTS);
                    let page = if before > 0 {
                        store.read_all(next, before).await?
                    } else {
                        Vec::new()
                    };
                    destroyed = destroyed.saturating_add(self.apply_erasures(&page)?);
                    // Go on after the damage: past the records it makes unreadable when the
                    // store says how far that is, else past the damaged record; never back.
                    let past = match &reason {
                        Corruption::Unreadable {
                            next_readable: Some(readable),
                            ..
                        } => *readable,
                        Corruption::Unreadable {
                            next_readable: None,
                            ..
                        } => break,
                        _ => Position(position.0.saturating_add(1)),
                    };
                    next = match page.last() {
                        Some(last) if last.position.next() < Some(position) => {
                            Position(last.position.0.saturating_add(1))
                        }
                        _ if past > next => past,
                        // The store named damage behind where this read started: no way on.
                        _ => break,
                    };
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let Some(last) = page.last() else { break };
            next = Position(last.position.0.saturating_add(1));
            destroyed = destroyed.saturating_add(self.apply_erasures(&page)?);
        }
        if head.position > Position::ZERO && damaged.is_none() {
            let line = format!("{} {}\n", head.position.0, head.hash.to_hex());
            // A read-only key store (a backup being checked) keeps its checkpoint: the next
            // open scans again, which is slower but still right.
            if let Err(e) = keys::write_synced(&checkpoint, line.as_bytes()) {
                tracing::debug!(error = %e, "erasure checkpoint not written");
            }
        }
        Ok(destroyed)
    }

    /// Destroys the key of every subject whose erasure `page` holds; the number destroyed.
    fn apply_erasures(&self, page: &[RecordedEvent]) -> Result<usize, ReconcileError> {
        let mut destroyed = 0usize;
        for event in page.iter().filter(|e| is_erasure(&e.event_type)) {
            let subject = event.stream_id.as_str();
            if self
                .erase(subject)
                .map_err(|source| ReconcileError::Erase {
                    subject: subject.to_owned(),
                    position: event.position.0,
                    source,
                })?
            {
                destroyed = destroyed.saturating_add(1);
                tracing::warn!(
                    subject,
                    position = event.position.0,
                    "an erasure recorded in the log still had its key (interrupted erasure or restored key store); key destroyed"
                );
            }
        }
        Ok(destroyed)
    }
}

impl Sealer for PersonalSealer {
    fn plan(&self, events: &[ProposedEvent]) -> SealPlan {
        SealPlan {
            seal: events.iter().any(|e| holds_personal_object(&e.payload)),
            after_append: events.iter().any(|e| is_erasure(&e.event_type)),
        }
    }

    fn seal(&self, stream: &StreamId, events: &mut [ProposedEvent]) -> Result<(), SealRefusal> {
        events
            .iter_mut()
            .try_for_each(|event| self.seal_event(stream, event))
    }

    fn appended(&self, stream: &StreamId, events: &[ProposedEvent]) -> Result<(), SealRefusal> {
        if !events.iter().any(|e| is_erasure(&e.event_type)) {
            return Ok(());
        }
        self.erase(stream.as_str()).map(|_| ()).map_err(|e| {
            SealRefusal::unavailable(format!(
                "the erasure of `{stream}` is recorded in the log, but its key could not be destroyed yet ({e}); resend the erasure (it is idempotent), or restart: opening the log applies recorded erasures"
            ))
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// How a reader is shown personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Opened, for a reader allowed to see personal data.
    Reveal,
    /// [`Marker::Masked`] in place of every personal value.
    Mask,
}

impl Visibility {
    /// [`Visibility::Reveal`] when `may_read` is set, else [`Visibility::Mask`].
    #[must_use]
    pub fn allowed(may_read: bool) -> Visibility {
        if may_read {
            Visibility::Reveal
        } else {
            Visibility::Mask
        }
    }
}

/// `event` as a reader of `visibility` on `store` sees it: its personal value opened,
/// marked erased, masked or marked sealed (see the module docs); borrowed unless changed.
/// A changed copy keeps the stored checksum and hashes, which describe the stored bytes.
///
/// # Errors
/// [`RevealError`] when a sealed value fails authentication or its key is missing or
/// damaged.
pub fn as_seen<'a>(
    store: &AnyStore,
    event: &'a RecordedEvent,
    visibility: Visibility,
) -> Result<Cow<'a, RecordedEvent>, RevealError> {
    if !holds_personal_field(&event.payload) {
        return Ok(Cow::Borrowed(event));
    }
    let Some((mut entries, at)) = personal_entry(&event.payload) else {
        return Ok(Cow::Borrowed(event));
    };
    let Ok(stored) = serde_json::from_str::<StoredPersonalData>(entries[at].1.get()) else {
        return Ok(Cow::Borrowed(event));
    };
    let sealer = PersonalSealer::of(store);
    let subject = event.stream_id.as_str();
    let shown: Option<Box<RawValue>> = match (stored, visibility) {
        (StoredPersonalData::Withheld(_), _) => None,
        (_, Visibility::Mask) => Some(marker(Marker::Masked)),
        (StoredPersonalData::Plain(_), Visibility::Reveal) => sealer
            .filter(|s| s.is_erased(subject))
            .map(|_| marker(Marker::Erased)),
        (StoredPersonalData::Sealed(sealed), Visibility::Reveal) => {
            match sealer.and_then(|s| s.keys.as_ref().map(|k| (s, k))) {
                None => Some(marker(Marker::Sealed)),
                Some((sealer, keys)) => {
                    let opened = sealer
                        .open(keys, event.event_id.0, subject, &sealed)
                        .map_err(|source| RevealError {
                            position: event.position.0,
                            stream: subject.to_owned(),
                            source,
                        })?;
                    Some(opened.unwrap_or_else(|| marker(Marker::Erased)))
                }
            }
        }
    };
    let Some(shown) = shown else {
        return Ok(Cow::Borrowed(event));
    };
    entries[at].1 = shown;
    let mut copy = event.clone();
    copy.payload = write_object(&entries);
    Ok(Cow::Owned(copy))
}

/// [`as_seen`] on `store` with `visibility`, as a function of the event alone.
pub fn shown_by(
    store: &AnyStore,
    visibility: Visibility,
) -> impl for<'e> Fn(&'e RecordedEvent) -> Result<Cow<'e, RecordedEvent>, RevealError> + '_ {
    move |event| as_seen(store, event, visibility)
}

fn marker(marker: Marker) -> Box<RawValue> {
    // A marker is a fixed ASCII string: its JSON is always valid.
    RawValue::from_string(format!("\"{}\"", marker.as_str()))
        .unwrap_or_else(|_| RawValue::NULL.to_owned())
}

const FIELD_NEEDLE: &[u8] = b"\"personal\"";

/// The offsets just after each `"personal"` in `payload`.
fn after_field_names(payload: &[u8]) -> impl Iterator<Item = usize> + '_ {
    payload
        .windows(FIELD_NEEDLE.len())
        .enumerate()
        .filter(|(_, w)| *w == FIELD_NEEDLE)
        .map(|(i, _)| i + FIELD_NEEDLE.len())
}

/// Whether `payload` may hold a personal value as an object (plain or sealed): a
/// `"personal"` key followed, across any white space, by `:` and `{`. Cheap; it errs on the
/// side of sealing (the seal step parses the payload).
fn holds_personal_object(payload: &[u8]) -> bool {
    after_field_names(payload).any(|at| {
        let mut rest = payload[at..]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace());
        rest.next() == Some(b':') && rest.next() == Some(b'{')
    })
}

/// Whether `payload` may hold a personal field at all; cheap.
fn holds_personal_field(payload: &[u8]) -> bool {
    after_field_names(payload).next().is_some()
}

/// The top-level entries of a JSON object payload, in order, with the index of its
/// non-null `personal` entry; `None` when there is none (or the payload is no object).
fn personal_entry(payload: &[u8]) -> Option<(Entries, usize)> {
    let entries = parse_object(payload)?;
    let at = entries
        .iter()
        .position(|(k, v)| k == PERSONAL_DATA_FIELD && v.get() != "null")?;
    Some((entries, at))
}

/// The top-level entries of a JSON object, in order, each value as its exact JSON text.
type Entries = Vec<(String, Box<RawValue>)>;

fn parse_object(payload: &[u8]) -> Option<Entries> {
    struct EntriesVisitor;
    impl<'de> Visitor<'de> for EntriesVisitor {
        type Value = Entries;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let entries = (&mut de).deserialize_map(EntriesVisitor).ok()?;
    de.end().ok()?;
    Some(entries)
}

/// The compact JSON object of `entries`, in their order.
fn write_object(entries: &[(String, Box<RawValue>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        entries
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>()
            + 2,
    );
    out.push(b'{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Serializing a string into a Vec cannot fail.
        if serde_json::to_writer(&mut out, key).is_err() {
            out.extend_from_slice(b"\"\"");
        }
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    out
}

fn read_checkpoint(path: &PathBuf) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (position, hash) = text.trim().split_once(' ')?;
    Some((position.parse().ok()?, hash.to_owned()))
}

/// The sealer for a log opened with `master` (or none) over the key store in `dir`;
/// `create` makes the directory when it is missing.
///
/// # Errors
/// [`KeyError::Io`] when the directory cannot be created.
pub fn sealer(
    dir: &std::path::Path,
    master: Option<keys::MasterKey>,
    create: bool,
) -> Result<Arc<PersonalSealer>, KeyError> {
    let keys = match master {
        Some(master) if create => Some(KeyStore::open(dir, master)?),
        Some(master) => Some(KeyStore::open_existing(dir, master)),
        None => None,
    };
    Ok(Arc::new(PersonalSealer::new(keys)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_eventstore::{EventId, ExpectedVersion, MemoryStore};

    fn proposed(payload: &str, event_type: &str) -> ProposedEvent {
        ProposedEvent {
            event_id: EventId(Uuid::now_v7()),
            event_type: event_type.to_owned(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            causation_id: None,
            correlation_id: None,
            actor: "test".to_owned(),
            metadata: Vec::new(),
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn sealed_store(dir: &std::path::Path) -> AnyStore {
        let sealer = sealer(dir, Some(keys::MasterKey::generate().unwrap()), true).unwrap();
        AnyStore::from(MemoryStore::new()).with_sealer(sealer)
    }

    #[test]
    fn personal_objects_are_found_across_white_space() {
        assert!(holds_personal_object(br#"{"personal":{"email":"a@b"}}"#));
        assert!(holds_personal_object(
            b"{\"personal\" :\n {\"email\":\"a@b\"}}"
        ));
        assert!(!holds_personal_object(br#"{"personal":null}"#));
        assert!(!holds_personal_object(br#"{"personal":"[erased]"}"#));
        assert!(!holds_personal_object(br#"{"text":"\"personal\":{"}"#));
        assert!(holds_personal_field(br#"{"personal":null}"#));
    }

    #[tokio::test]
    async fn pretty_printed_personal_data_is_sealed_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = sealed_store(dir.path());
        let stream = StreamId::new("contact-p2").unwrap();
        let payload = "{\n  \"contact_id\": \"p2\",\n  \"personal\" : { \"full_name\": \"Pretty Printed\" }\n}";
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![proposed(payload, "ContactAdded")],
            )
            .await
            .unwrap();
        let stored = store.read_all(Position::FIRST, 1).await.unwrap().remove(0);
        let text = String::from_utf8(stored.payload.clone()).unwrap();
        assert!(
            !text.contains("Pretty") && text.contains("sealed_with"),
            "{text}"
        );
    }

    #[test]
    fn entries_keep_their_order_and_bytes() {
        let payload = br#"{"b":1,"a":{"x":[1,2]},"personal":null,"c":"\u00e9"}"#;
        let entries = parse_object(payload).unwrap();
        assert_eq!(
            entries.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["b", "a", "personal", "c"]
        );
        assert_eq!(write_object(&entries), payload.to_vec());
        assert!(personal_entry(payload).is_none());
        assert!(parse_object(b"[1]").is_none());
        assert!(parse_object(b"{} x").is_none());
    }

    #[tokio::test]
    async fn plain_personal_data_is_sealed_revealed_masked_and_erased() {
        let dir = tempfile::tempdir().unwrap();
        let store = sealed_store(dir.path());
        let stream = StreamId::new("contact-c1").unwrap();
        let payload = r#"{"contact_id":"c1","personal":{"full_name":"Zed Marker-4711","email":"zed@example.org","phone":null},"is_test":false}"#;
        let event = proposed(payload, "ContactAdded");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
            .await
            .unwrap();
        let stored = store.read_all(Position::FIRST, 10).await.unwrap();
        let text = String::from_utf8(stored[0].payload.clone()).unwrap();
        assert!(!text.contains("Zed") && !text.contains("zed@"), "{text}");
        assert!(
            text.starts_with(
                r#"{"contact_id":"c1","personal":{"sealed_with":"contact-c1","ciphertext":""#
            ),
            "{text}"
        );
        assert!(text.ends_with(r#","is_test":false}"#), "{text}");
        // Resending the same event is idempotent: sealing gives the same bytes.
        let again = store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
        assert!(again.already_present);

        let shown = as_seen(&store, &stored[0], Visibility::Reveal).unwrap();
        assert_eq!(String::from_utf8(shown.payload.clone()).unwrap(), payload);
        let masked = as_seen(&store, &stored[0], Visibility::Mask).unwrap();
        assert!(String::from_utf8(masked.payload.clone())
            .unwrap()
            .contains(r#""personal":"[masked: needs permission read_personal_data]""#));

        let erased = proposed(
            r#"{"contact_id":"c1","reason":"asked","occurred_at":"2026-01-01T00:00:00Z"}"#,
            "ContactPersonalDataErased",
        );
        store
            .append(&stream, ExpectedVersion::Any, vec![erased])
            .await
            .unwrap();
        let shown = as_seen(&store, &stored[0], Visibility::Reveal).unwrap();
        assert!(String::from_utf8(shown.payload.clone())
            .unwrap()
            .contains(r#""personal":"[erased]""#));
        // An erased subject takes no new personal data.
        let refused = store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![proposed(payload, "ContactPersonalDataChanged")],
            )
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("was erased"), "{refused}");
    }

    #[tokio::test]
    async fn an_altered_ciphertext_is_an_error_at_its_position_never_text() {
        let dir = tempfile::tempdir().unwrap();
        let store = sealed_store(dir.path());
        let stream = StreamId::new("lead-l1").unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![proposed(
                    r#"{"lead_id":"l1","personal":{"full_name":"Quill Tamper"}}"#,
                    "LeadCaptured",
                )],
            )
            .await
            .unwrap();
        let mut event = store.read_all(Position::FIRST, 1).await.unwrap().remove(0);
        let text = String::from_utf8(event.payload.clone()).unwrap();
        let at = text.find("ciphertext\":\"").unwrap() + 20;
        let mut bytes = text.into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        event.payload = bytes;
        let err = as_seen(&store, &event, Visibility::Reveal).unwrap_err();
        assert_eq!(err.position, 1);
        assert!(matches!(err.source, KeyError::Tampered));
        assert!(err.to_string().contains("position 1"), "{err}");
    }

    #[tokio::test]
    async fn without_a_master_key_plain_data_is_refused_and_sealed_data_shown_as_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let keyed = sealed_store(dir.path());
        let stream = StreamId::new("agent-a1").unwrap();
        keyed
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![proposed(
                    r#"{"agent_id":"a1","personal":{"full_name":"Ona Keyless"}}"#,
                    "AgentRegistered",
                )],
            )
            .await
            .unwrap();
        let event = keyed.read_all(Position::FIRST, 1).await.unwrap().remove(0);
        let keyless = AnyStore::from(MemoryStore::new())
            .with_sealer(sealer(dir.path(), None, false).unwrap());
        let shown = as_seen(&keyless, &event, Visibility::Reveal).unwrap();
        assert!(String::from_utf8(shown.payload.clone())
            .unwrap()
            .contains(r#""personal":"[sealed]""#));
        let refused = keyless
            .append(
                &StreamId::new("agent-a2").unwrap(),
                ExpectedVersion::NoStream,
                vec![proposed(
                    r#"{"agent_id":"a2","personal":{"full_name":"Ona Keyless"}}"#,
                    "AgentRegistered",
                )],
            )
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("no master key"), "{refused}");
        // A sealed value from another key store is refused, not stored unreadable.
        let other = tempfile::tempdir().unwrap();
        let foreign = sealed_store(other.path());
        let err = foreign
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![ProposedEvent {
                    payload: event.payload.clone(),
                    ..proposed("{}", "AgentRegistered")
                }],
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not hold"), "{err}");
    }

    #[tokio::test]
    async fn reconciling_applies_erasures_a_restored_key_store_had_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let master = keys::MasterKey::generate().unwrap();
        let first = sealer(dir.path(), Some(master.clone()), true).unwrap();
        let store = AnyStore::from(MemoryStore::new()).with_sealer(first);
        let stream = StreamId::new("contact-c9").unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![proposed(
                    r#"{"contact_id":"c9","personal":{"full_name":"Rey Restore"}}"#,
                    "ContactAdded",
                )],
            )
            .await
            .unwrap();
        // Back up the key store while the key exists.
        let backup = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, backup.path().join(path.file_name().unwrap())).unwrap();
        }
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![proposed(
                    r#"{"contact_id":"c9","reason":"asked","occurred_at":"2026-01-01T00:00:00Z"}"#,
                    "ContactPersonalDataErased",
                )],
            )
            .await
            .unwrap();
        // The restored key store still has the key; reconciling destroys it again.
        let restored = sealer(backup.path(), Some(master), true).unwrap();
        assert_eq!(restored.reconcile(&store).await.unwrap(), 1);
        assert_eq!(
            restored.keys().unwrap().get("contact-c9").unwrap(),
            SubjectKey::Erased
        );
        assert_eq!(restored.reconcile(&store).await.unwrap(), 0);
    }
}
