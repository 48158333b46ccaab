//! The socket as hyper sees it: passes bytes through, and turns the answers hyper
//! writes on its own into problem+json.
//!
//! When hyper cannot parse a request (a URI over the `http` crate's 64 KiB, headers
//! over its buffer, a malformed line) it answers by itself, before any service runs:
//! `400`, `414` or `431` with `connection: close`, `content-length: 0` and a `date`
//! header, and no body. Every other error of Toaster is problem+json, as openapi.yaml
//! promises, and hyper has no hook for those answers; so this wrapper recognises them
//! on their way out and writes a problem+json answer in their place.
//!
//! It recognises them by shape and by count: the bytes are exactly such a head, and
//! every request the service saw on this connection has already been answered (a
//! component's own empty 400 is written after its request reached the service).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use toaster_core::problem::ProblemType;

use crate::problem;

/// Requests the service has been called for on one connection.
#[derive(Clone, Default)]
pub struct ServiceCalls(Arc<AtomicU64>);

impl ServiceCalls {
    pub fn called(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The connection's IO with hyper's own error answers rewritten.
pub struct ConnIo<S> {
    inner: S,
    calls: ServiceCalls,
    /// Response heads written so far.
    heads: u64,
    /// A replacement being written, how much of it is written, and the length of the
    /// buffer hyper asked to write (what it is told was written once we are done).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<S> ConnIo<S> {
    pub fn new(inner: S, calls: ServiceCalls) -> Self {
        ConnIo {
            inner,
            calls,
            heads: 0,
            replacing: None,
        }
    }
}

/// The problem+json answer for an answer hyper wrote on its own, if `buf` is one.
fn replacement(buf: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(buf).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?;
    let mut rest: Vec<&str> = lines.collect();
    rest.sort_unstable();
    let [connection, length, date] = rest.as_slice() else {
        return None;
    };
    if *connection != "connection: close"
        || *length != "content-length: 0"
        || !date.starts_with("date: ")
    {
        return None;
    }
    let (kind, detail) = match status {
        "HTTP/1.1 414 URI Too Long" => (
            ProblemType::UriTooLong,
            "the request target is longer than this server accepts",
        ),
        "HTTP/1.1 431 Request Header Fields Too Large" => (
            ProblemType::HeadersTooLarge,
            "the request's headers are larger than this server accepts",
        ),
        "HTTP/1.1 400 Bad Request" => (
            ProblemType::BadRequest,
            "the request is not well-formed HTTP/1.1",
        ),
        _ => return None,
    };
    Some(problem::raw(kind, detail, None))
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    /// Writes the pending replacement; `Ready(Ok(n))` with the length hyper asked for
    /// once it is all out.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, claimed)) = &mut self.replacing {
            if *written == bytes.len() {
                let claimed = *claimed;
                self.replacing = None;
                return Poll::Ready(Ok(claimed));
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(0))
    }

    /// Looks at the start of a write: counts response heads, and starts a replacement
    /// for an answer hyper wrote on its own.
    fn inspect(&mut self, buf: &[u8]) {
        if !buf.starts_with(b"HTTP/1.1 ") {
            return;
        }
        let unanswered = self.calls.count() > self.heads;
        self.heads += 1;
        if !unanswered && let Some(bytes) = replacement(buf) {
            self.replacing = Some((bytes, 0, buf.len()));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            this.inspect(buf);
        }
        if this.replacing.is_some() {
            return this.drain(cx);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none()
            && let Some(first) = bufs.iter().find(|b| !b.is_empty())
        {
            if first.starts_with(b"HTTP/1.1 ") && bufs.iter().filter(|b| !b.is_empty()).count() == 1
            {
                this.inspect(first);
            } else if first.starts_with(b"HTTP/1.1 ") {
                // A head with its body in further slices: a service's answer.
                this.heads += 1;
            }
        }
        if this.replacing.is_some() {
            return this.drain(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replacing.is_some() {
            std::task::ready!(this.drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Mon, 07 Dec 2026 15:54:24 GMT";

    fn auto(status: &str) -> Vec<u8> {
        format!("{status}\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n\r\n").into_bytes()
    }

    #[test]
    fn hypers_own_answers_become_problems() {
        for (status, code) in [
            ("HTTP/1.1 414 URI Too Long", "414"),
            ("HTTP/1.1 431 Request Header Fields Too Large", "431"),
            ("HTTP/1.1 400 Bad Request", "400"),
        ] {
            let out = String::from_utf8(replacement(&auto(status)).expect(status)).unwrap();
            assert!(out.starts_with(&format!("HTTP/1.1 {code} ")), "{out}");
            assert!(
                out.contains("content-type: application/problem+json\r\n"),
                "{out}"
            );
            assert!(out.contains("connection: close\r\n"), "{out}");
            let body = out.split("\r\n\r\n").nth(1).unwrap();
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["status"].to_string(), code);
            assert!(out.contains(&format!("content-length: {}\r\n", body.len())));
        }
    }

    #[test]
    fn other_answers_are_left_alone() {
        for buf in [
            auto("HTTP/1.1 404 Not Found"),
            auto("HTTP/1.1 200 OK"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\nconnection: close\r\n{DATE}\r\n\r\n").into_bytes(),
            format!("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n{DATE}\r\n\r\n").into_bytes(),
            format!("HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n\r\nx").into_bytes(),
        ] {
            assert!(replacement(&buf).is_none(), "{}", String::from_utf8_lossy(&buf));
        }
    }

    /// Collects what reaches the socket.
    struct Sink(Vec<u8>);

    impl AsyncWrite for Sink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            // A short write each time, as a slow socket does.
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn only_an_answer_no_request_was_served_for_is_replaced() {
        use tokio::io::AsyncWriteExt;
        let bad = auto("HTTP/1.1 400 Bad Request");
        // Nothing reached the service: hyper answered a request it could not parse.
        let mut io = ConnIo::new(Sink(Vec::new()), ServiceCalls::default());
        io.write_all(&bad).await.unwrap();
        assert!(String::from_utf8_lossy(&io.inner.0).contains("problem+json"));

        // The service was called and this is its (empty 400) answer: passed through.
        let calls = ServiceCalls::default();
        calls.called();
        let mut io = ConnIo::new(Sink(Vec::new()), calls.clone());
        io.write_all(&bad).await.unwrap();
        assert_eq!(io.inner.0, bad);
        // The next request hyper cannot parse, after that one was answered: replaced.
        io.inner.0.clear();
        io.write_all(&bad).await.unwrap();
        assert!(String::from_utf8_lossy(&io.inner.0).contains("problem+json"));
    }
}
