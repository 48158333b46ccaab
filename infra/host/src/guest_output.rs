//! What components write to stdout and stderr, as `tracing` events: one event per
//! line, target [`TARGET`], with the component's name, the request's id (the one its
//! access line carries, `toaster::access`) and the stream, so `RUST_LOG` filters it and
//! every line says which request it belongs to (as `wasmtime serve` prefixes guest
//! output). Before, guest output went to the host's own stderr as is, interleaved
//! with the host's structured lines and saying nothing of where it came from.
//!
//! Lines are assembled from the guest's writes (a `eprintln!` may arrive in several
//! pieces) and cut at [`MAX_LINE`] bytes; what is left without a newline when the
//! request's store is dropped is logged then. Each request has its own buffers.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The `tracing` target of guest output lines.
pub const TARGET: &str = "toaster::component";
/// A longer line is logged in pieces of this size.
pub const MAX_LINE: usize = 16 * 1024;

/// A request's id: 8 hex digits, counted from a random start (so that ids from
/// several hosts or restarts rarely meet). Logged with the access line and with every
/// line the component writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u32);

impl RequestId {
    /// The next id of this process.
    pub fn next() -> RequestId {
        static NEXT: std::sync::OnceLock<AtomicU32> = std::sync::OnceLock::new();
        let counter = NEXT.get_or_init(|| AtomicU32::new(rand::random()));
        RequestId(counter.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Which of the guest's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One request's stdout or stderr: give it to `WasiCtxBuilder::stdout`/`stderr`.
#[derive(Clone)]
pub struct GuestOutput {
    lines: Arc<Mutex<Lines>>,
}

struct Lines {
    component: Arc<str>,
    request_id: RequestId,
    stream: Stream,
    partial: Vec<u8>,
}

impl GuestOutput {
    pub fn new(component: Arc<str>, request_id: RequestId, stream: Stream) -> GuestOutput {
        GuestOutput {
            lines: Arc::new(Mutex::new(Lines {
                component,
                request_id,
                stream,
                partial: Vec::new(),
            })),
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.write(bytes);
    }
}

impl Lines {
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.push(&bytes[..end]);
                    self.emit();
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.push(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// Adds to the line, logging it in pieces when it grows past [`MAX_LINE`].
    fn push(&mut self, mut bytes: &[u8]) {
        while self.partial.len() + bytes.len() > MAX_LINE {
            let room = MAX_LINE - self.partial.len();
            self.partial.extend_from_slice(&bytes[..room]);
            self.emit();
            bytes = &bytes[room..];
        }
        self.partial.extend_from_slice(bytes);
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.partial);
        // A carriage return (Windows line ends, or a guest redrawing a line) would
        // rewrite what a terminal shows: it goes, and so does trailing space.
        let line = text.trim_end().replace('\r', "");
        if !line.is_empty() {
            tracing::info!(
                target: TARGET,
                component = %self.component,
                request_id = %self.request_id,
                stream = self.stream.as_str(),
                "{line}"
            );
        }
        self.partial.clear();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Lines are logged whole; a flush in the middle of one waits for its end.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// Collects the events' formatted fields.
    #[derive(Clone, Default)]
    struct Collect(Arc<StdMutex<Vec<String>>>);

    impl std::io::Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_assembled_from_pieces_and_logged_with_their_request() {
        let collected = Collect::default();
        let writer = collected.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let id = RequestId(0xabc);
        tracing::subscriber::with_default(subscriber, || {
            let out = GuestOutput::new("ingest".into(), id, Stream::Stderr);
            let mut stream = out.p2_stream();
            for piece in ["ingest: ", "cannot read ", "x\nsecond\r\n", "unfinished"] {
                stream.write(Bytes::from(piece)).unwrap();
            }
            stream.write(Bytes::from(vec![b'y'; MAX_LINE + 1])).unwrap();
            drop(stream);
            drop(out);
        });
        let lines = collected.0.lock().unwrap().join("");
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert_eq!(
            lines[0].trim(),
            "INFO toaster::component: ingest: cannot read x component=ingest request_id=00000abc stream=\"stderr\""
        );
        assert!(lines[1].contains(": second component="), "{}", lines[1]);
        assert!(lines[2].contains(&format!(": unfinished{}", "y".repeat(MAX_LINE - 10))));
        assert!(
            lines[3].contains(&format!(": {} component=", "y".repeat(11))),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn ids_are_eight_hex_digits_and_differ() {
        let (a, b) = (RequestId::next(), RequestId::next());
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 8);
        assert_eq!(RequestId(1).to_string(), "00000001");
    }
}
