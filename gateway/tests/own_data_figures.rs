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
