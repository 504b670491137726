//! A run's input into JavaScript, lazily, and its result back.
//!
//! **Lazily.** Converting a request payload into JavaScript objects was most of a run of
//! `(a) => a`: QuickJS defining properties and interning keys, for entries most scripts never
//! read. So a map of the input becomes a `Proxy` over an empty object, whose handler answers
//! reads from the map itself and converts an entry only when it is first read; the value it
//! became is kept, so a repeated read gives the same object (`a.header === a.header`). The
//! handler answers `get`, `has`, `ownKeys` and `getOwnPropertyDescriptor` as the plain object
//! would (own, writable, enumerable, configurable data properties, in the order a plain object
//! lists them: integer keys first, ascending, then the rest in the map's order), and leaves
//! `getPrototypeOf` and `isExtensible` to the empty target, which has `Object.prototype` and is
//! extensible, as the plain object was. The first change (`set`, `defineProperty`,
//! `deleteProperty`, `preventExtensions`, `setPrototypeOf`) *fills* the target with every
//! entry, then takes the handler's traps away, so from then on the proxy is a plain view of an
//! ordinary object and every change behaves as on one. Lists become ordinary arrays (array
//! methods stay on QuickJS's fast paths), whose maps are proxies in turn; byte strings become
//! `Uint8Array`s and errors `PayloadError`s, as before.
//!
//! Maps that stay eager, converted as plain objects at once: the empty map, maps with more
//! than [`LAZY_ENTRIES`] entries (QuickJS checks the keys a proxy lists for duplicates
//! pairwise, so listing a large one would cost the square of its size) and maps with a key
//! that is not a string (the key a script sees is then the key's text, and two keys may
//! share it).
//!
//! **What a script may notice.** Reads, `in`, key order, `Object.keys`/`entries`, `for..in`,
//! spread, `JSON.stringify`, descriptors, `Object.isFrozen`/`isExtensible`, prototypes, the
//! identity of repeated reads, changes and the errors of failed changes are those of the plain
//! objects (`a_lazy_input_is_observed_as_a_plain_one` compares them, lazy against eager).
//! What differs, at the edges (also in `docs/decisions.md`): a proxy a script keeps past its
//! run (in a replaced built-in method) reads as an empty object in later runs, because the
//! registry is cleared; a heap that fills while an entry converts on its first read fails
//! "while running" rather than "while converting its input"; and a getter a script defines on
//! an index of an input array it returns is called twice while the result converts (once to
//! compare, once to convert).
//!
//! **Handing the input back.** What the input became is noted in a [`Registry`] the engine's
//! traps share: for each proxy (by its target), array and byte array, the payload it was made
//! from, and in the engine's `made` array the values it was given, which also keeps them alive
//! for the run, so an object's address names it for as long as the registry does. An object of
//! the result that is one of them and converts back to the very payload it came from (a map
//! whose proxy was never changed, with every entry read so far the same, an array whose items
//! are still those it was given, bytes with the same content) answers with that payload instead
//! of a copy. Entries never read come back as converting them would: the payload itself when
//! it survives the trip (numbers that JavaScript cannot tell from others, errors, keys that are
//! not strings do not), else what the trip makes of it, computed without JavaScript.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rquickjs::atom::PredefinedAtom;
use rquickjs::function::This;
use rquickjs::object::Property;
use rquickjs::proxy::ProxyHandler;
use rquickjs::{
    Array, Atom, Coerced, Ctx, Filter, Function, Object, Proxy, Type, TypedArray, Value as JsValue,
};
use uniflow_value::{ErrorValue, List, Map, Value};

/// Deeper values than this are refused rather than converted: a conversion recurses once per
/// level, and a cyclic object must not overflow the stack.
pub(super) const MAX_NESTING: usize = 256;

/// Maps with more entries than this are converted at once; see the module docs.
const LAZY_ENTRIES: usize = 256;

/// The index in the engine's helpers of `latin1` (bytes as a string of their codes).
const LATIN1: u32 = 1;
/// The index in the engine's helpers of `traps`, the prototype of the proxies' handlers.
const TRAPS: u32 = 2;
/// The index in `traps` of `made`, the array that keeps what the input became alive.
const MADE: u32 = 0;
/// The index in `traps` of the function that makes a `PayloadError`.
const ERROR: u32 = 1;

/// What a run's input became, shared by the run and its engine's proxy traps.
pub(super) type Shared = Arc<Mutex<Registry>>;

