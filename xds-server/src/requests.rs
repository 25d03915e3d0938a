//! A stream's requests, read from the HTTP/2 body without a per-stream buffer.
//!
//! tonic's `Streaming` keeps a decode buffer per stream for the stream's lifetime, grown to the
//! largest request (a SotW ACK naming every subscribed resource): kilobytes per idle stream.
//! Here a message that arrives whole in one HTTP/2 DATA frame (the usual case) is decoded
//! straight from that frame's bytes; only a message split across frames is gathered in a buffer,
//! and the buffer is released as soon as it is empty.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use tonic::body::Body;
use tonic::Status;

use crate::codec::{malformed, Recycle};

/// The gRPC message prefix: a compression flag and a 4-byte big-endian length.
const PREFIX: usize = 5;

/// A stream's request body: straight from the connection when `XdsServer::serve` routed the
/// stream itself, or as tonic's router hands it over (boxed) when the services are mounted on an
/// application's own server.
pub(crate) enum RequestBody {
    /// From hyper, without a box and an error conversion around every frame.
    Direct(Incoming),
    /// From tonic's router.
    Boxed(Body),
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        Self::Direct(body)
    }
}

impl From<Body> for RequestBody {
    fn from(body: Body) -> Self {
        Self::Boxed(body)
    }
}

impl RequestBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        match self {
            Self::Direct(body) => {
                Pin::new(body).poll_frame(cx).map(|frame| frame.map(|f| f.map_err(|e| Status::from_error(e.into()))))
            }
            Self::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }
}

/// The requests of one stream.
pub(crate) struct Requests<T> {
    body: RequestBody,
    /// Received bytes not yet decoded: the frame being read, or a message being gathered.
    pending: Bytes,
    gathered: BytesMut,
    max_message_size: usize,
    ended: bool,
    message: PhantomData<fn() -> T>,
}

impl<T: Recycle> Requests<T> {
    pub(crate) fn new(body: RequestBody, max_message_size: usize) -> Self {
        Self {
            body,
            pending: Bytes::new(),
            gathered: BytesMut::new(),
            max_message_size,
            ended: false,
            message: PhantomData,
        }
    }

    /// The next request; `Ok(None)` when the client has finished sending.
    pub(crate) async fn message(&mut self) -> Result<Option<Box<T>>, Status> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn buffered(&self) -> usize {
        self.gathered.len() + self.pending.len()
    }

    /// The length of the next message if its prefix has arrived.
    fn next_len(&self) -> Result<Option<usize>, Status> {
        if self.buffered() < PREFIX {
            return Ok(None);
        }
        let mut prefix = [0u8; PREFIX];
        let from_gathered = self.gathered.len().min(PREFIX);
        prefix[..from_gathered].copy_from_slice(&self.gathered[..from_gathered]);
        prefix[from_gathered..].copy_from_slice(&self.pending[..PREFIX - from_gathered]);
        if prefix[0] != 0 {
            return Err(Status::unimplemented(
                "compressed request messages are not supported by this server; send uncompressed messages",
            ));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.max_message_size {
            return Err(Status::resource_exhausted(format!(
                "request of {len} bytes is larger than the server's limit of {} bytes",
                self.max_message_size
            )));
        }
        Ok(Some(len))
    }

    /// Decodes the next message if it has fully arrived.
    fn try_decode(&mut self) -> Result<Option<Box<T>>, Status> {
        let Some(len) = self.next_len()? else {
            self.gather_all();
            return Ok(None);
        };
        if self.gathered.is_empty() && self.pending.len() >= PREFIX + len {
            // The whole message is in the frame: decode from it, no copy.
            self.pending.advance(PREFIX);
            let mut msg = self.pending.split_to(len);
            if self.pending.is_empty() {
                // An empty slice would still hold the frame's allocation.
                self.pending = Bytes::new();
            }
            return decode(&mut msg).map(Some);
        }
        if self.buffered() < PREFIX + len {
            self.gather_all();
            return Ok(None);
        }
        // Split across frames: complete the gathered message from the frame.
        let missing = PREFIX + len - self.gathered.len();
        self.gathered.extend_from_slice(&self.pending.split_to(missing));
        let mut msg = std::mem::take(&mut self.gathered).freeze();
        msg.advance(PREFIX);
        decode(&mut msg).map(Some)
    }

    /// Moves what is left of the current frame into the gathering buffer.
    fn gather_all(&mut self) {
        if !self.pending.is_empty() {
            self.gathered.extend_from_slice(&self.pending);
            self.pending = Bytes::new();
        }
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Box<T>>, Status>> {
        loop {
            if let Some(msg) = self.try_decode()? {
                return Poll::Ready(Ok(Some(msg)));
            }
            if self.ended {
                return Poll::Ready(if self.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(Status::invalid_argument("malformed request: the stream ended inside a message"))
                });
            }
            match ready!(self.body.poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        // `pending` is empty here: `try_decode` gathered what it could not use.
                        self.pending = data;
                    }
                }
                Some(Err(status)) => return Poll::Ready(Err(status)),
                None => self.ended = true,
            }
        }
    }
}

