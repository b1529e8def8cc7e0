//! A store decorator for fault injection: hold puts until released, or fail them (whole puts,
//! multipart starts, or the parts of a multipart upload).
//!
//! Used by this crate's tests and available to others (e.g. a connector conformance suite) to
//! prove that a sink's futures resolve only after the store took the object, and that an
//! upload failure stops the pipeline.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, UploadPart,
};
use tokio::sync::watch;

/// Wraps a store; puts (and multipart starts) can be held or made to fail.
///
/// Clones share their switches and the inner store.
#[derive(Clone)]
pub struct FaultyStore<S> {
    inner: Arc<S>,
    hold: watch::Sender<bool>,
    fail: Arc<AtomicBool>,
    fail_parts: Arc<AtomicBool>,
    puts: Arc<AtomicUsize>,
    parts: Arc<AtomicUsize>,
    waiting: Arc<AtomicUsize>,
}

impl<S: ObjectStore> FaultyStore<S> {
    /// A pass-through decorator of `inner`.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner: Arc::new(inner),
            hold: watch::Sender::new(false),
            fail: Arc::new(AtomicBool::new(false)),
            fail_parts: Arc::new(AtomicBool::new(false)),
            puts: Arc::new(AtomicUsize::new(0)),
            parts: Arc::new(AtomicUsize::new(0)),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// While `true`, puts wait (without blocking a thread) until it is set back to `false`.
    pub fn hold_puts(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// While `true`, puts fail with a generic store error.
    pub fn fail_puts(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// While `true`, parts of multipart uploads fail with a generic store error.
    pub fn fail_parts(&self, fail: bool) {
        self.fail_parts.store(fail, Ordering::SeqCst);
    }

    /// Puts (and multipart starts) that reached the inner store.
    pub fn puts(&self) -> usize {
        self.puts.load(Ordering::SeqCst)
    }

    /// Parts of multipart uploads that the inner store took.
    pub fn parts(&self) -> usize {
        self.parts.load(Ordering::SeqCst)
    }

    /// Puts waiting on [`FaultyStore::hold_puts`] now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    async fn gate(&self, location: &Path) -> Result<()> {
        let mut rx = self.hold.subscribe();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _ = rx.wait_for(|held| !*held).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: format!("injected failure writing `{location}`").into(),
            });
        }
        Ok(())
    }
}

impl<S> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultyStore")
    }
}

impl<S> fmt::Display for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultyStore")
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.gate(location).await?;
        let r = self.inner.put_opts(location, payload, opts).await;
        self.puts.fetch_add(1, Ordering::SeqCst);
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.gate(location).await?;
        let r = self.inner.put_multipart_opts(location, opts).await;
        self.puts.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FaultyUpload {
            inner: r?,
            location: location.clone(),
            fail: self.fail_parts.clone(),
            parts: self.parts.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload whose parts can be made to fail.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    location: Path,
    fail: Arc<AtomicBool>,
    parts: Arc<AtomicUsize>,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        if self.fail.load(Ordering::SeqCst) {
            let location = self.location.clone();
            return Box::pin(async move {
                Err(object_store::Error::Generic {
                    store: "FaultyStore",
                    source: format!("injected failure writing a part of `{location}`").into(),
                })
            });
        }
        let part = self.inner.put_part(data);
        let parts = self.parts.clone();
        Box::pin(async move {
            part.await?;
            parts.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
