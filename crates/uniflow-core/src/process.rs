//! Processes: one per request or event.
//!
//! A process is one allocation. Its id (a UUID v7) is generated only when something reads it,
//! and its data and exit hooks live behind one per-process mutex that is never held across an
//! `.await`, so requests never contend with each other.
//!
//! Exit hooks run synchronously inside [`Process::exit`]. A hook whose work must wait (a
//! transaction's commit) hands that work back as a future ([`Process::on_exit_async`]);
//! `exit` returns it all as a [`Settle`], which the one who ended the process may await (a
//! listener does, before it responds) and which otherwise finishes on a task of its own.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use tokio::sync::Notify;
use uniflow_value::ErrorValue;

/// Work an exit hook leaves to finish after the exit (a commit), and how it ended.
pub type Settling = Pin<Box<dyn Future<Output = Result<(), ErrorValue>> + Send>>;

type ExitHook = Box<dyn FnOnce(Option<&ErrorValue>) -> Option<Settling> + Send>;

/// Processes started and not exited: one counter for the program, since processes are made
/// only when a node asks for one, and an atomic add costs less than a per-graph count.
static ALIVE: AtomicUsize = AtomicUsize::new(0);

/// A unit of work flowing through the graph: a request, an event, or a child forked from one.
pub struct Process {
    id: OnceLock<uuid::Uuid>,
    parent: Option<Arc<Process>>,
    exited: AtomicBool,
    // Set before the first hook, datum or child is added (`lock_to_add`). A process that never
    // had any, exits without an error and has no parent (almost every request) skips its lock
    // in `exit`. `exit` sets `exited` then reads `used`; the adders set `used` then read
    // `exited` under the lock; both sequentially consistent, so at least one of them sees the
    // other (and a hook added concurrently with exit runs either way).
    used: AtomicBool,
    state: Mutex<State>,
    // Wakes `exited()` and `join()` waiters. It is created by the first waiter, so a process
    // nobody waits on (almost every request) never touches it: `notify_waiters` takes a lock.
    changed: OnceLock<Notify>,
}

#[derive(Default)]
struct State {
    data: Vec<(u64, Box<dyn Any + Send>)>,
    hooks: Vec<ExitHook>,
    // Forked children, exited with this process. Weak, and pruned as the list grows, so a
    // long-lived process that forks per event (a WebSocket connection forks per message)
    // does not keep one entry per child it ever had.
    forked: Vec<Weak<Process>>,
    children: usize,
    error: Option<ErrorValue>,
}

impl Process {
    /// A new root process.
    pub fn new() -> Arc<Process> {
        ALIVE.fetch_add(1, Ordering::Relaxed);
        Arc::new(Process {
            id: OnceLock::new(),
            parent: None,
            exited: AtomicBool::new(false),
            used: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            changed: OnceLock::new(),
        })
    }

    /// A child process with its own empty data. The parent's exit exits the child, and the
    /// parent's [`join`](Process::join) waits for it.
    pub fn fork(self: &Arc<Self>) -> Arc<Process> {
        ALIVE.fetch_add(1, Ordering::Relaxed);
        let child = Arc::new(Process {
            id: OnceLock::new(),
            parent: Some(Arc::clone(self)),
            exited: AtomicBool::new(false),
            used: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            changed: OnceLock::new(),
        });
        {
            let mut state = self.lock_to_add();
            if !self.is_exited() {
                state.children += 1;
                if state.forked.len() == state.forked.capacity() {
                    state
                        .forked
                        .retain(|c| c.upgrade().is_some_and(|c| !c.is_exited()));
                }
                state.forked.push(Arc::downgrade(&child));
                return child;
            }
        }
        // Forked from a process that has already exited: the child is born exited too.
        child.exited.store(true, Ordering::Release);
        ALIVE.fetch_sub(1, Ordering::Relaxed);
        child.lock().error = self.exit_error();
        child
    }

    /// How many processes of this program have started and not exited yet (for `/metrics`).
    pub fn alive() -> usize {
        ALIVE.load(Ordering::Relaxed)
    }

