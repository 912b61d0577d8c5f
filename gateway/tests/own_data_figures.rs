//! The bundled exports that come in by mapping files alone (no importer of their own), and
//! their reference figures through catalog metrics and query-time questions: the lead-scoring
//! export (`gateway/data/leads`). Figures are recomputed here from the CSV file; SOURCE.md's
//! published values are quoted and asserted too.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crm_eventstore::{AnyStore, SledStore};
use crm_import::{self as import, OnError, RunOptions};
use crm_metrics::{evaluate, Evaluation, Num, Query, Registry};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(path)
}

/// (leads, converted) per value of `column` ("(all)" for the whole file), from the file.
fn leads_by(column: Option<&str>) -> BTreeMap<String, (u64, u64)> {
    let mut reader = csv::Reader::from_path(data("leads/Leads.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let converted = at("Converted");
    let group = column.map(at);
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for record in reader.records() {
        let record = record.unwrap();
        let key = match group {
            Some(i) if record[i].trim().is_empty() => "(blank)".to_owned(),
            Some(i) => record[i].to_owned(),
            None => "(all)".to_owned(),
        };
        let cell = out.entry(key).or_default();
        cell.0 += 1;
        cell.1 += u64::from(&record[converted] == "1");
    }
    out
}

fn cells(ev: &Evaluation, dim: &str) -> BTreeMap<String, (u64, u64)> {
    let n = |x: Option<Num>| match x.unwrap() {
        Num::Int(i) => u64::try_from(i).unwrap(),
        other => panic!("{other:?}"),
    };
    ev.figures
        .iter()
        .map(|f| {
            let key = f.dims.get(dim).cloned().unwrap_or_else(|| "(all)".into());
            (key, (n(f.denominator), n(f.numerator)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leads_export_gives_its_figures_through_its_mapping_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::from(SledStore::open(dir.path().join("log")).unwrap());
    let plan =
        import::mapping::plan(&data("leads/Leads.csv"), &data("leads/mapping.toml")).unwrap();
    let options = RunOptions {
        on_error: OnError::Stop,
        progress: false,
        ..RunOptions::default()
    };
    let summary = import::run(&store, plan, options).await.unwrap();
    assert_eq!((summary.rows, summary.skipped_rows), (9_240, 0));

    let reg = Registry::load(&store).await.unwrap();
    let ask = |q: Query| {
        let (store, reg) = (store.clone(), reg.clone());
        async move {
            evaluate(&store, &reg, "marketing.lead_conversion_rate", None, &q)
                .await
                .unwrap()
        }
    };
    // Overall: SOURCE.md 3,561 / 9,240 = 38.54 %.
    let all = ask(Query::default()).await;
    assert_eq!(cells(&all, "-"), leads_by(None));
    assert_eq!(cells(&all, "-")["(all)"], (9_240, 3_561));
    assert_eq!(all.figures[0].display, "38.54%");

    // By origin, a custom attribute, asked at query time (Lead Add Form 664 / 718 = 92.48 %).
    let origin = ask(Query {
        by: vec!["attr.lead_origin".into()],
        ..Query::default()
    })
    .await;
    assert_eq!(
        cells(&origin, "attr.lead_origin"),
        leads_by(Some("Lead Origin"))
    );
    assert_eq!(
        cells(&origin, "attr.lead_origin")["Lead Add Form"],
        (718, 664)
    );

    // By source, a declared dimension: every spelling its own group, blanks as `(blank)`
    // (Google 1,147 / 2,868 = 39.99 %; google 5 leads; 36 blank).
    let source = ask(Query {
        by: vec!["source".into()],
        ..Query::default()
    })
    .await;
    let expected = leads_by(Some("Lead Source"));
    assert_eq!(cells(&source, "source"), expected);
    assert_eq!(expected["Google"], (2_868, 1_147));
    assert_eq!(expected["(blank)"].0, 36);

    // A condition on a numeric attribute and a "Select" placeholder read as no value.
    let mut q = Query::default();
    q.add_where("attr.lead_origin == 'API' and attr.total_visits > 10");
    let narrowed = ask(q).await;
    let (leads, converted) = cells(&narrowed, "-")["(all)"];
    let mut reader = csv::Reader::from_path(data("leads/Leads.csv")).unwrap();
    let (mut l, mut c) = (0, 0);
    for r in reader.records() {
        let r = r.unwrap();
        let visits: f64 = r[7].parse().unwrap_or(0.0);
        if &r[2] == "API" && visits > 10.0 {
            l += 1;
            c += u64::from(&r[6] == "1");
        }
    }
    assert_eq!((leads, converted), (l, c));
    let mut q = Query {
        by: vec!["attr.city".into()],
        ..Query::default()
    };
    q.add_where("attr.lead_origin == 'Lead Import'");
    let city = ask(q).await;
    assert!(cells(&city, "attr.city").keys().all(|k| k != "Select"));
}

/// What the retail file says, recomputed here (SOURCE.md's definitions): clean lines are
/// those of a non-cancelled invoice with a positive quantity and price.
#[derive(Default)]
struct Retail {
    rows: u64,
    /// Invoice → (customer, clean amount in pence, has a line with quantity > 0, price >= 0).
    invoices: BTreeMap<String, (String, i64, bool)>,
    /// Month (`2011-11`) → clean amount in pence.
    months: BTreeMap<String, i64>,
    /// Country → clean amount in pence.
    countries: BTreeMap<String, i64>,
}

fn pence(price: &str, quantity: i64) -> i64 {
    // Prices have up to 3 decimals (0.001): work in tenths of a penny, round half away.
    let (whole, frac) = price.split_once('.').unwrap_or((price, ""));
    let frac = format!("{frac:0<3}");
    let mills: i64 = whole.parse::<i64>().unwrap() * 1000 + frac[..3].parse::<i64>().unwrap();
    let total = mills * quantity;
    (total + 5 * total.signum()) / 10
}

fn retail() -> Retail {
    let file = std::fs::File::open(data("online-retail/online_retail.csv.gz")).unwrap();
    let mut reader = csv::Reader::from_reader(flate2::read::GzDecoder::new(file));
    let mut out = Retail::default();
    for record in reader.records() {
        let r = record.unwrap();
        out.rows += 1;
        let (invoice, quantity, date, price, customer, country) =
            (&r[0], &r[3], &r[4], &r[5], &r[6], &r[7]);
        if invoice.starts_with('C') {
            continue;
        }
        let quantity: i64 = quantity.parse().unwrap();
        let priced = !price.starts_with('-');
        let entry = out
            .invoices
            .entry(invoice.to_owned())
            .or_insert_with(|| (customer.trim_end_matches(".0").to_owned(), 0, false));
        if quantity > 0 && priced {
            entry.2 = true;
            let amount = pence(price, quantity);
            entry.1 += amount;
            *out.months.entry(date[..7].to_owned()).or_default() += amount;
            *out.countries.entry(country.to_owned()).or_default() += amount;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retail_export_gives_its_figures_through_its_mapping_alone() {
    let file = retail();
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("online-retail/figures.json")).unwrap())
            .unwrap();
    let reference = |key: &str| figures[key].as_f64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = AnyStore::from(SledStore::open(dir.path().join("log")).unwrap());
    let plan = import::mapping::plan(
        &data("online-retail/online_retail.csv.gz"),
        &data("online-retail/mapping.toml"),
    )
    .unwrap();
    let options = RunOptions {
        on_error: OnError::Stop,
        progress: false,
        ..RunOptions::default()
    };
    let summary = import::run(&store, plan, options).await.unwrap();
    assert_eq!((summary.rows, summary.skipped_rows), (541_909, 0));
    assert_eq!(summary.rows, file.rows);

    let reg = Registry::load(&store).await.unwrap();
    let ask = |id: &'static str, q: Query| {
        let (store, reg) = (store.clone(), reg.clone());
        async move { evaluate(&store, &reg, id, None, &q).await.unwrap() }
    };
    let int = |x: Option<Num>| match x.unwrap() {
        Num::Int(i) => i64::try_from(i).unwrap(),
        other => panic!("{other:?}"),
    };
    // Orders: every non-cancelled invoice with a sales line; those whose lines are all free
    // are NO_CHARGE. Clean invoices: SOURCE.md 19,960.
    let placed = file.invoices.values().filter(|i| i.2).count();
    let clean: Vec<_> = file.invoices.values().filter(|i| i.1 > 0).collect();
    let orders = ask("sales.orders", Query::default()).await;
    let o = &orders.figures[0];
    assert_eq!(int(o.numerator), i64::try_from(clean.len()).unwrap());
    assert_eq!(clean.len() as f64, reference("clean_invoices"));
    assert_eq!(
        o.excluded.get("NO_CHARGE").copied(),
        Some(u64::try_from(placed - clean.len()).unwrap())
    );

    // Revenue (clean lines): 10,666,684.54; by month (Nov 2011 1,509,496.33); by country.
    let revenue_pence: i64 = clean.iter().map(|i| i.1).sum();
    assert_eq!(revenue_pence as f64 / 100.0, reference("revenue_clean"));
    let revenue = ask("sales.new_revenue", Query::default()).await;
    assert_eq!(int(revenue.figures[0].numerator), revenue_pence);
    let monthly = ask(
        "sales.new_revenue",
        Query {
            period: crm_metrics::Grain::Month,
            ..Query::default()
        },
    )
    .await;
    let by_month: BTreeMap<String, i64> = monthly
        .figures
        .iter()
        .map(|f| (f.period.label.clone(), int(f.numerator)))
        .collect();
    assert_eq!(by_month, file.months);
    assert_eq!(
        by_month["2011-11"] as f64 / 100.0,
        reference("revenue_2011_11")
    );
    let countries = ask(
        "sales.new_revenue",
        Query {
            by: vec!["attr.country".into()],
            ..Query::default()
        },
    )
    .await;
    let by_country: BTreeMap<String, i64> = countries
        .figures
        .iter()
        .map(|f| (f.dims["attr.country"].clone(), int(f.numerator)))
        .collect();
    assert_eq!(by_country, file.countries);
    assert_eq!(
        by_country["United Kingdom"] as f64 / 100.0,
        figures["revenue_by_country_top5"]["United Kingdom"]
            .as_f64()
            .unwrap()
    );

    // Average order value: clean revenue / clean invoices = 534.40.
    let aov = ask("sales.avg_order_value", Query::default()).await;
    let a = &aov.figures[0];
    assert_eq!(
        (int(a.numerator), int(a.denominator)),
        (revenue_pence, i64::try_from(clean.len()).unwrap())
    );
    assert_eq!(
        a.display,
        format!("GBP {:.2}", reference("average_order_value"))
    );

    // Repeat purchase rate: known customers with >= 2 orders / with >= 1 = 2,845 / 4,339.
    let mut per_customer: BTreeMap<&str, u64> = BTreeMap::new();
    for (customer, _, placed) in file.invoices.values() {
        if *placed && !customer.is_empty() {
            *per_customer.entry(customer).or_default() += 1;
        }
    }
    let repeat = per_customer.values().filter(|n| **n >= 2).count();
    let anonymous = file
        .invoices
        .values()
        .filter(|i| i.2 && i.0.is_empty())
        .count();
    let rate = ask("customer.repeat_purchase_rate", Query::default()).await;
    let r = &rate.figures[0];
    assert_eq!(
        (int(r.numerator), int(r.denominator)),
        (
            i64::try_from(repeat).unwrap(),
            i64::try_from(per_customer.len()).unwrap()
        )
    );
    assert_eq!(
        (repeat as f64, per_customer.len() as f64),
        (
            reference("repeat_customers"),
            reference("customers_with_orders")
        )
    );
    assert_eq!(
        r.display,
        format!("{:.2}%", reference("repeat_purchase_rate_pct"))
    );
    assert_eq!(
        r.excluded.get("NO_CUSTOMER").copied(),
        Some(u64::try_from(anonymous).unwrap())
    );

    // RFM at SOURCE.md's snapshot 2011-12-10: 4,338 scored customers, 348 in 5-5-5, 184 in
    // 1-1-1, 867 or 868 per recency score (pandas qcut of first-ranks, ties by customer id).
    let snapshot = "2011-12-10T00:00:00Z".parse().unwrap();
    let rfm = |by: &str| {
        ask(
            "customer.rfm",
            Query {
                to: Some(snapshot),
                by: vec![by.into()],
                ..Query::default()
            },
        )
    };
    let counts = |ev: &Evaluation, dim: &str| -> BTreeMap<String, i64> {
        ev.figures
            .iter()
            .filter(|f| f.dims[dim] != "(not scored)")
            .map(|f| (f.dims[dim].clone(), int(f.numerator)))
            .collect()
    };
    let cells = counts(&rfm("rfm").await, "rfm");
    assert_eq!(
        cells.values().sum::<i64>() as f64,
        reference("rfm_customers")
    );
    assert_eq!(
        cells["5-5-5"] as f64,
        reference("rfm_segment_555_customers")
    );
    assert_eq!(
        cells["1-1-1"] as f64,
        reference("rfm_segment_111_customers")
    );
    let per_r: BTreeMap<String, f64> = counts(&rfm("r").await, "r")
        .into_iter()
        .map(|(k, v)| (k, v as f64))
        .collect();
    let expected: BTreeMap<String, f64> = figures["rfm_customers_per_R_score"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect();
    assert_eq!(per_r, expected);
}
