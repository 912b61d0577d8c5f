//! The `[publish]` section: where committed events are published (see the `crm-publish`
//! crate for what the publisher does with it).

use serde::Deserialize;

/// Default JetStream stream of the published events.
pub const STREAM_DEFAULT: &str = "CRM_EVENTS";
/// Default subject prefix: events go to `crm.events.<category>.<stream id>`.
pub const SUBJECT_PREFIX_DEFAULT: &str = "crm.events";
/// Default CloudEvents `ce-source` of this log.
pub const SOURCE_DEFAULT: &str = "crm://localhost/log";
/// The `[publish]` section of the config file; the URL also comes from `CRM_NATS_URL` and
/// `crm serve --nats URL`.
///
/// ```toml
/// [publish]
/// nats_url = "nats://127.0.0.1:4222"   # publishing is off without a URL
/// stream = "CRM_EVENTS"                # the JetStream stream (created if absent)
/// subject_prefix = "crm.events"
/// replicas = 1                         # 3 in a cluster
/// source = "crm://crm-1.example/log"   # ce-source of this log
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishSettings {
    /// NATS server URLs, comma-separated; `None` turns publishing off.
    pub nats_url: Option<String>,
    /// The JetStream stream (letters, digits, `-`, `_`).
    pub stream: String,
    /// Subjects are `<subject_prefix>.<category>.<stream id>`.
    pub subject_prefix: String,
    /// Copies of the stream when the publisher creates it.
    pub replicas: usize,
    /// The CloudEvents `ce-source` of every message.
    pub source: String,
}

impl Default for PublishSettings {
    fn default() -> Self {
        Self {
            nats_url: None,
            stream: STREAM_DEFAULT.into(),
            subject_prefix: SUBJECT_PREFIX_DEFAULT.into(),
            replicas: 1,
            source: SOURCE_DEFAULT.into(),
        }
    }
}
