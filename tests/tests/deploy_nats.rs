//! The NATS server configs of `deploy/` pass `nats-server -t` (the pinned server), with the
//! password variables of `accounts.conf` set to bcrypt hashes as in production, and again
//! with their commented `tls {}` block turned on (certificates generated here). Without
//! the variables the server refuses to start: no config falls back to an open server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use crm_tests::nats::test_config;

/// A bcrypt hash (of "example"), the form the variables hold in production.
const HASH: &str = "$2a$11$Tf1G1nqcMUGsRMO7o8Gg8ui5dbmWq1YMXy9bQNjQjtu3rkCCYyEvC";
const VARS: [&str; 4] = [
    "CRM_STORE_NATS_PASSWORD",
    "CRM_LOG_ADMIN_NATS_PASSWORD",
    "CRM_PUBLISHER_NATS_PASSWORD",
    "CRM_CONSUMER_NATS_PASSWORD",
];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every server config and the directory holding its `accounts.conf`.
fn configs() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = (1..=3)
        .map(|n| deploy().join(format!("nats/nats-{n}.conf")))
        .collect();
    all.push(deploy().join("k8s/nats.conf"));
    all
}

fn env() -> Vec<(&'static str, &'static str)> {
    let mut env: Vec<(&str, &str)> = VARS.iter().map(|v| (*v, HASH)).collect();
    env.push(("SERVER_NAME", "nats-0"));
    env
}

/// `conf` copied with its `accounts.conf` into `dir`, `edit` applied to its text.
fn copy(conf: &Path, dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let accounts = conf.parent().unwrap().join("accounts.conf");
    std::fs::copy(accounts, dir.join("accounts.conf")).unwrap();
    let target = dir.join("nats.conf");
    std::fs::write(&target, edit(std::fs::read_to_string(conf).unwrap())).unwrap();
    target
}

fn check(conf: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = test_config(conf, env);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_deploy_config_is_valid_with_accounts_and_without_them_refuses_to_start() {
    for conf in configs() {
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(
            text.contains("include ./accounts.conf"),
            "{}",
            conf.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let copied = copy(&conf, dir.path(), |t| t);
        let (ok, out) = check(&copied, &env());
        assert!(ok, "{}: {out}", conf.display());
        // One password variable missing: the server does not start.
        let partial: Vec<(&str, &str)> = env().into_iter().skip(1).collect();
        let (ok, out) = check(&copied, &partial);
        assert!(!ok && out.contains(VARS[0]), "{}: {out}", conf.display());
    }
    assert_eq!(
        std::fs::read_to_string(deploy().join("nats/accounts.conf")).unwrap(),
        std::fs::read_to_string(deploy().join("k8s/accounts.conf")).unwrap(),
        "deploy/k8s/accounts.conf is a copy of deploy/nats/accounts.conf"
    );
}

#[test]
fn no_deploy_file_holds_a_clear_nats_password() {
    for conf in [
        deploy().join("nats/accounts.conf"),
        deploy().join("k8s/accounts.conf"),
    ] {
        let text = std::fs::read_to_string(&conf).unwrap();
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("password") || l.contains(" password:"))
        {
            assert!(
                line.contains("password: $"),
                "{}: a password that is not a variable reference: {line}",
                conf.display()
            );
        }
    }
}

#[test]
fn the_commented_tls_block_is_valid_once_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["nats-1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_file = dir.path().join("server.pem");
    let key_file = dir.path().join("server-key.pem");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    for conf in configs() {
        let work = tempfile::tempdir().unwrap();
        let copied = copy(&conf, work.path(), |text| {
            let mut out = String::new();
            let mut inside = false;
            for line in text.lines() {
                if line.starts_with("# tls {") {
                    inside = true;
                }
                let line = if inside {
                    line.strip_prefix("# ")
                        .or(line.strip_prefix('#'))
                        .unwrap_or(line)
                } else {
                    line
                };
                if inside && line.starts_with('}') {
                    inside = false;
                }
                out.push_str(line);
                out.push('\n');
            }
            out.replace("/etc/nats/tls/server.pem", &cert_file.display().to_string())
                .replace(
                    "/etc/nats/tls/server-key.pem",
                    &key_file.display().to_string(),
                )
                .replace("/etc/nats/tls/tls.crt", &cert_file.display().to_string())
                .replace("/etc/nats/tls/tls.key", &key_file.display().to_string())
        });
        let text = std::fs::read_to_string(&copied).unwrap();
        assert!(text.contains("\ntls {"), "{}: no tls block", conf.display());
        let (ok, out) = check(&copied, &env());
        assert!(ok, "{} with TLS: {out}", conf.display());
    }
}
