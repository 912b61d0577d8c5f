//! Feedback (surveys and reviews) rules, given/when/then.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use crm_domain::aggregates::feedback::*;
use crm_domain::values::{FeedbackId, Rating, ScoreError, SurveyKind, SurveyScore};
use uuid::Uuid;

fn fid() -> FeedbackId {
    id("fb-1")
}

fn trigger() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
}

fn send_cmd(kind: SurveyKind) -> SendSurvey {
    SendSurvey {
        feedback_id: fid(),
        kind,
        contact: id("C-1"),
        trigger: Some(trigger()),
        is_test: false,
        occurred_at: day(2),
    }
}

fn sent(kind: SurveyKind) -> FeedbackEvent {
    SurveySent {
        feedback_id: fid(),
        kind,
        contact: id("C-1"),
        trigger: Some(trigger()),
        is_test: false,
        occurred_at: day(2),
    }
    .into()
}

fn answer_cmd(kind: SurveyKind, score: u8) -> AnswerSurvey {
    AnswerSurvey {
        feedback_id: fid(),
        kind,
        score,
        contact: None,
        trigger: Some(trigger()),
        by_employee: false,
        is_test: false,
        occurred_at: day(3),
    }
}

fn answered(kind: SurveyKind, score: u8) -> FeedbackEvent {
    SurveyAnswered {
        feedback_id: fid(),
        answer: SurveyScore::new(kind, score).unwrap(),
        contact: Some(id("C-1")),
        trigger: Some(trigger()),
        by_employee: false,
        is_test: false,
        occurred_at: day(3),
    }
    .into()
}

fn post_cmd(rating: u8, scale_max: u8) -> PostReview {
    PostReview {
        feedback_id: fid(),
        platform: ReviewPlatform::Marketplace,
        rating,
        scale_max,
        product: Some(id("GTX-Pro")),
        author_ref: label("happy_buyer_42"),
        by_employee: false,
        is_test: false,
        occurred_at: day(1),
    }
}

fn posted() -> FeedbackEvent {
    ReviewPosted {
        feedback_id: fid(),
        platform: ReviewPlatform::Marketplace,
        rating: Rating::new(4, 5).unwrap(),
        product: Some(id("GTX-Pro")),
        author_ref: label("happy_buyer_42"),
        by_employee: false,
        is_test: false,
        occurred_at: day(1),
    }
    .into()
}

fn remove_cmd() -> RemoveReview {
    RemoveReview {
        feedback_id: fid(),
        reason: ReviewRemovalReason::Fake,
        occurred_at: day(4),
    }
}

#[test]
fn sending_records_the_survey() {
    given_nothing::<Feedback>()
        .when(send_cmd(SurveyKind::Nps))
        .then(vec![sent(SurveyKind::Nps)]);
}

#[test]
fn sending_twice_is_an_error() {
    given::<Feedback>(vec![sent(SurveyKind::Nps)])
        .when(send_cmd(SurveyKind::Nps))
        .then_err(|e| matches!(e, FeedbackError::AlreadyExists { .. }));
}

#[test]
fn an_answer_takes_the_contact_of_the_survey() {
    let state = given::<Feedback>(vec![sent(SurveyKind::Nps)])
        .when(answer_cmd(SurveyKind::Nps, 9))
        .then(vec![answered(SurveyKind::Nps, 9)]);
    assert!(state.is_answered());
}

#[test]
fn nps_scores_are_0_to_10() {
    given::<Feedback>(vec![sent(SurveyKind::Nps)])
        .when(answer_cmd(SurveyKind::Nps, 0))
        .then_ok();
    let msg = given::<Feedback>(vec![sent(SurveyKind::Nps)])
        .when(answer_cmd(SurveyKind::Nps, 11))
        .then_err(|e| {
            matches!(
                e,
                FeedbackError::Score {
                    source: ScoreError::OutOfRange { max: 10, .. },
                    ..
                }
            )
        });
    assert!(msg.contains("0..=10"), "{msg}");
}

#[test]
fn csat_scores_are_1_to_5() {
    for bad in [0, 6] {
        given::<Feedback>(vec![sent(SurveyKind::Csat)])
            .when(answer_cmd(SurveyKind::Csat, bad))
            .then_err(|e| matches!(e, FeedbackError::Score { .. }));
    }
    given::<Feedback>(vec![sent(SurveyKind::Csat)])
        .when(answer_cmd(SurveyKind::Csat, 5))
        .then(vec![answered(SurveyKind::Csat, 5)]);
}