    /// The process id, generated on first use.
    pub fn id(&self) -> uuid::Uuid {
        *self.id.get_or_init(uuid::Uuid::now_v7)
    }

    /// The parent, for a forked process.
    pub fn parent(&self) -> Option<&Arc<Process>> {
        self.parent.as_ref()
    }

    /// Whether the process has exited.
    pub fn is_exited(&self) -> bool {
        // Sequentially consistent for the `used` handshake (see the field).
        self.exited.load(Ordering::SeqCst)
    }

    /// The error the process exited with, if any.
    pub fn exit_error(&self) -> Option<ErrorValue> {
        self.lock().error.clone()
    }

    /// Ends the process: drops its data and runs its exit hooks in reverse order of
    /// registration. Only the first call has an effect.
    ///
    /// Returns the work the hooks left to finish ([`Process::on_exit_async`]), its forked
    /// children's included: await it to know that it has finished, or drop it to let it finish
    /// on its own. A process without such hooks returns an empty [`Settle`], which costs
    /// nothing either way.
    pub fn exit(&self, error: Option<ErrorValue>) -> Settle {
        if self.exited.swap(true, Ordering::SeqCst) {
            return Settle::done();
        }
        ALIVE.fetch_sub(1, Ordering::Relaxed);
        if error.is_none() && self.parent.is_none() && !self.used.load(Ordering::SeqCst) {
            self.notify();
            return Settle::done();
        }
        let (forked, hooks, data) = {
            let mut state = self.lock();
            state.error.clone_from(&error);
            (
                std::mem::take(&mut state.forked),
                std::mem::take(&mut state.hooks),
                std::mem::take(&mut state.data),
            )
        };
        // Children and hooks run outside the lock, so they may touch this process (or its
        // parent).
        let mut settle = Settle::done();
        for child in forked.iter().rev().filter_map(Weak::upgrade) {
            settle.absorb(child.exit(error.clone()));
        }
        for hook in hooks.into_iter().rev() {
            if let Some(work) = hook(error.as_ref()) {
                settle.push(work);
            }
        }
        drop(data);
        if let Some(parent) = &self.parent {
            parent.lock().children -= 1;
            parent.notify();
        }
        self.notify();
        settle
    }

    /// Runs `hook` when the process exits, or now if it already has.
    pub fn on_exit(&self, hook: impl FnOnce(Option<&ErrorValue>) + Send + 'static) {
        self.add_hook(Box::new(move |error| {
            hook(error);
            None
        }));
    }

    /// Runs `hook` when the process exits (or now if it already has), and leaves the work it
    /// hands back to finish after the exit: [`Process::exit`] returns it in its [`Settle`].
    /// For what must be done before the process's outcome is reported (a listener answers
    /// only once a transaction has committed), and which must await to be done.
    pub fn on_exit_async(
        &self,
        hook: impl FnOnce(Option<&ErrorValue>) -> Settling + Send + 'static,
    ) {
        self.add_hook(Box::new(move |error| Some(hook(error))));
    }

    fn add_hook(&self, hook: ExitHook) {
        {
            let mut state = self.lock_to_add();
            if !self.is_exited() {
                state.hooks.push(hook);
                return;
            }
        }
        let error = self.exit_error();
        // Exited already: the work, if any, finishes on its own (`Settle`'s drop).
        let mut settle = Settle::done();
        if let Some(work) = hook(error.as_ref()) {
            settle.push(work);
        }
        drop(settle);
    }

    /// Waits until the process has exited.
    pub async fn exited(&self) {
        loop {
            let notified = self.changed.get_or_init(Notify::new).notified();
            if self.is_exited() {
                return;
            }
            notified.await;
        }
    }

