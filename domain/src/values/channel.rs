//! Channels shared by several aggregates.

use serde::{Deserialize, Serialize};

/// A communication channel between the company and a person (interactions, cases, first
/// responses, opt-outs).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Voice call.
    Phone,
    /// Email.
    Email,
    /// Live or bot chat.
    Chat,
    /// Text message.
    Sms,
    /// Video call.
    Video,
    /// Face-to-face meeting.
    InPerson,
    /// Social network.
    Social,
    /// Web form or customer portal.
    Web,
    /// Postal mail.
    Mail,
}

/// How a deal or an order reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SalesChannel {
    /// Our own sales reps.
    Direct,
    /// A reseller or partner.
    Partner,
    /// Self-service web shop.
    Online,
    /// A third-party marketplace.
    Marketplace,
}
