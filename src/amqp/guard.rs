//! The header guard: what a consuming connection receives passes through a filter that lets
//! lapin receive a message whose AMQP headers do not fit the connection's frame size.
//!
//! A message's properties (its headers among them) travel in one content-header frame, which
//! AMQP cannot split. RabbitMQ hands such a frame to a consumer even when it is larger than
//! the frame size the consumer's connection negotiated (headers can grow beyond it through
//! other protocols, the HTTP API or the broker's own dead-lettering, or a connection asks for
//! smaller frames than its publishers use), and lapin answers a frame that is too large by
//! closing the whole connection: the message goes back to the queue, comes again, and the
//! consumer never gets past it. The guard cuts the headers table out of such a frame as it
//! arrives (without holding it in memory) and puts a one-entry table in its place,
//! [`DROPPED_HEADERS`], saying how many bytes were left out. The message's body and every
//! other property arrive unchanged, and the gateway dead-letters it with its own reason.
//!
//! lapin takes its transport from a [`async_rs::traits::Reactor`]: [`GuardKit`] is tokio's,
//! with streams that can be guarded ([`GuardedStream`]); `amqp::connect` puts the guard above
//! TLS, so that it sees the frames, not the ciphertext.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::os::unix::io::{AsFd, AsRawFd};

use async_rs::traits::{Executor, Reactor, RuntimeKit};
use async_rs::util::Task;
use futures_util::io::{AsyncRead, AsyncWrite};
use futures_util::stream::Stream;

/// The header the guard puts in place of headers it left out:
/// `<nonce>:<bytes left out>:<frame size>`. The nonce is this process's own, so a platform
/// cannot forge the marker.
pub const DROPPED_HEADERS: &str = "x-ozg-headers-left-out";

/// What the guard left out of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeftOut {
    /// Size of the headers table left out.
    pub bytes: u64,
    /// The connection's frame size, which the headers did not fit.
    pub frame_max: u32,
}

/// This process's nonce for [`DROPPED_HEADERS`].
fn nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// What the guard left out of a message, read from its [`DROPPED_HEADERS`] value; `None`
/// unless the value carries this process's nonce.
pub fn left_out(value: &str) -> Option<LeftOut> {
    let mut parts = value.split(':');
    if parts.next()? != nonce() {
        return None;
    }
    let bytes = parts.next()?.parse().ok()?;
    let frame_max = parts.next()?.parse().ok()?;
    Some(LeftOut { bytes, frame_max })
}

/// The frame size a guarded connection negotiated; 0 until it is known (nothing is cut).
#[derive(Debug, Clone, Default)]
pub struct FrameLimit(Arc<AtomicU32>);

impl FrameLimit {
    pub fn set(&self, frame_max: u32) {
        self.0.store(frame_max, Ordering::Relaxed);
    }

    fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

type Inner = Pin<Box<dyn Transport>>;

/// What a guarded stream can wrap: a TCP stream or a TLS stream over one.
pub trait Transport: AsyncRead + AsyncWrite + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + 'static> Transport for T {}

/// A broker connection's byte stream; with a [`FrameLimit`], incoming content-header frames
/// larger than the limit lose their headers table on the way to lapin.
pub struct GuardedStream {
    inner: Inner,
    filter: Option<Filter>,
}

impl GuardedStream {
    /// Passes everything through unchanged.
    pub fn plain(inner: impl Transport) -> GuardedStream {
        GuardedStream {
            inner: Box::pin(inner),
            filter: None,
        }
    }

