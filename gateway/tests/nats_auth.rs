//! NATS credentials, least-privilege users and TLS, against a real nats-server (started by
//! the `crm-tests` harness) whose users and permissions are those of
//! `deploy/nats/accounts.conf`, with the environment references replaced by test passwords.
//!
//! - The publisher as `crm-publisher` publishes to `crm.events.>`; `crm-consumer` receives
//!   with a durable consumer and `crm tail`; no credentials or a wrong password are refused
//!   with an error that says "authorization violation" and names the settings.
//! - Least privilege: the consumer cannot publish to `crm.events.x`, the publisher cannot
//!   publish outside `crm.events.>` (the server reports a permissions violation and the
//!   streams are unchanged).
//! - The JetStream store as `crm-store` (its own account) appends and reads; the `crm`
//!   binary with a wrong password in `[nats]` names the section to fix.
//! - TLS: with `tls_required` and the CA file a TLS server is reached; without the CA the
//!   error is a TLS error that says to set the CA file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use crm_eventstore::jetstream::{
    NatsClientAuth, NatsConnectError, NatsCredentials, NatsTls, Secret, SecretSource,
};
use crm_eventstore::{
    EventId, EventStore, ExpectedVersion, JetStreamConfig, JetStreamStore, MemoryStore, Position,
    ProposedEvent, StreamId,
};
use crm_publish::{PublishSettings, Publisher, PublisherOptions};
use crm_tests::nats::{NatsCluster, Probe};
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(20);

/// The users of `deploy/nats/accounts.conf` and the passwords the test gives them.
const USERS: [(&str, &str, &str); 4] = [
    ("crm-store", "CRM_STORE_NATS_PASSWORD", "store-pw"),
    ("crm-log-admin", "CRM_LOG_ADMIN_NATS_PASSWORD", "admin-pw"),
    (
        "crm-publisher",
        "CRM_PUBLISHER_NATS_PASSWORD",
        "publisher-pw",
    ),
    ("crm-consumer", "CRM_CONSUMER_NATS_PASSWORD", "consumer-pw"),
];

fn password(user: &str) -> &'static str {
    USERS.iter().find(|u| u.0 == user).unwrap().2
}

/// `deploy/nats/accounts.conf` with each `$VAR` replaced by the test password.
fn deploy_accounts() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/accounts.conf");
    let mut text = std::fs::read_to_string(path).unwrap();
    for (_, var, pw) in USERS {
        assert!(text.contains(&format!("${var}")), "{var} in accounts.conf");
        text = text.replace(&format!("${var}"), &format!("\"{pw}\""));
    }
    text
}

/// A server with the deploy accounts; the probe connects as `crm-store`.
async fn server_with_accounts(extra: &str, ca: Option<PathBuf>) -> NatsCluster {
    NatsCluster::single_with(
        &format!("{}\n{extra}", deploy_accounts()),
        Probe {
            user: Some(("crm-store".into(), password("crm-store").into())),
            ca_file: ca,
        },
    )
    .await
}

fn as_user(user: &str, pw: &str) -> NatsClientAuth {
    NatsClientAuth {
        credentials: Some(NatsCredentials::UserPassword {
            user: user.into(),
            password: SecretSource::Value {
                secret: Secret::new(pw),
                origin: "the test's password".into(),
            },
        }),
        settings: "the test's [nats] section".into(),
        ..NatsClientAuth::default()
    }
}

fn user(name: &str) -> NatsClientAuth {
    as_user(name, password(name))
}

