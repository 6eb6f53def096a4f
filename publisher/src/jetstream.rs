//! JetStream mode (`--nats-jetstream-stream`): every event is published with JetStream's
//! publish-and-acknowledge into a stream, under a `Nats-Msg-Id` that names its record
//! (docs/ipc.md, "Record identity"). So an event sent again (a publish that was not
//! acknowledged, a record a restarted publisher receives again) is stored once: the server
//! drops the copy within the stream's duplicate window.
//!
//! At most `--nats-jetstream-window` events, and at most [`NATS_BUFFER_BYTES`] of them, wait
//! for their acknowledgement (each is kept to be sent again); beyond, the publisher stops
//! reading the loader, whose rings then hold (or count as `ring_full`) what
//! comes. An event is published again until acknowledged, for at most [`GIVE_UP_AFTER`], then
//! counted as given up. So fired = acknowledged + counted drops, exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::{ContextBuilder, PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{stream, Context};
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use ipc_protocol::cli::JetStreamFlags;
use ipc_protocol::{Category, Tracepoint};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::acks::Done;
use crate::counters::Counters;
use crate::log_limit::{RateLimited, LOG_INTERVAL};
use crate::nats::SubjectPrefix;
use crate::sink::NATS_BUFFER_BYTES;

/// How long an event is published again while it is not acknowledged.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// How long a publish waits for its acknowledgement before it is sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause before sending an event again (NATS may be reconnecting).
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// How long a stopping publisher waits for the acknowledgements still due.
const STOP_DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error(
        "cannot create or open the JetStream stream {stream}: {source}; does the NATS server run JetStream \
         (nats-server -js, or a jetstream block in its configuration) and may this user use it?"
    )]
    Stream { stream: String, source: async_nats::jetstream::context::CreateStreamError },
    #[error(
        "the JetStream stream {stream} exists without the subjects {missing:?}: add them to it (nats stream edit) \
         or give another --nats-jetstream-stream"
    )]
    Subjects { stream: String, missing: Vec<String> },
}

/// Why an event was given up, as its counter's `cause` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GaveUp {
    /// No acknowledgement within [`GIVE_UP_AFTER`].
    Timeout,
    /// The server kept answering with an error (no stream for the subject, a full stream
    /// that refuses more), or the client refused the event for good: it no longer fits the
    /// `max_payload` of a server reconnected to since it was checked (given up at once). An
    /// event over `max_payload` is never sent: it is counted as `over_max_payload`, as in core
    /// mode.
    Refused,
    /// The publisher stopped before the acknowledgement came.
    Stopped,
}

impl GaveUp {
    pub const ALL: [GaveUp; 3] = [GaveUp::Timeout, GaveUp::Refused, GaveUp::Stopped];

    pub fn as_str(self) -> &'static str {
        match self {
            GaveUp::Timeout => "timeout",
            GaveUp::Refused => "refused",
            GaveUp::Stopped => "stopped",
        }
    }
}

/// One event on its way into the stream, holding its place in the window.
struct Pending {
    tracepoint: Tracepoint,
    subject: Subject,
    payload: Bytes,
    msg_id: String,
    /// `None` when the last attempt failed before it went out.
    ack: Option<PublishAckFuture>,
    last_error: Failure,
    first_sent: Instant,
    /// Its place in the window, in events and in bytes.
    _window: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    /// Its record is done once this is dropped: acknowledged or given up (and counted).
    _done: Done,
}

pub struct JetStream {
    context: Context,
    window: Arc<Semaphore>,
    /// The window in payload bytes: 1024 blocks of 4 MB would otherwise be 4 GB held.
    window_bytes: Arc<Semaphore>,
    /// Events handed to the acknowledging task, in publishing order; `None` once stopping.
    pending: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
    acker: Mutex<Option<JoinHandle<()>>>,
    /// Set when stopping: from then on nothing is sent again.
    stop_by: Arc<Mutex<Option<Instant>>>,
    counters: Arc<Counters>,
}