    /// Waits until every child forked from this process has exited.
    pub async fn join(&self) {
        loop {
            let notified = self.changed.get_or_init(Notify::new).notified();
            if self.lock().children == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Whether children forked from this process are still running.
    pub fn has_children(&self) -> bool {
        self.used.load(Ordering::SeqCst) && self.lock().children > 0
    }

    /// Runs `f` on this process's value under `key`, created with `Default` on first use.
    ///
    /// Nodes that keep state per process (merge tuples, reduce accumulators) hold a [`Local`]
    /// of their own. The closure runs under the per-process lock, so it must not block or
    /// await.
    pub fn with_local<T, R>(&self, key: &Local<T>, f: impl FnOnce(&mut T) -> R) -> R
    where
        T: Any + Send + Default,
    {
        let key = key.id();
        let mut state = self.lock_to_add();
        let index = match state.data.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                state.data.push((key, Box::new(T::default())));
                state.data.len() - 1
            }
        };
        let value = state.data[index]
            .1
            .downcast_mut::<T>()
            .expect("a Local's id is its own, and so is its type");
        f(value)
    }

    /// Wakes waiters, if any. A waiter creates the `Notify` before it checks its condition, and
    /// the condition is set before this runs, so a waiter that appears concurrently either sees
    /// the condition or is woken here.
    fn notify(&self) {
        if let Some(changed) = self.changed.get() {
            changed.notify_waiters();
        }
    }

    /// The lock, taken to add a hook, a datum or a child: marks the process as used first,
    /// so that `exit` takes the lock too.
    fn lock_to_add(&self) -> MutexGuard<'_, State> {
        self.used.store(true, Ordering::SeqCst);
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a hook must not poison the process for everyone else.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What exit hooks left to finish after a process exited ([`Process::on_exit_async`]).
///
/// Await it ([`Settle::wait`]) to know the work has finished and how; drop it and the work
/// finishes on a task of its own, whose failures are logged. Most processes leave nothing,
/// and then it is one null pointer: no allocation, one test on drop.
#[derive(Default)]
pub struct Settle {
    work: Option<Box<Work>>,
}

/// The work itself, boxed so that a `Settle` without any is one null pointer: every exit
/// returns one, and the instruction counts of a process's exit and of the ping noticed the
/// three words of a vector (scripts/bench-gate).
#[derive(Default)]
struct Work(Vec<Settling>);

impl Settle {
    /// Nothing left to do.
    #[inline]
    pub const fn done() -> Settle {
        Settle { work: None }
    }

    /// Whether nothing is left to do.
    #[inline]
    pub fn is_done(&self) -> bool {
        self.work.is_none()
    }

    /// Adds one piece of work.
    fn push(&mut self, work: Settling) {
        self.work.get_or_insert_with(Box::default).0.push(work);
    }

    /// Adds what another exit left.
    fn absorb(&mut self, mut other: Settle) {
        if let Some(more) = other.work.take() {
            match &mut self.work {
                Some(work) => work.0.extend(more.0),
                None => self.work = Some(more),
            }
        }
    }

    /// Waits for all the work to finish, all of it even when some fails.
    ///
    /// # Errors
    /// The failures, joined.
    pub async fn wait(mut self) -> Result<(), ErrorValue> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        let errors: Vec<ErrorValue> = futures_util::future::join_all(work.0)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.into_iter().next().expect("one error")),
            _ => Err(ErrorValue::join(errors)),
        }
    }
}

impl Drop for Settle {
    #[inline]
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            finish_alone(work);
        }
    }
}

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settle")
            .field("work", &self.work.as_ref().map_or(0, |w| w.0.len()))
            .finish()
    }
}

/// Finishes exit work nobody waits for on a task of its own (the runtime owns it: a shutdown
/// drops it, and with it, say, an uncommitted transaction, which then rolls back).
#[cold]
#[inline(never)]
fn finish_alone(work: Box<Work>) {
    let settle = Settle { work: Some(work) };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                if let Err(error) = settle.wait().await {
                    tracing::warn!(%error, "work left by a process's exit failed");
                }
            });
        }
        Err(_) => {
            tracing::warn!(
                "a process exited outside the async runtime; the work its exit left is dropped"
            );
            let mut settle = settle;
            settle.work = None;
        }
    }
}

/// A typed key for state kept per process ([`Process::with_local`]).
///
/// Each key gets an id of its own on first use, never reused, so two keys cannot meet: not
/// two kinds of node, and not a node and the one that replaces it on a reload while a process
/// of the old one is still running. The type is part of the key, so a value cannot be read
/// as another type. A node holds one per state it keeps; a module keeps one in a `static`.
pub struct Local<T> {
    /// 0 until first use.
    id: AtomicU64,
    kind: PhantomData<fn() -> T>,
}

