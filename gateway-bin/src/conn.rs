//! One client connection before and around hyper: the header-read deadline
//! from accept (whatever protocol the client turns out to speak), JSON
//! answers to malformed or oversized request heads, and a send deadline
//! that closes a connection whose client stopped reading.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use switchboard_core::ErrorResponse;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The most header fields a request may have (hyper's own limit).
const MAX_HEADERS: usize = 100;

/// What the first bytes of a connection turned out to be.
pub(crate) enum Detected {
    /// An HTTP/1 request head, complete and well-formed.
    Http1,
    /// The HTTP/2 preface.
    Http2,
    /// The client closed before sending a request.
    Closed,
    /// A head that must be refused with this answer.
    Reject(ErrorResponse),
}

/// Reads until the first request head is complete (HTTP/1) or the HTTP/2
/// preface has arrived, keeping what was read in `buffer`. The caller bounds
/// the time this may take.
pub(crate) async fn detect<S>(
    stream: &mut S,
    buffer: &mut BytesMut,
    max_head: usize,
) -> io::Result<Detected>
where
    S: AsyncRead + Unpin,
{
    // Where the search for the end of the head resumes.
    let mut scanned: usize = 0;
    loop {
        buffer.reserve(4096);
        if stream.read_buf(buffer).await? == 0 {
            return Ok(Detected::Closed);
        }
        let seen = &buffer[..];
        let n = seen.len().min(H2_PREFACE.len());
        if seen[..n] == H2_PREFACE[..n] {
            if seen.len() >= H2_PREFACE.len() {
                return Ok(Detected::Http2);
            }
            continue;
        }
        let from = scanned.saturating_sub(3);
        scanned = seen.len();
        let ended = seen[from..].windows(2).any(|w| w == b"\n\n")
            || seen[from..].windows(4).any(|w| w == b"\r\n\r\n");
        if !ended {
            if seen.len() > max_head {
                return Ok(Detected::Reject(headers_too_large(max_head)));
            }
            continue;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        return Ok(match request.parse(seen) {
            Ok(httparse::Status::Complete(len)) if len > max_head => {
                Detected::Reject(headers_too_large(max_head))
            }
            Ok(httparse::Status::Complete(_)) => Detected::Http1,
            Ok(httparse::Status::Partial) => {
                Detected::Reject(ErrorResponse::bad_request("malformed request head"))
            }
            Err(httparse::Error::TooManyHeaders) => Detected::Reject(
                ErrorResponse::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "invalid_request_error",
                    format!("more than {MAX_HEADERS} request header fields"),
                )
                .no_retry(),
            ),
            Err(err) => Detected::Reject(ErrorResponse::bad_request(format!(
                "malformed request head: {err}"
            ))),
        });
    }
}

fn headers_too_large(max_head: usize) -> ErrorResponse {
    ErrorResponse::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "invalid_request_error",
        format!("the request head is larger than the limit of {max_head} bytes"),
    )
    .with_code("headers_too_large")
    .no_retry()
}

/// The answer to a client whose head never completed in time.
pub(crate) fn head_timeout() -> ErrorResponse {
    ErrorResponse::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        "the request head did not arrive in time",
    )
}

/// Writes `error` as a complete HTTP/1.1 answer and closes the connection.
pub(crate) async fn reject<S>(stream: &mut S, error: ErrorResponse, within: Duration)
where
    S: AsyncWrite + Unpin,
{
    let body = error.json_body().to_string();
    let status = error.status();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(within, write).await;
}

/// A connection as hyper sees it: first the bytes read while detecting the
/// protocol, then the socket. A write that the client does not take for
/// `send_timeout` fails, which closes the connection and drops the answer
/// it held.
pub(crate) struct ConnIo<S> {
    inner: S,
    prefix: Bytes,
    send_timeout: Duration,
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<S> ConnIo<S> {
    pub(crate) fn new(inner: S, prefix: Bytes, send_timeout: Duration) -> Self {
        Self {
            inner,
            prefix,
            send_timeout,
            stall: None,
            stalled: false,
        }
    }

    /// The client took nothing: start (or keep) the stall clock, and fail
    /// once it runs out.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = Instant::now() + self.send_timeout;
        let sleep = match &mut self.stall {
            Some(sleep) => {
                if !self.stalled {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .stall
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.stalled = true;
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading the response",
        ))
    }

    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.stalled = false;
                Poll::Ready(result)
            }
            Poll::Pending => match self.poll_stalled(cx) {
                Poll::Ready(err) => Poll::Ready(Err(err)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.on_write(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.on_write(cx, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn detect_bytes(bytes: &[u8], max: usize) -> Detected {
        let mut stream = bytes;
        let mut buffer = BytesMut::new();
        detect(&mut stream, &mut buffer, max).await.unwrap()
    }

    #[tokio::test]
    async fn protocols_and_refusals() {
        assert!(matches!(
            detect_bytes(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1024).await,
            Detected::Http1
        ));
        assert!(matches!(
            detect_bytes(H2_PREFACE, 1024).await,
            Detected::Http2
        ));
        assert!(matches!(
            detect_bytes(b"PRI * HTTP/2.0\r\n", 1024).await,
            Detected::Closed
        ));
        let Detected::Reject(err) =
            detect_bytes(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 1024).await
        else {
            panic!("accepted")
        };
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        let Detected::Reject(err) = detect_bytes(long.as_bytes(), 1024).await else {
            panic!("accepted")
        };
        assert_eq!(err.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[tokio::test]
    async fn prefix_is_read_first() {
        let mut io = ConnIo::new(
            &b"world"[..],
            Bytes::from_static(b"hello "),
            Duration::from_secs(1),
        );
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