    /// Cuts headers out of incoming content-header frames larger than `limit`.
    pub fn guarding(inner: impl Transport, limit: FrameLimit) -> GuardedStream {
        GuardedStream {
            inner: Box::pin(inner),
            filter: Some(Filter::new(limit)),
        }
    }
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("guarding", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(filter) = this.filter.as_mut() else {
            return this.inner.as_mut().poll_read(cx, buf);
        };
        loop {
            if let Some(n) = filter.take_output(buf) {
                return Poll::Ready(Ok(n));
            }
            // Inside an ordinary frame: straight into the caller's buffer.
            if let Some(remaining) = filter.passing() {
                let want = buf.len().min(remaining);
                let n = std::task::ready!(this.inner.as_mut().poll_read(cx, &mut buf[..want]))?;
                filter.passed(n);
                return Poll::Ready(Ok(n));
            }
            let mut scratch = [0u8; 4096];
            let n = std::task::ready!(this.inner.as_mut().poll_read(cx, &mut scratch))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            filter.feed(&scratch[..n]);
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().inner.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().inner.as_mut().poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.as_mut().poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner.as_mut().poll_close(cx)
    }
}

/// AMQP frame layout: type (1), channel (2), payload size (4), payload, frame end (1).
const FRAME_HEADER: usize = 7;
const FRAME_HEADER_TYPE: u8 = 2;
const FRAME_END: u8 = 0xCE;
/// Content header payload: class (2), weight (2), body size (8), property flags (2).
const PROPERTIES_START: usize = 14;
const FLAG_CONTENT_TYPE: u16 = 1 << 15;
const FLAG_CONTENT_ENCODING: u16 = 1 << 14;
const FLAG_HEADERS: u16 = 1 << 13;

/// The incoming side's state: which frame it is in and what is still to come of it.
struct Filter {
    limit: FrameLimit,
    state: State,
    /// Bytes ready for lapin, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
}

enum State {
    /// Reading a frame's first bytes.
    Start {
        head: [u8; FRAME_HEADER],
        got: usize,
    },
    /// Inside a frame that passes unchanged: payload and frame end still to come.
    Passing { remaining: usize },
    /// Inside a content-header frame too large for the connection.
    Cutting(Cut),
}

struct Cut {
    /// The frame's first bytes as they came.
    head: [u8; FRAME_HEADER],
    /// Payload size as announced.
    size: usize,
    /// Payload read so far, the headers table excepted.
    kept: Vec<u8>,
    /// Where the headers table starts in the payload (its 4-byte length), once known.
    table_at: Option<usize>,
    /// Bytes of the headers table still to skip, and its size.
    skip: usize,
    table: usize,
    /// Payload bytes read in all, skipped ones included.
    read: usize,
}

impl Filter {
    fn new(limit: FrameLimit) -> Filter {
        Filter {
            limit,
            state: State::Start {
                head: [0; FRAME_HEADER],
                got: 0,
            },
            out: Vec::new(),
            out_at: 0,
        }
    }

    /// Copies pending output into `buf`; `None` when there is none.
    fn take_output(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.out_at >= self.out.len() {
            self.out.clear();
            self.out_at = 0;
            return None;
        }
        let n = buf.len().min(self.out.len() - self.out_at);
        buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
        self.out_at += n;
        Some(n)
    }

    /// Bytes of an unchanged frame still to come, when nothing else is pending.
    fn passing(&self) -> Option<usize> {
        match self.state {
            State::Passing { remaining } if remaining > 0 => Some(remaining),
            _ => None,
        }
    }

    fn passed(&mut self, n: usize) {
        if let State::Passing { remaining } = &mut self.state {
            *remaining -= n;
            if *remaining == 0 {
                self.state = State::Start {
                    head: [0; FRAME_HEADER],
                    got: 0,
                };
            }
        }
    }

    /// Takes bytes read from the broker; what lapin is to see goes to `out`.
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match &mut self.state {
                State::Start { head, got } => {
                    let n = (FRAME_HEADER - *got).min(input.len());
                    head[*got..*got + n].copy_from_slice(&input[..n]);
                    *got += n;
                    input = &input[n..];
                    if *got == FRAME_HEADER {
                        let head = *head;
                        self.start_frame(head);
                    }
                }
                State::Passing { remaining } => {
                    let n = (*remaining).min(input.len());
                    self.out.extend_from_slice(&input[..n]);
                    *remaining -= n;
                    input = &input[n..];
                    if *remaining == 0 {
                        self.state = State::Start {
                            head: [0; FRAME_HEADER],
                            got: 0,
                        };
                    }
                }
                State::Cutting(cut) => {
                    let n = cut.take(input);
                    input = &input[n..];
                    if cut.without_headers() {
                        // Nothing to cut (no sane broker sends that): on unchanged, for
                        // lapin to refuse.
                        self.out.extend_from_slice(&cut.head);
                        self.out.extend_from_slice(&cut.kept);
                        self.state = State::Passing {
                            remaining: cut.size + 1 - cut.read,
                        };
                    } else if cut.read == cut.size + 1 {
                        self.finish_cut();
                    }
                }
            }
        }
    }

