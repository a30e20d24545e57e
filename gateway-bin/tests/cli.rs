//! The `switchboard` command as a user runs it.

// Helpers outside #[test] functions may unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[test]
fn help_is_available_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
    ] {
        let out = bin().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("--config") || text.contains("check"),
            "{text}"
        );
    }
}

#[test]
fn check_accepts_the_quickstart() {
    let out = bin()
        .args(["check", "-c"])
        .arg(repo_file("examples/configs/quickstart.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok, 3 endpoints"));
}

#[test]
fn check_accepts_krakend_ce_integration_config_unchanged() {
    // KrakenD CE's own `tests/fixtures/krakend.json`, with its Lua sources
    // beside it (found relative to the config file's directory).
    let out = bin()
        .args(["check", "-c"])
        .arg(repo_file("tests/fixtures/krakend-ce/krakend.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Warnings only (observational namespaces); the JWK set it names is
    // on the suite's backend, not running here, which is logged.
    let all = format!("{stdout}\n{stderr}");
    assert!(!all.lines().any(|l| l.starts_with("error")), "{all}");
    assert!(stdout.contains("ok, 35 endpoints"), "{stdout}");
}

#[test]
fn check_names_the_json_path_of_every_error() {
    let path = write_config(
        "bad.json",
        r#"{
          "version": 3,
          "endpoints": [
            {"endpoint": "/a", "timeout": "soon", "backend": [{"url_pattern": "/x", "host": ["h"]}]}
          ]
        }"#,
    );
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("$.endpoints[0].timeout"), "{stderr}");

    let path = write_config(
        "bad2.json",
        r#"{
          "version": 3,
          "endpoints": [
            {"endpoint": "/a/{id}", "backend": [{"url_pattern": "/x/{other}", "host": ["h"]}]},
            {"endpoint": "/b", "backend": [{"url_pattern": "/x/{input_headers.X-Llm}", "host": ["h"]}]},
            {"endpoint": "/c", "extra_config": {"qos/ratelimit/router": {}}, "backend": [{"url_pattern": "/", "host": ["h"]}]}
          ]
        }"#,
    );
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("$.endpoints[0].backend[0].url_pattern"),
        "{stderr}"
    );
    assert!(stderr.contains("{other}"), "{stderr}");
    assert!(
        stderr.contains("$.endpoints[1].backend[0].url_pattern"),
        "{stderr}"
    );
    assert!(stderr.contains("input_headers"), "{stderr}");
    assert!(
        stderr.contains("$.endpoints[2].extra_config[\"qos/ratelimit/router\"]"),
        "{stderr}"
    );
    assert!(stderr.contains("3 errors"), "{stderr}");

    let out = bin().args(["run", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success(), "run refuses what check refuses");

    let out = bin()
        .args(["check", "-c", "/nonexistent.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The mistakes of [`check_reports_ten_mistakes_in_one_run`]: path and
/// a part of the message, in the order `check` prints them.
const TEN_MISTAKES: [(&str, &str); 10] = [
    ("$.port", "invalid type: string \"8080\", expected u16"),
    (
        "$.timeout",
        "unknown unit \" parsecs\" in duration \"2 parsecs\"",
    ),
    (
        "$.endpoints[0].output_encoding",
        "unknown value \"jsno\"; did you mean \"json\"?",
    ),
    ("$.endpoints[0].method", "method \"FETCH\" is not supported"),
    (
        "$.endpoints[0].backend[0].url_patern",
        "unknown field \"url_patern\"; did you mean \"url_pattern\"?",
    ),
    (
        "$.endpoints[0].backend[0].extra_config[\"modifier/martain\"]",
        "unknown namespace \"modifier/martain\"; did you mean \"modifier/martian\"?",
    ),
    (
        "$.endpoints[1].backend[0].url_pattern",
        "{id} is not a parameter of endpoint \"/items\"",
    ),
    (
        "$.endpoints[1].backend[0].host[0]",
        "host \"ftp://files.example.com\" must use http or https",
    ),
    (
        "$.endpoints[2].extra_config[\"security/policies\"].req.polices",
        "unknown field \"polices\"; did you mean \"policies\"?",
    ),
    (
        "$.endpoints[2].backend[0].host",
        "no host: set the backend's host or the root host",
    ),
];

#[test]
fn check_reports_ten_mistakes_in_one_run() {
    // Type errors, a duration, misspelt names, a bad method and
    // encoding, and mistakes only the later stages find (placeholders,
    // hosts, a namespace's own fields): all of them in one run.
    let path = write_config(
        "ten.json",
        r#"{
          "version": 3,
          "port": "8080",
          "timeout": "2 parsecs",
          "endpoints": [
            {
              "endpoint": "/chat",
              "method": "FETCH",
              "output_encoding": "jsno",
              "backend": [{
                "host": ["https://api.openai.com"],
                "url_patern": "/v1/chat/completions",
                "extra_config": {"modifier/martain": {}}
              }]
            },
            {
              "endpoint": "/items",
              "backend": [{"host": ["ftp://files.example.com"], "url_pattern": "/items/{id}"}]
            },
            {
              "endpoint": "/guarded",
              "extra_config": {
                "security/policies": {"req": {"polices": ["req_method == 'GET'"]}}
              },
              "backend": [{"url_pattern": "/"}]
            }
          ]
        }"#,
    );
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .collect();
    assert_eq!(errors.len(), TEN_MISTAKES.len(), "{stderr}");
    for (line, (path, message)) in errors.iter().zip(TEN_MISTAKES) {
        let (at, text) = line.split_once(": ").unwrap();
        assert_eq!(at, path, "{stderr}");
        assert!(text.contains(message), "{path}: {text:?} lacks {message:?}");
    }
    assert!(
        stderr
            .trim_end()
            .ends_with(&format!("{}: 10 errors", path.display())),
        "{stderr}"
    );

    // Fixed one by one, the count follows, in words that agree with it.
    let one = write_config(
        "one.json",
        r#"{"version": 3, "endpoints": [{"endpoint": "/a", "backend": [{"url_pattern": "/"}]}]}"#,
    );
    let out = bin().args(["check", "-c"]).arg(&one).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim_end().ends_with(": 1 error"), "{stderr}");
}

#[test]
fn check_summarises_a_file_that_is_not_json() {
    let path = write_config("broken.json", "{\"version\": 3,\n \"endpoints\": [}\n");
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: $: invalid JSON:"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with(&format!("{}: 1 error", path.display())),
        "{stderr}"
    );
}