/// See the module docs. Cleared after every run.
#[derive(Default)]
pub(super) struct Registry {
    /// Whether maps become proxies; tests turn it off to compare with converting at once.
    lazy: bool,
    /// An object's address (a proxy's target's), to its index in `made`.
    by_address: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
    made: Vec<Made>,
    /// The length of the engine's JavaScript `made` array, which is only ever appended to, so
    /// QuickJS keeps it a dense array that is cheap to grow and to clear.
    slots: u32,
}

/// One object made from a payload.
struct Made {
    value: Value,
    /// Its nesting in the input.
    depth: usize,
    /// Its slot in the JavaScript `made` array, which an array's items follow (a proxy's
    /// entries have slots of their own, and it needs none).
    slot: u32,
    kind: Kind,
}

enum Kind {
    /// A map behind a proxy: the slot of what each entry became, plus one (0: not read
    /// yet), and whether the target was filled.
    Lazy {
        entries: Vec<u32>,
        filled: bool,
    },
    Array,
    Bytes,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Registry> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a run: its maps become proxies when `lazy`.
pub(super) fn begin(shared: &Shared, lazy: bool) {
    lock(shared).begin(lazy);
}

impl Registry {
    fn begin(&mut self, lazy: bool) {
        self.lazy = lazy;
        self.by_address.clear();
        self.made.clear();
        self.slots = 0;
    }

    fn find(&self, object: &JsValue<'_>) -> Option<usize> {
        if self.made.is_empty() {
            return None;
        }
        self.by_address.get(&address(object)).copied()
    }
}

/// An object's address: what [`JsValue`]'s `Hash` writes last.
fn address(object: &JsValue<'_>) -> u64 {
    #[derive(Default)]
    struct Bits(u64);
    impl Hasher for Bits {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, _: &[u8]) {}
        fn write_u64(&mut self, i: u64) {
            self.0 = i;
        }
    }
    let mut bits = Bits::default();
    object.hash(&mut bits);
    bits.0
}

/// Mixes an address well enough for a hash map, at a tenth of SipHash's cost.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// The engine's objects conversions use: the prototype of the proxies' handlers (`traps`,
/// built by the engine's setup script), and its `made` array. Each is looked up when first
/// needed: a run on a number needs neither.
pub(super) struct Env<'js> {
    /// The engine's hidden helpers, which hold `traps`.
    hidden: Option<Object<'js>>,
    traps: OnceCell<Object<'js>>,
    made: OnceCell<Array<'js>>,
    /// The target of the input's proxy, when the input is a map, held for the run.
    root: OnceCell<JsValue<'js>>,
}

impl<'js> Env<'js> {
    /// The environment of a run.
    pub(super) fn new(hidden: Object<'js>) -> Env<'js> {
        Env {
            hidden: Some(hidden),
            traps: OnceCell::new(),
            made: OnceCell::new(),
            root: OnceCell::new(),
        }
    }

    /// The environment of a trap: its handler's prototype is `traps`.
    fn of(ctx: &Ctx<'js>, handler: &Object<'js>) -> rquickjs::Result<Env<'js>> {
        match handler.get_prototype() {
            Some(traps) => Ok(Env {
                hidden: None,
                traps: OnceCell::from(traps),
                made: OnceCell::new(),
                root: OnceCell::new(),
            }),
            None => Err(rquickjs::Exception::throw_internal(
                ctx,
                "the input's proxy has no traps",
            )),
        }
    }

    fn traps(&self) -> rquickjs::Result<&Object<'js>> {
        if let Some(traps) = self.traps.get() {
            return Ok(traps);
        }
        let hidden = self
            .hidden
            .as_ref()
            .expect("a run's environment has its helpers");
        let traps: Object = hidden.get(TRAPS)?;
        Ok(self.traps.get_or_init(|| traps))
    }

    fn made(&self) -> rquickjs::Result<&Array<'js>> {
        if let Some(made) = self.made.get() {
            return Ok(made);
        }
        let made: Array = self.traps()?.get(MADE)?;
        Ok(self.made.get_or_init(|| made))
    }

    /// Forgets what the run's input became.
    pub(super) fn end(&self, shared: &Shared) -> rquickjs::Result<()> {
        let kept = {
            let mut registry = lock(shared);
            let kept = registry.slots > 0;
            registry.begin(false);
            kept
        };
        if kept {
            self.made()?.as_object().set(PredefinedAtom::Length, 0)?;
        }
        Ok(())
    }

    /// Keeps `value` alive for the run; its slot.
    fn keep(&self, shared: &Shared, value: &JsValue<'js>) -> rquickjs::Result<u32> {
        let made = self.made()?;
        let slot = {
            let mut registry = lock(shared);
            registry.slots += 1;
            registry.slots - 1
        };
        made.set(slot as usize, value.clone())?;
        Ok(slot)
    }
}

