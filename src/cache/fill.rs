//! Coalescing: one request per key goes to the backend, and every request for
//! that key meanwhile reads its response as it streams in.
//!
//! A fill is listed under its key while others may join it. Its first request
//! (the leader) publishes the head; the body is then read by whichever reader
//! has consumed all that arrived so far, under the fill's own lock, and every
//! other reader is woken for each chunk. Readers are equals: when the leader's
//! client goes away, the next reader to need more takes over. A fill whose
//! body breaks ends every reader with an error (the client sees a broken
//! response, never a short one that looks whole), and nothing is stored.
//!
//! Memory: while the response may still be stored, every chunk is kept (at
//! most `max_object_size`); past that, chunks are dropped once every reader
//! has them, and the fastest reader waits when the slowest lags a whole
//! `max_object_size` behind. All fills together keep at most a budget of bytes
//! for storing: past it, a fill streams on without being stored.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use slab::Slab;
use tokio::sync::Notify;

use super::object::Vary;
use crate::upstream::ResponseBody;

/// Shards of the table of fills: a miss locks one, not a lock of all requests.
const SHARDS: usize = 32;

/// What a fill's readers get when its body broke.
#[derive(Debug, thiserror::Error)]
#[error("the backend's response broke off while it was being read")]
pub struct FillBroken;

/// Called once with the whole body when a fill that may be stored completes.
pub type OnComplete = Box<dyn FnOnce(Bytes) + Send>;

/// The fills in progress, by key.
#[derive(Debug)]
pub struct Fills {
    shards: Box<[Mutex<Shard>]>,
    /// Keys being revalidated aside (stale-while-revalidate): one at a time
    /// per key, apart from the fills so that no request waits on one.
    revalidating: Box<[Mutex<std::collections::HashSet<Arc<str>>>]>,
    /// Bytes every fill holds, together.
    held: Arc<AtomicU64>,
    /// Past this many bytes held by all fills, a fill stops keeping its body
    /// to store it and streams it on instead.
    budget: u64,
}

type Shard = HashMap<Arc<str>, Arc<Fill>>;

/// The response head a fill shares.
#[derive(Debug)]
pub struct FillHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The fields it varies on, with the leader's values; a waiter whose
    /// values differ asks the backend itself.
    pub vary: Vary,
}

#[derive(Debug)]
pub struct Fill {
    key: Arc<str>,
    fills: Weak<Fills>,
    state: Mutex<State>,
    head_published: Notify,
}

/// The result of asking for a key's fill.
pub enum Joined {
    /// No fill was in progress: the caller leads a new one.
    Lead(Leader),
    /// One is: wait for its head.
    Wait(Arc<Fill>),
}

#[derive(Debug)]
enum Phase {
    Pending,
    Ready(Arc<FillHead>),
    /// The leader failed or gave up before a head: waiters go on their own.
    Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Broken,
}

struct State {
    phase: Phase,
    /// Chunks not yet dropped; `first` is the stream index of the front one.
    chunks: VecDeque<Bytes>,
    first: usize,
    retained: u64,
    total: u64,
    /// Every chunk is kept, to be stored at the end.
    storing: bool,
    limit: u64,
    source: Option<ResponseBody>,
    end: Option<End>,
    readers: Slab<Reader>,
    on_complete: Option<OnComplete>,
    /// The bytes all fills hold, and their budget.
    held: Arc<AtomicU64>,
    budget: u64,
}

