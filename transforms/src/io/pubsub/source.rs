//! The Pub/Sub source: see the module docs of [`super`] for what is acked when.

use std::collections::HashMap;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::ShutdownBehavior;
use sluice::{
    BoxError, Epoch, EpochLedger, Message, PartitionPosition, PositionKind, PubSubPosition,
    ReadState, ReadStatus, Source, SourceContext, SourcePosition, SourceReader,
};
use tokio::sync::mpsc;

use super::{Connection, MemoryPubsub, PubsubError, Resource};

/// Deliveries the pulling task may buffer for the worker before it waits.
const CHANNEL_DELIVERIES: usize = 1024;
/// How long closing waits for the client to send the last acks and nacks.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A Pub/Sub subscription read by streaming pull, one stream per worker. Never ends unless
/// [`PubsubSource::exit_when_idle`] is set. See the [module docs](super) for acks, leases and
/// flow control.
#[derive(Clone)]
pub struct PubsubSource {
    subscription: Arc<str>,
    backend: Backend,
    max_outstanding_messages: usize,
    max_outstanding_bytes: usize,
    max_lease: Duration,
    max_lease_extension: Duration,
    exit_when_idle: Option<Duration>,
}

#[derive(Clone)]
enum Backend {
    Service(Connection),
    Memory(MemoryPubsub),
}

impl PubsubSource {
    /// Reads `subscription` (`projects/<p>/subscriptions/<s>`) from the service.
    pub fn new(subscription: &str, connection: Connection) -> Self {
        Self::with_backend(subscription, Backend::Service(connection))
    }

    /// Reads `subscription` from the memory double (tests).
    pub fn memory(pubsub: &MemoryPubsub, subscription: &str) -> Self {
        Self::with_backend(subscription, Backend::Memory(pubsub.clone()))
    }

    fn with_backend(subscription: &str, backend: Backend) -> Self {
        PubsubSource {
            subscription: Arc::from(subscription),
            backend,
            max_outstanding_messages: 1000,
            max_outstanding_bytes: 100 << 20,
            max_lease: super::default_max_lease(),
            max_lease_extension: super::default_max_lease_extension(),
            exit_when_idle: None,
        }
    }

    /// Flow control per worker: at most `messages` and `bytes` delivered and not yet acked
    /// (1000 and 100 MiB by default, the client's defaults; the jobs pass the pipeline's
    /// in-flight bound).
    pub fn flow_control(mut self, messages: usize, bytes: usize) -> Self {
        self.max_outstanding_messages = messages.max(1);
        self.max_outstanding_bytes = bytes.max(1);
        self
    }

    /// The flow control bounds: `(messages, bytes)`.
    pub fn outstanding_bounds(&self) -> (usize, usize) {
        (self.max_outstanding_messages, self.max_outstanding_bytes)
    }

    /// Leases are extended for at most this long (60 min by default).
    pub fn max_lease(mut self, d: Duration) -> Self {
        self.max_lease = d;
        self
    }

    /// Each lease extension (10 s to 10 min; 60 s by default).
    pub fn max_lease_extension(mut self, d: Duration) -> Self {
        self.max_lease_extension = d;
        self
    }

    /// Ends the input once no message arrived for `idle` (on each worker).
    pub fn exit_when_idle(mut self, idle: Duration) -> Self {
        self.exit_when_idle = Some(idle);
        self
    }

    /// The subscription.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }
}

impl Source for PubsubSource {
    type Output = Message;

    fn kind(&self) -> &str {
        "pubsub"
    }

    fn describe(&self) -> String {
        self.subscription.to_string()
    }

    /// Looks the subscription up: a missing one, missing or broken credentials or an
    /// unreachable service fail here, before any record is read (see [`Resource`]).
    fn check(&self, ctx: &sluice::CheckContext) -> Result<(), BoxError> {
        match &self.backend {
            Backend::Service(c) => c.check_exists(ctx, Resource::Subscription, &self.subscription),
            Backend::Memory(m) => m.check_exists(Resource::Subscription, &self.subscription),
        }
    }

