//! Golden files of the frame format, version 1 (`tests/golden/v1/`).
//!
//! Each file is one encoded record, written once by this crate's encoder and
//! committed. The normal run decodes every file, checks every field against
//! the values below, checks that re-encoding gives the same bytes, and that
//! any changed byte makes decoding fail. A change to the codec that alters the
//! bytes of format v1 fails here: that is the point. Never regenerate these
//! files; a new format version gets new files in a new directory.
//!
//! `CRM_BLESS_GOLDEN=1 cargo test -p crm-tests --test golden` writes the files
//! that are missing (and refuses to overwrite a file that differs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use crm_eventstore::codec::{self, Placement, FORMAT_VERSION};
use crm_eventstore::{
    ChainHash, EventId, Position, ProposedEvent, RecordedEvent, StreamId, StreamVersion,
};
use uuid::Uuid;

const BLESS_VAR: &str = "CRM_BLESS_GOLDEN";

fn v1_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/v1")
}

fn file_of(n: usize) -> PathBuf {
    v1_dir().join(format!("record-{n}.bin"))
}

fn ts(secs: i64, nanos: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, nanos).expect("valid timestamp")
}

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).expect("valid uuid")
}

/// One golden record: the proposal and where the log placed it, plus the
/// chain hash and checksum the v1 encoding must produce.
struct Golden {
    stream_id: &'static str,
    stream_version: u64,
    event: ProposedEvent,
    recorded_at: DateTime<Utc>,
    /// Lower-case hex of the chain hash; pins the body encoding and hashing.
    hash: &'static str,
    /// CRC-32 of the frame; pins the frame layout.
    checksum: u32,
}

/// The golden records, in log order (record N is at position N, and links to
/// record N-1's hash). Every value here is part of format v1: do not edit.
fn goldens() -> Vec<Golden> {
    vec![
        // Plain event: no causation or correlation, empty metadata.
        Golden {
            stream_id: "opportunity-42",
            stream_version: 1,
            event: ProposedEvent {
                event_id: EventId(uuid("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a01")),
                event_type: "OpportunityOpened".into(),
                schema_version: 1,
                occurred_at: ts(1_709_294_400, 0), // 2024-03-01T12:00:00Z
                causation_id: None,
                correlation_id: None,
                actor: "user:17".into(),
                metadata: Vec::new(),
                payload: br#"{"name":"Acme renewal","amount_cents":1250000}"#.to_vec(),
            },
            recorded_at: ts(1_709_294_400, 500_000_000),
            hash: "75fad147770a2e337d079668bf30b09bbb7e85d7cc480406409264fbfcc2c29a",
            checksum: 0x03b4_b539,
        },
        // Causation and correlation set, JSON metadata, nanosecond times.
        Golden {
            stream_id: "contact-7",
            stream_version: 1,
            event: ProposedEvent {
                event_id: EventId(uuid("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a02")),
                event_type: "ContactImported".into(),
                schema_version: 3,
                occurred_at: ts(1_262_304_000, 123_456_789), // 2010-01-01T00:00:00.123456789Z
                causation_id: Some(uuid("5f0c6e0a-8d3b-5c1e-9a2f-3b4c5d6e7f80")),
                correlation_id: Some(uuid("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4aff")),
                actor: "importer:salesforce".into(),
                metadata: br#"{"source":"salesforce","row":17}"#.to_vec(),
                payload: br#"{"email":"ada@example.com"}"#.to_vec(),
            },
            recorded_at: ts(1_709_294_401, 1),
            hash: "809bc2e08a3705833feb0b46ca529f7d77b62c404c0a5fe508d6b10562ab32b0",
            checksum: 0xb513_4b21,
        },
        // Non-ASCII stream id, actor and payload; binary payload bytes;
        // business time before the epoch; causation only.
        Golden {
            stream_id: "société-9",
            stream_version: 1,
            event: ProposedEvent {
                event_id: EventId(uuid("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a03")),
                event_type: "AccountRenamed".into(),
                schema_version: u16::MAX,
                occurred_at: ts(-86_400, 999_999_999), // 1969-12-31T00:00:00.999999999Z
                causation_id: Some(uuid("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a02")),
                correlation_id: None,
                actor: "user:zoë".into(),
                metadata: b"{}".to_vec(),
                payload: [
                    "{\"name\":\"Größe & Söhne — 東京 🦀\"}".as_bytes(),
                    &[0x00, 0xFF, 0x80, 0x7F],
                ]
                .concat(),
            },
            recorded_at: ts(1_709_294_401, 1),
            hash: "d88e6ef00d23a8b6a2c67ebcd4bd7d90fc2c344741dfff0f933047fc3f6ced21",
            checksum: 0x27f7_6a43,
        },
        // Second event of stream 1: empty payload and actor, correlation only.
        Golden {
            stream_id: "opportunity-42",
            stream_version: 2,
            event: ProposedEvent {
                event_id: EventId(uuid("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a04")),
                event_type: "OpportunityWon".into(),
                schema_version: 0,
                occurred_at: ts(253_402_300_799, 0), // 9999-12-31T23:59:59Z
                causation_id: None,
                correlation_id: Some(uuid("ffffffff-ffff-ffff-ffff-ffffffffffff")),
                actor: String::new(),
                metadata: br#"{"reason":"signed"}"#.to_vec(),
                payload: Vec::new(),
            },
            recorded_at: ts(1_709_380_800, 0),
            hash: "eadf058ef2e7c37fe69280799036a12fa91fb8e2e6559ae028db8168cb9e0a44",
            checksum: 0x301f_ff80,
        },
    ]
}

