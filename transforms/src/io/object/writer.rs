//! One worker's writer: open batches per rendered prefix, per-epoch completion tracking, uploads
//! and the age timer on the runner's tokio runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sluice::io::{Epoch, Rejection, SinkWriter, WriteFuture};
use sluice::{Failure, Message};
use tokio::sync::oneshot;

use super::format::Body;
use super::{ObjectSink, ObjectSinkError};

/// Builds object names that never collide: `<prefix><job>-<run_id>-w<worker>-<seq>.<ext>`.
/// The run id is unique per run, the worker index per worker of a run (across processes), and
/// the sequence number per object of a writer. Names contain no `:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectNames {
    stem: String,
}

impl ObjectNames {
    /// Names for worker `worker` of run `run_id` of job `job`. Characters other than ASCII
    /// letters, digits, `_`, `-` and `.` are replaced by `_`.
    pub fn new(job: &str, run_id: &str, worker: usize) -> Self {
        ObjectNames {
            stem: format!("{}-{}-w{worker:04}", clean(job), clean(run_id)),
        }
    }

    /// The object name (without prefix) of sequence number `seq` with extension `ext`
    /// (e.g. `ndjson.gz`).
    pub fn name(&self, seq: u64, ext: &str) -> String {
        format!("{}-{seq:06}.{ext}", self.stem)
    }
}

/// Prefixes remembered as valid per writer; past this the set starts over (a template with
/// a high-cardinality attribute must not grow memory without bound).
const MAX_CHECKED_PREFIXES: usize = 4096;

/// The longest path segment local file systems take.
const MAX_SEGMENT_BYTES: usize = 255;
/// The longest key S3 takes.
const MAX_KEY_BYTES: usize = 1024;

/// Whether `name` can be an object's name on every store the sink writes to.
fn check_object_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the object name is {} bytes, over the limit of {MAX_KEY_BYTES}",
            name.len()
        ));
    }
    if let Some(long) = name.split('/').find(|s| s.len() > MAX_SEGMENT_BYTES) {
        return Err(format!(
            "a path segment is {} bytes, over the limit of {MAX_SEGMENT_BYTES}",
            long.len()
        ));
    }
    Path::parse(name).map(|_| ()).map_err(|e| e.to_string())
}

fn clean(s: &str) -> String {
    let c: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if c.is_empty() {
        "_".to_string()
    } else {
        c
    }
}

/// One worker's writer of an [`ObjectSink`]; see the module docs for the contract.
pub struct ObjectWriter {
    shared: Arc<Shared>,
    /// Rendered prefixes already checked to make valid object names.
    valid_prefixes: std::collections::HashSet<String>,
    prefix: String,
    line: Vec<u8>,
    scratch: String,
}

struct Shared {
    sink: ObjectSink,
    runtime: tokio::runtime::Handle,
    names: ObjectNames,
    extension: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    batches: HashMap<String, Batch>,
    epochs: HashMap<Epoch, EpochWait>,
    next_seq: u64,
    failed: Option<ObjectSinkError>,
}

struct Batch {
    body: Body,
    records: usize,
    bytes: usize,
    opened: Instant,
    epochs: Vec<Epoch>,
}

#[derive(Default)]
struct EpochWait {
    /// Batches (open or uploading) holding records of this epoch.
    pending: usize,
    error: Option<ObjectSinkError>,
    waiters: Vec<oneshot::Sender<Result<(), ObjectSinkError>>>,
}

impl ObjectWriter {
    pub(crate) fn new(
        sink: ObjectSink,
        runtime: tokio::runtime::Handle,
        names: ObjectNames,
    ) -> Self {
        let extension = format!(
            "{}{}",
            sink.format.extension(),
            sink.compression.extension()
        );
        let max_age = sink.bounds.max_age;
        let shared = Arc::new(Shared {
            sink,
            runtime: runtime.clone(),
            names,
            extension,
            state: Mutex::new(State::default()),
        });
        runtime.spawn(age_timer(Arc::downgrade(&shared), max_age));
        ObjectWriter {
            shared,
            valid_prefixes: Default::default(),
            prefix: String::new(),
            line: Vec::new(),
            scratch: String::new(),
        }
    }

