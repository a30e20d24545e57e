//! The application log from `telemetry/logging`: level, prefix, standard
//! output and/or the local syslog, text or one JSON object a line.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LoggingConfig, syslog_facility_code};

/// Changes the log level after a reload.
#[derive(Clone)]
pub struct LogHandle {
    filter: Option<reload::Handle<EnvFilter, tracing_subscriber::Registry>>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Applies the level of a reloaded config (unless `RUST_LOG` is set).
    pub fn apply(&self, config: Option<&LoggingConfig>) {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        if let Some(handle) = &self.filter {
            let _ = handle.modify(|filter| *filter = filter_for(config));
        }
    }
}

fn filter_for(config: Option<&LoggingConfig>) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.map(|c| c.level.directive()).unwrap_or("info")))
}

/// Where lines go.
#[derive(Clone)]
struct Sink {
    prefix: Arc<str>,
    stdout: bool,
    stderr: bool,
    syslog: Option<Arc<Syslog>>,
}

struct Syslog {
    socket: UnixDatagram,
    facility: u8,
}

impl Syslog {
    fn connect(facility: u8) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect("/dev/log")?;
        Ok(Self { socket, facility })
    }
}

/// One event's writer: buffers the formatted line, then writes it whole.
struct LineWriter {
    sink: Sink,
    severity: u8,
    buffer: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let mut line = Vec::with_capacity(self.sink.prefix.len() + self.buffer.len() + 1);
        if !self.sink.prefix.is_empty() {
            line.extend_from_slice(self.sink.prefix.as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(&self.buffer);
        if self.sink.stdout {
            let _ = io::stdout().lock().write_all(&line);
        }
        if self.sink.stderr {
            let _ = io::stderr().lock().write_all(&line);
        }
        if let Some(syslog) = &self.sink.syslog {
            let pri = u16::from(syslog.facility) * 8 + u16::from(self.severity);
            let mut message = format!("<{pri}>switchboard: ").into_bytes();
            message.extend_from_slice(line.strip_suffix(b"\n").unwrap_or(&line));
            let _ = syslog.socket.send(&message);
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.make_for(6)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        self.make_for(severity)
    }
}

impl Sink {
    fn make_for(&self, severity: u8) -> LineWriter {
        LineWriter {
            sink: self.clone(),
            severity,
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Installs the global logger for `config` (no config: text to standard
/// error at `info`, as before `telemetry/logging` existed). `RUST_LOG`
/// overrides the level.
pub fn init_logging(config: Option<&LoggingConfig>) -> LogHandle {
    let syslog = config.filter(|c| c.syslog).and_then(|c| {
        let facility = c
            .syslog_facility
            .as_deref()
            .and_then(syslog_facility_code)
            .unwrap_or(19);
        match Syslog::connect(facility) {
            Ok(syslog) => Some(Arc::new(syslog)),
            Err(err) => {
                eprintln!("warning: cannot open the syslog at /dev/log: {err}");
                None
            }
        }
    });
    let stdout = config.is_some_and(|c| c.stdout);
    let sink = Sink {
        prefix: Arc::from(config.and_then(|c| c.prefix.as_deref()).unwrap_or("")),
        stdout,
        // Nowhere else to write: keep standard error.
        stderr: !stdout && syslog.is_none(),
        syslog,
    };
    let (filter, handle) = reload::Layer::new(filter_for(config));
    let json = config.is_some_and(|c| c.format == LogFormat::Logstash);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_ansi(false)
                    .with_writer(sink),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(sink),
            )
            .try_init()
    };
    LogHandle {
        filter: installed.ok().map(|()| handle),
    }
}
