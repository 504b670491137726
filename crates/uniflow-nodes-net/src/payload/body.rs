//! The response body: bytes built from an answer, or an upstream body passed through.

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The error type of a streamed response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: bytes built from an answer, or an upstream's body passed through as it
/// arrives (the `proxy` node).
pub struct Body(Inner);

pub(super) enum Inner {
    Full(Option<Bytes>),
    // Boxed so a response with a plain body stays small: responses are moved several times.
    Stream(Box<hyper::body::Incoming>),
}

impl Body {
    /// A body of these bytes.
    pub fn full(bytes: Bytes) -> Body {
        Body(Inner::Full(Some(bytes)))
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body(Inner::Full(None))
    }

    pub(crate) fn stream(body: hyper::body::Incoming) -> Body {
        Body(Inner::Stream(Box::new(body)))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Inner::Full(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Inner::Stream(body) => Pin::new(&mut **body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Inner::Stream(body) => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream(body) => body.size_hint(),
        }
    }
}
