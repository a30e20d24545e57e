//! The layer against inner services that answer, stream, fail, refuse and
//! record usage, scraped afterwards; spans exported to an in-process OTLP
//! receiver and decoded.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;
use switchboard_core::{Body, Outcome, Rejection, Usage, UsageReport};
use tower::{Layer, ServiceExt, service_fn};

use crate::config::OpenTelemetryConfig;
use crate::{
    Attempt, EndpointPattern, Metrics, RecordMetricsLayer, Telemetry, TelemetrySettings, Tracing,
    backend_context,
};

fn request(path: &str, endpoint: &str) -> Request<Body> {
    let mut request = Request::post(path)
        .header("authorization", "Bearer sk-secret-key")
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(EndpointPattern(Arc::from(endpoint)));
    request
}

fn settings() -> TelemetrySettings {
    TelemetrySettings::from_extra(
        json!({"switchboard/telemetry": {"prices": {"openai/gpt-4o": {"input": 2.0, "output": 10.0}}}})
            .as_object()
            .unwrap(),
        "$.extra_config",
    )
    .unwrap()
}

/// The value of one sample line, exactly as written.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

async fn inner_service(request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let report = request.extensions().get::<UsageReport>().cloned().unwrap();
    let path = request.uri().path().to_owned();
    Ok(match path.as_str() {
        "/plain" => {
            report.record(Usage::new(100, 20).with_source("openai", "gpt-4o"));
            report.finish(Outcome::Complete);
            Response::new(Body::from("{}"))
        }
        "/stream" => {
            // Usage arrives with the last chunk; the report finishes when the
            // stream ends, as the LLM layer does.
            let chunks = vec!["data: a\n\n", "data: b\n\n", "data: [DONE]\n\n"];
            let finisher = report.clone();
            let body = stream::iter(chunks.into_iter().enumerate().map(move |(i, chunk)| {
                if i == 2 {
                    let mut usage = Usage::new(10, 3).with_source("openai", "gpt-4o");
                    usage.cached_tokens = 4;
                    finisher.record(usage);
                    finisher.finish(Outcome::Complete);
                }
                Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)))
            }));
            report.set_tier("gold");
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::new(StreamBody::new(body)))
                .unwrap()
        }
        "/fail" => {
            report.finish(Outcome::Failed);
            Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from("{}"))
                .unwrap()
        }
        _ => {
            let mut response = Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .body(Body::from("{}"))
                .unwrap();
            response.extensions_mut().insert(Rejection::Quota);
            response
        }
    })
}

#[tokio::test]
async fn known_traffic_gives_exact_counts() {
    let metrics = Arc::new(Metrics::new());
    let telemetry = Arc::new(Telemetry::new(
        metrics.clone(),
        Tracing::disabled(),
        &settings(),
    ));
    let service = RecordMetricsLayer::new(telemetry).layer(service_fn(inner_service));
    for (path, times) in [("/plain", 3), ("/stream", 2), ("/fail", 1), ("/refuse", 4)] {
        for _ in 0..times {
            let response = service
                .clone()
                .oneshot(request(path, "/v1/{kind}"))
                .await
                .unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(!body.is_empty());
        }
    }
    let text = metrics.encode();
    let e = r#"endpoint="/v1/{kind}""#;
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_requests_total{{{e},method="POST",status="200"}}"#)
        ),
        5.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_requests_total{{{e},method="POST",status="502"}}"#)
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_requests_total{{{e},method="POST",status="429"}}"#)
        ),
        4.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_request_duration_seconds_count{{{e}}}"#)
        ),
        10.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_gateway_duration_seconds_count{{{e}}}"#)
        ),
        10.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_time_to_first_token_seconds_count{{{e}}}"#)
        ),
        2.0
    );
    assert_eq!(
        sample(&text, &format!(r#"switchboard_active_streams{{{e}}}"#)),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_rejections_total{{{e},kind="quota"}}"#)
        ),
        4.0
    );
    let plain = r#"provider="openai",model="gpt-4o",tier="default""#;
    let gold = r#"provider="openai",model="gpt-4o",tier="gold""#;
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_in_total{{{plain}}}")),
        300.0
    );
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_out_total{{{plain}}}")),
        60.0
    );
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_total{{{plain}}}")),
        360.0
    );
    assert_eq!(
        sample(&text, &format!("krakend_llm_tokens_total{{{gold}}}")),
        26.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("switchboard_llm_tokens_cached_total{{{gold}}}")
        ),
        8.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchboard_llm_calls_total{{{plain},outcome="complete"}}"#)
        ),
        3.0
    );
    // 3 × (100 × 2 + 20 × 10) / 1e6
    let cost = sample(&text, &format!("switchboard_llm_cost_total{{{plain}}}"));
    assert!((cost - 0.0012).abs() < 1e-12, "{cost}");
    // The failed call recorded no usage: it is not an LLM call to count.
    assert!(!text.contains("outcome=\"failed\""));
    promtool_accepts(&text);
}