    /// Number of open (not yet uploading) batches.
    pub fn open_batches(&self) -> usize {
        self.shared.lock().batches.len()
    }

    /// Appends `records` of `epoch`; see [`SinkWriter::write`].
    /// Records whose rendered prefix cannot make an object name (a segment over 255 bytes, a
    /// key over 1024 bytes, characters the store refuses) are refused, each on its own: one
    /// poison record never fails a batch.
    pub fn write_records(&mut self, epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        let shared = self.shared.clone();
        let bounds = shared.sink.bounds;
        let mut st = shared.lock();
        if let Some(e) = &st.failed {
            let e = ObjectSinkError::Stopped(Box::new(e.clone()));
            return Box::pin(async move { Err(e.into()) });
        }
        let mut refused = Vec::new();
        for m in records {
            shared.sink.template.render_into(&m, &mut self.prefix);
            if !self.valid_prefixes.contains(self.prefix.as_str()) {
                let sample = format!("{}{}", self.prefix, shared.names.name(0, &shared.extension));
                match check_object_name(&sample) {
                    Ok(()) => {
                        if self.valid_prefixes.len() >= MAX_CHECKED_PREFIXES {
                            self.valid_prefixes.clear();
                        }
                        self.valid_prefixes.insert(self.prefix.clone());
                    }
                    Err(why) => {
                        refused.push(Rejection::new(
                            m,
                            Failure::new(format!("cannot write to `{}`: {why}", self.prefix))
                                .with_exception_class(
                                    "sluice_transforms::io::object::InvalidObjectName",
                                ),
                        ));
                        continue;
                    }
                }
            }
            let m = &m;
            self.line.clear();
            shared
                .sink
                .format
                .write_record_with(m, &mut self.scratch, &mut self.line);
            let full = st
                .batches
                .get(self.prefix.as_str())
                .is_some_and(|b| b.bytes + self.line.len() > bounds.max_bytes);
            if full {
                shared.close(&mut st, &self.prefix);
            }
            let State {
                batches, epochs, ..
            } = &mut *st;
            let batch = match batches.get_mut(self.prefix.as_str()) {
                Some(b) => b,
                None => batches.entry(self.prefix.clone()).or_insert_with(|| Batch {
                    body: Body::new(shared.sink.compression),
                    records: 0,
                    bytes: 0,
                    opened: Instant::now(),
                    epochs: Vec::new(),
                }),
            };
            batch.body.append(&self.line);
            batch.records += 1;
            batch.bytes += self.line.len();
            if !batch.epochs.contains(&epoch) {
                batch.epochs.push(epoch);
                epochs.entry(epoch).or_default().pending += 1;
            }
            if batch.records >= bounds.max_records || batch.bytes >= bounds.max_bytes {
                shared.close(&mut st, &self.prefix);
            }
        }
        let Some(wait) = st.epochs.get_mut(&epoch) else {
            return Box::pin(async { Ok(refused) });
        };
        let (tx, rx) = oneshot::channel();
        wait.waiters.push(tx);
        drop(st);
        Box::pin(async move {
            match rx.await {
                Ok(Ok(())) => Ok(refused),
                Ok(Err(e)) => Err(e.into()),
                // The writer went away with the batch unwritten: the epoch is not durable.
                Err(_) => Err(ObjectSinkError::Closed(epoch).into()),
            }
        })
    }

    /// Closes every open batch and starts its upload; see [`SinkWriter::flush`].
    pub fn flush_all(&mut self) {
        self.shared.close_all(|_| true);
    }
}

impl SinkWriter<Message> for ObjectWriter {
    fn write(&mut self, epoch: Epoch, records: Vec<Message>) -> WriteFuture<Message> {
        self.write_records(epoch, records)
    }