fn register(
    shared: &Shared,
    object: &JsValue<'_>,
    value: &Value,
    depth: usize,
    slot: u32,
    kind: Kind,
) {
    let made = Made {
        value: value.clone(),
        depth,
        slot,
        kind,
    };
    let mut registry = lock(shared);
    let index = registry.made.len();
    registry.made.push(made);
    registry.by_address.insert(address(object), index);
}

pub(super) fn too_deep(ctx: &Ctx<'_>) -> rquickjs::Error {
    rquickjs::Exception::throw_range(
        ctx,
        &format!("value nests deeper than {MAX_NESTING} levels"),
    )
}

/// Converts a run's input.
pub(super) fn to_js<'js>(
    ctx: &Ctx<'js>,
    env: &Env<'js>,
    shared: &Shared,
    value: &Value,
) -> rquickjs::Result<JsValue<'js>> {
    let lazy = lock(shared).lazy;
    make(ctx, env, shared, lazy, value, 0)
}

/// Converts a payload at `depth` in the input, noting what it became when `lazy`.
fn make<'js>(
    ctx: &Ctx<'js>,
    env: &Env<'js>,
    shared: &Shared,
    lazy: bool,
    value: &Value,
    depth: usize,
) -> rquickjs::Result<JsValue<'js>> {
    if depth > MAX_NESTING {
        return Err(too_deep(ctx));
    }
    Ok(match value {
        Value::Null => JsValue::new_null(ctx.clone()),
        Value::Bool(b) => JsValue::new_bool(ctx.clone(), *b),
        Value::Int(i) => match i32::try_from(*i) {
            Ok(i) => JsValue::new_int(ctx.clone(), i),
            Err(_) => JsValue::new_float(ctx.clone(), *i as f64),
        },
        Value::Uint(u) => JsValue::new_float(ctx.clone(), *u as f64),
        Value::Float(f) => JsValue::new_float(ctx.clone(), *f),
        Value::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        Value::Bytes(b) => {
            let bytes = TypedArray::<u8>::new_copy(ctx.clone(), &b[..])?.into_value();
            if lazy {
                let slot = env.keep(shared, &bytes)?;
                register(shared, &bytes, value, depth, slot, Kind::Bytes);
            }
            bytes
        }
        Value::List(items) => {
            let array = Array::new(ctx.clone())?;
            let mut made = Vec::with_capacity(if lazy { items.len() } else { 0 });
            for (i, item) in items.iter().enumerate() {
                let js = make(ctx, env, shared, lazy, item, depth + 1)?;
                if lazy {
                    made.push(js.clone());
                }
                array.set(i, js)?;
            }
            let array = array.into_value();
            if lazy {
                let slot = env.keep(shared, &array)?;
                for item in &made {
                    env.keep(shared, item)?;
                }
                register(shared, &array, value, depth, slot, Kind::Array);
            }
            array
        }
        Value::Map(map) if lazy && stays_lazy(map) => {
            let target = Object::new(ctx.clone())?;
            let handler = Object::new_proto(ctx.clone(), Some(env.traps()?))?;
            let proxy = Proxy::new(
                ctx.clone(),
                target.clone(),
                ProxyHandler::from_object(handler)?,
            )?;
            let target = target.into_value();
            // The input's own target is kept alive by the run; the others by `made`. A proxy
            // needs no slot of its own: its entries have theirs.
            if depth == 0 {
                let _ = env.root.set(target.clone());
            } else {
                env.keep(shared, &target)?;
            }
            register(
                shared,
                &target,
                value,
                depth,
                0,
                Kind::Lazy {
                    entries: Vec::new(),
                    filled: false,
                },
            );
            proxy.into_value()
        }
        Value::Map(map) => {
            let object = Object::new(ctx.clone())?;
            for (key, item) in map.iter() {
                let js = make(ctx, env, shared, lazy, item, depth + 1)?;
                let atom = match key {
                    Value::String(s) => Atom::from_str(ctx.clone(), s)?,
                    other => Atom::from_str(ctx.clone(), &key_text(other))?,
                };
                define(&object, atom, js)?;
            }
            object.into_value()
        }
        Value::Error(e) => {
            let make: Function = env.traps()?.get(ERROR)?;
            make.call((&**e.message(),))?
        }
    })
}

/// Whether a map becomes a proxy; see the module docs.
fn stays_lazy(map: &Map) -> bool {
    (1..=LAZY_ENTRIES).contains(&map.len())
        && map.iter().all(|(k, _)| matches!(k, Value::String(_)))
}

