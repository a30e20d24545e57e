//! The body of a masked event stream.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use switchboard_core::{Body, BoxError};

use crate::SseMasker;

pin_project_lite::pin_project! {
    /// Decodes, masks and re-encodes an event stream frame by frame.
    pub(crate) struct MaskedSseBody {
        #[pin]
        inner: Body,
        masker: SseMasker,
        trailers: Option<HeaderMap>,
        done: bool,
    }
}

impl MaskedSseBody {
    pub(crate) fn new(inner: Body, masker: SseMasker) -> Self {
        Self {
            inner,
            masker,
            trailers: None,
            done: false,
        }
    }
}

fn error_frame(message: &str) -> Frame<Bytes> {
    Frame::data(Bytes::from(SseMasker::error_event(message).to_bytes()))
}

impl HttpBody for MaskedSseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let finished = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match this.masker.push(&data) {
                        Ok(bytes) if bytes.is_empty() => continue,
                        Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes.into())))),
                        Err(err) => {
                            *this.done = true;
                            return Poll::Ready(Some(Ok(error_frame(&err.to_string()))));
                        }
                    },
                    Err(frame) => {
                        *this.trailers = frame.into_trailers().ok();
                        this.masker.finish()
                    }
                },
                Some(Err(err)) => {
                    // Held-back text is dropped, never sent unmasked.
                    *this.done = true;
                    return Poll::Ready(Some(Err(err.into())));
                }
                None => this.masker.finish(),
            };
            *this.done = true;
            match finished {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes.into())))),
                Err(err) => return Poll::Ready(Some(Ok(error_frame(&err.to_string())))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }
}