async fn append_cases(store: &impl EventStore, count: u32) {
    for i in 0..count {
        let event = ProposedEvent {
            event_id: EventId(uuid::Uuid::now_v7()),
            event_type: "CaseOpened".into(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            causation_id: None,
            correlation_id: None,
            actor: "test".into(),
            metadata: Vec::new(),
            payload: format!(r#"{{"case":"{i}"}}"#).into_bytes(),
        };
        store
            .append(
                &StreamId::new(format!("case-{i}")).unwrap(),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .unwrap();
    }
}

/// A client as `auth` that records the server's error reports (permissions violations).
async fn connect_recording(url: &str, auth: &NatsClientAuth) -> (async_nats::Client, Errors) {
    let errors: Errors = Arc::default();
    let sink = Arc::clone(&errors);
    let options = async_nats::ConnectOptions::new().event_callback(move |event| {
        let sink = Arc::clone(&sink);
        async move {
            if let async_nats::Event::ServerError(e) = event {
                sink.lock().unwrap().push(e.to_string());
            }
        }
    });
    (auth.connect(options, url, url).await.unwrap(), errors)
}

type Errors = Arc<Mutex<Vec<String>>>;

async fn wait_for_error(errors: &Errors, text: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(e) = errors
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.contains(text))
            .cloned()
        {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no server error containing {text:?}; got {:?}",
            errors.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The permissions granted are enough for what the programs do: the server logged no
/// violation.
fn no_violation_logged(nats: &NatsCluster) {
    let log = nats.nodes[0].log_tail();
    assert!(!log.contains("Violation"), "{log}");
}

async fn last_sequence(js: &async_nats::jetstream::Context) -> u64 {
    let mut stream = js.get_stream("CRM_EVENTS").await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_consumers_get_exactly_their_permissions() {
    let nats = server_with_accounts("", None).await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryStore::new();
    append_cases(&log, 5).await;

    // Without credentials, or with a wrong password, the publisher is refused and says so.
    for (auth, presented) in [
        (
            NatsClientAuth {
                settings: "the test's [nats] section".into(),
                ..NatsClientAuth::default()
            },
            "no credentials",
        ),
        (as_user("crm-publisher", "wrong"), "user `crm-publisher`"),
    ] {
        let mut options = PublisherOptions::new(&PublishSettings::default(), &url, dir.path());
        options.auth = auth;
        let publisher = Publisher::start(log.clone(), options).unwrap();
        let error = publisher
            .state()
            .wait_for(|s| s.last_error.is_some())
            .await
            .unwrap()
            .last_error
            .clone()
            .unwrap();
        publisher.stop().await;
        assert!(
            error.contains("authorization violation")
                && error.contains(presented)
                && error.contains("the test's [nats] section"),
            "{error}"
        );
        assert!(
            !error.contains("wrong"),
            "the password is not shown: {error}"
        );
    }

    // As crm-publisher: every position is published.
    let mut options = PublisherOptions::new(&PublishSettings::default(), &url, dir.path());
    options.auth = user("crm-publisher");
    let publisher = Publisher::start(log.clone(), options).unwrap();
    tokio::time::timeout(
        WAIT,
        publisher.state().wait_for(|s| s.published_position == 5),
    )
    .await
    .expect("published within the wait")
    .unwrap();

    // crm-consumer reads them with a durable consumer and acknowledges.
    let (consumer_client, consumer_errors) = connect_recording(&url, &user("crm-consumer")).await;
    let js = async_nats::jetstream::new(consumer_client.clone());
    let consumer = js
        .get_stream("CRM_EVENTS")
        .await
        .unwrap()
        .get_or_create_consumer(
            "billing",
            pull::Config {
                durable_name: Some("billing".into()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut positions = Vec::new();
    while positions.len() < 5 {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("a message within the wait")
            .unwrap()
            .unwrap();
        positions.push(crm_publish::message::position_of(message.headers.as_ref()).unwrap());
        message.double_ack().await.unwrap();
    }
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    no_violation_logged(&nats);

    // crm tail, as crm-consumer.
    let mut out = Vec::new();
    let tail = crm_publish::tail::TailOptions {
        nats: Some(url.clone()),
        from: Some(1),
        limit: Some(5),
        auth: user("crm-consumer"),
        ..Default::default()
    };
    let printed = tokio::time::timeout(
        WAIT,
        crm_publish::tail::run(&tail, &PublishSettings::default(), &mut out),
    )
    .await
    .expect("tail within the wait")
    .unwrap();
    assert_eq!(printed, 5, "{}", String::from_utf8_lossy(&out));
    no_violation_logged(&nats);
    // crm tail with the publisher's user cannot create a consumer: refused, not hung.
    let tail = crm_publish::tail::TailOptions {
        auth: user("crm-publisher"),
        ..tail
    };
    let refused = tokio::time::timeout(
        WAIT,
        crm_publish::tail::run(&tail, &PublishSettings::default(), &mut Vec::new()),
    )
    .await
    .expect("tail answers within the wait");
    assert!(refused.is_err(), "the publisher's user may not consume");

    // The consumer may not publish events.
    let before = last_sequence(&js).await;
    consumer_client
        .publish("crm.events.case.x", "forged".into())
        .await
        .unwrap();
    consumer_client.flush().await.unwrap();
    let violation = wait_for_error(&consumer_errors, "crm.events.case.x").await;
    assert!(
        violation.to_lowercase().contains("permissions violation"),
        "{violation}"
    );

    // The publisher may publish nowhere but crm.events.>: not on the log's subjects, not
    // elsewhere.
    let (publisher_client, publisher_errors) =
        connect_recording(&url, &user("crm-publisher")).await;
    for subject in ["crm.log.case-1", "orders.created"] {
        publisher_client.publish(subject, "x".into()).await.unwrap();
        publisher_client.flush().await.unwrap();
        let violation = wait_for_error(&publisher_errors, subject).await;
        assert!(
            violation.to_lowercase().contains("permissions violation"),
            "{violation}"
        );
    }
    assert_eq!(
        last_sequence(&js).await,
        before,
        "nothing forged was stored"
    );
    // The server logs violations (so no_violation_logged above means something).
    let log = nats.nodes[0].log_tail();
    assert!(log.contains("Violation"), "{log}");
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_runs_as_its_own_account_and_a_wrong_password_names_the_setting() {
    let nats = server_with_accounts("", None).await;
    let url = nats.url();

    let mut config = JetStreamConfig::new(url.clone());
    config.auth = user("crm-store");
    let store = JetStreamStore::open(config.clone()).await.unwrap();
    append_cases(&store, 3).await;
    let read = store.read_all(Position(1), 10).await.unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(store.head().position, Position(3));
    // The store's tail (an ordered consumer) runs too: nothing it did was denied.
    tokio::time::sleep(Duration::from_millis(500)).await;
    no_violation_logged(&nats);
    drop(store);
    // Another process of the same user sees the log.
    let again = JetStreamStore::open(config).await.unwrap();
    assert_eq!(again.head().position, Position(3));
    drop(again);

    // The consumer's user is in the other account: it does not even see CRM_LOG.
    let consumer = async_nats::jetstream::new(
        user("crm-consumer")
            .connect(
                async_nats::ConnectOptions::new().request_timeout(Some(Duration::from_secs(1))),
                url.as_str(),
                &url,
            )
            .await
            .unwrap(),
    );
    assert!(consumer.get_stream("CRM_LOG").await.is_err());

    // The binary: a wrong password in [nats] is refused, naming the section and variable.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("store-password");
    std::fs::write(&secret, "not-the-password\n").unwrap();
    let toml = dir.path().join("crm.toml");
    std::fs::write(
        &toml,
        format!(
            "store = \"{url}\"\n[nats]\nuser = \"crm-store\"\npassword_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let out = common::crm(dir.path())
        .arg("--config")
        .arg(&toml)
        .arg("stats")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("authorization violation")
            && stderr.contains("user `crm-store`")
            && stderr.contains(&secret.display().to_string())
            && stderr.contains("[nats]")
            && stderr.contains("CRM_NATS_"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    // The right password from the variable opens the log.
    let out = common::crm(dir.path())
        .arg("--config")
        .arg(&toml)
        .arg("stats")
        .env("CRM_NATS_PASSWORD", password("crm-store"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files in `dir`:
/// (ca.pem, server.pem, server-key.pem).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "crm test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let server = server_params.signed_by(&server_key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, server.pem()).unwrap();
    std::fs::write(&paths.2, server_key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_works_with_the_ca_file_and_fails_clearly_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let tls = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 2\n}}\n",
        cert.display(),
        key.display()
    );
    let nats = server_with_accounts(&tls, Some(ca.clone())).await;
    let url = nats.url();

    let mut auth = user("crm-store");
    auth.tls = NatsTls {
        ca_file: Some(ca),
        client_cert: None,
        required: true,
    };
    let mut config = JetStreamConfig::new(url.clone());
    config.auth = auth.clone();
    let store = JetStreamStore::open(config).await.unwrap();
    append_cases(&store, 1).await;
    assert_eq!(store.head().position, Position(1));
    drop(store);

    auth.tls.ca_file = None;
    let options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(2));
    let error = auth
        .connect(options, url.as_str(), &url)
        .await
        .expect_err("refused without the CA");
    assert!(matches!(error, NatsConnectError::Tls { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("TLS") && text.contains("CA file") && text.contains("the test's [nats]"),
        "{text}"
    );
}