    fn open(&self, ctx: &SourceContext) -> Result<Box<dyn SourceReader<Message>>, BoxError> {
        let feed = match &self.backend {
            Backend::Memory(m) => Feed::Memory(m.clone()),
            Backend::Service(c) => Feed::service(self, c.clone(), ctx),
        };
        Ok(Box::new(PubsubReader {
            subscription: self.subscription.clone(),
            feed,
            held: HashMap::new(),
            held_bytes: 0,
            acked: 0,
            ledger: EpochLedger::new(),
            next: 0,
            max_messages: self.max_outstanding_messages,
            max_bytes: self.max_outstanding_bytes,
            exit_when_idle: self.exit_when_idle,
            last_seen: Instant::now(),
        }))
    }
}

/// Acks or nacks one delivered message.
enum AckHandle {
    /// `_stream` keeps the stream that delivered the message from being shut down.
    Service {
        handler: Handler,
        _stream: Arc<()>,
    },
    Memory {
        pubsub: MemoryPubsub,
        ack_id: u64,
    },
}

impl AckHandle {
    fn ack(self, subscription: &str) {
        match self {
            AckHandle::Service { handler, .. } => handler.ack(),
            AckHandle::Memory { pubsub, ack_id } => pubsub.ack(subscription, ack_id),
        }
    }

    fn nack(self, subscription: &str) {
        match self {
            AckHandle::Service { handler, .. } => handler.nack(),
            AckHandle::Memory { pubsub, ack_id } => pubsub.nack(subscription, ack_id),
        }
    }
}

struct Delivery {
    message: Message,
    bytes: usize,
    handle: AckHandle,
}

/// Where deliveries come from.
enum Feed {
    /// A task on the runner's runtime drives the client's stream into a bounded channel.
    Service {
        rx: Option<mpsc::Receiver<Result<Delivery, PubsubError>>>,
        /// Asks the task to shut the stream down (nacking what the client still leases).
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        /// Told when the task finished (acks and nacks sent).
        finished: std_mpsc::Receiver<()>,
    },
    Memory(MemoryPubsub),
}

impl Feed {
    fn service(source: &PubsubSource, connection: Connection, ctx: &SourceContext) -> Feed {
        let (tx, rx) = mpsc::channel(CHANNEL_DELIVERIES);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (done_tx, finished) = std_mpsc::channel();
        let waker = ctx.waker();
        let subscription = source.subscription.clone();
        let settings = (
            source.max_outstanding_messages,
            source.max_outstanding_bytes,
            source.max_lease,
            source.max_lease_extension,
        );
        ctx.runtime().spawn(async move {
            pull(subscription, connection, settings, tx, stop_rx, &waker).await;
            let _ = done_tx.send(());
            waker.wake();
        });
        Feed::Service {
            rx: Some(rx),
            stop: Some(stop_tx),
            finished,
        }
    }
}

