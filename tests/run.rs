//! `tmpvault run` end to end: the real binary against the real server.

mod common;

use std::process::{Command, Output};

use common::process::BIN;
use common::TestServer;

/// Runs `tmpvault run ARGS` as a user would, with the client settings in
/// the environment, off the async workers the server uses.
async fn run(server: &TestServer, args: &[&str]) -> Output {
    let files = server.client_files.clone();
    let base = server.base.clone();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("run")
            .args(&args)
            .env("TMPVAULT_ADDR", base)
            .env("TMPVAULT_CACERT", &files.ca)
            .env("TMPVAULT_CLIENT_CERT", &files.cert)
            .env("TMPVAULT_CLIENT_KEY", &files.key)
            .output()
            .expect("tmpvault run")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread")]
async fn env_gets_the_exact_bytes_and_the_exit_code_passes_through() {
    let server = TestServer::start().await;
    server
        .client
        .put(
            "app/db",
            bytes::Bytes::from_static(b"s3cr3t \n=x"),
            &Default::default(),
        )
        .await
        .expect("put");
    let output = run(
        &server,
        &[
            "--env",
            "DB=app/db",
            "--",
            "sh",
            "-c",
            "printf %s \"$DB\"; exit 7",
        ],
    )
    .await;
    assert_eq!(output.stdout, b"s3cr3t \n=x");
    assert_eq!(output.status.code(), Some(7));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_key_fails_before_the_program_starts() {
    let server = TestServer::start().await;
    let marker = server.pki.scratch_dir().join("side-effect");
    let script = format!("touch {}", marker.display());
    let output = run(
        &server,
        &["--env", "DB=app/absent", "--", "sh", "-c", &script],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("secret app/absent: HTTP 404 not_found"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the program ran");
    server.stop().await;
}