    fn flush(&mut self) {
        self.flush_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the maps half-updated in a way that matters more than
        // stopping the pipeline would; keep going with what is there.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close_all(self: &Arc<Self>, pick: impl Fn(&Batch) -> bool) {
        let mut st = self.lock();
        let prefixes: Vec<String> = st
            .batches
            .iter()
            .filter(|(_, b)| pick(b))
            .map(|(p, _)| p.clone())
            .collect();
        for p in prefixes {
            self.close(&mut st, &p);
        }
    }

    /// Takes the batch of `prefix` out of the open set and uploads it on the runtime.
    fn close(self: &Arc<Self>, st: &mut State, prefix: &str) {
        let Some(batch) = st.batches.remove(prefix) else {
            return;
        };
        let seq = st.next_seq;
        st.next_seq += 1;
        let name = format!("{prefix}{}", self.names.name(seq, &self.extension));
        let shared = self.clone();
        let records = batch.records;
        self.runtime.spawn(async move {
            let result = shared.upload(&name, batch.body).await;
            match &result {
                Ok(bytes) => tracing::debug!(object = %name, records, bytes, "object written"),
                Err(e) => tracing::warn!(object = %name, error = %e, "object not written"),
            }
            shared.complete(&batch.epochs, result.map(|_| ()));
        });
    }

    async fn upload(&self, name: &str, body: Body) -> Result<usize, ObjectSinkError> {
        let path = Path::parse(name).map_err(|e| ObjectSinkError::Path {
            path: name.to_string(),
            source: Arc::new(e),
        })?;
        let bytes = body.finish().map_err(|e| ObjectSinkError::Encode {
            path: name.to_string(),
            source: Arc::new(e),
        })?;
        let len = bytes.len();
        let upload_err = |e: object_store::Error| ObjectSinkError::Upload {
            path: name.to_string(),
            source: Arc::new(e),
        };
        let store: &Arc<dyn ObjectStore> = &self.sink.store;
        if len <= self.sink.multipart_threshold {
            store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(upload_err)?;
        } else {
            let upload = store.put_multipart(&path).await.map_err(upload_err)?;
            let mut parts =
                WriteMultipart::new_with_chunk_size(upload, self.sink.multipart_part_size);
            let bytes = Bytes::from(bytes);
            let mut at = 0;
            while at < len {
                // Bound the parts in flight; the whole object is in memory anyway.
                if let Err(e) = parts.wait_for_capacity(4).await {
                    let _ = parts.abort().await;
                    return Err(upload_err(e));
                }
                let end = (at + self.sink.multipart_part_size).min(len);
                parts.put(bytes.slice(at..end));
                at = end;
            }
            parts.finish().await.map_err(upload_err)?;
        }
        Ok(len)
    }

    /// An upload ended: resolve the epochs it was the last pending batch of.
    fn complete(&self, epochs: &[Epoch], result: Result<(), ObjectSinkError>) {
        let mut st = self.lock();
        if let Err(e) = &result {
            if st.failed.is_none() {
                st.failed = Some(e.clone());
            }
        }
        for epoch in epochs {
            let Some(wait) = st.epochs.get_mut(epoch) else {
                continue;
            };
            wait.pending = wait.pending.saturating_sub(1);
            if let Err(e) = &result {
                wait.error.get_or_insert_with(|| e.clone());
            }
            if wait.pending == 0 {
                if let Some(wait) = st.epochs.remove(epoch) {
                    for tx in wait.waiters {
                        let _ = tx.send(match &wait.error {
                            None => Ok(()),
                            Some(e) => Err(e.clone()),
                        });
                    }
                }
            }
        }
    }
}

/// Closes batches older than `max_age`, until the writer is gone.
async fn age_timer(shared: Weak<Shared>, max_age: Duration) {
    let tick = (max_age / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.close_all(|b| b.opened.elapsed() >= max_age);
    }
}