/// The pulling task: builds the client and streams deliveries into `tx` until told to stop,
/// the worker hangs up, or the pull fails for good. A stream that ends (the service closed it,
/// or the client gave up on a transient error) is reopened with backoff; the old one is kept
/// (see [`Retired`]) until every delivery it made is acked or nacked. At the end every stream
/// is shut down, which sends pending acks and nacks what is still leased.
async fn pull(
    subscription: Arc<str>,
    connection: Connection,
    (messages, bytes, max_lease, extension): (usize, usize, Duration, Duration),
    tx: mpsc::Sender<Result<Delivery, PubsubError>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    waker: &sluice::SourceWaker,
) {
    let mut builder = Subscriber::builder();
    if let Some(e) = &connection.endpoint {
        builder = builder.with_endpoint(e.clone());
    }
    if let Some(c) = connection.anonymous() {
        builder = builder.with_credentials(c);
    }
    let client = match builder.build().await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx
                .send(Err(PubsubError::Connect {
                    endpoint: connection.to_string(),
                    message: e.to_string(),
                }))
                .await;
            waker.wake();
            return;
        }
    };
    let mut retired: Vec<Retired> = Vec::new();
    let mut backoff = Backoff::default();
    loop {
        let mut stream = Stream {
            messages: client
                .subscribe(subscription.to_string())
                .set_max_outstanding_messages(i64::try_from(messages).unwrap_or(i64::MAX))
                .set_max_outstanding_bytes(i64::try_from(bytes).unwrap_or(i64::MAX))
                .set_max_lease(max_lease)
                .set_max_lease_extension(extension)
                .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
                .build(),
            deliveries: Arc::new(()),
        };
        let opened = Instant::now();
        let mut delivered = false;
        let end = loop {
            let next = tokio::select! {
                biased;
                _ = &mut stop => break StreamEnd::Stop,
                n = stream.messages.next() => n,
            };
            let item = match next {
                Some(Ok((m, handler))) => {
                    delivered = true;
                    Ok(delivery(&subscription, m, handler, &stream.deliveries))
                }
                Some(Err(e)) if retriable(&e) => break StreamEnd::Reopen(error_text(&e)),
                Some(Err(e)) => Err(PubsubError::Pull {
                    subscription: subscription.to_string(),
                    message: error_text(&e),
                }),
                None => break StreamEnd::Reopen("the service closed the stream".to_string()),
            };
            let failed = item.is_err();
            // Waits while the worker's buffer is full: what the pipeline does not read stays
            // with the service (flow control), not in memory here.
            let sent = tokio::select! {
                biased;
                _ = &mut stop => false,
                r = tx.send(item) => r.is_ok(),
            };
            waker.wake();
            if failed || !sent {
                break StreamEnd::Stop;
            }
            retire_settled(&mut retired).await;
        };
        retired.push(Retired::from(stream));
        let StreamEnd::Reopen(why) = end else { break };
        if delivered || opened.elapsed() >= REOPEN_RESET {
            backoff = Backoff::default();
        }
        let delay = backoff.next_delay();
        tracing::warn!(
            subscription = %subscription,
            "the streaming pull ended ({why}); reopening it in {}ms",
            delay.as_millis()
        );
        retire_settled(&mut retired).await;
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    // A delivery still in the channel is nacked when dropped (the handler's drop).
    drop(tx);
    for r in retired {
        r.shutdown().await;
    }
}

/// A delivered message in the form the reader takes.
fn delivery(
    subscription: &Arc<str>,
    m: google_cloud_pubsub::model::Message,
    handler: Handler,
    stream: &Arc<()>,
) -> Delivery {
    let position = PubSubPosition {
        subscription: subscription.clone(),
        message_id: Arc::from(m.message_id.as_str()),
        publish_time: m.publish_time.map(|t| Arc::from(String::from(t))),
        delivery_attempt: handler
            .delivery_attempt()
            .and_then(|n| u32::try_from(n).ok()),
    };
    let message = Message::new(m.data)
        .with_attributes(m.attributes.into_iter().collect())
        .with_position(SourcePosition::PubSub(Box::new(position)));
    Delivery {
        bytes: message.byte_size(),
        message,
        handle: AckHandle::Service {
            handler,
            _stream: stream.clone(),
        },
    }
}

/// Why the inner loop of [`pull`] left a stream.
enum StreamEnd {
    /// Told to stop, the worker hung up, or a permanent error was passed on.
    Stop,
    /// The stream ended (why): open another.
    Reopen(String),
}

/// One streaming pull and a token held by every delivery it made.
struct Stream {
    messages: google_cloud_pubsub::subscriber::MessageStream,
    deliveries: Arc<()>,
}

/// A stream that ended but may still have deliveries in the pipeline. Its lease loop keeps
/// extending their leases and sends their acks, so it must outlive them: dropping it would nack
/// them at once (the shutdown behaviour), and redeliver messages the pipeline is writing.
struct Retired {
    token: google_cloud_pubsub::subscriber::ShutdownToken,
    _messages: google_cloud_pubsub::subscriber::MessageStream,
    deliveries: Arc<()>,
}

impl From<Stream> for Retired {
    fn from(s: Stream) -> Self {
        Retired {
            token: s.messages.shutdown_token(),
            _messages: s.messages,
            deliveries: s.deliveries,
        }
    }
}

