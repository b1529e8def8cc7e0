//! `PCollection`: a typed, distributed collection of records flowing through a pipeline.

use std::rc::Rc;

use bytes::Bytes;
use timely::dataflow::operators::vec::{Filter, Map, Partition};
use timely::dataflow::operators::{Concatenate, Inspect, Operator};
use timely::dataflow::StreamVec;

use crate::dead_letter::{DeadLetter, Failure};
use crate::io::{Epoch, Sink};
use crate::metrics::Counter;
use crate::operators::{FailureContext, OnReject};
use crate::pipeline::{BuildCtx, FailureObligation};
use crate::Message;

/// What a record type needs to flow through a pipeline.
pub trait Element: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Element for T {}

/// How a record is kept, untouched, in a dead letter: as the message it was read as.
///
/// Implemented for [`Message`], [`Bytes`], `Vec<u8>`, `String` and the integer types; implement
/// it for your own record types (for example by serializing them to JSON).
pub trait Original {
    /// The record as a message: its bytes and attributes.
    fn to_original(&self) -> Message;

    /// The record as a message, consuming it: what a dead letter keeps. Override it where the
    /// record can become a message without a copy.
    fn into_original(self) -> Message
    where
        Self: Sized,
    {
        self.to_original()
    }
}

impl Original for Message {
    fn to_original(&self) -> Message {
        self.clone()
    }
    fn into_original(self) -> Message {
        self
    }
}
impl Original for Bytes {
    fn to_original(&self) -> Message {
        Message::new(self.clone())
    }
    fn into_original(self) -> Message {
        Message::new(self)
    }
}
impl Original for Vec<u8> {
    fn to_original(&self) -> Message {
        Message::new(self.clone())
    }
    fn into_original(self) -> Message {
        Message::new(self)
    }
}
impl Original for String {
    fn to_original(&self) -> Message {
        Message::new(self.clone().into_bytes())
    }
    fn into_original(self) -> Message {
        Message::new(self.into_bytes())
    }
}
/// A source's framed record or the dead letter it made of input it could not frame.
impl<T: Original> Original for Result<T, DeadLetter> {
    fn to_original(&self) -> Message {
        match self {
            Ok(t) => t.to_original(),
            Err(d) => d.original.clone(),
        }
    }
}

macro_rules! original_by_display {
    ($($t:ty),*) => {$(
        impl Original for $t {
            fn to_original(&self) -> Message {
                Message::new(self.to_string().into_bytes())
            }
        }
    )*};
}
original_by_display!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

/// Which input a collection's records came from, reported in dead letters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Provenance {
    pub(crate) input: String,
    pub(crate) input_type: String,
}

/// A typed collection of records in a pipeline, split across its workers.
///
/// Built from [`PipelineBuilder::read`](crate::PipelineBuilder::read) and transformed with
/// element-wise methods; the type system keeps a `PCollection<Bytes>` away from a
/// `Sink<Input = Order>`. A collection that holds failures must reach a sink before the pipeline
/// builds.
pub struct PCollection<'s, T: Element> {
    stream: StreamVec<'s, Epoch, T>,
    ctx: Rc<BuildCtx<'s>>,
    obligations: Vec<FailureObligation>,
    provenance: Option<Rc<Provenance>>,
}

impl<'s, T: Element> Clone for PCollection<'s, T> {
    fn clone(&self) -> Self {
        PCollection {
            stream: self.stream.clone(),
            ctx: self.ctx.clone(),
            obligations: self.obligations.clone(),
            provenance: self.provenance.clone(),
        }
    }
}

impl<'s, T: Element> PCollection<'s, T> {
    pub(crate) fn from_parts(
        stream: StreamVec<'s, Epoch, T>,
        ctx: Rc<BuildCtx<'s>>,
        obligations: Vec<FailureObligation>,
        provenance: Option<Rc<Provenance>>,
    ) -> Self {
        PCollection {
            stream,
            ctx,
            obligations,
            provenance,
        }
    }

    pub(crate) fn empty(ctx: Rc<BuildCtx<'s>>) -> Self {
        let stream = ctx.scope.concatenate(Vec::<StreamVec<'s, Epoch, T>>::new());
        PCollection::from_parts(stream, ctx, Vec::new(), None)
    }

    pub(crate) fn with_obligation(mut self, obligation: FailureObligation) -> Self {
        self.obligations.push(obligation);
        self
    }

    /// The timely stream, for the SDK's own operators (dedup, counts).
    pub(crate) fn stream(&self) -> StreamVec<'s, Epoch, T> {
        self.stream.clone()
    }

