//! The `trellis` binary started as a newcomer starts it: `trellis serve` with no
//! database, no `TRELLIS_RUNTIME`, then SIGTERM. The rest of the suite builds the app
//! in-process; this is the one test of what `main` itself chooses and wires.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PASSWORD: &str = "correct-horse-battery";

/// The server's output lines, read on a thread of their own.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trellis"));
        cmd.arg("serve");
        // Whatever the suite runs with (a database, secrets, a runtime) must not leak in.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("TRELLIS_") || name == "DATABASE_URL" {
                cmd.env_remove(&name);
            }
        }
        cmd.env("TRELLIS_BIND", "127.0.0.1:0")
            .env("TRELLIS_SEED_PASSWORD", PASSWORD)
            .env("TRELLIS_LOG", "info")
            // Two runtimes whatever the machine, so connections are handed between them.
            .env("TOKIO_WORKER_THREADS", "2")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the trellis binary starts");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads output until a line contains `needle`; panics with all output after 120 s.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?}; the server wrote:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn trellis_serve_with_no_database_runs_a_runtime_per_core_on_memory_and_stops_on_sigterm() {
    let mut server = Server::start();
    let listening = server.wait_for("trellis listening");
    assert!(
        server.seen.iter().any(|l| l.contains("NOTHING PERSISTS")),
        "no warning that nothing persists:\n{}",
        server.seen.join("\n")
    );
    assert!(listening.contains("runtime=PerCore(2)"), "{listening}");
    let addr = listening
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .expect("the listening line names its address")
        .to_owned();

    let client = || reqwest::Client::builder().no_proxy().build().unwrap();
    let login: serde_json::Value = client()
        .post(format!("http://{addr}/v1/auth/login"))
        .json(&serde_json::json!({
            "tenant": "demo",
            "email": "admin@demo.example.com",
            "password": PASSWORD,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let Some(token) = login["access_token"].as_str().map(str::to_owned) else {
        panic!("the demo admin could not log in: {login}");
    };

    // A client each, so each request comes on its own connection and both runtimes serve.
    let lists = (0..8).map(|_| {
        let token = token.clone();
        let addr = addr.clone();
        async move {
            let res = client()
                .get(format!("http://{addr}/v1/users?limit=20"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (res.status(), res.json::<serde_json::Value>().await.unwrap())
        }
    });
    for (status, body) in futures::future::join_all(lists).await {
        assert_eq!(status, 200, "{body}");
        let emails: Vec<&str> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["email"].as_str())
            .collect();
        assert!(emails.contains(&"admin@demo.example.com"), "{body}");
    }

    let pid = server.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    server.wait_for("shut down cleanly");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exited with {status}");
}