#[test]
fn every_bundled_example_passes_check_without_warnings() {
    // The environment variables the README lists for the examples.
    let env = [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "MISTRAL_API_KEY",
        "GEMINI_API_KEY",
        "DEEPSEEK_API_KEY",
        "COHERE_API_KEY",
        "DASHSCOPE_API_KEY",
        "OPENAI_COMPATIBLE_API_KEY",
        "NOTDIAMOND_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ];
    // Exceptions, each with its reason.
    let warns_on_purpose = [(
        "seed-verbatim.json",
        "the seed exactly as published: check explains its mistakes \
         (the_verbatim_seed_loads_with_a_lint_explaining_its_method_mismatch)",
    )];
    let dir = repo_file("examples/configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        seen += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut command = bin();
        command.args(["check", "-c"]).arg(&path);
        for var in env {
            command.env(var, "sk-example");
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if warns_on_purpose.iter().any(|(n, _)| *n == name) {
            continue;
        }
        // Notes explain; warnings would mean the example is wrong.
        assert!(
            stdout.contains(", 0 warnings") && !stdout.contains("warning: "),
            "{name} warns:\n{stdout}"
        );
    }
    assert!(seen >= 9, "only {seen} examples found in {}", dir.display());

    // Without them, each is named with where it is used: the README's
    // table lists them.
    let out = bin()
        .args(["check", "-c"])
        .arg(dir.join("api-keys.json"))
        .env_remove("OPENAI_API_KEY")
        .env_remove("MISTRAL_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for var in ["OPENAI_API_KEY", "MISTRAL_API_KEY"] {
        assert!(
            stderr.contains(&format!("environment variable {var} is not set")),
            "{stderr}"
        );
    }
    assert!(stderr.trim_end().ends_with(": 2 errors"), "{stderr}");
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    assert!(
        readme.contains("| `api-keys.json` | `OPENAI_API_KEY`, `MISTRAL_API_KEY` |"),
        "the README names the variables of api-keys.json"
    );
}

#[test]
fn check_lints_method_mismatches_unguarded_routing_headers_and_short_timeouts() {
    let path = write_config(
        "lint.json",
        r#"{
          "version": 3,
          "host": ["localhost:8080"],
          "endpoints": [
            {"endpoint": "/multi-llm", "input_headers": ["X-Llm"],
             "backend": [{"url_pattern": "/_llm/{input_headers.X-Llm}"}]},
            {"endpoint": "/_llm/gemini",
             "backend": [{"host": ["https://generativelanguage.googleapis.com"], "url_pattern": "/v1beta/models/gemini-pro:generateContent"}]},
            {"endpoint": "/_llm/openai", "method": "POST",
             "backend": [{"host": ["https://api.openai.com"], "url_pattern": "/v1/chat/completions"}]}
          ]
        }"#,
    );
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "lints are warnings, not errors");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("$.endpoints[0].backend[0]: calls /_llm/openai with GET"),
        "{stdout}"
    );
    assert!(stdout.contains("accepts POST only"), "{stdout}");
    assert!(
        stdout.contains("no policy of this endpoint checks it"),
        "{stdout}"
    );
    assert!(stdout.contains("$.endpoints[2].timeout"), "{stdout}");
}