impl Drop for State {
    fn drop(&mut self) {
        self.held.fetch_sub(self.retained, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("phase", &self.phase)
            .field("total", &self.total)
            .field("storing", &self.storing)
            .field("end", &self.end)
            .field("readers", &self.readers.len())
            .finish()
    }
}

#[derive(Debug)]
struct Reader {
    /// Index of the next chunk this reader takes.
    position: usize,
    waker: Option<Waker>,
}

impl Fills {
    /// Fills that hold at most `budget` bytes together.
    pub fn new(budget: u64) -> Self {
        Fills {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            revalidating: (0..SHARDS).map(|_| Mutex::default()).collect(),
            held: Arc::default(),
            budget,
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[shard_of(key)]
    }

    /// Marks `key` as revalidated aside, unless it already is; the mark goes
    /// with the guard.
    pub fn revalidation(self: &Arc<Self>, key: &Arc<str>) -> Option<Revalidation> {
        let inserted = lock(&self.revalidating[shard_of(key)]).insert(key.clone());
        inserted.then(|| Revalidation {
            fills: self.clone(),
            key: key.clone(),
        })
    }

    /// Joins the fill of `key`, or leads a new one. `limit` is the largest body
    /// the fill may store.
    pub fn join(self: &Arc<Self>, key: &Arc<str>, limit: u64) -> Joined {
        let mut shard = lock(self.shard(key));
        if let Some(fill) = shard.get(key) {
            return Joined::Wait(fill.clone());
        }
        let fill = Arc::new(Fill {
            key: key.clone(),
            fills: Arc::downgrade(self),
            state: Mutex::new(State {
                phase: Phase::Pending,
                chunks: VecDeque::new(),
                first: 0,
                retained: 0,
                total: 0,
                storing: false,
                limit,
                source: None,
                end: None,
                readers: Slab::new(),
                on_complete: None,
                held: self.held.clone(),
                budget: self.budget,
            }),
            head_published: Notify::new(),
        });
        shard.insert(key.clone(), fill.clone());
        Joined::Lead(Leader { fill: Some(fill) })
    }

    fn unlist(&self, fill: &Arc<Fill>) {
        let mut shard = lock(self.shard(&fill.key));
        if shard.get(&fill.key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            shard.remove(&fill.key);
        }
    }
}

fn shard_of(key: &str) -> usize {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize % SHARDS
}

/// A key revalidated aside, until dropped.
pub struct Revalidation {
    fills: Arc<Fills>,
    key: Arc<str>,
}

impl Drop for Revalidation {
    fn drop(&mut self) {
        lock(&self.fills.revalidating[shard_of(&self.key)]).remove(&self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves plain data behind, still consistent
    // enough to end the fill; never poison every later request.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Fill {
    fn unlist(self: &Arc<Self>) {
        if let Some(fills) = self.fills.upgrade() {
            fills.unlist(self);
        }
    }

    /// Waits at most `timeout` for the head. `None`: the leader gave up, or
    /// took too long; the caller goes to the backend on its own.
    pub async fn head(&self, timeout: Duration) -> Option<Arc<FillHead>> {
        let wait = async {
            loop {
                let notified = self.head_published.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match &lock(&self.state).phase {
                    Phase::Ready(head) => return Some(head.clone()),
                    Phase::Released => return None,
                    Phase::Pending => {}
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// A reader of the whole body from its start, if the fill still keeps it.
    pub fn reader(self: &Arc<Self>) -> Option<FillBody> {
        let mut state = lock(&self.state);
        // Only while nothing was dropped can a reader start from the beginning.
        let joinable = matches!(state.phase, Phase::Ready(_)) && state.first == 0;
        if !joinable || state.end == Some(End::Broken) {
            return None;
        }
        let id = state.add_reader();
        Some(FillBody {
            fill: self.clone(),
            id,
            position: 0,
            size: None,
        })
    }
}

/// The leader of a fill. Dropped without publishing (its request failed or
/// was cancelled), it releases the waiters and unlists the fill.
pub struct Leader {
    fill: Option<Arc<Fill>>,
}

impl Leader {
    /// Shares `head` and the body `source` streams; the leader's own reader
    /// comes back. `on_complete` (when the response may be stored) gets the
    /// whole body if it completes within the fill's limit.
    pub fn publish(
        mut self,
        head: FillHead,
        source: ResponseBody,
        on_complete: Option<OnComplete>,
    ) -> FillBody {
        let fill = self.fill.take().expect("a leader publishes once");
        let size = content_length(&head.headers);
        let reader = {
            let mut state = lock(&fill.state);
            state.storing = on_complete.is_some();
            state.on_complete = on_complete;
            state.source = Some(source);
            state.phase = Phase::Ready(Arc::new(head));
            // The leader reads before any waiter can come and go: a fill is
            // never left without a reader in between.
            state.add_reader()
        };
        fill.head_published.notify_waiters();
        FillBody {
            fill,
            id: reader,
            position: 0,
            size,
        }
    }

    /// Shares `head` with a body already whole (a stored one revalidated).
    pub fn publish_whole(mut self, head: FillHead, body: Bytes) -> FillBody {
        let fill = self.fill.take().expect("a leader publishes once");
        let id = {
            let mut state = lock(&fill.state);
            state.total = body.len() as u64;
            state.keep(body);
            state.end = Some(End::Complete);
            state.phase = Phase::Ready(Arc::new(head));
            state.add_reader()
        };
        fill.head_published.notify_waiters();
        let reader = FillBody {
            fill: fill.clone(),
            id,
            position: 0,
            size: None,
        };
        // Later requests find the stored response; this fill only serves
        // those already waiting.
        fill.unlist();
        reader
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(fill) = self.fill.take() {
            lock(&fill.state).phase = Phase::Released;
            fill.head_published.notify_waiters();
            fill.unlist();
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// One request's view of a fill's body.
#[derive(Debug)]
pub struct FillBody {
    fill: Arc<Fill>,
    id: usize,
    position: usize,
    size: Option<u64>,
}

impl FillBody {
    /// Sets the exact size when the head gave one.
    pub fn with_size(mut self, headers: &HeaderMap) -> Self {
        self.size = content_length(headers);
        self
    }
}

/// What to do once the state's lock is let go.
#[derive(Default)]
struct After {
    wake: Vec<Waker>,
    unlist: bool,
    complete: Option<(OnComplete, Vec<Bytes>)>,
}

impl After {
    fn run(self, fill: &Arc<Fill>) {
        // Stored before unlisted: a request that no longer finds the fill
        // finds the stored response.
        if let Some((on_complete, chunks)) = self.complete {
            on_complete(concat(chunks));
        }
        if self.unlist {
            fill.unlist();
        }
        for waker in self.wake {
            waker.wake();
        }
    }
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() == 1 {
        return chunks.into_iter().next().unwrap_or_default();
    }
    let mut whole = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in chunks {
        whole.extend_from_slice(&chunk);
    }
    whole.freeze()
}

impl State {
    /// Wakers of every reader but `except`, taken.
    fn others(&mut self, except: usize) -> Vec<Waker> {
        self.readers
            .iter_mut()
            .filter(|(id, _)| *id != except)
            .filter_map(|(_, r)| r.waker.take())
            .collect()
    }

    fn add_reader(&mut self) -> usize {
        self.readers.insert(Reader {
            position: 0,
            waker: None,
        })
    }

    /// Keeps a chunk; returns the bytes all fills hold now.
    fn keep(&mut self, chunk: Bytes) -> u64 {
        let len = chunk.len() as u64;
        self.retained += len;
        self.chunks.push_back(chunk);
        self.held.fetch_add(len, Ordering::Relaxed) + len
    }

    /// The body arrived whole: store it if it may be, end every reader.
    fn complete(&mut self, after: &mut After) {
        self.end = Some(End::Complete);
        self.source = None;
        if let Some(on_complete) = self.on_complete.take() {
            after.complete = Some((on_complete, self.chunks.iter().cloned().collect()));
        }
        after.unlist = true;
    }

    /// Drops the chunks every reader has, once they need not be stored.
    /// Whether any was dropped.
    fn trim(&mut self) -> bool {
        if self.storing {
            return false;
        }
        let slowest = self
            .readers
            .iter()
            .map(|(_, r)| r.position)
            .min()
            .unwrap_or(self.first + self.chunks.len());
        let mut trimmed = false;
        while self.first < slowest {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.retained -= chunk.len() as u64;
            self.held.fetch_sub(chunk.len() as u64, Ordering::Relaxed);
            self.first += 1;
            trimmed = true;
        }
        trimmed
    }
}

impl Body for FillBody {
    type Data = Bytes;
    type Error = FillBroken;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, FillBroken>>> {
        let this = self.get_mut();
        let mut after = After::default();
        let result = {
            let mut state = lock(&this.fill.state);
            loop {
                if this.position < state.first + state.chunks.len() {
                    let chunk = state.chunks[this.position - state.first].clone();
                    this.position += 1;
                    state.readers[this.id].position = this.position;
                    if state.trim() {
                        // A reader held back by the window may go on.
                        after.wake.extend(state.others(this.id));
                    }
                    break Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                match state.end {
                    Some(End::Complete) => break Poll::Ready(None),
                    Some(End::Broken) => break Poll::Ready(Some(Err(FillBroken))),
                    None => {}
                }
                if !state.storing && state.retained >= state.limit {
                    // The slowest reader is a whole window behind: wait for it.
                    state.readers[this.id].waker = Some(cx.waker().clone());
                    break Poll::Pending;
                }
                let Some(source) = state.source.as_mut() else {
                    state.end = Some(End::Broken);
                    continue;
                };
                match Pin::new(source).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not relayed from a shared fill.
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            state.total += data.len() as u64;
                            let held = state.keep(data);
                            if state.storing && (state.total > state.limit || held > state.budget) {
                                // Too large to store: no one joins any more.
                                state.storing = false;
                                state.on_complete = None;
                                after.unlist = true;
                            }
                            // A client that knows the length stops reading at
                            // its end: the source's end is not waited for.
                            if state.source.as_ref().is_some_and(|s| s.is_end_stream()) {
                                state.complete(&mut after);
                            }
                            after.wake.extend(state.others(this.id));
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        state.end = Some(End::Broken);
                        state.source = None;
                        state.on_complete = None;
                        after.unlist = true;
                        after.wake.extend(state.others(this.id));
                    }
                    Poll::Ready(None) => {
                        state.complete(&mut after);
                        after.wake.extend(state.others(this.id));
                    }
                    Poll::Pending => {
                        state.readers[this.id].waker = Some(cx.waker().clone());
                        break Poll::Pending;
                    }
                }
            }
        };
        after.run(&this.fill);
        result
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.fill.state);
        state.end == Some(End::Complete) && self.position >= state.first + state.chunks.len()
    }

    fn size_hint(&self) -> SizeHint {
        match self.size {
            Some(size) => SizeHint::with_exact(size),
            None => SizeHint::default(),
        }
    }
}

impl Drop for FillBody {
    fn drop(&mut self) {
        let mut after = After::default();
        {
            let mut state = lock(&self.fill.state);
            state.readers.remove(self.id);
            if state.end.is_none() && state.source.as_ref().is_some_and(|s| s.is_end_stream()) {
                state.complete(&mut after);
            }
            if state.readers.is_empty() && state.end.is_none() {
                // No one reads it any more: end it rather than keep a backend
                // connection and a listed fill that nobody drives.
                state.end = Some(End::Broken);
                state.source = None;
                state.on_complete = None;
                let dropped = std::mem::take(&mut state.retained);
                state.held.fetch_sub(dropped, Ordering::Relaxed);
                state.chunks.clear();
                after.unlist = true;
            } else {
                state.trim();
                // This reader may have been the one the source would wake.
                after.wake.extend(state.others(self.id));
            }
        }
        after.run(&self.fill);
    }
}