/// Defines an entry of an object made from a map: defined, not assigned, because assigning
/// `__proto__` (a JSON body may carry that key) would set the object's prototype instead.
fn define<'js>(object: &Object<'js>, atom: Atom<'js>, value: JsValue<'js>) -> rquickjs::Result<()> {
    object.prop(
        atom,
        Property::from(value).writable().enumerable().configurable(),
    )
}

/// The index of the entry `key` names in a map whose keys are strings.
fn position(map: &Map, key: &str) -> Option<usize> {
    let entries = map.entries();
    fn text(k: &Value) -> &[u8] {
        k.as_str().unwrap_or_default().as_bytes()
    }
    if entries.len() <= 16 {
        return entries.iter().position(|(k, _)| text(k) == key.as_bytes());
    }
    entries
        .binary_search_by(|(k, _)| text(k).cmp(key.as_bytes()))
        .ok()
}

/// The entry of a proxy's map that `key` names: its index in the registry and in the map.
fn own(
    shared: &Shared,
    target: &Object<'_>,
    key: &JsValue<'_>,
) -> rquickjs::Result<Option<(usize, usize)>> {
    let Some(name) = key.as_string() else {
        return Ok(None);
    };
    let name = name.to_string()?;
    let registry = lock(shared);
    // A proxy a script kept past its run (in a replaced built-in method) is no longer noted,
    // and reads as an empty object.
    let Some(index) = registry.find(target.as_value()) else {
        return Ok(None);
    };
    let Value::Map(map) = &registry.made[index].value else {
        return Ok(None);
    };
    Ok(position(map, &name).map(|entry| (index, entry)))
}

/// What an entry of a proxy's map became, converted on its first read.
fn entry<'js>(
    ctx: &Ctx<'js>,
    env: &Env<'js>,
    shared: &Shared,
    (index, entry): (usize, usize),
) -> rquickjs::Result<JsValue<'js>> {
    let (item, depth) = {
        let registry = lock(shared);
        let made = &registry.made[index];
        if let Kind::Lazy { entries, .. } = &made.kind
            && let Some(&slot) = entries.get(entry)
            && slot != 0
        {
            drop(registry);
            return env.made()?.get(slot as usize - 1);
        }
        let Value::Map(map) = &made.value else {
            unreachable!("a proxy is made from a map")
        };
        (map.entries()[entry].1.clone(), made.depth + 1)
    };
    let js = make(ctx, env, shared, true, &item, depth)?;
    let slot = env.keep(shared, &js)?;
    let mut registry = lock(shared);
    let made = &mut registry.made[index];
    let len = made.value.as_map().map_or(0, Map::len);
    if let Kind::Lazy { entries, .. } = &mut made.kind {
        if entries.is_empty() {
            entries.resize(len, 0);
        }
        entries[entry] = slot + 1;
    }
    Ok(js)
}

/// What a trap that reads by key answers.
#[derive(Clone, Copy)]
enum Read {
    /// `get`: an entry of the map, else what the target's prototype has.
    Value,
    /// `getOwnPropertyDescriptor`: an entry is a writable, enumerable, configurable data
    /// property, as on a plain object.
    Descriptor,
}

/// The `get` and `getOwnPropertyDescriptor` traps.
fn read<'js>(
    ctx: Ctx<'js>,
    shared: &Shared,
    (handler, target): (&Object<'js>, &Object<'js>),
    key: &JsValue<'js>,
    read: Read,
) -> rquickjs::Result<JsValue<'js>> {
    let Some(at) = own(shared, target, key)? else {
        return match read {
            Read::Value => target.get(Atom::from_value(ctx, key)?),
            Read::Descriptor => Ok(JsValue::new_undefined(ctx)),
        };
    };
    let value = entry(&ctx, &Env::of(&ctx, handler)?, shared, at)?;
    if let Read::Value = read {
        return Ok(value);
    }
    let descriptor = Object::new(ctx)?;
    descriptor.set(PredefinedAtom::Value, value)?;
    descriptor.set(PredefinedAtom::Writable, true)?;
    descriptor.set(PredefinedAtom::Enumerable, true)?;
    descriptor.set(PredefinedAtom::Configurable, true)?;
    Ok(descriptor.into_value())
}

/// The `has` trap.
fn has<'js>(
    ctx: Ctx<'js>,
    shared: &Shared,
    target: &Object<'js>,
    key: &JsValue<'js>,
) -> rquickjs::Result<bool> {
    if own(shared, target, key)?.is_some() {
        return Ok(true);
    }
    target.contains_key(Atom::from_value(ctx, key)?)
}

