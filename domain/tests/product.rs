//! Product rules, given/when/then.

mod common;

use common::*;
use crm_domain::aggregates::product::*;
use crm_domain::values::MoneyError;

fn list_cmd(cents: i64) -> ListProduct {
    ListProduct {
        product_id: id("gtx-pro"),
        name: label("GTX Pro"),
        series: Some(label("GTX")),
        list_price: Some(usd(cents)),
        occurred_at: day(1),
    }
}

fn listed() -> ProductEvent {
    let c = list_cmd(482_100);
    ProductListed {
        product_id: c.product_id,
        name: c.name,
        series: c.series,
        list_price: c.list_price,
        occurred_at: c.occurred_at,
    }
    .into()
}

#[test]
fn listing_records_the_product() {
    let state = given_nothing::<Product>()
        .when(list_cmd(482_100))
        .then(vec![listed()]);
    assert!(state.is_listed());
}

#[test]
fn a_product_is_listed_once() {
    given::<Product>(vec![listed()])
        .when(list_cmd(482_100))
        .then_err(|e| matches!(e, ProductError::AlreadyExists { .. }));
}

#[test]
fn a_negative_list_price_is_refused() {
    given_nothing::<Product>().when(list_cmd(-1)).then_err(|e| {
        matches!(
            e,
            ProductError::Money {
                source: MoneyError::Negative { .. },
                ..
            }
        )
    });
}