    fn start_frame(&mut self, head: [u8; FRAME_HEADER]) {
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let limit = self.limit.get() as usize;
        let too_large = limit > 0 && FRAME_HEADER + size + 1 > limit;
        if head[0] == FRAME_HEADER_TYPE && too_large && size >= PROPERTIES_START {
            self.state = State::Cutting(Cut {
                head,
                size,
                kept: Vec::with_capacity(PROPERTIES_START + 4),
                table_at: None,
                skip: 0,
                table: 0,
                read: 0,
            });
        } else {
            self.out.extend_from_slice(&head);
            self.state = State::Passing {
                remaining: size + 1,
            };
        }
    }

    /// The cut frame is read whole: lapin gets it with the marker table in place of the
    /// headers.
    fn finish_cut(&mut self) {
        let State::Cutting(cut) = std::mem::replace(
            &mut self.state,
            State::Start {
                head: [0; FRAME_HEADER],
                got: 0,
            },
        ) else {
            return;
        };
        let mut payload = cut.kept;
        let end = payload.pop().unwrap_or(FRAME_END);
        if let Some(at) = cut.table_at {
            let marker = marker_table(cut.table, self.limit.get());
            payload.splice(at..at, marker);
        }
        self.out.push(FRAME_HEADER_TYPE);
        self.out.extend_from_slice(&cut.head[1..3]);
        self.out.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        self.out.extend_from_slice(&payload);
        self.out.push(end);
    }
}

impl Cut {
    /// Whether its property flags are read and say there is no headers table.
    fn without_headers(&self) -> bool {
        self.table_at.is_none()
            && self.kept.len() >= PROPERTIES_START
            && u16::from_be_bytes([self.kept[12], self.kept[13]]) & FLAG_HEADERS == 0
    }

    /// Takes what it needs of `input` (the payload, then the frame end); returns how much.
    /// Stops after the property flags, for [`Cut::without_headers`] to be asked.
    fn take(&mut self, input: &[u8]) -> usize {
        let total = self.size + 1;
        let mut used = 0;
        while used < input.len() && self.read < total {
            if self.skip > 0 {
                let n = self.skip.min(input.len() - used);
                self.skip -= n;
                self.read += n;
                used += n;
                continue;
            }
            self.kept.push(input[used]);
            self.read += 1;
            used += 1;
            if self.without_headers() {
                break;
            }
            if self.table_at.is_none()
                && let Some(at) = headers_table_at(&self.kept)
            {
                // The table's length has just been read: skip its content.
                let len = &self.kept[at..at + 4];
                let table = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                self.kept.truncate(at);
                self.table_at = Some(at);
                self.table = table;
                self.skip = table.min(total.saturating_sub(self.read + 1));
            }
        }
        used
    }
}

/// Where the headers table (its 4-byte length) starts in a Basic content-header payload, once
/// `payload` holds exactly up to the end of that length; `None` before, or without headers.
fn headers_table_at(payload: &[u8]) -> Option<usize> {
    if payload.len() < PROPERTIES_START {
        return None;
    }
    let flags = u16::from_be_bytes([payload[12], payload[13]]);
    if flags & FLAG_HEADERS == 0 {
        return None;
    }
    let mut at = PROPERTIES_START;
    for flag in [FLAG_CONTENT_TYPE, FLAG_CONTENT_ENCODING] {
        if flags & flag != 0 {
            let len = *payload.get(at)? as usize;
            at += 1 + len;
        }
    }
    (payload.len() == at + 4).then_some(at)
}