/// The `ownKeys` trap: the keys in the order a plain object lists them.
fn own_keys<'js>(
    ctx: Ctx<'js>,
    shared: &Shared,
    target: &Object<'js>,
) -> rquickjs::Result<Array<'js>> {
    let map = {
        let registry = lock(shared);
        match registry.find(target.as_value()) {
            Some(index) => registry.made[index].value.clone(),
            None => Value::Null,
        }
    };
    let keys = Array::new(ctx.clone())?;
    let Value::Map(map) = map else {
        return Ok(keys);
    };
    let mut indexes: Vec<(u32, &str)> = Vec::new();
    let mut names: Vec<&str> = Vec::with_capacity(map.len());
    for (key, _) in map.iter() {
        let key = key.as_str().unwrap_or_default();
        match array_index(key) {
            Some(i) => indexes.push((i, key)),
            None => names.push(key),
        }
    }
    indexes.sort_unstable_by_key(|(i, _)| *i);
    let ordered = indexes.iter().map(|(_, key)| *key).chain(names);
    for (at, key) in ordered.enumerate() {
        keys.set(at, rquickjs::String::from_str(ctx.clone(), key)?)?;
    }
    Ok(keys)
}

/// The integer a key is to QuickJS, which lists such keys first: a canonical decimal below
/// 2^32 - 1.
fn array_index(key: &str) -> Option<u32> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || (bytes[0] == b'0' && bytes.len() > 1) {
        return None;
    }
    if !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    key.parse::<u32>().ok().filter(|&i| i != u32::MAX)
}

/// Before a change: defines every entry on the target, in the map's order, and takes the
/// handler's traps away, so the proxy forwards everything to the target from then on.
fn fill<'js>(
    ctx: Ctx<'js>,
    shared: &Shared,
    handler: &Object<'js>,
    target: &Object<'js>,
) -> rquickjs::Result<()> {
    let (index, map) = {
        let registry = lock(shared);
        let Some(index) = registry.find(target.as_value()) else {
            return Ok(());
        };
        (index, registry.made[index].value.clone())
    };
    let env = Env::of(&ctx, handler)?;
    if let Value::Map(map) = &map {
        for (at, (key, _)) in map.iter().enumerate() {
            let value = entry(&ctx, &env, shared, (index, at))?;
            let atom = Atom::from_str(ctx.clone(), key.as_str().unwrap_or_default())?;
            define(target, atom, value)?;
        }
    }
    if let Kind::Lazy { filled, .. } = &mut lock(shared).made[index].kind {
        *filled = true;
    }
    handler.set_prototype(None)
}

/// The native half of the proxies' handlers, which the engine's setup script completes.
pub(super) fn natives<'js>(ctx: &Ctx<'js>, shared: &Shared) -> rquickjs::Result<Object<'js>> {
    let natives = Object::new(ctx.clone())?;
    // Each trap is a native function with its own handle on the engine's registry, `$s`.
    macro_rules! trap {
        ($name:literal, $s:ident, |$($arg:ident $(: $ty:ty)?),*| $call:expr) => {{
            let $s = Arc::clone(shared);
            natives.set($name, Function::new(ctx.clone(), move |$($arg $(: $ty)?),*| $call)?)?;
        }};
    }
    for (name, what) in [
        ("get", Read::Value),
        ("getOwnPropertyDescriptor", Read::Descriptor),
    ] {
        let s = Arc::clone(shared);
        let f =
            move |ctx, this: This<_>, target, key| read(ctx, &s, (&this.0, &target), &key, what);
        natives.set(name, Function::new(ctx.clone(), f)?)?;
    }
    trap!("has", s, |ctx, target, key| has(ctx, &s, &target, &key));
    trap!("ownKeys", s, |ctx, target| own_keys(ctx, &s, &target));
    trap!("fill", s, |ctx, handler, target| fill(
        ctx, &s, &handler, &target
    ));
    Ok(natives)
}

/// Whether converting what [`make`] made of `value` back gives `value` again. Numbers come
/// back as integers when they are integral and within 2^53 (a NaN may not keep its bits), an
/// error keeps only its message, and a key that is not a string comes back as its text.
fn comes_back(value: &Value) -> bool {
    match value {
        Value::Int(i) => i.unsigned_abs() < 1 << 53,
        Value::Uint(_) | Value::Error(_) => false,
        Value::Float(f) => !f.is_nan() && number(*f) == Value::Float(*f),
        Value::Null
        | Value::Bool(_)
        | Value::String(_)
        | Value::Bytes(_)
        | Value::List(_)
        | Value::Map(_) => true,
    }
}

