//! Secure defaults of the real `crm serve`: it refuses a network address without
//! authentication and says how to configure it; with a token granted (`crm auth token
//! create`) it starts and answers 401 without a credential; the data directory is created
//! owner-only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::crm;

/// Starts `command` as `serve --listen 0.0.0.0:0 --no-projections`: the child, the base URL
/// reaching it over loopback, and the line saying how it authenticates.
fn serve_on_every_interface(command: &mut Command) -> (Child, String, String) {
    let mut child = command
        .args(["serve", "--listen", "0.0.0.0:0", "--no-projections"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    let auth_line = lines.next().unwrap().unwrap();
    let port = banner
        .split("listening on http://0.0.0.0:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();
    (child, format!("http://127.0.0.1:{port}"), auth_line)
}

/// `GET /v1/auth/whoami` with `token`: the principal.
async fn whoami(client: &reqwest::Client, base: &str, token: &str) -> serde_json::Value {
    let me = client
        .get(format!("{base}/v1/auth/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status().as_u16(), 200);
    me.json().await.unwrap()
}

fn create_token(dir: &std::path::Path, name: &str, role: &str) -> String {
    let out =
        common::run_ok(crm(dir).args(["auth", "token", "create", "--name", name, "--role", role]));
    out.lines().next().unwrap().trim().to_owned()
}

#[test]
fn serve_refuses_a_network_address_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let out = crm(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("CRM_AUTH_REQUIRED")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refuses to listen on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
    assert!(stderr.contains("crm auth token create"), "{stderr}");

    // Explicitly off is refused on a network address too, even with a token granted.
    create_token(dir.path(), "ops", "admin");
    let out = crm(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("CRM_AUTH_REQUIRED", "false")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn with_a_token_granted_serve_starts_on_a_network_address_and_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "ops", "admin");
    assert!(token.starts_with("crm_"), "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the data directory is owner-only");
    }
    let (mut child, base, auth_line) =
        serve_on_every_interface(crm(&data).env_remove("CRM_AUTH_REQUIRED"));
    assert!(
        auth_line.contains("authentication: required"),
        "{auth_line}"
    );
    let client = reqwest::Client::new();
    let anonymous = client
        .get(format!("{base}/v1/auth/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    assert_eq!(whoami(&client, &base, &token).await["name"], "token:ops");
    let probe = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(probe.status().as_u16(), 200, "probes need no credential");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_fresh_deployment_starts_with_a_bootstrap_admin_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let generated = common::run_ok(crm(dir.path()).args(["auth", "token", "generate"]));
    let field = |name: &str| {
        generated
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (token, hash) = (field("token:"), field("sha256:"));
    assert!(
        !dir.path().join("log").exists(),
        "generate touches no data directory"
    );
    let (mut child, base, _) =
        serve_on_every_interface(crm(dir.path()).env("CRM_AUTH_ADMIN_TOKEN_SHA256", &hash));
    let client = reqwest::Client::new();
    assert_eq!(
        whoami(&client, &base, &token).await["name"],
        "token:bootstrap-admin"
    );
    // With it, an admin grants the real tokens.
    let granted = client
        .post(format!("{base}/v1/auth/tokens"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "ci", "roles": ["writer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status().as_u16(), 201);
    let granted: serde_json::Value = granted.json().await.unwrap();
    let ci = granted["token"].as_str().unwrap();
    assert_eq!(whoami(&client, &base, ci).await["name"], "token:ci");
    let _ = child.kill();
    let _ = child.wait();
}