impl Retired {
    /// Every delivery of this stream was acked or nacked (their handles are dropped).
    fn settled(&self) -> bool {
        Arc::strong_count(&self.deliveries) == 1
    }

    /// Sends the acks still pending, nacks what is leased, and waits for both.
    async fn shutdown(self) {
        self.token.shutdown().await;
    }
}

/// Shuts down the retired streams none of whose deliveries is left.
async fn retire_settled(retired: &mut Vec<Retired>) {
    if !retired.iter().any(Retired::settled) {
        return;
    }
    let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(retired)
        .into_iter()
        .partition(Retired::settled);
    *retired = keep;
    for r in done {
        r.shutdown().await;
    }
}

/// A stream that lived this long before it ended resets the backoff.
const REOPEN_RESET: Duration = Duration::from_secs(10);
/// The first wait before a stream is reopened, doubled after each stream that delivered
/// nothing, up to [`REOPEN_MAX`].
const REOPEN_FIRST: Duration = Duration::from_millis(100);
/// The longest wait before a stream is reopened.
const REOPEN_MAX: Duration = Duration::from_secs(10);

/// The waits between reopened streams.
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = REOPEN_FIRST
            .saturating_mul(1 << self.attempts.min(10))
            .min(REOPEN_MAX);
        self.attempts += 1;
        delay
    }
}

/// Whether a failed pull is worth a new stream: transport failures and the statuses Pub/Sub
/// documents as transient (plus `UNKNOWN` and `CANCELLED`, which proxies and dropped
/// connections produce). A missing subscription, missing permissions or a bad request are
/// not: they stop the job.
fn retriable(e: &google_cloud_pubsub::Error) -> bool {
    use google_cloud_gax::error::rpc::Code;
    if let Some(status) = e.status() {
        return matches!(
            status.code,
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Unknown
                | Code::Cancelled
        );
    }
    e.is_transport() || e.is_io() || e.is_timeout() || e.is_exhausted()
}