    /// The index of this process in a cluster (0 alone).
    pub(crate) fn process_index(&self) -> usize {
        self.ctx.shared.process_index
    }

    /// The full name of a step applied here (the `apply` prefixes and `name`).
    pub(crate) fn step_name(&self, name: &str) -> String {
        self.ctx.step_name(name)
    }

    /// The name of the step being applied here (the `apply` prefixes).
    pub(crate) fn applied_name(&self) -> String {
        self.ctx.step_prefix.borrow().join("/")
    }

    /// Registers a `CountOutcomes` step's stream of applied counts: the pipeline's epochs are
    /// done only once it passes them, and rows written later follow it.
    pub(crate) fn add_counted(&self, applied: StreamVec<'s, Epoch, ()>) {
        self.ctx.counted.borrow_mut().push(applied);
    }

    /// The `CountOutcomes` steps' streams of applied counts registered so far.
    pub(crate) fn counted(&self) -> Vec<StreamVec<'s, Epoch, ()>> {
        self.ctx.counted.borrow().clone()
    }

    /// An empty collection in the same pipeline.
    pub(crate) fn empty_like<U: Element>(&self) -> PCollection<'s, U> {
        PCollection::empty(self.ctx.clone())
    }

    pub(crate) fn derive<U: Element>(&self, stream: StreamVec<'s, Epoch, U>) -> PCollection<'s, U> {
        PCollection {
            stream,
            ctx: self.ctx.clone(),
            obligations: self.obligations.clone(),
            provenance: self.provenance.clone(),
        }
    }

    /// Transforms every record.
    ///
    /// ```
    /// let out = sluice::harness::run(vec![1, 2, 3], |input, _| input.map(|x| x * 10));
    /// assert_eq!(out.output, vec![10, 20, 30]);
    /// ```
    pub fn map<U: Element>(self, f: impl FnMut(T) -> U + 'static) -> PCollection<'s, U> {
        let stream = self.stream.clone().map(f);
        self.derive(stream)
    }

    /// Keeps the records for which `predicate` is true.
    ///
    /// ```
    /// let out = sluice::harness::run(vec![1, 2, 3, 4], |input, _| input.filter(|x| x % 2 == 0));
    /// assert_eq!(out.output, vec![2, 4]);
    /// ```
    pub fn filter(self, predicate: impl FnMut(&T) -> bool + 'static) -> PCollection<'s, T> {
        let stream = self.stream.clone().filter(predicate);
        self.derive(stream)
    }

    /// Turns every record into zero or more records.
    ///
    /// ```
    /// let out = sluice::harness::run(vec![1, 2], |input, _| input.flat_map(|x| vec![x; x]));
    /// assert_eq!(out.output, vec![1, 2, 2]);
    /// ```
    pub fn flat_map<U: Element, I>(self, f: impl FnMut(T) -> I + 'static) -> PCollection<'s, U>
    where
        I: IntoIterator<Item = U>,
    {
        let stream = self.stream.clone().flat_map(f);
        self.derive(stream)
    }

    /// Looks at every record without changing it.
    pub fn inspect(self, mut f: impl FnMut(&T) + 'static) -> PCollection<'s, T> {
        let stream = self.stream.clone().inspect(move |x: &T| f(x));
        self.derive(stream)
    }

    /// Both collections' records in one.
    ///
    /// ```
    /// let out = sluice::harness::run(vec![1, 2], |input, _| input.clone().concat(input.map(|x| x + 10)));
    /// assert_eq!(out.output, vec![1, 2, 11, 12]);
    /// ```
    pub fn concat(self, other: PCollection<'s, T>) -> PCollection<'s, T> {
        PCollection::flatten(vec![self, other]).expect("a list of two is not empty")
    }

    /// All collections' records in one (Beam's `Flatten`); `None` for an empty list.
    pub fn flatten(collections: Vec<PCollection<'s, T>>) -> Option<PCollection<'s, T>> {
        let first = collections.first()?;
        let ctx = first.ctx.clone();
        let provenance = first.provenance.clone();
        let same_input = collections.iter().all(|c| c.provenance == provenance);
        let mut obligations = Vec::new();
        let mut streams = Vec::new();
        for c in collections {
            obligations.extend(c.obligations);
            streams.push(c.stream);
        }
        let stream = ctx.scope.concatenate(streams);
        Some(PCollection {
            stream,
            ctx,
            obligations,
            provenance: if same_input { provenance } else { None },
        })
    }

    /// Splits into `n` collections: record `x` goes to part `f(&x)` (values `>= n` go to the
    /// last part).
    ///
    /// ```
    /// let out = sluice::harness::run(vec![1, 2, 3, 4, 5], |input, _| {
    ///     let mut parts = input.partition(2, |x| (x % 2) as usize);
    ///     let odd = parts.pop().unwrap();
    ///     odd.map(|x| x * 100)
    /// });
    /// assert_eq!(out.output, vec![100, 300, 500]);
    /// ```
    pub fn partition(self, n: usize, f: impl Fn(&T) -> usize + 'static) -> Vec<PCollection<'s, T>> {
        let n = n.max(1);
        let last = (n - 1) as u64;
        let parts = self
            .stream
            .clone()
            .partition(n as u64, move |x| ((f(&x) as u64).min(last), x));
        parts.into_iter().map(|s| self.derive(s)).collect()
    }

    /// Splits by a test: `Ok` records to the first collection, `Err` to the second.
    pub fn branch<A: Element, B: Element>(
        self,
        f: impl FnMut(T) -> Result<A, B> + 'static,
    ) -> (PCollection<'s, A>, PCollection<'s, B>) {
        use timely::dataflow::operators::OkErr;
        let (a, b) = self.stream.clone().ok_err::<Vec<A>, A, Vec<B>, B, _>(f);
        (self.derive(a), self.derive(b))
    }

    /// Applies a transform as a named step (Beam's `apply`); the name prefixes the names of
    /// the steps inside it in metrics.
    pub fn apply<X: PTransform<Self>>(self, name: &str, transform: X) -> X::Output {
        let ctx = self.ctx.clone();
        ctx.step_prefix.borrow_mut().push(name.to_string());
        let out = transform.expand(self);
        ctx.step_prefix.borrow_mut().pop();
        out
    }

    /// Transforms every record with a fallible function that borrows it. A record for which
    /// `f` fails becomes a [`DeadLetter`] with the untouched original and `error_type` = `step`.
    ///
    /// Suits a function that reads its input and builds a new value (parsing). A function that
    /// changes its input and passes it on should own it: [`PCollection::try_map_owned`] saves
    /// the copy.
    ///
    /// ```
    /// let out = sluice::harness::run(vec!["1".to_string(), "x".to_string()], |input, dead_letters| {
    ///     input.try_map("ParseNumber", |s: &String| s.parse::<u64>()).failures_to(dead_letters)
    /// });
    /// assert_eq!(out.output, vec![1]);
    /// assert_eq!(out.dead_letters[0].error_type, "ParseNumber");
    /// assert_eq!(out.dead_letters[0].original.payload, "x");
    /// ```
    pub fn try_map<U, E, F>(self, step: &str, mut f: F) -> WithFailures<'s, U>
    where
        T: Original,
        U: Element,
        E: Into<Failure>,
        F: FnMut(&T) -> Result<U, E> + 'static,
    {
        self.try_flat_map_owned(step, move |x| match f(&x) {
            Ok(u) => Ok(Some(u)),
            Err(e) => Err((x, e)),
        })
    }

    /// Like [`PCollection::try_map`], for a function that gives zero or more records.
    ///
    /// ```
    /// let out = sluice::harness::run(vec!["1,2".to_string(), "3,x".to_string()], |input, dead| {
    ///     input
    ///         .try_flat_map("SplitNumbers", |s: &String| {
    ///             s.split(',').map(|n| n.parse::<u64>()).collect::<Result<Vec<_>, _>>()
    ///         })
    ///         .failures_to(dead)
    /// });
    /// assert_eq!(out.output, vec![1, 2]);
    /// assert_eq!(out.dead_letters[0].original.payload, "3,x");
    /// ```
    pub fn try_flat_map<U, I, E, F>(self, step: &str, mut f: F) -> WithFailures<'s, U>
    where
        T: Original,
        U: Element,
        I: IntoIterator<Item = U>,
        E: Into<Failure>,
        F: FnMut(&T) -> Result<I, E> + 'static,
    {
        self.try_flat_map_owned(step, move |x| match f(&x) {
            Ok(outputs) => Ok(outputs),
            Err(e) => Err((x, e)),
        })
    }

    /// Transforms every record with a fallible function that owns it: on failure the function
    /// hands the record back, untouched, with the error, and it becomes a [`DeadLetter`] with
    /// `error_type` = `step`. Nothing is copied, neither to pass a record on nor to keep it
    /// for its dead letter, so a chain of steps that each change a message costs no clone per
    /// step.
    ///
    /// The function must give back the record as it received it: check what can fail before
    /// changing the record (or undo the change), since the dead letter is what is replayed.
    ///
    /// ```
    /// use sluice::Message;
    /// let input = vec![Message::new("ok"), Message::new("")];
    /// let out = sluice::harness::run(input, |input, dead| {
    ///     input
    ///         .try_map_owned("Tag", |mut m: Message| {
    ///             if m.payload.is_empty() {
    ///                 return Err((m, sluice::Failure::new("empty payload")));
    ///             }
    ///             m.attributes.insert("seen".into(), "yes".into());
    ///             Ok(m)
    ///         })
    ///         .failures_to(dead)
    /// });
    /// assert_eq!(out.output, vec![Message::new("ok").with_attribute("seen", "yes")]);
    /// assert_eq!(out.dead_letters[0].error_type, "Tag");
    /// assert_eq!(out.dead_letters[0].original, Message::new(""));
    /// ```
    pub fn try_map_owned<U, E, F>(self, step: &str, mut f: F) -> WithFailures<'s, U>
    where
        T: Original,
        U: Element,
        E: Into<Failure>,
        F: FnMut(T) -> Result<U, (T, E)> + 'static,
    {
        self.try_flat_map_owned(step, move |x| f(x).map(Some))
    }

    /// Like [`PCollection::try_map_owned`], for a function that gives zero or more records.
    ///
    /// ```
    /// let out = sluice::harness::run(vec![vec![1u8, 2], vec![]], |input, dead| {
    ///     input
    ///         .try_flat_map_owned("Explode", |bytes: Vec<u8>| {
    ///             if bytes.is_empty() {
    ///                 return Err((bytes, sluice::Failure::new("nothing to explode")));
    ///             }
    ///             Ok(bytes.into_iter().map(u64::from).collect::<Vec<_>>())
    ///         })
    ///         .failures_to(dead)
    /// });
    /// assert_eq!(out.output, vec![1, 2]);
    /// assert_eq!(out.dead_letters[0].error_message, "nothing to explode");
    /// ```
    pub fn try_flat_map_owned<U, I, E, F>(self, step: &str, f: F) -> WithFailures<'s, U>
    where
        T: Original,
        U: Element,
        I: IntoIterator<Item = U>,
        E: Into<Failure>,
        F: FnMut(T) -> Result<I, (T, E)> + 'static,
    {
        let full = self.ctx.step_name(step);
        let shared = &self.ctx.shared;
        let failures = FailureContext {
            error_type: step.to_string(),
            job_name: shared.job_name.clone(),
            provenance: self.provenance.clone(),
            stack_traces: shared.stack_traces,
        };
        let ok = shared.metrics.counter(Counter::StepOk, &full);
        let failed = shared.metrics.counter(Counter::StepFailed, &full);
        let (out, errs) =
            crate::operators::try_flat_map(self.stream.clone(), &full, failures, ok, failed, f);
        let mut failure_obligations = self.obligations.clone();
        failure_obligations.push(self.ctx.obligation(&full));
        let failures = PCollection {
            stream: errs,
            ctx: self.ctx.clone(),
            obligations: failure_obligations,
            provenance: self.provenance.clone(),
        };
        WithFailures {
            output: self.derive(out),
            failures,
        }
    }

    /// Writes every record to `sink` as step `name`. The sink holds each epoch until its
    /// records are durable; only then may the sources acknowledge it.
    ///
    /// Records the sink refuses come back as dead letters (`error_type` = `name`, unless the
    /// sink's failure names one) in the returned [`WriteResult`]; for a sink that can refuse
    /// records ([`Sink::can_reject`]) they must be routed to the dead-letter sink, or the
    /// pipeline does not build.
    pub fn write<S: Sink<Input = T>>(self, name: &str, sink: S) -> WriteResult<'s>
    where
        T: Original,
    {
        let failures = FailureContext {
            error_type: name.to_string(),
            job_name: self.ctx.shared.job_name.clone(),
            provenance: self.provenance.clone(),
            stack_traces: self.ctx.shared.stack_traces,
        };
        let on_reject = OnReject::DeadLetter(Box::new(move |record: T, failure: Failure| {
            failures.dead_letter(record.to_original(), failure)
        }));
        self.write_with(name, sink, on_reject)
    }

    pub(crate) fn write_with<S: Sink<Input = T>>(
        self,
        name: &str,
        sink: S,
        on_reject: OnReject<T>,
    ) -> WriteResult<'s> {
        for o in &self.obligations {
            o.discharge();
        }
        let step = self.ctx.step_name(name);
        // Refusals of the dead-letter sink are retried inside the write, never emitted.
        let emits = sink.can_reject() && matches!(on_reject, OnReject::DeadLetter(_));
        let refused = crate::operators::write(
            &self.ctx,
            &step,
            self.stream,
            std::sync::Arc::new(sink),
            on_reject,
        );
        let mut failures = PCollection {
            stream: refused,
            ctx: self.ctx.clone(),
            obligations: Vec::new(),
            provenance: self.provenance.clone(),
        };
        if emits {
            failures = failures.with_obligation(self.ctx.obligation(&step));
        }
        WriteResult { failures }
    }

    /// Moves records between workers by a key, so that equal keys meet on one worker
    /// (needed by steps like dedup). Records cross processes in a cluster: they must serialize.
    pub fn exchange_by(self, key: impl Fn(&T) -> u64 + 'static) -> PCollection<'s, T>
    where
        T: timely::ExchangeData,
    {
        use timely::dataflow::operators::Exchange;
        let stream = self.stream.clone().exchange(move |x: &T| key(x));
        self.derive(stream)
    }

    /// Spreads records evenly over all workers, round robin: for inputs that only some workers
    /// read (one file, standard input), so that the steps after it use every worker. Records
    /// cross processes in a cluster: they must serialize.
    ///
    /// ```
    /// let out = sluice::harness::run(vec![1u64, 2, 3], |input, _| input.rebalance());
    /// assert_eq!(out.output, vec![1, 2, 3]);
    /// ```
    pub fn rebalance(self) -> PCollection<'s, T>
    where
        T: timely::ExchangeData,
    {
        use timely::dataflow::operators::Exchange;
        // Start each worker at its own index so that small epochs do not all land on worker 0.
        let mut next = self.ctx.scope.index() as u64;
        let stream = self.stream.clone().exchange(move |_: &T| {
            next = next.wrapping_add(1);
            next
        });
        self.derive(stream)
    }

    /// The pipeline's counters, for a transform that keeps its own (say, records a rule drops,
    /// under [`Counter::Dropped`]): fetch each counter once, when the transform is built.
    pub fn metrics(&self) -> crate::Metrics {
        self.ctx.shared.metrics.clone()
    }

    /// Counts records passing this point under `Counter::StepOk` with label `name`.
    pub fn count_as(self, name: &str) -> PCollection<'s, T> {
        let counter = self
            .ctx
            .shared
            .metrics
            .counter(Counter::StepOk, &self.ctx.step_name(name));
        let stream = self.stream.clone().unary(
            timely::dataflow::channels::pact::Pipeline,
            "Count",
            move |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        counter.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        output.session(&cap).give_container(data);
                    })
                }
            },
        );
        self.derive(stream)
    }
}

/// A composite step: Beam's `PTransform`. `expand` builds the step's part of the graph.
///
/// ```
/// use sluice::{PCollection, PTransform};
/// struct Double;
/// impl<'s> PTransform<PCollection<'s, u64>> for Double {
///     type Output = PCollection<'s, u64>;
///     fn expand(self, input: PCollection<'s, u64>) -> Self::Output {
///         input.map(|x| x * 2)
///     }
/// }
/// let out = sluice::harness::run(vec![1, 2], |input, _| input.apply("double", Double));
/// assert_eq!(out.output, vec![2, 4]);
/// ```
pub trait PTransform<Input> {
    /// What the step produces: a collection, or [`WithFailures`] for a fallible step.
    type Output;
    /// Builds the step.
    fn expand(self, input: Input) -> Self::Output;
}

/// The result of a fallible step: its output and its failures, as named fields (Beam's
/// `WithFailures.Result`).
pub struct WithFailures<'s, T: Element> {
    /// Records the step processed.
    pub output: PCollection<'s, T>,
    /// Records the step rejected, as dead letters.
    pub failures: PCollection<'s, DeadLetter>,
}

impl<'s, T: Element> WithFailures<'s, T> {
    /// Sends the failures to `dead_letters` and gives the output.
    pub fn failures_to(self, dead_letters: &mut DeadLetters<'s>) -> PCollection<'s, T> {
        dead_letters.push(self.failures);
        self.output
    }

    /// Applies a fallible transform to the output, keeping both steps' failures together.
    pub fn and_then<U: Element, X>(self, name: &str, transform: X) -> WithFailures<'s, U>
    where
        X: PTransform<PCollection<'s, T>, Output = WithFailures<'s, U>>,
    {
        let next = self.output.apply(name, transform);
        WithFailures {
            output: next.output,
            failures: self.failures.concat(next.failures),
        }
    }
}

/// What [`PCollection::write`] gives back (Beam's `WriteResult`): the records the sink
/// refused, as dead letters. For a sink that can refuse records they must be routed.
pub struct WriteResult<'s> {
    /// The refused records, as dead letters holding the record as it was given to the sink.
    pub failures: PCollection<'s, DeadLetter>,
}

impl<'s> WriteResult<'s> {
    /// Sends the refused records to `dead_letters`.
    pub fn failures_to(self, dead_letters: &mut DeadLetters<'s>) {
        dead_letters.push(self.failures);
    }
}

/// The failure streams of a pipeline (or of a composite step), to be written to its one
/// dead-letter sink.
pub struct DeadLetters<'s> {
    ctx: Rc<BuildCtx<'s>>,
    parts: Vec<PCollection<'s, DeadLetter>>,
}

