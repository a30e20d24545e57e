use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use switchboard_core::{Body, BoxError, Outcome, UsageReport};

use crate::adapter::StreamDecoder;
use crate::format::StreamEncoder;
use crate::ir::{LlmError, StreamEvent, TokenUsage};

pin_project! {
    /// A vendor stream translated frame by frame into the client's format
    /// (or passed through as it is, still read for usage). Nothing is held
    /// back beyond what the decoder needs to finish an event.
    pub(crate) struct TranslateBody {
        #[pin]
        inner: Body,
        decoder: Box<dyn StreamDecoder>,
        encoder: Option<StreamEncoder>,
        events: Vec<StreamEvent>,
        usage: TokenUsage,
        report: Option<UsageReport>,
        provider: Arc<str>,
        model: Arc<str>,
        done: bool,
    }

    impl PinnedDrop for TranslateBody {
        fn drop(this: Pin<&mut Self>) {
            // The client went away first: what was streamed is reported.
            if let Some(report) = this.project().report.take() {
                report.finish(Outcome::Cancelled);
            }
        }
    }
}

impl TranslateBody {
    pub(crate) fn new(
        inner: Body,
        decoder: Box<dyn StreamDecoder>,
        encoder: Option<StreamEncoder>,
        report: UsageReport,
        provider: Arc<str>,
        model: Arc<str>,
    ) -> Self {
        Self {
            inner,
            decoder,
            encoder,
            events: Vec::new(),
            usage: TokenUsage::default(),
            report: Some(report),
            provider,
            model,
            done: false,
        }
    }
}

/// Reads the events just decoded: usage into the report, then into the
/// client's bytes. Returns whether a terminal error went by.
fn drain(
    events: &mut Vec<StreamEvent>,
    encoder: &mut Option<StreamEncoder>,
    usage: &mut TokenUsage,
    report: Option<&UsageReport>,
    provider: &Arc<str>,
    model: &mut Arc<str>,
    out: &mut Vec<u8>,
) -> bool {
    let mut failed = false;
    for event in events.drain(..) {
        match &event {
            StreamEvent::Start {
                model: Some(name), ..
            } if !name.is_empty() => *model = Arc::from(name.as_str()),
            StreamEvent::Usage(piece) => {
                usage.merge(piece);
                if let Some(report) = report {
                    report.record(usage.core_usage(provider, model));
                }
            }
            StreamEvent::Error(_) => failed = true,
            _ => {}
        }
        if let Some(encoder) = encoder {
            encoder.encode(&event, out);
        }
        if failed {
            break;
        }
    }
    failed
}

impl HttpBody for TranslateBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            let mut out = Vec::new();
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if this.encoder.is_some() {
                        // Translated chunks are at most about twice the
                        // vendor's: one allocation for most frames.
                        out.reserve(data.len() * 2);
                    }
                    this.decoder.decode(&data, this.events);
                    let failed = drain(
                        this.events,
                        this.encoder,
                        this.usage,
                        this.report.as_ref(),
                        this.provider,
                        this.model,
                        &mut out,
                    );
                    if failed {
                        *this.done = true;
                        if let Some(report) = this.report.take() {
                            report.finish(Outcome::Failed);
                        }
                    }
                    if this.encoder.is_none() {
                        // Pass-through: the vendor's bytes as they came.
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Some(Err(err)) => {
                    *this.done = true;
                    if let Some(report) = this.report.take() {
                        report.finish(Outcome::Failed);
                    }
                    let err: BoxError = err.into();
                    tracing::warn!(provider = %this.provider, error = %err, "LLM stream failed");
                    let Some(encoder) = this.encoder.as_mut() else {
                        return Poll::Ready(Some(Err(err)));
                    };
                    encoder.encode(
                        &StreamEvent::Error(LlmError::bad_upstream(
                            "the connection to the LLM provider failed mid-stream",
                        )),
                        &mut out,
                    );
                }
                None => {
                    *this.done = true;
                    this.decoder.finish(this.events);
                    let failed = drain(
                        this.events,
                        this.encoder,
                        this.usage,
                        this.report.as_ref(),
                        this.provider,
                        this.model,
                        &mut out,
                    );
                    if !failed && let Some(encoder) = this.encoder.as_mut() {
                        encoder.finish(&mut out);
                    }
                    if let Some(report) = this.report.take() {
                        report.finish(if failed {
                            Outcome::Failed
                        } else {
                            Outcome::Complete
                        });
                    }
                    if out.is_empty() {
                        return Poll::Ready(None);
                    }
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