fn decode<T: Recycle>(msg: &mut Bytes) -> Result<Box<T>, Status> {
    let mut request = T::take_used();
    request.decode_into(msg).map_err(|e| malformed(&e))?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_core::envoy::service::discovery::v3::DiscoveryRequest;
    use xds_core::prost::Message;

    fn framed(r: &DiscoveryRequest) -> Vec<u8> {
        let body = r.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn request(i: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: "t".into(),
            response_nonce: i.to_string(),
            resource_names: (0..i).map(|n| format!("name-{n}")).collect(),
            ..Default::default()
        }
    }

    /// A body yielding `chunks` as DATA frames.
    fn body(chunks: Vec<Vec<u8>>) -> Body {
        let frames = chunks.into_iter().map(|c| Ok::<_, Status>(http_body::Frame::data(Bytes::from(c))));
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)))
    }

    async fn read_all(chunks: Vec<Vec<u8>>, max: usize) -> (Vec<DiscoveryRequest>, Option<Status>) {
        let mut requests = Requests::<DiscoveryRequest>::new(body(chunks).into(), max);
        let mut out = Vec::new();
        for _ in 0..100 {
            match requests.message().await {
                Ok(Some(r)) => out.push(*r),
                Ok(None) => return (out, None),
                Err(status) => return (out, Some(status)),
            }
        }
        panic!("too many messages");
    }

    #[tokio::test]
    async fn messages_in_any_framing_decode_alike() {
        let expected: Vec<_> = (0..6).map(request).collect();
        let wire: Vec<u8> = expected.iter().flat_map(framed).collect();
        // One frame, one frame per message, and every split size.
        let mut framings = vec![vec![wire.clone()], expected.iter().map(framed).collect()];
        for size in [1, 2, 3, 5, 7, 64] {
            framings.push(wire.chunks(size).map(<[u8]>::to_vec).collect());
        }
        for chunks in framings {
            let (got, err) = read_all(chunks, 1 << 20).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(got, expected);
        }
    }

    #[tokio::test]
    async fn too_large_compressed_truncated_and_malformed_requests_are_refused() {
        let big = framed(&request(50));
        let (_, err) = read_all(vec![big.clone()], 100).await;
        assert_eq!(err.map(|s| s.code()), Some(tonic::Code::ResourceExhausted));

        let mut compressed = framed(&request(1));
        compressed[0] = 1;
        let (_, err) = read_all(vec![compressed], 1 << 20).await;
        assert_eq!(err.map(|s| s.code()), Some(tonic::Code::Unimplemented));

        let (got, err) = read_all(vec![framed(&request(1)), big[..big.len() - 3].to_vec()], 1 << 20).await;
        assert_eq!(got.len(), 1);
        assert_eq!(err.map(|s| s.code()), Some(tonic::Code::InvalidArgument));

        let (_, err) = read_all(vec![vec![0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]], 1 << 20).await;
        let err = err.expect("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("malformed request"));
    }
}