#[test]
fn ces_scores_are_1_to_7() {
    for bad in [0, 8] {
        given::<Feedback>(vec![sent(SurveyKind::Ces)])
            .when(answer_cmd(SurveyKind::Ces, bad))
            .then_err(|e| matches!(e, FeedbackError::Score { .. }));
    }
    given::<Feedback>(vec![sent(SurveyKind::Ces)])
        .when(answer_cmd(SurveyKind::Ces, 7))
        .then_ok();
}

#[test]
fn the_answer_uses_the_instrument_the_survey_was_sent_with() {
    given::<Feedback>(vec![sent(SurveyKind::Nps)])
        .when(answer_cmd(SurveyKind::Csat, 4))
        .then_err(|e| matches!(e, FeedbackError::SurveyKindMismatch { .. }));
}

#[test]
fn a_survey_is_answered_once() {
    given::<Feedback>(vec![sent(SurveyKind::Nps), answered(SurveyKind::Nps, 9)])
        .when(answer_cmd(SurveyKind::Nps, 3))
        .then_err(|e| matches!(e, FeedbackError::AlreadyAnswered { .. }));
}

#[test]
fn an_answer_cannot_precede_the_survey() {
    let mut cmd = answer_cmd(SurveyKind::Nps, 9);
    cmd.occurred_at = day(1);
    given::<Feedback>(vec![sent(SurveyKind::Nps)])
        .when(cmd)
        .then_err(|e| matches!(e, FeedbackError::AnsweredBeforeSent { .. }));
}

#[test]
fn the_answer_comes_from_the_surveyed_contact() {
    let mut cmd = answer_cmd(SurveyKind::Nps, 9);
    cmd.contact = Some(id("C-2"));
    given::<Feedback>(vec![sent(SurveyKind::Nps)])
        .when(cmd)
        .then_err(|e| matches!(e, FeedbackError::RespondentMismatch { .. }));
}

#[test]
fn an_unsolicited_answer_creates_the_stream() {
    let mut cmd = answer_cmd(SurveyKind::Csat, 4);
    cmd.contact = Some(id("C-1"));
    let state = given_nothing::<Feedback>()
        .when(cmd)
        .then(vec![answered(SurveyKind::Csat, 4)]);
    assert!(state.is_answered());
}

#[test]
fn review_ratings_lie_within_their_scale() {
    given_nothing::<Feedback>()
        .when(post_cmd(4, 5))
        .then(vec![posted()]);
    given_nothing::<Feedback>()
        .when(post_cmd(6, 5))
        .then_err(|e| {
            matches!(
                e,
                FeedbackError::Score {
                    source: ScoreError::OutOfRange { .. },
                    ..
                }
            )
        });
    given_nothing::<Feedback>()
        .when(post_cmd(0, 5))
        .then_err(|e| matches!(e, FeedbackError::Score { .. }));
    given_nothing::<Feedback>()
        .when(post_cmd(3, 11))
        .then_err(|e| {
            matches!(
                e,
                FeedbackError::Score {
                    source: ScoreError::InvalidScale { .. },
                    ..
                }
            )
        });
}

#[test]
fn a_review_is_removed_once() {
    let removed: FeedbackEvent = ReviewRemoved {
        feedback_id: fid(),
        reason: ReviewRemovalReason::Fake,
        occurred_at: day(4),
    }
    .into();
    given::<Feedback>(vec![posted()])
        .when(remove_cmd())
        .then(vec![removed.clone()]);
    given::<Feedback>(vec![posted(), removed])
        .when(remove_cmd())
        .then_err(|e| matches!(e, FeedbackError::AlreadyRemoved { .. }));
}

#[test]
fn removing_a_missing_review_is_an_error() {
    given_nothing::<Feedback>()
        .when(remove_cmd())
        .then_err(|e| matches!(e, FeedbackError::NotFound { .. }));
}

#[test]
fn surveys_and_reviews_do_not_mix() {
    given::<Feedback>(vec![sent(SurveyKind::Nps)])
        .when(remove_cmd())
        .then_err(|e| matches!(e, FeedbackError::WrongKind { .. }));
    given::<Feedback>(vec![posted()])
        .when(answer_cmd(SurveyKind::Nps, 9))
        .then_err(|e| matches!(e, FeedbackError::WrongKind { .. }));
    given::<Feedback>(vec![posted()])
        .when(post_cmd(4, 5))
        .then_err(|e| matches!(e, FeedbackError::AlreadyExists { .. }));
}