/// Encodes the golden records with the current encoder, chaining them.
fn encode_all() -> Vec<(Vec<u8>, RecordedEvent)> {
    let mut prev_hash = ChainHash::GENESIS;
    let mut out = Vec::new();
    for (i, g) in goldens().iter().enumerate() {
        let stream_id = StreamId::new(g.stream_id).unwrap();
        let place = Placement {
            position: Position(i as u64 + 1),
            stream_id: &stream_id,
            stream_version: StreamVersion(g.stream_version),
            recorded_at: g.recorded_at,
            prev_hash,
        };
        let (frame, rec) = codec::encode(&g.event, &place).unwrap();
        prev_hash = rec.hash;
        out.push((frame, rec));
    }
    out
}

fn read_golden(n: usize) -> Vec<u8> {
    let path = file_of(n);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} is missing ({e}); generate it once with {BLESS_VAR}=1",
            path.display()
        )
    })
}

/// With `CRM_BLESS_GOLDEN=1`, writes missing golden files; never overwrites a differing one.
fn bless_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os(BLESS_VAR).is_some() {
        ONCE.call_once(bless);
    }
}

fn bless() {
    std::fs::create_dir_all(v1_dir()).unwrap();
    for (i, (frame, rec)) in encode_all().iter().enumerate() {
        let path = file_of(i + 1);
        match std::fs::read(&path) {
            Ok(existing) => assert_eq!(
                &existing,
                frame,
                "{} exists and differs from what this build encodes; format v1 files are never regenerated",
                path.display()
            ),
            Err(_) => {
                std::fs::write(&path, frame).unwrap();
                eprintln!(
                    "wrote {}: hash {}, checksum {:#010x}",
                    path.display(),
                    rec.hash,
                    rec.checksum
                );
            }
        }
    }
}