use crate::testing::assert_promtool_accepts as promtool_accepts;

#[tokio::test]
async fn a_dropped_stream_ends_its_active_count() {
    let metrics = Arc::new(Metrics::new());
    let telemetry = Arc::new(Telemetry::new(
        metrics.clone(),
        Tracing::disabled(),
        &settings(),
    ));
    let service = RecordMetricsLayer::new(telemetry).layer(service_fn(inner_service));
    let response = service.oneshot(request("/stream", "/s")).await.unwrap();
    assert!(
        metrics
            .encode()
            .contains("switchboard_active_streams{endpoint=\"/s\"} 1")
    );
    drop(response);
    let text = metrics.encode();
    assert!(text.contains("switchboard_active_streams{endpoint=\"/s\"} 0"));
    // Cancelled before usage: nothing was recorded, so no tokens counted.
    assert!(!text.contains("krakend_llm_tokens_total{"));
}

mod otlp {
    use super::*;
    use crate::testing::{AttributeValue as AnyValue, OtlpCollector, Span, attribute as attr, hex};
    use tokio::sync::mpsc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_call_exports_its_span_tree() {
        let mut collector = OtlpCollector::start().await.unwrap();
        let port = collector.port;
        let config = OpenTelemetryConfig::from_config(
            &json!({"service_name": "sb-test", "exporters": {"otlp": [{"name": "local", "host": "127.0.0.1", "port": port, "use_http": true}]}}),
            "$",
        )
        .unwrap();
        let tracing = Tracing::with_scheduled_delay(&config, Duration::from_millis(100)).unwrap();
        let metrics = Arc::new(Metrics::new());
        let telemetry = Arc::new(Telemetry::new(
            metrics.clone(),
            tracing.clone(),
            &settings(),
        ));
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<String>();
        let inner = service_fn(move |request: Request<Body>| {
            let sent_tx = sent_tx.clone();
            async move {
                use opentelemetry::context::FutureExt as _;
                let report = request.extensions().get::<UsageReport>().cloned().unwrap();
                let backend = async {
                    // First attempt: the vendor answers 503; the retry succeeds.
                    for status in [503u16, 200] {
                        let mut upstream = Request::post("http://vendor.test/v1/chat")
                            .body(())
                            .unwrap();
                        let attempt = Attempt::start(&mut upstream, "openai");
                        let traceparent = upstream.headers()["traceparent"]
                            .to_str()
                            .unwrap()
                            .to_owned();
                        sent_tx.send(traceparent).unwrap();
                        attempt.answered(status);
                    }
                };
                backend.with_context(backend_context("openai")).await;
                report.record(Usage::new(7, 5).with_source("openai", "gpt-4o"));
                report.finish(Outcome::Complete);
                Ok::<_, Infallible>(Response::new(Body::from("{}")))
            }
        });
        let service = RecordMetricsLayer::new(telemetry).layer(inner);
        let mut client = request("/chat", "/v1/chat");
        client.headers_mut().insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        let response = service.oneshot(client).await.unwrap();
        response.into_body().collect().await.unwrap();
        let flusher = tracing.clone();
        tokio::task::spawn_blocking(move || flusher.flush())
            .await
            .unwrap();

        let spans = collector.spans(4).await.unwrap();
        assert_eq!(spans.len(), 4, "{spans:#?}");
        let trace_id = hex(&spans[0].trace_id);
        assert_eq!(trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert!(spans.iter().all(|s| hex(&s.trace_id) == trace_id));
        let root = spans.iter().find(|s| s.name == "POST /v1/chat").unwrap();
        assert_eq!(hex(&root.parent_span_id), "b7ad6b7169203331");
        let backend = spans.iter().find(|s| s.name == "backend openai").unwrap();
        assert_eq!(backend.parent_span_id, root.span_id);
        let attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "POST openai").collect();
        assert_eq!(attempts.len(), 2);
        assert!(attempts.iter().all(|a| a.parent_span_id == backend.span_id));
        let statuses: Vec<_> = attempts
            .iter()
            .map(|a| match attr(a, "http.response.status_code") {
                Some(AnyValue::IntValue(v)) => *v,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.contains(&503) && statuses.contains(&200));
        // Each attempt's traceparent names that attempt's span.
        for _ in 0..2 {
            let sent = sent_rx.recv().await.unwrap();
            let span_id = sent.split('-').nth(2).unwrap().to_owned();
            assert!(sent.starts_with(&format!("00-{trace_id}-")));
            assert!(
                attempts.iter().any(|a| hex(&a.span_id) == span_id),
                "{sent}"
            );
        }
        assert!(
            matches!(attr(root, "gen_ai.provider.name"), Some(AnyValue::StringValue(v)) if v == "openai")
        );
        assert!(
            matches!(attr(root, "gen_ai.response.model"), Some(AnyValue::StringValue(v)) if v == "gpt-4o")
        );
        assert!(matches!(
            attr(root, "gen_ai.usage.input_tokens"),
            Some(AnyValue::IntValue(7))
        ));
        assert!(matches!(
            attr(root, "gen_ai.usage.output_tokens"),
            Some(AnyValue::IntValue(5))
        ));
        assert!(
            matches!(attr(root, "http.route"), Some(AnyValue::StringValue(v)) if v == "/v1/chat")
        );
        let text = metrics.encode();
        assert!(text.contains(
            "switchboard_upstream_errors_total{provider=\"openai\",kind=\"status_5xx\"} 1"
        ));
        assert!(
            text.contains("switchboard_upstream_duration_seconds_count{endpoint=\"/v1/chat\"} 1")
        );
        tracing.shutdown();
    }
}

mod dashboard {
    use super::*;
    use crate::config::AdminConfig;
    use crate::{Admin, serve_admin};
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// Every sample of `name`: (labels, value).
    fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let (labels, value) = match rest.strip_prefix('{') {
                    Some(rest) => rest.split_once("} ")?,
                    None => ("", rest.strip_prefix(' ')?),
                };
                let labels = labels
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .filter_map(|pair| {
                        let (k, v) = pair.split_once("=\"")?;
                        Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                    })
                    .collect();
                Some((labels, value.parse().ok()?))
            })
            .collect()
    }

    fn total(text: &str, name: &str) -> f64 {
        samples(text, name).iter().map(|(_, v)| v).sum()
    }

    /// What the page must show, computed from the scrape the way an operator
    /// would read it.
    fn expected(text: &str) -> Value {
        let requests = samples(text, "switchboard_requests_total");
        let status = |l: &BTreeMap<String, String>| l["status"].parse::<u16>().unwrap();
        let mut endpoints: BTreeMap<String, [f64; 3]> = BTreeMap::new();
        for (labels, value) in &requests {
            let row = endpoints.entry(labels["endpoint"].clone()).or_default();
            row[0] += value;
            if status(labels) >= 500 {
                row[1] += value;
            } else if status(labels) >= 400 {
                row[2] += value;
            }
        }
        let key = |l: &BTreeMap<String, String>| {
            format!("{}\u{0}{}\u{0}{}", l["provider"], l["model"], l["tier"])
        };
        let by_key = |name: &str| -> BTreeMap<String, f64> {
            samples(text, name)
                .into_iter()
                .map(|(l, v)| (key(&l), v))
                .collect()
        };
        let (tin, tout, cached, cost) = (
            by_key("krakend_llm_tokens_in_total"),
            by_key("krakend_llm_tokens_out_total"),
            by_key("switchboard_llm_tokens_cached_total"),
            by_key("switchboard_llm_cost_total"),
        );
        let tokens: Vec<Value> = tin
            .iter()
            .map(|(k, v)| {
                let parts: Vec<&str> = k.split('\u{0}').collect();
                json!({
                    "provider": parts[0], "model": parts[1], "tier": parts[2],
                    "in": format!("{v}"), "out": format!("{}", tout[k]),
                    "cached": format!("{}", cached[k]), "cost": format!("{:.6}", cost[k]),
                })
            })
            .collect();
        json!({
            "requests": format!("{}", total(text, "switchboard_requests_total")),
            "errors": format!("{}", requests.iter().filter(|(l, _)| status(l) >= 500).map(|(_, v)| v).sum::<f64>()),
            "rejections": format!("{}", total(text, "switchboard_rejections_total")),
            "tokens_in": format!("{}", total(text, "krakend_llm_tokens_in_total")),
            "tokens_out": format!("{}", total(text, "krakend_llm_tokens_out_total")),
            "cost": format!("{:.6}", total(text, "switchboard_llm_cost_total")),
            "generation": format!("{}", total(text, "switchboard_config_generation")),
            "endpoints": endpoints.iter().map(|(e, r)| json!({"endpoint": e, "requests": format!("{}", r[0]), "5xx": format!("{}", r[1]), "4xx": format!("{}", r[2])})).collect::<Vec<_>>(),
            "tokens": tokens,
            "quota": samples(text, "switchboard_quota_remaining").iter().map(|(l, v)| json!({"quota": l["name"], "remaining": format!("{v}")})).collect::<Vec<_>>(),
        })
    }

    fn runner_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/dashboard")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chromium_shows_what_metrics_say() {
        let dir = runner_dir();
        let ready = dir.join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists();
        if !ready {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install chromium and run npm ci in tests/dashboard"
            );
            eprintln!("skipping: run `npm ci` in tests/dashboard and install chromium");
            return;
        }
        let metrics = Arc::new(Metrics::new());
        let telemetry = Arc::new(Telemetry::new(
            metrics.clone(),
            Tracing::disabled(),
            &settings(),
        ));
        let service = RecordMetricsLayer::new(telemetry).layer(service_fn(inner_service));
        for (path, times) in [("/plain", 3), ("/stream", 2), ("/fail", 1), ("/refuse", 4)] {
            for _ in 0..times {
                let response = service
                    .clone()
                    .oneshot(request(path, "/v1/{kind}"))
                    .await
                    .unwrap();
                response.into_body().collect().await.unwrap();
            }
        }
        // As the quota layer and the reloader report them.
        metrics.set_quota_remaining("team-a/daily-tokens", 1234.0);
        metrics.set_config_generation(3);

        let token = "dashboard-token-0123456789";
        let admin = Admin::from_config(&AdminConfig {
            listen_ip: "127.0.0.1".to_owned(),
            port: 0,
            token: token.to_owned(),
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind(admin.addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_admin(listener, admin, metrics.clone()));

        let expected = expected(&metrics.encode());
        assert_eq!(expected["requests"], "10");
        assert_eq!(expected["tokens"].as_array().unwrap().len(), 2);
        let artifacts = std::env::var_os("SWITCHBOARD_ARTIFACTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("switchboard-artifacts"));
        std::fs::create_dir_all(&artifacts).unwrap();
        let screenshot = artifacts.join("dashboard.png");
        let url = format!("http://{addr}/__dashboard#token={token}");
        let output = tokio::task::spawn_blocking({
            let screenshot = screenshot.clone();
            let expected = expected.to_string();
            move || {
                std::process::Command::new("node")
                    .arg("check.mjs")
                    .current_dir(dir)
                    .env("DASHBOARD_URL", url)
                    .env("EXPECTED", expected)
                    .env("SCREENSHOT", &screenshot)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the dashboard disagrees with /metrics:\n{stdout}\n{stderr}"
        );
        let shown: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(shown["requests"], "10");
        assert_eq!(shown["tokens_in"], "320");
        assert!(screenshot.exists());
        eprintln!("dashboard screenshot: {}", screenshot.display());
    }
}

mod usage_log {
    use super::*;
    use sha2::Digest;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn one_line_per_llm_call_without_prompt_or_secret() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let metrics = Arc::new(Metrics::new());
        let telemetry = Arc::new(Telemetry::new(metrics, Tracing::disabled(), &settings()));
        let service = RecordMetricsLayer::new(telemetry).layer(service_fn(inner_service));
        for path in ["/plain", "/refuse"] {
            let mut request = request(path, "/v1/chat");
            *request.body_mut() =
                Body::from(r#"{"messages":[{"role":"user","content":"my secret plan"}]}"#);
            let response = service.clone().oneshot(request).await.unwrap();
            response.into_body().collect().await.unwrap();
        }
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("llm call")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = lines[0];
        for field in [
            "endpoint=/v1/chat",
            "provider=\"openai\"",
            "model=\"gpt-4o\"",
            "input_tokens=100",
            "output_tokens=20",
            "cost=0.000400",
            "status=200",
            "outcome=\"complete\"",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
        // The hash of the credential, never the credential or the prompt.
        let sent = "Bearer sk-secret-key";
        let digest = sha2::Sha256::digest(sent.as_bytes());
        let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert!(line.contains(&format!("caller={hash}")), "{line}");
        assert!(!text.contains("sk-secret-key"));
        assert!(!text.contains("secret plan"));
    }
}
