//! A body wrapper that ends a body whose peer pauses too long between
//! chunks.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use switchboard_core::BoxError;
use switchboard_core::buffer::BodyTimeout;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// Ends a body with an error when no frame arrives for `idle` (or the
    /// whole body has not arrived by an optional deadline). The
    /// clock starts when a read finds nothing ready, so a body that waits
    /// unread in a queue is not cut off, and a body whose frames are always
    /// ready (a small request, a burst of events) never touches the timer.
    pub(crate) struct IdleTimeoutBody<B> {
        #[pin]
        inner: B,
        sleep: Option<Pin<Box<Sleep>>>,
        idle: Duration,
        // When the whole body must have arrived, if bounded.
        deadline: Option<Instant>,
        // A frame arrived since the timer was last armed.
        progressed: bool,
    }
}

impl<B> IdleTimeoutBody<B> {
    pub(crate) fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            sleep: None,
            idle,
            deadline: None,
            progressed: false,
        }
    }

    /// Also ends the body when it has not finished by `deadline`, however
    /// steadily it trickles.
    pub(crate) fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

impl<B> HttpBody for IdleTimeoutBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.progressed = true;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let mut deadline = Instant::now() + *this.idle;
                if let Some(overall) = *this.deadline {
                    if overall <= Instant::now() {
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout(*this.idle)))));
                    }
                    deadline = deadline.min(overall);
                }
                let sleep = match this.sleep {
                    Some(sleep) => {
                        if *this.progressed {
                            sleep.as_mut().reset(deadline);
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                *this.progressed = false;
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(BodyTimeout(*this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The most bytes [`CoalesceBody`] joins into one frame.
const COALESCE_LIMIT: usize = 64 * 1024;

/// What the inner body yielded while frames were being joined.
type Stashed = Option<Result<Frame<Bytes>, BoxError>>;

pin_project! {
    /// Joins data frames that are ready together into one, so a burst of
    /// small events from a fast upstream is written as one chunk with one
    /// syscall instead of one per event. Nothing is held back: joining
    /// stops as soon as the inner body has nothing ready.
    pub(crate) struct CoalesceBody<B> {
        #[pin]
        inner: B,
        // A trailer frame, the end or an error met while joining: next.
        stashed: Option<Stashed>,
    }
}

impl<B> CoalesceBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            stashed: None,
        }
    }
}

impl<B> HttpBody for CoalesceBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(stashed) = this.stashed.take() {
            return Poll::Ready(stashed);
        }
        let first = match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            },
            Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
            None => return Poll::Ready(None),
        };
        if first.len() >= COALESCE_LIMIT {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let mut joined: Option<BytesMut> = None;
        loop {
            let next = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(next) => next,
            };
            match next {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let buffer = match &mut joined {
                            Some(buffer) => buffer,
                            None => {
                                let mut buffer =
                                    BytesMut::with_capacity((first.len() + data.len()) * 4);
                                buffer.extend_from_slice(&first);
                                joined.insert(buffer)
                            }
                        };
                        buffer.extend_from_slice(&data);
                        if buffer.len() >= COALESCE_LIMIT {
                            break;
                        }
                    }
                    Err(frame) => {
                        *this.stashed = Some(Some(Ok(frame)));
                        break;
                    }
                },
                Some(Err(err)) => {
                    *this.stashed = Some(Some(Err(err.into())));
                    break;
                }
                None => {
                    *this.stashed = Some(None);
                    break;
                }
            }
        }
        let data = match joined {
            Some(buffer) => buffer.freeze(),
            None => first,
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.stashed {
            Some(stashed) => stashed.is_none(),
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn stalled_body_times_out() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = tokio_stream_from(rx);
        let mut body = std::pin::pin!(IdleTimeoutBody::new(
            StreamBody::new(stream),
            Duration::from_millis(50)
        ));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyTimeout>());
        drop(tx);
    }

    #[tokio::test]
    async fn ready_frames_are_joined_in_order() {
        let frames = (0..5).map(|i| Ok::<_, BoxError>(Frame::data(Bytes::from(format!("e{i};")))));
        let body = CoalesceBody::new(StreamBody::new(futures_util::stream::iter(frames)));
        let mut body = std::pin::pin!(body);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "e0;e1;e2;e3;e4;");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn frames_not_ready_are_not_waited_for() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let mut body = std::pin::pin!(CoalesceBody::new(StreamBody::new(tokio_stream_from(rx))));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        tx.send(Ok(Frame::data(Bytes::from_static(b"b"))))
            .await
            .unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "ab"
        );
        tx.send(Ok(Frame::data(Bytes::from_static(b"c"))))
            .await
            .unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "c"
        );
        tx.send(Err("boom".into())).await.unwrap();
        drop(tx);
        assert!(body.frame().await.unwrap().is_err());
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}

pin_project! {
    /// Decompresses a gzip body as it arrives (an upstream that answered
    /// the `Accept-Encoding: gzip` the gateway asked for itself, as Go's
    /// client does for KrakenD). Trailers pass through.
    pub(crate) struct GunzipBody<B> {
        #[pin]
        inner: B,
        decoder: Option<flate2::write::GzDecoder<Vec<u8>>>,
    }
}

impl<B> GunzipBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            decoder: Some(flate2::write::GzDecoder::new(Vec::new())),
        }
    }
}

impl<B> HttpBody for GunzipBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::io::Write as _;
        let mut this = self.project();
        loop {
            let Some(decoder) = this.decoder.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        decoder.write_all(&data)?;
                        let out = std::mem::take(decoder.get_mut());
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                        }
                    }
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                None => {
                    let Some(decoder) = this.decoder.take() else {
                        return Poll::Ready(None);
                    };
                    let out = decoder.finish()?;
                    return Poll::Ready(if out.is_empty() {
                        None
                    } else {
                        Some(Ok(Frame::data(Bytes::from(out))))
                    });
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod gunzip_tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write as _;

    #[tokio::test]
    async fn gunzips_in_pieces() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"{\"hello\":\"world\"}").unwrap();
        let compressed = encoder.finish().unwrap();
        let (a, b) = compressed.split_at(7);
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::copy_from_slice(a))),
            Ok(Frame::data(Bytes::copy_from_slice(b))),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let out = GunzipBody::new(body).collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"{\"hello\":\"world\"}");
    }

    #[tokio::test]
    async fn corrupt_gzip_is_an_error() {
        let body = http_body_util::Full::new(Bytes::from_static(b"not gzip at all"));
        assert!(GunzipBody::new(body).collect().await.is_err());
    }
}

pin_project! {
    /// A body whose length is not announced: sent chunked on HTTP/1.1, as
    /// KrakenD's Go client sends a client's body it passes on.
    pub(crate) struct UnsizedBody<B> {
        #[pin]
        inner: B,
    }
}

impl<B> UnsizedBody<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self { inner }
    }
}

impl<B: HttpBody> HttpBody for UnsizedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