/// The next id a [`Local`] takes.
static NEXT_LOCAL: AtomicU64 = AtomicU64::new(1);

impl<T> Local<T> {
    /// A new key.
    pub const fn new() -> Local<T> {
        Local {
            id: AtomicU64::new(0),
            kind: PhantomData,
        }
    }

    #[inline]
    fn id(&self) -> u64 {
        match self.id.load(Ordering::Relaxed) {
            0 => self.assign(),
            id => id,
        }
    }

    #[cold]
    fn assign(&self) -> u64 {
        let fresh = NEXT_LOCAL.fetch_add(1, Ordering::Relaxed);
        match self
            .id
            .compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => fresh,
            Err(taken) => taken,
        }
    }
}

impl<T> Default for Local<T> {
    fn default() -> Self {
        Local::new()
    }
}

impl<T> std::fmt::Debug for Local<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Local")
            .field(&self.id.load(Ordering::Relaxed))
            .finish()
    }
}

/// A process made on first use, for a source that starts work which may never ask for its
/// process: a request through a router and a snippet never does, and then costs no
/// allocation and no exit. Reads through [`Cx::proc`](crate::Cx::proc) make it.
#[derive(Debug, Default)]
pub struct ProcessSlot(OnceLock<Arc<Process>>);

impl ProcessSlot {
    /// An empty slot.
    pub fn new() -> ProcessSlot {
        ProcessSlot(OnceLock::new())
    }

    /// The process, made now if nothing has asked for it yet.
    pub fn get(&self) -> &Arc<Process> {
        self.0.get_or_init(Process::new)
    }

