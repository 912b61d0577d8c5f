//! Feedback: a survey (sent, answered with NPS, CSAT or CES) or a public review (posted with a
//! rating on a platform, maybe removed later). One stream per survey or review.
//!
//! Rules: a survey is answered once, on the instrument it was sent with, with a score inside
//! that instrument's scale (NPS 0..=10, CSAT 1..=5, CES 1..=7), not before it was sent and by
//! the contact it was sent to; an answer may also arrive for a survey we never recorded
//! sending (imported data, in-app widgets) and then creates the stream. A review's rating lies
//! in `1..=scale_max` with `scale_max` in 1..=10; only reviews can be removed, once.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::values::{
    ContactId, FeedbackId, Label, ProductId, Rating, ScoreError, SurveyKind, SurveyScore,
};

/// Where a review was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewPlatform {
    /// Our own web site or shop.
    OwnSite,
    /// A marketplace listing (Amazon, eBay…).
    Marketplace,
    /// A mobile app store.
    AppStore,
    /// An independent review site (Trustpilot, G2…).
    ReviewSite,
    /// A user community or forum.
    Community,
    /// A social network.
    Social,
}

/// Why a review was taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewRemovalReason {
    /// Fake or paid review.
    Fake,
    /// Abusive content.
    Abuse,
    /// The author asked.
    AuthorRequest,
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Send a survey (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SendSurvey {
    pub feedback_id: FeedbackId,
    pub kind: SurveyKind,
    pub contact: ContactId,
    /// Id of the event that triggered the survey (e.g. a `CaseClosed`).
    pub trigger: Option<Uuid>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record a survey answer. Creates the stream when no `SurveySent` was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AnswerSurvey {
    pub feedback_id: FeedbackId,
    pub kind: SurveyKind,
    /// Raw score, checked against the scale of `kind`.
    pub score: u8,
    pub contact: Option<ContactId>,
    pub trigger: Option<Uuid>,
    /// The respondent is an employee (`INTERNAL`).
    pub by_employee: bool,
    /// Used only when the answer creates the stream.
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record a public review (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PostReview {
    pub feedback_id: FeedbackId,
    pub platform: ReviewPlatform,
    /// Raw stars, checked against `scale_max`.
    pub rating: u8,
    pub scale_max: u8,
    pub product: Option<ProductId>,
    /// The platform's pseudonymous author handle (not a name).
    pub author_ref: Label,
    pub by_employee: bool,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record that a review was taken down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RemoveReview {
    pub feedback_id: FeedbackId,
    pub reason: ReviewRemovalReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the feedback aggregate.
    pub enum FeedbackCommand {
        id: feedback_id: FeedbackId,
        commands: { SendSurvey, AnswerSurvey, PostReview, RemoveReview }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A survey was sent. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveySent {
    pub feedback_id: FeedbackId,
    pub kind: SurveyKind,
    pub contact: ContactId,
    pub trigger: Option<Uuid>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A survey was answered. `answer` is `{"kind": "nps", "score": 9}`; the scale maximum follows
/// from the kind ([`SurveyScore::scale_max`]). Creation event when no `SurveySent` precedes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveyAnswered {
    pub feedback_id: FeedbackId,
    pub answer: SurveyScore,
    pub contact: Option<ContactId>,
    pub trigger: Option<Uuid>,
    pub by_employee: bool,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A review was posted. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewPosted {
    pub feedback_id: FeedbackId,
    pub platform: ReviewPlatform,
    pub rating: Rating,
    pub product: Option<ProductId>,
    pub author_ref: Label,
    pub by_employee: bool,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A review was taken down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRemoved {
    pub feedback_id: FeedbackId,
    pub reason: ReviewRemovalReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the feedback aggregate.
    pub enum FeedbackEvent {
        category: "feedback",
        id: feedback_id: FeedbackId,
        events: { SurveySent = 1, SurveyAnswered = 1, ReviewPosted = 1, ReviewRemoved = 1 }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a feedback command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedbackError {
    #[error("feedback `{id}` already exists; choose another id or send a command for the existing feedback")]
    AlreadyExists { id: FeedbackId },
    #[error("feedback `{id}` does not exist; post the review (PostReview) first")]
    NotFound { id: FeedbackId },
    #[error("command is for feedback `{command}` but stream `feedback-{loaded}` was loaded; load stream `feedback-{command}` and retry")]
    WrongInstance {
        loaded: FeedbackId,
        command: FeedbackId,
    },
    #[error("feedback `{id}` is a {actual}; {action} applies only to a {expected}")]
    WrongKind {
        id: FeedbackId,
        action: &'static str,
        actual: &'static str,
        expected: &'static str,
    },
    #[error("survey `{id}` was sent as {sent}, the answer is {answered}; record the answer on the {sent} scale or use the survey it belongs to")]
    SurveyKindMismatch {
        id: FeedbackId,
        sent: SurveyKind,
        answered: SurveyKind,
    },
    #[error("survey `{id}` was already answered on {on}; a survey takes one answer, send a new survey for a new answer")]
    AlreadyAnswered { id: FeedbackId, on: NaiveDate },
    #[error("survey `{id}` was sent at {sent_at}; an answer at {at} would precede it, check the timestamp")]
    AnsweredBeforeSent {
        id: FeedbackId,
        sent_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[error("survey `{id}` was sent to contact `{sent_to}`, not `{answered_by}`; record the answer on that contact's survey")]
    RespondentMismatch {
        id: FeedbackId,
        sent_to: ContactId,
        answered_by: ContactId,
    },
    #[error("review `{id}` was already removed on {on}; there is nothing to remove")]
    AlreadyRemoved { id: FeedbackId, on: NaiveDate },
    #[error("feedback `{id}`: {source}")]
    Score { id: FeedbackId, source: ScoreError },
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Survey {
        kind: SurveyKind,
        contact: Option<ContactId>,
        sent_at: Option<DateTime<Utc>>,
        answered_at: Option<DateTime<Utc>>,
        is_test: bool,
    },
    Review {
        removed_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: FeedbackId,
    kind: Kind,
}

/// The feedback aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Feedback {
    state: Option<State>,
}

impl Feedback {
    /// True once a survey answer is recorded.
    #[must_use]
    pub fn is_answered(&self) -> bool {
        matches!(
            self.state.as_ref().map(|s| &s.kind),
            Some(Kind::Survey {
                answered_at: Some(_),
                ..
            })
        )
    }

    fn check_id(&self, id: &FeedbackId) -> Result<Option<&State>, FeedbackError> {
        match &self.state {
            Some(s) if &s.id != id => Err(FeedbackError::WrongInstance {
                loaded: s.id.clone(),
                command: id.clone(),
            }),
            other => Ok(other.as_ref()),
        }
    }

    fn send(&self, c: &SendSurvey) -> Result<Vec<FeedbackEvent>, FeedbackError> {
        if self.state.is_some() {
            return Err(FeedbackError::AlreadyExists {
                id: c.feedback_id.clone(),
            });
        }
        Ok(vec![SurveySent {
            feedback_id: c.feedback_id.clone(),
            kind: c.kind,
            contact: c.contact.clone(),
            trigger: c.trigger,
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn answer(&self, c: &AnswerSurvey) -> Result<Vec<FeedbackEvent>, FeedbackError> {
        let id = &c.feedback_id;
        let mut contact = c.contact.clone();
        let mut is_test = c.is_test;
        if let Some(state) = self.check_id(id)? {
            let Kind::Survey {
                kind,
                contact: sent_to,
                sent_at,
                answered_at,
                is_test: stream_is_test,
            } = &state.kind
            else {
                return Err(FeedbackError::WrongKind {
                    id: id.clone(),
                    action: "answering",
                    actual: "review",
                    expected: "survey",
                });
            };
            if let Some(at) = answered_at {
                return Err(FeedbackError::AlreadyAnswered {
                    id: id.clone(),
                    on: at.date_naive(),
                });
            }
            if *kind != c.kind {
                return Err(FeedbackError::SurveyKindMismatch {
                    id: id.clone(),
                    sent: *kind,
                    answered: c.kind,
                });
            }
            if let Some(sent_at) = sent_at {
                if c.occurred_at < *sent_at {
                    return Err(FeedbackError::AnsweredBeforeSent {
                        id: id.clone(),
                        sent_at: *sent_at,
                        at: c.occurred_at,
                    });
                }
            }
            match (sent_to, &c.contact) {
                (Some(sent_to), Some(answered_by)) if sent_to != answered_by => {
                    return Err(FeedbackError::RespondentMismatch {
                        id: id.clone(),
                        sent_to: sent_to.clone(),
                        answered_by: answered_by.clone(),
                    })
                }
                (Some(sent_to), None) => contact = Some(sent_to.clone()),
                _ => {}
            }
            is_test = *stream_is_test;
        }
        let answer = SurveyScore::new(c.kind, c.score).map_err(|source| FeedbackError::Score {
            id: id.clone(),
            source,
        })?;
        Ok(vec![SurveyAnswered {
            feedback_id: id.clone(),
            answer,
            contact,
            trigger: c.trigger,
            by_employee: c.by_employee,
            is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn post(&self, c: &PostReview) -> Result<Vec<FeedbackEvent>, FeedbackError> {
        if self.state.is_some() {
            return Err(FeedbackError::AlreadyExists {
                id: c.feedback_id.clone(),
            });
        }
        let rating = Rating::new(c.rating, c.scale_max).map_err(|source| FeedbackError::Score {
            id: c.feedback_id.clone(),
            source,
        })?;
        Ok(vec![ReviewPosted {
            feedback_id: c.feedback_id.clone(),
            platform: c.platform,
            rating,
            product: c.product.clone(),
            author_ref: c.author_ref.clone(),
            by_employee: c.by_employee,
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn remove(&self, c: &RemoveReview) -> Result<Vec<FeedbackEvent>, FeedbackError> {
        let id = &c.feedback_id;
        let state = self
            .check_id(id)?
            .ok_or_else(|| FeedbackError::NotFound { id: id.clone() })?;
        match state.kind {
            Kind::Survey { .. } => Err(FeedbackError::WrongKind {
                id: id.clone(),
                action: "removing",
                actual: "survey",
                expected: "review",
            }),
            Kind::Review {
                removed_at: Some(at),
            } => Err(FeedbackError::AlreadyRemoved {
                id: id.clone(),
                on: at.date_naive(),
            }),
            Kind::Review { removed_at: None } => Ok(vec![ReviewRemoved {
                feedback_id: id.clone(),
                reason: c.reason,
                occurred_at: c.occurred_at,
            }
            .into()]),
        }
    }
}

impl Aggregate for Feedback {
    const CATEGORY: &'static str = FeedbackEvent::CATEGORY;
    type Command = FeedbackCommand;
    type Event = FeedbackEvent;
    type Error = FeedbackError;

    fn handle(&self, command: &FeedbackCommand) -> Result<Vec<FeedbackEvent>, FeedbackError> {
        match command {
            FeedbackCommand::SendSurvey(c) => self.send(c),
            FeedbackCommand::AnswerSurvey(c) => self.answer(c),
            FeedbackCommand::PostReview(c) => self.post(c),
            FeedbackCommand::RemoveReview(c) => self.remove(c),
        }
    }

    fn apply(&mut self, event: &FeedbackEvent) {
        match event {
            FeedbackEvent::SurveySent(e) => {
                self.state = Some(State {
                    id: e.feedback_id.clone(),
                    kind: Kind::Survey {
                        kind: e.kind,
                        contact: Some(e.contact.clone()),
                        sent_at: Some(e.occurred_at),
                        answered_at: None,
                        is_test: e.is_test,
                    },
                });
            }
            FeedbackEvent::SurveyAnswered(e) => match self.state.as_mut() {
                Some(State {
                    kind: Kind::Survey { answered_at, .. },
                    ..
                }) => *answered_at = Some(e.occurred_at),
                Some(State {
                    kind: Kind::Review { .. },
                    ..
                }) => {}
                None => {
                    self.state = Some(State {
                        id: e.feedback_id.clone(),
                        kind: Kind::Survey {
                            kind: e.answer.kind(),
                            contact: e.contact.clone(),
                            sent_at: None,
                            answered_at: Some(e.occurred_at),
                            is_test: e.is_test,
                        },
                    });
                }
            },
            FeedbackEvent::ReviewPosted(e) => {
                self.state = Some(State {
                    id: e.feedback_id.clone(),
                    kind: Kind::Review { removed_at: None },
                });
            }
            FeedbackEvent::ReviewRemoved(e) => {
                if let Some(State {
                    kind: Kind::Review { removed_at },
                    ..
                }) = self.state.as_mut()
                {
                    *removed_at = Some(e.occurred_at);
                }
            }
        }
    }
}
