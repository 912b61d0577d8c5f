//! `crm demo --no-serve` end to end: the real binary on an empty data directory, twice, as on
//! a fresh machine (no master key configured: the demo creates one beside the data
//! directory), and none of the personal data it imported is in the data directory's files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::files;

/// `crm` as on a fresh machine: the harness's clean environment without its master key.
fn crm(data_dir: &Path) -> Command {
    let mut command = common::crm(data_dir);
    command.env_remove("CRM_MASTER_KEY");
    command
}

fn demo(data_dir: &Path) -> String {
    let out = crm(data_dir).args(["demo", "--no-serve"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "crm demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

#[test]
fn demo_imports_scores_explains_and_appends_nothing_the_second_time() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let dir = &data;
    let first = demo(dir);
    assert!(
        parent.path().join("data.master-key").exists(),
        "the demo creates its master key beside the data directory"
    );
    // The 41 Maven agents' names are personal data: sealed, never in a file in plain text.
    let teams = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/maven-crm/sales_teams.csv"),
    )
    .unwrap();
    let names: std::collections::BTreeSet<&str> = teams
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').take(2))
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(names.len(), 41, "35 agents and 6 managers");
    let stored = files(&data);
    assert!(stored.len() > 3, "{stored:?}");
    // One pass per file for all the names (Aho-Corasick), not one per name.
    let finder = aho_corasick::AhoCorasick::new(&names).unwrap();
    for file in &stored {
        let bytes = std::fs::read(file).unwrap();
        if let Some(found) = finder.find(&bytes) {
            panic!(
                "{} in plain text in {}",
                String::from_utf8_lossy(&bytes[found.range()]),
                file.display()
            );
        }
    }
    // Every bundled data set imported, all events new.
    for (set, events) in [
        ("maven-crm", 23_980),
        ("telco-churn", 22_998),
        ("helpdesk", 15_639),
        ("leads", 25_602),
        ("online-retail", 41_792),
    ] {
        let line = line_with(&first, set);
        assert!(
            line.contains(&format!(
                "-> {events:>6} events ({events} appended, 0 already present)"
            )),
            "{line}"
        );
    }
    // The scorecard carries definition versions and the reference figures of the data.
    assert!(line_with(&first, "sales.win_rate ").contains("63.15%"));
    assert!(line_with(&first, "sales.win_rate ").contains("4238 / 6711"));
    assert!(line_with(&first, "sales.avg_deal_size").contains("USD 2360.91"));
    assert!(line_with(&first, "sales.cycle_duration").contains("51.78 d"));
    // The leads export (SOURCE.md): 9,240 leads, 3,561 converted = 38.54 %; by origin, a
    // custom attribute asked at query time: Lead Add Form 92.48 % of 718.
    assert!(line_with(&first, "marketing.new_leads").contains(" 9240 "));
    let conversion = line_with(&first, "marketing.lead_conversion_rate ");
    assert!(
        conversion.contains("38.54%") && conversion.contains("3561 / 9240"),
        "{conversion}"
    );
    let add_form = line_with(&first, "Lead Add Form");
    assert!(
        add_form.contains("92.48%") && add_form.contains("(718 leads)"),
        "{add_form}"
    );
    assert!(!first.contains("no data"), "{first}");
    // Online retail (SOURCE.md): 19,960 orders with something to pay, GBP 534.40 per order,
    // 2,845 of 4,339 customers ordered again, 348 customers in RFM cell 5-5-5 at 2011-12-10.
    let orders = line_with(&first, "sales.orders");
    assert!(
        orders.contains(" 19960 ") && orders.contains("excluded NO_CHARGE 766"),
        "{orders}"
    );
    assert!(first.contains("GBP 10666684.54"), "{first}");
    assert!(line_with(&first, "sales.avg_order_value").contains("GBP 534.40"));
    let repeat = line_with(&first, "customer.repeat_purchase_rate");
    assert!(
        repeat.contains("65.57%") && repeat.contains("2845 / 4339"),
        "{repeat}"
    );
    assert!(line_with(&first, "customer.rfm").contains(" 348 "));
    // Helpdesk (SOURCE.md): 3,804 cases, 974 closed on the day opened = 25.60 %; the cases
    // opened figure leaves out the 236 closed as invalid, and says so.
    let same_day = line_with(&first, "service.cases_closed_same_day");
    assert!(same_day.contains(" v4 "), "{same_day}");
    assert!(
        same_day.contains("25.60%") && same_day.contains("974 / 3804"),
        "{same_day}"
    );
    let opened = line_with(&first, "service.cases_opened");
    assert!(
        opened.contains(" 3568 ") && opened.contains("excluded INVALID 236"),
        "{opened}"
    );
    // Telco (SOURCE.md): 1,869 of 7,043 customers churned = 26.54 %.
    let churn = line_with(&first, "customer.churn_rate");
    assert!(churn.contains(" v3 "), "{churn}");
    assert!(
        churn.contains("26.54%") && churn.contains("1869 / 7043"),
        "{churn}"
    );
    // The redefinition shows both versions with different figures.
    assert!(first.contains("v1 Churn rate") && first.contains("v2 Revenue churn rate"));
    let y2019 = line_with(&first, "   2019 ");
    assert!(y2019.contains("  vs  "), "{y2019}");
    // The explained figure adds up: considered = included + excluded.
    let totals = line_with(&first, "facts: ");
    assert!(
        totals.contains("6711 considered = 6711 included + 0 excluded"),
        "{totals}"
    );

    // The cockpit: defined once, its root read from the same log, its offices from the
    // same events restricted by region.
    assert!(first.contains("cockpit v1: appended"), "{first}");
    let cockpit_win = line_with(&first, "Sales      Win rate ");
    assert!(
        cockpit_win.contains("63.15%") && cockpit_win.contains("at risk"),
        "{cockpit_win}"
    );
    let cockpit_churn = line_with(&first, "Churn share (Telco)");
    assert!(cockpit_churn.contains("26.54%"), "{cockpit_churn}");
    for (office, rate) in [
        ("Central", "62.56%"),
        ("East", "63.02%"),
        ("West", "63.94%"),
    ] {
        let line = line_with(&first, &format!("{office} office "));
        assert!(line.contains(&format!("win rate  {rate}")), "{line}");
        assert!(line.contains("2 below"), "{line}");
    }
    assert!(
        first.contains("http://127.0.0.1:"),
        "the demo prints the cockpit's address"
    );

    // The anchor the demo prints holds for the log it computed from.
    let anchor = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("crm verify --anchor "))
        .expect("the demo prints an anchor");
    assert!(anchor.starts_with("130012:"), "{anchor}");

    let second = demo(dir);
    for (set, events) in [
        ("maven-crm", 23_980),
        ("telco-churn", 22_998),
        ("helpdesk", 15_639),
        ("leads", 25_602),
        ("online-retail", 41_792),
    ] {
        let line = line_with(&second, set);
        assert!(
            line.contains(&format!("(0 appended, {events} already present)")),
            "{line}"
        );
    }
    assert!(line_with(&second, "demo done").contains("130012 records"));
    assert!(second.contains("cockpit v1: already defined"), "{second}");
    // Same log, same figures.
    assert_eq!(
        line_with(&first, "sales.win_rate "),
        line_with(&second, "sales.win_rate ")
    );
    // The anchor printed by the first run still holds after the second.
    let verified = crm(dir)
        .args(["verify", "--anchor", anchor])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{stdout}");
    assert!(stdout.contains("anchor 130012 ok"), "{stdout}");
}