    /// The process, if something has asked for it.
    pub fn made(&self) -> Option<&Arc<Process>> {
        self.0.get()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // A process dropped without an explicit exit (a client that disconnected mid-request,
        // a dropped task) still runs its hooks, so resources it holds are released.
        if !self.is_exited() {
            self.exit(Some(ErrorValue::new("process dropped before exit")));
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("exited", &self.is_exited())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Other tests make processes at the same time, a few at once: a thousand held ones
    /// stand out of them, and are gone once exited, forked children included.
    #[test]
    fn alive_counts_processes_until_they_exit() {
        let parents: Vec<_> = (0..500).map(|_| Process::new()).collect();
        let children: Vec<_> = parents.iter().map(Process::fork).collect();
        assert!(Process::alive() >= 1000, "{}", Process::alive());
        for parent in &parents {
            parent.exit(None);
        }
        assert!(children.iter().all(|c| c.is_exited()));
        assert!(Process::alive() < 1000, "{}", Process::alive());
    }

    #[test]
    fn exit_runs_hooks_once_in_reverse_order() {
        let p = Process::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let order = Arc::clone(&order);
            p.on_exit(move |_| order.lock().unwrap().push(i));
        }
        p.exit(None);
        p.exit(Some(ErrorValue::new("again")));
        assert_eq!(*order.lock().unwrap(), [2, 1, 0]);
        assert!(p.exit_error().is_none());
    }

    #[test]
    fn hook_added_after_exit_runs_at_once_with_the_error() {
        let p = Process::new();
        p.exit(Some(ErrorValue::new("boom")));
        let seen = Arc::new(Mutex::new(None));
        let s = Arc::clone(&seen);
        p.on_exit(move |e| *s.lock().unwrap() = e.map(|e| e.message().to_string()));
        assert_eq!(seen.lock().unwrap().as_deref(), Some("boom"));
    }

    #[test]
    fn parent_exit_exits_children_and_data_is_dropped() {
        let parent = Process::new();
        let child = parent.fork();
        let key = Local::<Vec<i32>>::new();
        child.with_local(&key, |v| v.push(1));
        assert_eq!(child.with_local(&key, |v| v.len()), 1);
        parent.exit(None);
        assert!(child.is_exited());
        assert_eq!(child.with_local(&key, |v| v.len()), 0);
    }

    #[test]
    fn dropping_an_unexited_process_runs_its_hooks() {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let p = Process::new();
        p.on_exit(move |e| {
            assert!(e.is_some());
            r.fetch_add(1, Ordering::SeqCst);
        });
        drop(p);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_hook_added_while_the_process_exits_runs_once() {
        // `exit` skips the lock of a process that has no hooks; a hook added concurrently must
        // still run, exactly once, whichever side wins.
        for _ in 0..2_000 {
            let p = Process::new();
            let ran = Arc::new(AtomicUsize::new(0));
            let adder = {
                let (p, ran) = (Arc::clone(&p), Arc::clone(&ran));
                std::thread::spawn(move || {
                    p.on_exit(move |_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                    });
                })
            };
            p.exit(None);
            adder.join().unwrap();
            assert_eq!(ran.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn exiting_without_hooks_keeps_the_error_and_wakes_waiters() {
        let p = Process::new();
        assert!(!p.has_children());
        p.exit(Some(ErrorValue::new("boom")));
        assert!(p.is_exited());
        assert_eq!(p.exit_error().unwrap().message(), "boom");
        let q = Process::new();
        let waiter = {
            let q = Arc::clone(&q);
            tokio::spawn(async move { q.exited().await })
        };
        tokio::task::yield_now().await;
        q.exit(None);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is woken")
            .unwrap();
    }

    #[test]
    fn exited_children_do_not_accumulate_in_a_long_lived_parent() {
        let parent = Process::new();
        for _ in 0..10_000 {
            parent.fork().exit(None);
        }
        assert!(
            parent.lock().forked.capacity() <= 4,
            "{}",
            parent.lock().forked.capacity()
        );
        let live = parent.fork();
        parent.exit(Some(ErrorValue::new("bye")));
        assert!(live.is_exited());
        assert_eq!(
            live.exit_error()
                .map(|e| e.message().to_string())
                .as_deref(),
            Some("bye")
        );
        let late = parent.fork();
        assert!(late.is_exited());
        assert!(!parent.has_children());
    }

    #[tokio::test]
    async fn join_waits_for_children() {
        let parent = Process::new();
        let child = parent.fork();
        let c = Arc::clone(&child);
        let handle = tokio::spawn(async move {
            tokio::task::yield_now().await;
            c.exit(None);
        });
        parent.join().await;
        assert!(child.is_exited());
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn exit_hands_back_the_work_of_async_hooks_and_waits_for_it() {
        let p = Process::new();
        let done = Arc::new(AtomicUsize::new(0));
        for outcome in [Ok(()), Err("commit failed")] {
            let done = Arc::clone(&done);
            p.on_exit_async(move |error| {
                assert!(error.is_none());
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    done.fetch_add(1, Ordering::SeqCst);
                    outcome.map_err(ErrorValue::new)
                })
            });
        }
        let settle = p.exit(None);
        assert!(!settle.is_done());
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "the work waits to be awaited"
        );
        let error = settle.wait().await.unwrap_err();
        assert_eq!(error.message(), "commit failed");
        assert_eq!(done.load(Ordering::SeqCst), 2);
        assert!(p.exit(None).is_done(), "a second exit leaves nothing");
    }

    #[tokio::test]
    async fn work_nobody_waits_for_finishes_on_its_own() {
        let done = Arc::new(Notify::new());
        let parent = Process::new();
        let child = parent.fork();
        let d = Arc::clone(&done);
        child.on_exit_async(move |error| {
            assert_eq!(
                error.map(|e| e.message().to_string()).as_deref(),
                Some("bye")
            );
            Box::pin(async move {
                d.notify_one();
                Ok(())
            })
        });
        // The child's work comes back with its parent's exit; dropped, it runs alone.
        drop(parent.exit(Some(ErrorValue::new("bye"))));
        tokio::time::timeout(std::time::Duration::from_secs(10), done.notified())
            .await
            .expect("the dropped work ran");
        assert!(Process::new().exit(Some(ErrorValue::new("x"))).is_done());
    }

    #[test]
    fn id_is_v7_and_stable() {
        let p = Process::new();
        assert_eq!(p.id().get_version_num(), 7);
        assert_eq!(p.id(), p.id());
    }
}