/// The table that replaces the headers, `{DROPPED_HEADERS: "<nonce>:<bytes>:<frame size>"}`,
/// encoded.
fn marker_table(bytes_left_out: usize, frame_max: u32) -> Vec<u8> {
    let value = format!("{}:{bytes_left_out}:{frame_max}", nonce());
    let mut entry = Vec::new();
    entry.push(u8::try_from(DROPPED_HEADERS.len()).unwrap_or(u8::MAX));
    entry.extend_from_slice(DROPPED_HEADERS.as_bytes());
    entry.push(b'S');
    entry.extend_from_slice(&u32::try_from(value.len()).unwrap_or(0).to_be_bytes());
    entry.extend_from_slice(value.as_bytes());
    let mut table = u32::try_from(entry.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    table.extend_from_slice(&entry);
    table
}

// ---------------------------------------------------------------------------------------
// The runtime kit that hands lapin guarded streams.

/// tokio, with TCP streams of type [`GuardedStream`] (passing everything through until
/// `amqp::connect` puts a guard on top).
#[derive(Debug, Clone)]
pub struct GuardKit(async_rs::Tokio);

impl GuardKit {
    pub fn current() -> GuardKit {
        GuardKit(async_rs::Tokio::current())
    }
}

impl RuntimeKit for GuardKit {}

impl Executor for GuardKit {
    type Task<T: Send + 'static> = <async_rs::Tokio as Executor>::Task<T>;

    fn block_on<T, F: Future<Output = T>>(&self, f: F) -> T {
        self.0.block_on(f)
    }

    fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: F,
    ) -> Task<Self::Task<T>> {
        self.0.spawn(f)
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> Task<Self::Task<T>> {
        self.0.spawn_blocking(f)
    }
}

impl Reactor for GuardKit {
    type TcpStream = GuardedStream;
    type Sleep = <async_rs::Tokio as Reactor>::Sleep;

    fn register<H: io::Read + io::Write + AsFd + AsRawFd + Send + 'static>(
        &self,
        socket: H,
    ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        self.0.register(socket)
    }

    fn sleep(&self, dur: Duration) -> Self::Sleep {
        self.0.sleep(dur)
    }

    fn interval(&self, dur: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.0.interval(dur)
    }

    fn tcp_connect_addr(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send + 'static {
        let connecting = self.0.tcp_connect_addr(addr);
        async move { connecting.await.map(GuardedStream::plain) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::BasicProperties;
    use lapin::types::{AMQPValue, FieldTable, LongString};

    /// A content-header frame as RabbitMQ sends it, made by amq-protocol.
    fn header_frame(properties: BasicProperties) -> Vec<u8> {
        use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, gen_frame};
        let frame = AMQPFrame::Header(
            7,
            AMQPContentHeader {
                class_id: 60,
                body_size: 5,
                properties,
            },
        );
        cookie_factory::r#gen(gen_frame(&frame), Vec::new())
            .map(|(bytes, _)| bytes)
            .unwrap()
    }

    fn body_frame() -> Vec<u8> {
        let mut frame = vec![3, 0, 7, 0, 0, 0, 5];
        frame.extend_from_slice(b"hello");
        frame.push(FRAME_END);
        frame
    }

    fn headers(n: usize, value_len: usize) -> FieldTable {
        let mut table = FieldTable::default();
        for i in 0..n {
            table.insert(
                format!("h{i:05}").into(),
                AMQPValue::LongString(LongString::from("v".repeat(value_len))),
            );
        }
        table
    }

    /// Feeds `stream` to a filter with `limit`, `chunk` bytes at a time, and parses what
    /// lapin would see.
    fn filtered(stream: &[u8], limit: u32, chunk: usize) -> Vec<amq_protocol::frame::AMQPFrame> {
        let frame_limit = FrameLimit::default();
        frame_limit.set(limit);
        let mut filter = Filter::new(frame_limit);
        let mut seen = Vec::new();
        for piece in stream.chunks(chunk) {
            filter.feed(piece);
            let mut buf = vec![0; 1 << 20];
            while let Some(n) = filter.take_output(&mut buf) {
                seen.extend_from_slice(&buf[..n]);
            }
        }
        let mut frames = Vec::new();
        let mut rest: &[u8] = &seen;
        while !rest.is_empty() {
            let (after, frame) = amq_protocol::frame::parse_frame(rest).unwrap();
            assert!(
                limit == 0 || rest.len() - after.len() <= limit as usize,
                "a frame lapin would refuse"
            );
            frames.push(frame);
            rest = after;
        }
        frames
    }

    fn properties(frame: &amq_protocol::frame::AMQPFrame) -> &BasicProperties {
        match frame {
            amq_protocol::frame::AMQPFrame::Header(7, header) => &header.properties,
            other => panic!("not a content header on channel 7: {other:?}"),
        }
    }

    #[test]
    fn headers_that_do_not_fit_are_cut_and_the_rest_arrives_unchanged() {
        let big = BasicProperties::default()
            .with_content_type("application/x-protobuf".into())
            .with_content_encoding("identity".into())
            .with_headers(headers(1, 9_000))
            .with_message_id("5f0c".into())
            .with_delivery_mode(2);
        let many = BasicProperties::default().with_headers(headers(2_500, 1));
        let small = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers(3, 10));
        for (what, props, cut) in [
            ("one 9 KB header", big, true),
            ("2,500 small headers", many, true),
            ("headers that fit", small, false),
        ] {
            let full = header_frame(props.clone());
            let mut stream = full.clone();
            stream.extend(body_frame());
            stream.extend(header_frame(BasicProperties::default()));
            for chunk in [1, 3, 7, 4096, stream.len()] {
                let frames = filtered(&stream, 8192, chunk);
                assert_eq!(frames.len(), 3, "{what}, chunk {chunk}");
                let got = properties(&frames[0]);
                if cut {
                    let value = got.headers().as_ref().unwrap().inner()[DROPPED_HEADERS].clone();
                    let AMQPValue::LongString(value) = value else {
                        panic!("{what}: marker {value:?}")
                    };
                    let table_len = full.len()
                        - header_frame(props.clone().with_headers(FieldTable::default())).len();
                    assert_eq!(
                        left_out(&String::from_utf8_lossy(value.as_bytes())),
                        Some(LeftOut {
                            bytes: table_len as u64,
                            frame_max: 8192
                        }),
                        "{what}, chunk {chunk}"
                    );
                    assert_eq!(
                        got.clone().with_headers(FieldTable::default()),
                        props.clone().with_headers(FieldTable::default()),
                        "{what}: the other properties are kept"
                    );
                } else {
                    assert_eq!(got, &props, "{what}");
                }
                assert!(
                    matches!(&frames[1], amq_protocol::frame::AMQPFrame::Body(7, b) if b == b"hello")
                );
                assert_eq!(properties(&frames[2]), &BasicProperties::default());
            }
        }
    }

    #[test]
    fn nothing_is_cut_before_the_frame_size_is_known() {
        let props = BasicProperties::default().with_headers(headers(1, 9_000));
        let stream = header_frame(props.clone());
        let frames = filtered(&stream, 0, 100);
        assert_eq!(properties(&frames[0]), &props);
    }

    #[test]
    fn a_forged_marker_is_not_taken_for_the_guards_own() {
        let ours = LeftOut {
            bytes: 12,
            frame_max: 8192,
        };
        for (value, expected) in [
            ("0123456789abcdef:12:8192".to_owned(), None),
            (format!("{}:12:8192", nonce()), Some(ours)),
            (format!("{}:12", nonce()), None),
            (format!("{}:x:8192", nonce()), None),
            ("12".to_owned(), None),
        ] {
            assert_eq!(left_out(&value), expected, "{value}");
        }
    }
}