/// The client's error on one line: the status and its message when the service sent one
/// (the client's own text repeats them), else the error and its causes.
fn error_text(e: &google_cloud_pubsub::Error) -> String {
    if let Some(status) = e.status() {
        return format!("{}: {}", status.code.name(), status.message);
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

/// One worker's reader: delivered messages wait in `held` until their epoch is durable.
struct PubsubReader {
    subscription: Arc<str>,
    feed: Feed,
    /// Delivered, not yet acked: reader-local id -> handle, bytes.
    held: HashMap<u64, (AckHandle, usize)>,
    held_bytes: usize,
    /// Messages acked since the start.
    acked: u64,
    /// Each delivery is its own partition (its reader-local id), acked with its epoch.
    ledger: EpochLedger<u64, ()>,
    next: u64,
    max_messages: usize,
    max_bytes: usize,
    exit_when_idle: Option<Duration>,
    last_seen: Instant,
}

impl PubsubReader {
    fn take(&mut self, d: Delivery, out: &mut Vec<Message>) -> usize {
        let id = self.next;
        self.next += 1;
        self.ledger.record(id, ());
        self.held_bytes += d.bytes;
        self.held.insert(id, (d.handle, d.bytes));
        out.push(d.message);
        d.bytes
    }

    /// Reads from the double, honouring flow control as the client does.
    fn read_memory(
        &mut self,
        pubsub: &MemoryPubsub,
        out: &mut Vec<Message>,
        max: usize,
    ) -> Result<usize, BoxError> {
        let room = self.max_messages.saturating_sub(self.held.len()).min(max);
        if room == 0 || self.held_bytes >= self.max_bytes {
            return Ok(0);
        }
        let mut bytes = 0;
        for (ack_id, p, attempt) in pubsub.pull(&self.subscription, room)? {
            let position = PubSubPosition {
                subscription: self.subscription.clone(),
                message_id: Arc::from(p.message_id.as_str()),
                publish_time: Some(Arc::from(p.publish_time.as_str())),
                delivery_attempt: Some(attempt),
            };
            let message = p
                .message()
                .with_position(SourcePosition::PubSub(Box::new(position)));
            bytes += self.take(
                Delivery {
                    bytes: message.byte_size(),
                    message,
                    handle: AckHandle::Memory {
                        pubsub: pubsub.clone(),
                        ack_id,
                    },
                },
                out,
            );
        }
        Ok(bytes)
    }

    fn nack_held(&mut self) {
        for (_, (handle, _)) in self.held.drain() {
            handle.nack(&self.subscription);
        }
        self.held_bytes = 0;
        self.ledger = EpochLedger::new();
    }
}

impl SourceReader<Message> for PubsubReader {
    fn read(&mut self, out: &mut Vec<Message>, max: usize) -> Result<ReadStatus, BoxError> {
        let before = out.len();
        let mut bytes = 0;
        let mut drained = false;
        match &mut self.feed {
            Feed::Memory(m) => {
                let m = m.clone();
                bytes = self.read_memory(&m, out, max)?;
                drained = out.len() - before < max;
            }
            Feed::Service { rx, .. } => {
                let Some(mut channel) = rx.take() else {
                    return Err(Box::new(PubsubError::StreamEnded(
                        self.subscription.to_string(),
                    )));
                };
                let mut result = Ok(());
                while out.len() - before < max {
                    match channel.try_recv() {
                        Ok(Ok(d)) => bytes += self.take(d, out),
                        Ok(Err(e)) => {
                            result = Err(e);
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {
                            drained = true;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            result = Err(PubsubError::StreamEnded(self.subscription.to_string()));
                            break;
                        }
                    }
                }
                if let Feed::Service { rx, .. } = &mut self.feed {
                    *rx = Some(channel);
                }
                result?;
            }
        }
        let got = out.len() - before;
        // Held back by flow control is waiting for acks, not idle.
        let held_back = self.held.len() >= self.max_messages || self.held_bytes >= self.max_bytes;
        if got > 0 || held_back {
            self.last_seen = Instant::now();
        }
        let state = if !drained {
            ReadState::More
        } else if held_back {
            // Nothing more comes until what is held is acked: sinks that hold records in open
            // objects must write them now, not when the objects reach their age.
            ReadState::AwaitingAcks
        } else if self
            .exit_when_idle
            .is_some_and(|idle| got == 0 && self.last_seen.elapsed() >= idle)
        {
            ReadState::Exhausted
        } else {
            ReadState::Idle
        };
        Ok(ReadStatus::new(bytes, state))
    }

    fn end_epoch(&mut self, epoch: Epoch) {
        self.ledger.end_epoch(epoch);
    }

    fn ack(&mut self, done: Epoch) -> Result<(), BoxError> {
        for (id, ()) in self.ledger.ack(done) {
            if let Some((handle, bytes)) = self.held.remove(&id) {
                self.held_bytes -= bytes;
                self.acked += 1;
                handle.ack(&self.subscription);
            }
        }
        Ok(())
    }

    /// Messages delivered to this worker and not acked yet, and those acked since the start.
    fn positions(&self) -> Vec<PartitionPosition> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        vec![
            PartitionPosition::new(
                &*self.subscription,
                PositionKind::Outstanding,
                count(self.held.len() as u64),
            ),
            PartitionPosition::new(&*self.subscription, PositionKind::Acked, count(self.acked)),
        ]
    }

    /// Nacks every delivered message not acked (redelivered at once), then shuts the stream
    /// down, waiting (at most 30 s) for the client to send the last acks and nacks.
    fn close(&mut self) -> Result<(), BoxError> {
        self.nack_held();
        if let Feed::Service { rx, stop, finished } = &mut self.feed {
            // Deliveries still buffered are nacked as they drop.
            drop(rx.take());
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
                if finished.recv_timeout(CLOSE_TIMEOUT).is_err() {
                    tracing::warn!(
                        "pub/sub stream of `{}` did not shut down within {}s: messages not acked are redelivered after their lease",
                        self.subscription,
                        CLOSE_TIMEOUT.as_secs()
                    );
                }
            }
        }
        Ok(())
    }
}

impl Drop for PubsubReader {
    fn drop(&mut self) {
        // A reader dropped without close (a panic elsewhere): nothing stays leased.
        self.nack_held();
    }
}