/// [`comes_back`], for a payload and everything in it, at `depth` in the result. Written out
/// rather than through [`comes_back`]: an identity checks every entry of the payload it hands
/// back, once per node of a chain.
fn comes_back_whole(value: &Value, depth: usize) -> bool {
    if depth > MAX_NESTING {
        return false;
    }
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) | Value::Bytes(_) => true,
        Value::Int(i) => i.unsigned_abs() < 1 << 53,
        Value::Float(f) => !f.is_nan() && number(*f) == Value::Float(*f),
        Value::Uint(_) | Value::Error(_) => false,
        Value::List(items) => items.iter().all(|v| comes_back_whole(v, depth + 1)),
        Value::Map(map) => map
            .entries()
            .iter()
            .all(|(k, v)| matches!(k, Value::String(_)) && comes_back_whole(v, depth + 1)),
    }
}

/// What converting a payload into JavaScript and back gives, without JavaScript: the result
/// for an entry of a map that was never read.
fn round_trip(ctx: &Ctx<'_>, value: &Value, depth: usize) -> rquickjs::Result<Value> {
    if depth > MAX_NESTING {
        return Err(too_deep(ctx));
    }
    Ok(match value {
        Value::Int(i) => number(*i as f64),
        Value::Uint(u) => number(*u as f64),
        Value::Float(f) => number(*f),
        Value::Error(e) => Value::Error(ErrorValue::new(e.message().clone())),
        Value::List(items) if !comes_back_whole(value, depth) => Value::List(
            items
                .iter()
                .map(|v| round_trip(ctx, v, depth + 1))
                .collect::<rquickjs::Result<List>>()?,
        ),
        Value::Map(map) if !comes_back_whole(value, depth) => Value::Map(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(_) => k.clone(),
                        other => Value::from(key_text(other)),
                    };
                    Ok((key, round_trip(ctx, v, depth + 1)?))
                })
                .collect::<rquickjs::Result<Map>>()?,
        ),
        other => other.clone(),
    })
}