impl<'s> DeadLetters<'s> {
    pub(crate) fn new(ctx: Rc<BuildCtx<'s>>) -> Self {
        DeadLetters {
            ctx,
            parts: Vec::new(),
        }
    }

    /// A collector for the failures inside a composite transform working on `like`'s pipeline.
    pub fn for_pipeline_of<T: Element>(like: &PCollection<'s, T>) -> Self {
        DeadLetters::new(like.ctx.clone())
    }

    /// Adds a failure stream.
    pub fn push(&mut self, failures: PCollection<'s, DeadLetter>) {
        self.parts.push(failures);
    }

    /// All collected failures as one collection. It must still reach a sink.
    pub fn into_pcollection(self) -> PCollection<'s, DeadLetter> {
        PCollection::flatten(self.parts).unwrap_or_else(|| PCollection::empty(self.ctx))
    }

    /// Writes every collected failure to `sink`, counting dead letters per `error_type`.
    ///
    /// A dead letter the sink refuses is retried once reduced ([`DeadLetter::reduced`], to
    /// the pipeline's [`dead_letter_payload_limit`](crate::Pipeline::dead_letter_payload_limit));
    /// a refusal of that stops the pipeline without acknowledging.
    pub fn write<S: Sink<Input = DeadLetter>>(self, name: &str, sink: S) {
        let limit = self.ctx.shared.dead_letter_payload_limit;
        let retry = OnReject::RetryReduced(Box::new(move |d: DeadLetter| d.reduced(limit)));
        self.counted().write_with(name, sink, retry);
    }

    /// Writes every collected failure to a sink of messages, in the dead-letter message form
    /// ([`DeadLetter::to_message`]); refusals are retried reduced as [`DeadLetters::write`]
    /// does.
    pub fn write_messages<S: Sink<Input = Message>>(self, name: &str, sink: S) {
        let limit = self.ctx.shared.dead_letter_payload_limit;
        let retry = OnReject::RetryReduced(Box::new(move |m: Message| {
            crate::dead_letter::reduce_message(m, limit)
        }));
        self.counted()
            .map(|d| d.to_message())
            .write_with(name, sink, retry);
    }

    fn counted(self) -> PCollection<'s, DeadLetter> {
        let metrics = self.ctx.shared.metrics.clone();
        let mut counters: std::collections::HashMap<
            String,
            std::sync::Arc<std::sync::atomic::AtomicU64>,
        > = Default::default();
        self.into_pcollection().inspect(move |d| {
            let counter = match counters.get(&d.error_type) {
                Some(c) => c,
                None => counters
                    .entry(d.error_type.clone())
                    .or_insert_with(|| metrics.counter(Counter::DeadLettered, &d.error_type)),
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    }
}