#[test]
fn check_notes_the_krakend_root_fields_that_change_nothing() {
    let path = write_config(
        "inert.json",
        r#"{
          "version": 3,
          "dns_cache_ttl": "30s",
          "sequential_start": true,
          "dialer_timeout": "5s",
          "use_h2c": true,
          "endpoints": [{"endpoint": "/a", "backend": [{"host": ["http://127.0.0.1:9"], "url_pattern": "/"}]}]
        }"#,
    );
    let out = bin().args(["check", "-c"]).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("$.dns_cache_ttl: has no effect"),
        "{stdout}"
    );
    assert!(
        stdout.contains("$.sequential_start: has no effect"),
        "{stdout}"
    );
    // Served fields are not named.
    assert!(
        !stdout.contains("dialer_timeout") && !stdout.contains("use_h2c"),
        "{stdout}"
    );
    assert!(stdout.contains(", 2 notes"), "{stdout}");
}

#[test]
fn run_serves_and_stops_gracefully_on_sigterm() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = bin()
        .args(["run", "-c"])
        .arg(repo_file("examples/configs/quickstart.json"))
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut healthy = false;
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            stream
                .write_all(b"GET /__health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            if text.starts_with("HTTP/1.1 200") {
                healthy = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(healthy, "the gateway did not answer /__health");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_verbatim_seed_loads_with_a_lint_explaining_its_method_mismatch() {
    let out = bin()
        .args(["check", "-c"])
        .arg(repo_file("examples/configs/seed-verbatim.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("$.endpoints[0].backend[0]: calls /_llm/openai with GET (the endpoint's method, GET by default) but that endpoint accepts POST only"),
        "{stdout}"
    );
    assert!(
        stdout.contains("event streams (\"stream\": true) through here will answer 502"),
        "{stdout}"
    );
    assert!(
        stdout.contains("$.endpoints[2]: /_llm/openai is reached through /multi-llm (guarded by security/policies) but can also be called directly"),
        "{stdout}"
    );

    let out = bin()
        .args(["check", "-c"])
        .arg(repo_file("examples/configs/seed.json"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("with GET"));
}

fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Polls `/__health` until it reports `generation`.
fn wait_for_generation(port: u16, generation: u64) -> bool {
    let started = Instant::now();
    let want = format!("\"config_generation\":{generation}}}");
    while started.elapsed() < Duration::from_secs(20) {
        if get(port, "/__health")
            .is_some_and(|t| t.starts_with("HTTP/1.1 200") && t.ends_with(&want))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn run_reloads_on_sighup_and_with_watch_and_refuses_a_broken_file() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = |path: &str| {
        format!(
            r#"{{"version": 3, "echo_endpoint": true,
                "extra_config": {{"telemetry/logging": {{"level": "INFO", "prefix": "[SB]"}}}},
                "endpoints": [{{"endpoint": "{path}", "backend": [{{"host": ["http://127.0.0.1:{port}"], "url_pattern": "/__echo/x"}}]}}]}}"#
        )
    };
    let file = write_config("reload.json", &config("/one"));
    let child = bin()
        .args(["run", "--watch", "-c"])
        .arg(&file)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_generation(port, 1), "the gateway did not start");
    assert!(get(port, "/one").unwrap().starts_with("HTTP/1.1 200"));

    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(wait_for_generation(port, 2), "SIGHUP did not reload");

    // A broken file is refused; the running config keeps serving.
    std::fs::write(
        &file,
        "{\"version\": 3, \"endpoints\": [{\"endpoint\": \"nope\"}]}",
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(get(port, "/one").unwrap().starts_with("HTTP/1.1 200"));

    // --watch picks up the fixed file.
    std::fs::write(&file, config("/two")).unwrap();
    let started = Instant::now();
    let mut moved = false;
    while started.elapsed() < Duration::from_secs(20) {
        if get(port, "/two").is_some_and(|t| t.starts_with("HTTP/1.1 200")) {
            moved = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(moved, "--watch did not apply the new file");
    assert!(get(port, "/one").unwrap().starts_with("HTTP/1.1 404"));

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("config reload refused: $.endpoints[0]"),
        "{log}"
    );
    assert!(
        log.lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with("[SB] ")),
        "{log}"
    );
}

#[test]
fn run_d_mounts_the_debug_endpoint_as_krakend_run_d_does() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let file = write_config("debug.json", r#"{"version": 3, "endpoints": []}"#);
    let mut child = bin()
        .args(["run", "-d", "-c"])
        .arg(&file)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for_generation(port, 1);
    let answer = get(port, "/__debug/some/path?x=1");
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "the gateway did not start");
    let answer = answer.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"message":"pong"}"#), "{answer}");
}