impl JetStream {
    /// Opens the stream, creating it with the flags' settings if absent, and checks that it
    /// takes every subject of the table behind `prefix`.
    pub async fn open(
        client: &Client,
        flags: &JetStreamFlags,
        stream: &str,
        prefix: &SubjectPrefix,
        counters: &Arc<Counters>,
    ) -> Result<JetStream, JetStreamError> {
        let context =
            ContextBuilder::new().timeout(ACK_TIMEOUT).max_ack_inflight(flags.window as usize).build(client.clone());
        let subjects: Vec<String> = Category::ALL.iter().map(|c| prefix.apply(c.subject()).to_string()).collect();
        let config = stream::Config {
            name: stream.to_string(),
            subjects: subjects.clone(),
            max_age: Duration::from_secs(flags.max_age_secs),
            max_bytes: flags.max_bytes,
            num_replicas: flags.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let opened = context
            .get_or_create_stream(config)
            .await
            .map_err(|source| JetStreamError::Stream { stream: stream.to_string(), source })?;
        let info = opened.cached_info();
        let missing: Vec<String> = subjects.into_iter().filter(|s| !info.config.subjects.contains(s)).collect();
        if !missing.is_empty() {
            return Err(JetStreamError::Subjects { stream: stream.to_string(), missing });
        }
        tracing::info!(
            stream,
            replicas = info.config.num_replicas,
            max_age_secs = info.config.max_age.as_secs(),
            max_bytes = info.config.max_bytes,
            duplicate_window_secs = info.config.duplicate_window.as_secs(),
            "publishing into JetStream"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let stop_by = Arc::new(Mutex::new(None));
        let acker = tokio::spawn(acknowledge(context.clone(), rx, Arc::clone(counters), Arc::clone(&stop_by)));
        Ok(JetStream {
            context,
            window: Arc::new(Semaphore::new(flags.window as usize)),
            window_bytes: Arc::new(Semaphore::new(NATS_BUFFER_BYTES)),
            pending: Mutex::new(Some(tx)),
            acker: Mutex::new(Some(acker)),
            stop_by,
            counters: Arc::clone(counters),
        })
    }

    /// Publishes one event, once there is room in the window (an event larger than its bytes
    /// waits for all of them); its acknowledgement is awaited (and counted) by the
    /// acknowledging task.
    pub async fn publish(
        &self,
        tracepoint: Tracepoint,
        subject: Subject,
        payload: Vec<u8>,
        msg_id: String,
        done: Done,
    ) {
        let event = Arc::clone(&self.window).acquire_owned().await.expect("the window is never closed");
        let bytes = payload.len().clamp(1, NATS_BUFFER_BYTES) as u32;
        let bytes = Arc::clone(&self.window_bytes).acquire_many_owned(bytes).await.expect("the window is never closed");
        let permit = (event, bytes);
        let payload = Bytes::from(payload);
        let (ack, last_error) = match send(&self.context, &subject, &payload, &msg_id).await {
            Ok(ack) => (Some(ack), Failure { cause: GaveUp::Timeout, for_good: false }),
            Err(kind) => (None, Failure::of(kind)),
        };
        let first_sent = Instant::now();
        let pending =
            Pending { tracepoint, subject, payload, msg_id, ack, last_error, first_sent, _window: permit, _done: done };
        let queue = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let queued = match &*queue {
            Some(queue) => queue.send(pending).map_err(|refused| refused.0),
            None => Err(pending),
        };
        // Only once stopping (the serving tasks have ended by then), or if the task died.
        if let Err(pending) = queued {
            self.counters.jetstream_gave_up(pending.tracepoint, GaveUp::Stopped);
        }
    }

    /// At shutdown: waits, at most [`STOP_DRAIN`], for the acknowledgements still due; what
    /// has none by then is counted as given up (`stopped`).
    pub async fn stop(&self) {
        *self.stop_by.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now() + STOP_DRAIN);
        drop(self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
        let acker = self.acker.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(acker) = acker {
            if let Err(e) = acker.await {
                tracing::warn!("the task awaiting JetStream acknowledgements failed: {e}");
            }
        }
    }
}

/// Sends one event; the future resolves with the server's acknowledgement.
async fn send(
    context: &Context,
    subject: &Subject,
    payload: &Bytes,
    msg_id: &str,
) -> Result<PublishAckFuture, PublishErrorKind> {
    let message = PublishMessage::build().payload(payload.clone()).message_id(msg_id);
    context.send_publish(subject.clone(), message).await.map_err(|e| {
        tracing::trace!("publishing to JetStream failed: {e}");
        e.kind()
    })
}

/// Why an event's last attempt failed, and whether every later attempt would fail too:
/// sending it again would not help.
#[derive(Clone, Copy)]
struct Failure {
    cause: GaveUp,
    for_good: bool,
}

impl Failure {
    /// async-nats refuses, before sending, a message over the server's `max_payload`
    /// (`sink::max_durable_event_len` leaves room for the header, so only a server with a
    /// smaller one, reconnected to meanwhile, does that): that is for good.
    fn of(kind: PublishErrorKind) -> Failure {
        Failure { cause: cause(kind), for_good: kind == PublishErrorKind::MaxPayloadExceeded }
    }
}

fn cause(kind: PublishErrorKind) -> GaveUp {
    match kind {
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => GaveUp::Timeout,
        _ => GaveUp::Refused,
    }
}

/// How one attempt at an event ended.
type Attempt = (Pending, Result<(), GaveUp>);

/// Waits for the acknowledgement of an event's latest send; its timeout runs from now, which
/// is when it was sent (the task polls a new attempt at once).
async fn attempt(mut event: Pending, stop_by: Arc<Mutex<Option<Instant>>>) -> Attempt {
    let Some(ack) = event.ack.take() else {
        let cause = event.last_error.cause;
        return (event, Err(cause));
    };
    // Once stopping, an acknowledgement is awaited until the stop deadline at most.
    let deadline = *stop_by.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let waited = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, ack).await,
        None => Ok(ack.await),
    };
    let outcome = match waited {
        Ok(Ok(ack)) => {
            if ack.duplicate {
                tracing::trace!(msg_id = %event.msg_id, "JetStream already held this event");
            }
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::trace!(msg_id = %event.msg_id, "no JetStream acknowledgement: {e}");
            Err(cause(e.kind()))
        }
        Err(_) => Err(GaveUp::Stopped),
    };
    (event, outcome)
}

