//! Value types: identifiers, money, scores, labels and shared channels. Every constructor
//! validates; invalid values cannot be built, nor deserialized.

mod channel;
mod ids;
pub mod instant;
mod label;
mod money;
mod scores;
mod text;

pub use channel::{Channel, SalesChannel};
pub use ids::{
    AccountId, AgentId, CampaignId, CaseId, ContactId, FeedbackId, IdError, InteractionId,
    InvoiceId, LeadId, OpportunityId, OrderId, ProductId, SubscriptionId, TeamId, ID_LEN_MAX_BYTES,
};
pub use label::{Label, LabelError, LABEL_LEN_MAX_BYTES};
pub use money::{Currency, Money, MoneyError};
pub use scores::{
    CesScore, CsatScore, LeadScore, NpsScore, Probability, Rating, ScoreError, SurveyKind,
    SurveyScore, RATING_SCALE_MAX,
};