#[test]
fn every_v1_golden_file_decodes_to_its_expected_fields() {
    bless_if_asked();
    assert_eq!(
        FORMAT_VERSION, 1,
        "add golden files for the new format version"
    );
    let goldens = goldens();
    let mut prev_hash = ChainHash::GENESIS;
    for (i, g) in goldens.iter().enumerate() {
        let n = i + 1;
        let bytes = read_golden(n);
        assert_eq!(bytes[0], 1, "record-{n}: format version byte");
        // The frame layout, read by hand: length, body prefix, hashes.
        let body_len = u32::from_le_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(bytes.len(), body_len + 73, "record-{n}: frame length");
        assert_eq!(
            bytes[5],
            u8::try_from(n).unwrap(),
            "record-{n}: varint position"
        );
        assert_eq!(
            bytes[6] as usize,
            g.stream_id.len(),
            "record-{n}: stream id length"
        );
        assert_eq!(&bytes[7..7 + g.stream_id.len()], g.stream_id.as_bytes());
        assert_eq!(
            &bytes[5 + body_len..37 + body_len],
            &prev_hash.0,
            "record-{n}"
        );
        assert_eq!(
            ChainHash(bytes[37 + body_len..69 + body_len].try_into().unwrap()).to_hex(),
            g.hash,
            "record-{n}: hash bytes"
        );
        let rec = codec::decode(&bytes, Some(Position(n as u64)), true)
            .unwrap_or_else(|e| panic!("record-{n}.bin does not decode: {e}"));
        assert_eq!(rec.position, Position(n as u64), "record-{n}");
        assert_eq!(rec.stream_id.as_str(), g.stream_id, "record-{n}");
        assert_eq!(
            rec.stream_version,
            StreamVersion(g.stream_version),
            "record-{n}"
        );
        assert_eq!(rec.event_id, g.event.event_id, "record-{n}");
        assert_eq!(rec.event_type, g.event.event_type, "record-{n}");
        assert_eq!(rec.schema_version, g.event.schema_version, "record-{n}");
        assert_eq!(rec.occurred_at, g.event.occurred_at, "record-{n}");
        assert_eq!(rec.recorded_at, g.recorded_at, "record-{n}");
        assert_eq!(rec.causation_id, g.event.causation_id, "record-{n}");
        assert_eq!(rec.correlation_id, g.event.correlation_id, "record-{n}");
        assert_eq!(rec.actor, g.event.actor, "record-{n}");
        assert_eq!(rec.metadata, g.event.metadata, "record-{n}");
        assert_eq!(rec.payload, g.event.payload, "record-{n}");
        assert_eq!(rec.prev_hash, prev_hash, "record-{n}: chain link");
        assert_eq!(rec.hash.to_hex(), g.hash, "record-{n}: chain hash");
        assert_eq!(rec.checksum, g.checksum, "record-{n}: checksum");
        assert_eq!(
            u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()),
            g.checksum,
            "record-{n}: checksum bytes"
        );
        assert_eq!(codec::recompute_hash(&rec).unwrap(), rec.hash, "record-{n}");
        prev_hash = rec.hash;
    }
    // No stray files: every file in v1/ is a golden record checked above.
    let mut names: Vec<String> = std::fs::read_dir(v1_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let expected: Vec<String> = (1..=goldens.len())
        .map(|n| format!("record-{n}.bin"))
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn re_encoding_v1_golden_records_gives_identical_bytes() {
    bless_if_asked();
    for (i, (frame, encoded)) in encode_all().into_iter().enumerate() {
        let n = i + 1;
        let bytes = read_golden(n);
        let decoded = codec::decode(&bytes, Some(Position(n as u64)), true).unwrap();
        assert_eq!(
            codec::encode_recorded(&decoded).unwrap(),
            bytes,
            "record-{n}: encode_recorded(decode(file)) differs from the file"
        );
        assert_eq!(
            frame, bytes,
            "record-{n}: the encoder no longer writes format v1 bytes"
        );
        assert_eq!(decoded, encoded, "record-{n}");
    }
}

#[test]
fn any_changed_byte_of_a_v1_golden_file_fails_to_decode() {
    bless_if_asked();
    for n in 1..=goldens().len() {
        let bytes = read_golden(n);
        let position = Some(Position(n as u64));
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[i] ^= mask;
                assert!(
                    codec::decode(&bad, position, true).is_err(),
                    "record-{n}: byte {i} ^ {mask:#04x} went unnoticed"
                );
                assert!(
                    codec::decode(&bad, position, false).is_err(),
                    "record-{n}: byte {i} ^ {mask:#04x} went unnoticed without the hash check"
                );
            }
        }
        assert!(codec::decode(&bytes[..bytes.len() - 1], position, true).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(codec::decode(&longer, position, true).is_err());
        assert!(
            codec::decode(&bytes, Some(Position(n as u64 + 1)), true).is_err(),
            "record-{n} decoded at the wrong position"
        );
    }
}