/// Sends an event again after [`RETRY_PAUSE`], then waits for that attempt.
async fn resend(context: Context, mut event: Pending, stop_by: Arc<Mutex<Option<Instant>>>) -> Attempt {
    tokio::time::sleep(RETRY_PAUSE).await;
    match send(&context, &event.subject, &event.payload, &event.msg_id).await {
        Ok(ack) => event.ack = Some(ack),
        Err(kind) => event.last_error = Failure::of(kind),
    }
    attempt(event, stop_by).await
}

/// Awaits the acknowledgements of every event in the window at once, each from its own send,
/// and sends an event again as soon as its attempt failed: after an outage the whole window
/// goes out again together, not one timeout after another. Counts how each ended.
async fn acknowledge(
    context: Context,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    counters: Arc<Counters>,
    stop_by: Arc<Mutex<Option<Instant>>>,
) {
    let mut gave_up_log = RateLimited::new(LOG_INTERVAL);
    let mut attempts: FuturesUnordered<BoxFuture<'static, Attempt>> = FuturesUnordered::new();
    let mut queue_open = true;
    loop {
        let (event, outcome) = tokio::select! {
            received = queue.recv(), if queue_open => {
                match received {
                    Some(event) => attempts.push(Box::pin(attempt(event, Arc::clone(&stop_by)))),
                    None => queue_open = false,
                }
                continue;
            }
            Some(done) = attempts.next() => done,
            else => break,
        };
        let stopping = stop_by.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).is_some();
        let gave_up = match outcome {
            Ok(()) => {
                counters.jetstream_acknowledged(event.tracepoint);
                continue;
            }
            Err(_) if stopping => GaveUp::Stopped,
            Err(cause) if event.last_error.for_good || event.first_sent.elapsed() >= GIVE_UP_AFTER => cause,
            Err(cause) => {
                let mut event = event;
                event.last_error.cause = cause;
                attempts.push(Box::pin(resend(context.clone(), event, Arc::clone(&stop_by))));
                continue;
            }
        };
        counters.jetstream_gave_up(event.tracepoint, gave_up);
        gave_up_log.log(|more| {
            tracing::warn!(
                tracepoint = %event.tracepoint,
                "JetStream did not acknowledge an event ({}): given up ({more} more since the last report)",
                gave_up.as_str()
            )
        });
    }
}