/// A non-string map key as a property name: JavaScript keys are strings.
fn key_text(key: &Value) -> String {
    match key {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::String(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

/// A JavaScript number as a payload: integral numbers are integers, as JavaScript cannot tell
/// `2` from `2.0` and upstream's goja exported them as integers too.
fn number(f: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.fract() == 0.0 && f.abs() < SAFE && !(f == 0.0 && f.is_sign_negative()) {
        Value::Int(f as i64)
    } else {
        Value::Float(f)
    }
}

/// Whether `JSON.stringify` would leave a property with this value out.
fn skipped(value: &JsValue<'_>) -> bool {
    matches!(
        value.type_of(),
        Type::Undefined | Type::Uninitialized | Type::Function | Type::Constructor | Type::Symbol
    )
}

/// A value that is not an array or an object (an `Error` is a leaf: it keeps only its
/// message) as a payload.
fn leaf(value: JsValue<'_>, kind: Type) -> rquickjs::Result<Value> {
    Ok(match kind {
        Type::Bool => Value::Bool(value.as_bool().unwrap_or_default()),
        Type::Int => Value::Int(i64::from(value.as_int().unwrap_or_default())),
        Type::Float => number(value.as_float().unwrap_or_default()),
        Type::String => Value::from(value.get::<String>()?),
        Type::BigInt => {
            let big = value.get::<rquickjs::BigInt>()?;
            Value::Int(big.to_i64()?)
        }
        Type::Exception => {
            let message = value
                .as_object()
                .and_then(|o| o.get::<_, Coerced<String>>("message").ok())
                .map(|c| c.0)
                .unwrap_or_default();
            Value::Error(ErrorValue::new(message))
        }
        _ => Value::Null,
    })
}

/// The parts of a map or list being converted back, copied only once one of them differs
/// from the input's: while every part comes back as it was, the input itself is the answer.
struct Changed<T>(Option<Vec<T>>);

impl<T> Default for Changed<T> {
    fn default() -> Self {
        Changed(None)
    }
}

impl<T: Clone> Changed<T> {
    /// Notes part `at` of `original`: `new` when it converted to something else, `None`
    /// when it came back as it was.
    fn note(&mut self, original: &[T], at: usize, new: Option<T>) {
        match (new, &mut self.0) {
            (None, None) => {}
            (None, Some(so_far)) => so_far.push(original[at].clone()),
            (Some(new), None) => {
                let mut so_far = original[..at].to_vec();
                so_far.push(new);
                self.0 = Some(so_far);
            }
            (Some(new), Some(so_far)) => so_far.push(new),
        }
    }
}

/// A result converted back: the payload an untouched part of the input came from, or a new one.
enum Back {
    Same(Value),
    New(Value),
}

impl Back {
    fn into_value(self) -> Value {
        match self {
            Back::Same(v) | Back::New(v) => v,
        }
    }
}

/// What converting the result back needs.
pub(super) struct Output<'a, 'js> {
    pub(super) ctx: &'a Ctx<'js>,
    /// The engine's hidden helpers (`latin1`).
    pub(super) hidden: &'a Object<'js>,
    pub(super) env: &'a Env<'js>,
    pub(super) shared: &'a Shared,
    /// The addresses of the arrays and objects being converted, outermost first.
    pub(super) path: RefCell<Vec<u64>>,
}

impl<'js> Output<'_, 'js> {
    /// Converts a JavaScript value into a payload; see the module docs for the parts of the
    /// input it hands back.
    pub(super) fn convert(&self, value: JsValue<'js>) -> rquickjs::Result<Value> {
        self.back(value, 0).map(Back::into_value)
    }

    fn back(&self, value: JsValue<'js>, depth: usize) -> rquickjs::Result<Back> {
        if depth > MAX_NESTING {
            return Err(too_deep(self.ctx));
        }
        let kind = value.type_of();
        let array = match kind {
            Type::Array => true,
            Type::Object | Type::Proxy | Type::Promise => false,
            _ => return leaf(value, kind).map(Back::New),
        };
        // An object inside itself would nest without end: it fails as it would at the
        // deepest level, without the recursion (whose frames, with QuickJS's between them,
        // could reach the stack limit first).
        let at = address(&value);
        if self.path.borrow().contains(&at) {
            return Err(too_deep(self.ctx));
        }
        self.path.borrow_mut().push(at);
        let back = if array {
            self.back_array(value, depth)
        } else {
            self.back_object(value, depth)
        };
        self.path.borrow_mut().pop();
        back
    }

    // The arms of `back` that recurse are functions of their own, which keeps the frames of a
    // deep recursion small.

    #[inline(never)]
    fn back_array(&self, value: JsValue<'js>, depth: usize) -> rquickjs::Result<Back> {
        let made = self.made(&value);
        let array = value.into_array().expect("the value is an array");
        if let Some(index) = made
            && let Some(back) = self.same_array(&array, index, depth)?
        {
            return Ok(back);
        }
        self.array(&array, depth).map(Back::New)
    }

    #[inline(never)]
    fn back_object(&self, value: JsValue<'js>, depth: usize) -> rquickjs::Result<Back> {
        // A proxy of the input is known by its target, bytes by themselves.
        if let Some(proxy) = value.as_proxy() {
            if let Some(index) = self.made(proxy.target()?.as_value())
                && let Some(same) = self.same_map(index, depth)?
            {
                return Ok(same);
            }
        } else if let Some(index) = self.made(&value)
            && let Some(object) = value.as_object()
            && let Some(same) = self.same_bytes(object, index)?
        {
            return Ok(same);
        }
        let object = value.into_object().expect("the value is an object");
        self.object(object, depth)
    }

    /// The index in the registry of an object made from the input.
    fn made(&self, object: &JsValue<'js>) -> Option<usize> {
        lock(self.shared).find(object)
    }

    /// A proxy's map as it converts back, unless its target was filled (it then converts
    /// as any object does): the map itself when every entry comes back as it was.
    fn same_map(&self, index: usize, depth: usize) -> rquickjs::Result<Option<Back>> {
        let (map, read) = {
            let registry = lock(self.shared);
            let made = &registry.made[index];
            match &made.kind {
                Kind::Lazy {
                    entries,
                    filled: false,
                } => (made.value.clone(), entries.clone()),
                _ => return Ok(None),
            }
        };
        let Value::Map(entries) = &map else {
            unreachable!("a proxy is made from a map")
        };
        let mut changed = Changed::default();
        for (at, (key, item)) in entries.iter().enumerate() {
            let slot = read.get(at).copied().unwrap_or(0);
            let js = match slot {
                0 => None,
                slot => Some(self.env.made()?.get::<JsValue>(slot as usize - 1)?)
                    .filter(JsValue::is_object),
            };
            // An entry read is what it became (only a change can replace it, and a change
            // fills the target); an object it became may have been changed inside.
            // `None`: the entry comes back as it was (a part handed back untouched is that
            // very entry).
            let new = match js {
                Some(js) => match self.back(js, depth + 1)? {
                    Back::Same(_) => None,
                    Back::New(v) => Some(v),
                },
                None if comes_back_whole(item, depth + 1) => None,
                None => Some(round_trip(self.ctx, item, depth + 1)?),
            };
            changed.note(entries.entries(), at, new.map(|new| (key.clone(), new)));
        }
        Ok(Some(match changed.0 {
            None => Back::Same(map),
            Some(entries) => Back::New(Value::Map(Map::from_iter(entries))),
        }))
    }

    /// An array made from a list that still holds exactly the items it was given: the list
    /// when each converts back as it was, else the list with the items that changed inside
    /// converted. `None` when the array is not one made from a list, or an item was replaced:
    /// it then converts as any array does.
    ///
    /// Each item converts back once, whatever the outcome: checking an item and converting it
    /// again when it changed would double the work at every level of nested lists.
    fn same_array(
        &self,
        array: &Array<'js>,
        index: usize,
        depth: usize,
    ) -> rquickjs::Result<Option<Back>> {
        let (list, slot) = {
            let registry = lock(self.shared);
            let made = &registry.made[index];
            if !matches!(made.kind, Kind::Array) {
                return Ok(None);
            }
            (made.value.clone(), made.slot as usize)
        };
        let Value::List(items) = &list else {
            unreachable!("an array is made from a list")
        };
        if array.len() != items.len() {
            return Ok(None);
        }
        let made = self.env.made()?;
        for i in 0..items.len() {
            let item: JsValue = array.get(i)?;
            let put: JsValue = made.get(slot + 1 + i)?;
            if item != put {
                return Ok(None);
            }
        }
        let mut changed = Changed::default();
        for (i, expected) in items.iter().enumerate() {
            let item: JsValue = array.get(i)?;
            let new = if item.is_object() {
                match self.back(item, depth + 1)? {
                    Back::Same(_) => None,
                    Back::New(v) => Some(v),
                }
            } else if comes_back(expected) {
                None
            } else {
                Some(self.back(item, depth + 1)?.into_value())
            };
            changed.note(items.as_slice(), i, new);
        }
        Ok(Some(match changed.0 {
            None => Back::Same(list),
            Some(items) => Back::New(Value::List(List::from(items))),
        }))
    }

    /// Bytes made from a byte string, when their content did not change: that byte string.
    fn same_bytes(&self, object: &Object<'js>, index: usize) -> rquickjs::Result<Option<Back>> {
        let bytes = {
            let registry = lock(self.shared);
            let made = &registry.made[index];
            if !matches!(made.kind, Kind::Bytes) {
                return Ok(None);
            }
            made.value.clone()
        };
        let back = self.bytes(object)?;
        Ok(Some(if back == bytes {
            Back::Same(bytes)
        } else {
            Back::New(back)
        }))
    }

    /// A `Uint8Array` or `ArrayBuffer` as bytes.
    fn bytes(&self, object: &Object<'js>) -> rquickjs::Result<Value> {
        let latin1: Function = self.hidden.get(LATIN1)?;
        let text: String = latin1.call((object.clone(),))?;
        // Every character is below 256: it was built from bytes.
        Ok(Value::Bytes(text.chars().map(|c| c as u8).collect()))
    }

    fn array(&self, array: &Array<'js>, depth: usize) -> rquickjs::Result<Value> {
        let mut items = Vec::new();
        for item in array.iter::<JsValue>() {
            let item = item?;
            items.push(if skipped(&item) {
                Value::Null
            } else {
                self.back(item, depth + 1)?.into_value()
            });
        }
        Ok(Value::List(List::from(items)))
    }

    fn object(&self, object: Object<'js>, depth: usize) -> rquickjs::Result<Back> {
        // Asking whether an object holds bytes costs a thrown and caught exception when it
        // does not, so a proxy, which never does, is not asked.
        if !object.as_value().is_proxy()
            && (object.is_typed_array::<u8>() || object.is_array_buffer())
        {
            return self.bytes(&object).map(Back::New);
        }
        let to_json: JsValue = object.get(PredefinedAtom::ToJSON)?;
        if let Some(to_json) = to_json.as_function() {
            let json: JsValue = to_json.call((This(object), ""))?;
            return self.back(json, depth + 1);
        }
        let mut entries = Vec::new();
        for entry in object.own_props::<Atom, JsValue>(Filter::new().string().enum_only()) {
            let (key, item) = entry?;
            if skipped(&item) {
                continue;
            }
            // Keys are read as JavaScript strings, whose conversion keeps their length: read
            // as Rust strings they go through a C string and a key with a NUL in it would be
            // cut short.
            let key = Value::from(key.to_js_string()?.to_string()?);
            entries.push((key, self.back(item, depth + 1)?.into_value()));
        }
        Ok(Back::New(Value::Map(Map::from_iter(entries))))
    }
}
