//! `ringcast-load` against the example programs as users run them: the chat server over
//! its own TLS (wss://, a certificate made here with rcgen), and the `pubsub` service's
//! stamped ticks measured by a scenario file. The programs are the binaries
//! `cargo test --workspace` builds beside `ringcast-load`.

mod common;

use ringcast::server::Backend;

use common::{int, run, run_with, uint, Program, Scratch};

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in `scratch`:
/// (certificate, key).
fn certificate(scratch: &Scratch) -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("certificate");
    let cert = scratch.write("cert.pem", &certified.cert.pem());
    let key = scratch.write("key.pem", &certified.key_pair.serialize_pem());
    (
        cert.to_str().expect("utf-8").to_owned(),
        key.to_str().expect("utf-8").to_owned(),
    )
}

#[test]
fn wss_against_the_chat_servers_tls_with_a_trusted_ca_an_origin_and_insecure() {
    let scratch = Scratch::new("wss");
    let (cert, key) = certificate(&scratch);
    let chat = Program::start("chat", &["--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("wss://{}/ws", chat.addr);
    let origin = format!("https://{}", chat.addr);

    // Trusting the certificate (--ca), from the page's own origin: the room works.
    let report = run(
        Backend::Uring,
        &[
            "fanout",
            "--url",
            &url,
            "--room",
            "tls",
            "--subscribers",
            "20",
            "--rate",
            "100",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--workers",
            "1",
            "--ca",
            &cert,
            "--origin",
            &origin,
        ],
    );
    assert!(report["url"].as_str().expect("url").starts_with("wss://"));
    assert_eq!(uint(&report, "subscribers_open"), 20, "{report}");
    assert_eq!(uint(&report, "published"), 100, "{report}");
    assert_eq!(uint(&report, "received"), 100 * 20, "{report}");
    assert_eq!(int(&report, "loss"), 0);
    assert_eq!(uint(&report, "errors"), 0, "{report}");

    // --insecure takes the self-signed certificate as it is; the chat server's origin
    // check answers another site's page with 403.
    let report = run(
        Backend::Uring,
        &[
            "conns",
            "--url",
            &url,
            "--connections",
            "3",
            "--rate",
            "100",
            "--hold",
            "0",
            "--workers",
            "1",
            "--insecure",
            "--origin",
            "https://elsewhere.example",
        ],
    );
    assert_eq!(uint(&report, "opened"), 0, "{report}");
    assert_eq!(uint(&report, "failed"), 3, "{report}");
    assert!(
        report["error_samples"].to_string().contains("403"),
        "{report}"
    );

    // Neither: webpki's roots do not know the certificate, and the run says so.
    let outcome = run_with(
        Backend::Uring,
        &[
            "conns",
            "--url",
            &url,
            "--connections",
            "2",
            "--rate",
            "100",
            "--hold",
            "0",
            "--workers",
            "1",
        ],
    );
    assert_eq!(uint(&outcome.report, "failed"), 2, "{}", outcome.report);
    let samples = outcome.report["error_samples"].to_string().to_lowercase();
    assert!(samples.contains("certificate"), "{samples}");
}

#[test]
fn a_scenario_file_subscribes_to_pubsub_and_measures_its_stamped_ticks() {
    let pubsub = Program::start(
        "pubsub",
        &["--topics", "ticks,news", "--interval-ms", "10", "--stamp"],
    );
    let scratch = Scratch::new("pubsub");
    let series = scratch.path("series.jsonl");
    // Every tick of a round has the same seq on each topic: the key keeps the two
    // sequences apart (without it, each number would look received twice).
    let scenario = scratch.write(
        "pubsub.toml",
        &format!(
            r#"
url = "ws://{}/ws?topic=ticks"
warmup = "0.5s"
duration = "2s"
connections = 10

[stream]
seq = "seq"
ts = "ts"
key = "topic"

[thresholds]
max_loss = 0

[[steps]]
send = "+news"

[[steps]]
receive = "end"
"#,
            pubsub.addr
        ),
    );
    let report = run(
        Backend::Uring,
        &[
            "run",
            scenario.to_str().expect("utf-8"),
            "--workers",
            "1",
            "--series",
            series.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(report["latency_of"], "stream one-way");
    assert_eq!(uint(&report, "users"), 10);
    let stream = &report["stream"];
    let received = uint(stream, "received");
    assert!(received > 0, "{report}");
    for field in [
        "gaps",
        "missing",
        "duplicates",
        "reordered",
        "other",
        "clock_ahead",
    ] {
        assert_eq!(uint(stream, field), 0, "{field}: {report}");
    }
    // One-way latency, one sample per tick.
    let latency = &report["latency_us"];
    assert_eq!(uint(latency, "count"), received);
    assert!(latency["p50"].as_f64().expect("p50") > 0.0, "{report}");
    assert_eq!(report["thresholds"][0]["name"], "max_loss");
    assert_eq!(report["thresholds"][0]["pass"], true);
    assert_eq!(uint(&report, "errors"), 0, "{report}");
    // A JSON line a second.
    let rows = std::fs::read_to_string(&series).expect("series");
    let first: serde_json::Value =
        serde_json::from_str(rows.lines().next().expect("a row")).expect("json");
    for column in ["t_s", "open", "rate", "errors", "latency_count", "p99_us"] {
        assert!(first[column].is_number(), "{column}: {rows}");
    }
}
