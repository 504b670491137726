//! The value that travels inside packets.
//!
//! A [`Value`] is immutable and cheap to clone: strings and bytes are reference-counted
//! [`Bytes`], lists and maps are reference-counted slices, so a fan-out to many nodes copies
//! nothing but pointers. Integers stay integers (`Int`/`Uint`) and floats stay floats, which
//! upstream's JSON decoding lost. Maps are kept sorted by key, as Go's persistent maps were, so
//! rendering is deterministic and lookup is a binary search.
//!
//! The crate depends on serde and bytes only: [`Value`] implements `Serialize`/`Deserialize`
//! for any serde format, and [`from_value`] decodes a typed struct out of a `Value` with the
//! lenient scalar conversions upstream specs rely on (`port: "8000"` decodes into an integer).

mod de;
mod error;
mod from;
mod ser;

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

pub use bytes::Bytes;
pub use bytestring::ByteString as Str;

pub use error::Error;
pub use from::from_value;
pub use ser::write_base64;

/// A packet payload.
#[derive(Clone, Default)]
pub enum Value {
    /// The absent value (Go `nil`). Renders as JSON `null`.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer; every integer that fits in `i64` is one of these.
    Int(i64),
    /// An unsigned integer too large for `i64`.
    Uint(u64),
    /// A floating-point number.
    Float(f64),
    /// A UTF-8 string.
    String(Str),
    /// Raw bytes (a request body of an unknown type, for example).
    Bytes(Bytes),
    /// An ordered list.
    List(List),
    /// A map sorted by key.
    Map(Map),
    /// An error travelling as a packet, on its way to an `error` port or back as an answer.
    Error(ErrorValue),
}

impl Value {
    /// A string value built from a static string without allocating.
    pub const fn from_static(s: &'static str) -> Value {
        Value::String(Str::from_static(s))
    }

    /// The name of the value's kind, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Uint(_) => "uint",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Error(_) => "error",
        }
    }

    /// Rank of the kind in the total order: values of different kinds compare by kind first.
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Uint(_) => 3,
            Value::Float(_) => 4,
            Value::String(_) => 5,
            Value::Bytes(_) => 6,
            Value::List(_) => 7,
            Value::Map(_) => 8,
            Value::Error(_) => 9,
        }
    }

    /// Whether a condition yielding this value counts as true: `null`, `false`, zero, the empty
    /// string and empty collections are false, everything else (errors included) is true.
    pub fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Uint(u) => *u != 0,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::Bytes(b) => !b.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Error(_) => true,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The list, if this is one.
    pub fn as_list(&self) -> Option<&List> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The error, if this is one.
    pub fn as_error(&self) -> Option<&ErrorValue> {
        match self {
            Value::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is an error value.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// The value as an `i64`, if it is an integer (or an integral float) that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::Uint(u) => i64::try_from(u).ok(),
            Value::Float(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64 => {
                Some(f as i64)
            }
            _ => None,
        }
    }

    /// Looks up `key` when this is a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map().and_then(|m| m.get(key))
    }

    /// Walks string keys through nested maps (`["a", "b"]` reads `a.b`).
    pub fn pick<'a>(&'a self, path: &[&str]) -> Option<&'a Value> {
        path.iter().try_fold(self, |v, k| v.get(k))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Uint(a), Value::Uint(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::String(a), Value::String(b)) => cmp_bytes(a.as_bytes(), b.as_bytes()),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::List(a), Value::List(b)) => a.as_slice().cmp(b.as_slice()),
            (Value::Map(a), Value::Map(b)) => a.entries().cmp(b.entries()),
            (Value::Error(a), Value::Error(b)) => a.message().cmp(b.message()),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Uint(u) => write!(f, "{u}u"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::String(s) => write!(f, "{:?}", &**s),
            Value::Bytes(b) => write!(f, "b{b:?}"),
            Value::List(l) => f.debug_list().entries(l.iter()).finish(),
            Value::Map(m) => f.debug_map().entries(m.iter()).finish(),
            Value::Error(e) => write!(f, "error({:?})", e.message()),
        }
    }
}

impl PartialEq for List {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for List {}

impl PartialEq for Map {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for Map {}

/// An immutable list; the empty list does not allocate.
///
/// A list is a window on a shared slice, so that lists built together (the values of a
/// request's headers, one list per name) share one allocation.
#[derive(Clone, Default)]
pub struct List {
    items: Option<Arc<[Value]>>,
    start: u32,
    len: u32,
}

impl List {
    /// The empty list.
    pub const fn new() -> List {
        List {
            items: None,
            start: 0,
            len: 0,
        }
    }

    fn whole(items: Arc<[Value]>) -> List {
        let len = u32::try_from(items.len()).expect("a list holds fewer than 2^32 values");
        if len == 0 {
            return List::new();
        }
        List {
            items: Some(items),
            start: 0,
            len,
        }
    }

    /// A list of one element, in one allocation.
    pub fn one(value: Value) -> List {
        List::whole(Arc::from_iter(std::iter::once(value)))
    }

    /// The elements.
    pub fn as_slice(&self) -> &[Value] {
        match &self.items {
            Some(items) => &items[self.start as usize..(self.start + self.len) as usize],
            None => &[],
        }
    }
}

impl std::ops::Deref for List {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        self.as_slice()
    }
}

impl FromIterator<Value> for List {
    fn from_iter<I: IntoIterator<Item = Value>>(iter: I) -> Self {
        List::whole(iter.into_iter().collect())
    }
}

impl From<Vec<Value>> for List {
    fn from(items: Vec<Value>) -> Self {
        if items.is_empty() {
            List::new()
        } else {
            List::whole(items.into())
        }
    }
}

impl fmt::Debug for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// An immutable map sorted by key, with unique keys; the empty map does not allocate.
///
/// Requests carry a handful of keys, so a sorted slice beats a hash map both in lookup time
/// and in allocations. The slice may hold spare slots past `len`: a map built with room (the
/// listener's request map) takes one more key in place while it is the only reference to its
/// entries, so the router's `params` costs no allocation and no copy.
#[derive(Clone, Default)]
pub struct Map {
    slots: Option<Arc<[(Value, Value)]>>,
    len: usize,
}

impl Map {
    /// The empty map.
    pub const fn new() -> Map {
        Map {
            slots: None,
            len: 0,
        }
    }

    fn full(slots: Arc<[(Value, Value)]>) -> Map {
        if slots.is_empty() {
            return Map::new();
        }
        let len = slots.len();
        Map {
            slots: Some(slots),
            len,
        }
    }

    /// Builds a map of `len` entries with `room` spare slots, so that as many later
    /// [`Map::with`] calls on the sole reference add a key in place. `fill` sets the entries,
    /// in key order, straight into the new allocation ([`Fill::set`]): they are not built in
    /// an array that is then copied (a request map's entries are 640 bytes).
    ///
    /// The caller promises to set each of the first `len` slots, with sorted, unique keys;
    /// debug builds check both.
    #[inline]
    pub fn from_sorted_fill(len: usize, room: usize, fill: impl FnOnce(&mut Fill<'_>)) -> Map {
        if len + room == 0 {
            return Map::new();
        }
        let mut slots = exact_slice(len + room, <(Value, Value)>::default);
        fill(&mut Fill {
            slots: &mut Arc::get_mut(&mut slots).expect("a fresh Arc is unique")[..len],
        });
        let map = Map {
            slots: Some(slots),
            len,
        };
        debug_assert!(
            map.is_sorted() && map.entries().iter().all(|(k, _)| !matches!(k, Value::Null)),
            "Map::from_sorted_fill needs every entry set, with sorted, unique keys"
        );
        map
    }

    fn is_sorted(&self) -> bool {
        self.entries()
            .windows(2)
            .all(|w| cmp_keys(&w[0].0, &w[1].0) == Ordering::Less)
    }

    /// Builds a map of lists from `(key, value)` pairs in which a key (`Some`) starts a list
    /// that the following values (`None`) extend: `keys` unique keys and `values` values in
    /// all, the order of an HTTP header map. The lists share one allocation and the map takes
    /// another, whatever the number of keys.
    ///
    /// # Panics
    /// If `pairs` yields fewer than `values` pairs, more than `keys` keys, or a value before
    /// the first key.
    pub fn from_grouped_lists<I>(keys: usize, values: usize, pairs: I) -> Map
    where
        I: IntoIterator<Item = (Option<Value>, Value)>,
    {
        if keys == 0 || values == 0 {
            return Map::new();
        }
        u32::try_from(values).expect("a list holds fewer than 2^32 values");
        let mut slots = exact_slice(keys, <(Value, Value)>::default);
        let entries = Arc::get_mut(&mut slots).expect("a fresh Arc is unique");
        let mut pairs = pairs.into_iter();
        let (mut filled, mut index) = (0, 0);
        let items = exact_slice(values, || {
            let (key, value) = pairs
                .next()
                .expect("from_grouped_lists: fewer pairs than `values`");
            if let Some(key) = key {
                // Until the items are complete, a key's slot holds where its values start.
                entries[filled] = (key, Value::Uint(index));
                filled += 1;
            }
            assert!(
                filled > 0,
                "from_grouped_lists: a value before the first key"
            );
            index += 1;
            value
        });
        let mut end = values as u64;
        for (_, slot) in entries[..filled].iter_mut().rev() {
            let Value::Uint(start) = *slot else {
                unreachable!("every filled slot holds its start")
            };
            *slot = Value::List(List {
                items: Some(Arc::clone(&items)),
                start: start as u32,
                len: (end - start) as u32,
            });
            end = start;
        }
        entries[..filled].sort_unstable_by(|a, b| cmp_keys(&a.0, &b.0));
        let map = Map {
            slots: Some(slots),
            len: filled,
        };
        debug_assert!(map.is_sorted(), "from_grouped_lists needs unique keys");
        map
    }

    /// The entries in key order.
    pub fn entries(&self) -> &[(Value, Value)] {
        match &self.slots {
            Some(slots) => &slots[..self.len],
            None => &[],
        }
    }

    /// Iterates over `(key, value)` in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Value, &Value)> {
        self.entries().iter().map(|(k, v)| (k, v))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value under a string key.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Value> {
        let [value] = self.get_many([key]);
        value
    }

    /// The values under several string keys, found in one pass over a small map rather than
    /// one pass per key (a router reads `method`, `path` and `params` of every request).
    pub fn get_many<const N: usize>(&self, keys: [&str; N]) -> [Option<&Value>; N] {
        let entries = self.entries();
        let mut found = [None; N];
        // Requests and most payloads have a handful of keys: a scan that compares lengths
        // first ([`eq_bytes`]) rejects almost every wrong key at once, which beats the
        // ordering comparisons of a binary search.
        if entries.len() > 12 {
            for (slot, key) in found.iter_mut().zip(keys) {
                *slot = entries
                    .binary_search_by(|(k, _)| cmp_with_str(k, key))
                    .ok()
                    .map(|i| &entries[i].1);
            }
            return found;
        }
        let mut left = N;
        for (k, v) in entries {
            let Value::String(k) = k else { continue };
            let k = k.as_bytes();
            for (slot, key) in found.iter_mut().zip(keys) {
                if slot.is_none() && eq_bytes(k, key.as_bytes()) {
                    *slot = Some(v);
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
        }
        found
    }

    /// The value under any key.
    pub fn get_value(&self, key: &Value) -> Option<&Value> {
        let entries = self.entries();
        entries
            .binary_search_by(|(k, _)| cmp_keys(k, key))
            .ok()
            .map(|i| &entries[i].1)
    }

    /// `self` with `key` set to `value`. When this map is the only reference to its entries
    /// (a request map handed from node to node), the change is made in place: in a spare slot
    /// when there is one, otherwise by moving the entries (not cloning them) into a new
    /// allocation. A shared map is copied, as [`Map::insert`] does.
    pub fn with(mut self, key: impl Into<Value>, value: impl Into<Value>) -> Map {
        let len = self.len;
        let Some(slots) = self.slots.as_mut().and_then(Arc::get_mut) else {
            return self.insert(key, value);
        };
        let key = key.into();
        let value = value.into();
        let (split, replace) = match slots[..len].binary_search_by(|(k, _)| cmp_keys(k, &key)) {
            Ok(i) => (i, true),
            Err(i) => (i, false),
        };
        if replace {
            slots[split].1 = value;
            return self;
        }
        if len < slots.len() {
            // The spare slot at `len` moves to `split`; the entries after it shift right.
            slots[split..=len].rotate_right(1);
            slots[split] = (key, value);
            self.len += 1;
            return self;
        }
        let mut moved = slots[..len].iter_mut().map(std::mem::take);
        let mut pending = Some((key, value));
        let mut i = 0;
        let merged = exact_slice(len + 1, || {
            i += 1;
            if i - 1 == split {
                pending.take().expect("the new entry is placed once")
            } else {
                moved.next().expect("an entry for every other slot")
            }
        });
        Map::full(merged)
    }

    /// A new map with `key` set to `value`; `self` is unchanged (values are immutable).
    pub fn insert(&self, key: impl Into<Value>, value: impl Into<Value>) -> Map {
        let key = key.into();
        let value = value.into();
        let entries = self.entries();
        let (before, after) = match entries.binary_search_by(|(k, _)| cmp_keys(k, &key)) {
            Ok(i) => (&entries[..i], &entries[i + 1..]),
            Err(i) => (&entries[..i], &entries[i..]),
        };
        // An exact-size chain lets `Arc<[_]>` allocate once, with no intermediate `Vec`.
        let merged: Arc<[(Value, Value)]> = before
            .iter()
            .cloned()
            .chain(std::iter::once((key, value)))
            .chain(after.iter().cloned())
            .collect();
        Map::full(merged)
    }
}

/// The slots of a map being built by [`Map::from_sorted_fill`].
pub struct Fill<'a> {
    slots: &'a mut [(Value, Value)],
}

impl Fill<'_> {
    /// Sets entry `i`, which must not be set yet.
    #[inline]
    pub fn set(&mut self, i: usize, key: Value, value: Value) {
        // The slot still holds its `(Null, Null)` placeholder, which owns nothing: forgetting
        // it skips the two out-of-line drop calls an assignment would make.
        let placeholder = std::mem::replace(&mut self.slots[i], (key, value));
        debug_assert!(
            matches!(placeholder, (Value::Null, Value::Null)),
            "Fill::set: entry {i} is set twice"
        );
        std::mem::forget(placeholder);
    }
}

/// A slice of `len` items made by `next`, in one allocation and without an intermediate
/// `Vec`. (`Arc<[T]>: FromIterator` only skips the `Vec` for iterators std trusts to report
/// their length, which a chain with `repeat_n` is not: that path cost the request map a copy.)
fn exact_slice<T>(len: usize, next: impl FnMut() -> T) -> Arc<[T]> {
    let mut next = next;
    (0..len).map(|_| next()).collect()
}

/// Compares byte strings, deciding on the first byte without a `memcmp` call when it differs:
/// map keys (`body`, `header`, `host`, `method`, ...) mostly differ there.
#[inline]
fn cmp_bytes(a: &[u8], b: &[u8]) -> Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Byte-string equality tuned for the short strings of map keys and HTTP headers: up to 16
/// bytes, two overlapping word loads per side decide it inline, where `==` on slices calls
/// `memcmp`.
#[inline]
pub fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    fn word<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
        s[at..at + N].try_into().expect("N bytes")
    }
    match len {
        0 => true,
        1..=3 => a[0] == b[0] && a[len / 2] == b[len / 2] && a[len - 1] == b[len - 1],
        4..=7 => {
            word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, len - 4) == word::<4>(b, len - 4)
        }
        8..=16 => {
            word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, len - 8) == word::<8>(b, len - 8)
        }
        _ => a == b,
    }
}

/// Compares map keys, inline for the common case of two strings (the full [`Ord`] for
/// values is a call that dispatches on both kinds).
#[inline]
fn cmp_keys(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::String(a), Value::String(b)) => cmp_bytes(a.as_bytes(), b.as_bytes()),
        _ => a.cmp(b),
    }
}

/// Compares a map key with a string key without building a `Value` for the latter.
fn cmp_with_str(key: &Value, s: &str) -> Ordering {
    match key {
        Value::String(k) => cmp_bytes(k.as_bytes(), s.as_bytes()),
        other => other.rank().cmp(&Value::String(Str::new()).rank()),
    }
}

impl FromIterator<(Value, Value)> for Map {
    /// Sorts the entries; when a key repeats, the last value wins (as in a JSON object).
    fn from_iter<I: IntoIterator<Item = (Value, Value)>>(iter: I) -> Self {
        let mut entries: Vec<(Value, Value)> = iter.into_iter().collect();
        if entries.is_empty() {
            return Map::new();
        }
        // A stable sort keeps equal keys in input order; moving each later value into the
        // retained entry implements "last wins" in place.
        entries.sort_by(|a, b| cmp_keys(&a.0, &b.0));
        entries.dedup_by(|later, kept| {
            if later.0 == kept.0 {
                std::mem::swap(&mut later.1, &mut kept.1);
                true
            } else {
                false
            }
        });
        Map::full(entries.into())
    }
}

impl<K: Into<Value>, V: Into<Value>, const N: usize> From<[(K, V); N]> for Map {
    fn from(entries: [(K, V); N]) -> Self {
        entries
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// An error carried as a value. Joined errors keep their parts, so a condition can ask whether
/// any of them has a given message (upstream's `self == "unsupported type"`).
#[derive(Clone)]
pub struct ErrorValue(Arc<ErrorInner>);

struct ErrorInner {
    message: Str,
    causes: Box<[ErrorValue]>,
}

impl ErrorValue {
    /// An error with a message.
    pub fn new(message: impl Into<Str>) -> ErrorValue {
        ErrorValue(Arc::new(ErrorInner {
            message: message.into(),
            causes: Box::new([]),
        }))
    }

    /// Joins several errors into one whose message is theirs, one per line (Go's
    /// `errors.Join`). A single error is returned as it is.
    pub fn join(mut errors: Vec<ErrorValue>) -> ErrorValue {
        if errors.len() == 1 {
            return errors.pop().expect("one element");
        }
        let message = errors
            .iter()
            .map(|e| &**e.message())
            .collect::<Vec<_>>()
            .join("\n");
        ErrorValue(Arc::new(ErrorInner {
            message: message.into(),
            causes: errors.into_boxed_slice(),
        }))
    }

    /// An error with a message of its own that wraps `cause` (Go's `fmt.Errorf("...: %w")`):
    /// [`ErrorValue::is`] finds the cause's message too.
    pub fn caused(message: impl Into<Str>, cause: ErrorValue) -> ErrorValue {
        ErrorValue(Arc::new(ErrorInner {
            message: message.into(),
            causes: Box::new([cause]),
        }))
    }

    /// The message.
    pub fn message(&self) -> &Str {
        &self.0.message
    }

    /// The errors this one joins (empty for a plain error).
    pub fn causes(&self) -> &[ErrorValue] {
        &self.0.causes
    }

    /// Whether this error or any error it joins has exactly this message.
    pub fn is(&self, message: &str) -> bool {
        &*self.0.message == message || self.0.causes.iter().any(|c| c.is(message))
    }
}

impl fmt::Debug for ErrorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorValue({:?})", &**self.message())
    }
}

impl fmt::Display for ErrorValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(i: $t) -> Self {
                Value::Int(i64::from(i))
            }
        }
    )*};
}
from_signed!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for Value {
    fn from(u: u64) -> Self {
        i64::try_from(u).map_or(Value::Uint(u), Value::Int)
    }
}

impl From<usize> for Value {
    fn from(u: usize) -> Self {
        Value::from(u as u64)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::from_static(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s.into())
    }
}

impl From<Str> for Value {
    fn from(s: Str) -> Self {
        Value::String(s)
    }
}

impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Bytes(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items.into())
    }
}

impl From<List> for Value {
    fn from(l: List) -> Self {
        Value::List(l)
    }
}

impl From<Map> for Value {
    fn from(m: Map) -> Self {
        Value::Map(m)
    }
}

impl From<ErrorValue> for Value {
    fn from(e: ErrorValue) -> Self {
        Value::Error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_keys_sorted_and_last_duplicate_wins() {
        let m: Map = [("b", 1), ("a", 2), ("b", 3)].into();
        let keys: Vec<_> = m.iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(m.get("b"), Some(&Value::Int(3)));
        assert_eq!(m.get("c"), None);
    }

    #[test]
    fn get_many_agrees_with_lookups_one_key_at_a_time() {
        // Small maps are scanned once; large ones (over 12 entries) searched per key.
        for size in [0, 3, 12, 13, 40] {
            let mut m: Map = (0..size)
                .map(|i| (Value::from(format!("k{i}")), Value::Int(i)))
                .collect();
            m = m.with(Value::Int(7), "an integer key");
            let keys = ["k2", "missing", "k0", "k2", "k12", ""];
            let got = m.get_many(keys);
            for (key, got) in keys.iter().zip(got) {
                let want = m
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(*key))
                    .map(|(_, v)| v);
                assert_eq!(got, want, "{key} of {size}");
                assert_eq!(m.get(key), want, "get({key}) of {size}");
            }
        }
    }

    #[test]
    fn eq_bytes_agrees_with_slice_equality() {
        let text = b"abcdefghijklmnopqrstuvwxyz";
        for len in 0..=20 {
            let a = &text[..len];
            assert!(eq_bytes(a, a), "equal at {len}");
            assert!(!eq_bytes(a, &text[..len + 1]), "lengths differ at {len}");
            for i in 0..len {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!eq_bytes(a, &b), "byte {i} of {len} differs");
            }
        }
    }

    #[test]
    fn map_with_moves_unique_entries_and_copies_shared_ones() {
        let m: Map = [("a", 1), ("c", 3)].into();
        let shared = m.clone();
        let n = m.with("b", 2).with("a", 0);
        assert_eq!(n, [("a", 0), ("b", 2), ("c", 3)].into());
        assert_eq!(
            shared,
            [("a", 1), ("c", 3)].into(),
            "a shared map is not changed"
        );
        let unique: Map = [("x", 1)].into();
        assert_eq!(unique.with("y", 2), [("x", 1), ("y", 2)].into());
        assert_eq!(Map::new().with("k", "v"), [("k", "v")].into());
    }

    #[test]
    fn map_with_room_adds_keys_in_place_until_full() {
        let m = Map::from_sorted_fill(2, 1, |e| {
            e.set(0, Value::from("a"), Value::Int(1));
            e.set(1, Value::from("c"), Value::Int(3));
        });
        let before = m.slots.as_ref().map(|s| Arc::as_ptr(s).cast::<u8>());
        let m = m.with("b", 2);
        assert_eq!(
            m.slots.as_ref().map(|s| Arc::as_ptr(s).cast::<u8>()),
            before,
            "in place"
        );
        assert_eq!(m, [("a", 1), ("b", 2), ("c", 3)].into());
        assert_eq!(m.len(), 3);
        let shared = m.clone();
        let n = m.with("d", 4).with("a", 0);
        assert_eq!(n, [("a", 0), ("b", 2), ("c", 3), ("d", 4)].into());
        assert_eq!(shared, [("a", 1), ("b", 2), ("c", 3)].into());
        let full = Map::from_sorted_fill(1, 0, |e| e.set(0, Value::from("x"), Value::Int(1)));
        let full = full.with("y", 2);
        assert_eq!(full, [("x", 1), ("y", 2)].into());
    }

    #[test]
    fn grouped_lists_share_one_allocation() {
        let pairs = [
            (Some("b"), "1"),
            (None, "2"),
            (Some("a"), "3"),
            (Some("c"), "4"),
            (None, "5"),
            (None, "6"),
        ]
        .map(|(k, v)| (k.map(Value::from), Value::from(v)));
        let m = Map::from_grouped_lists(3, 6, pairs);
        let list = |key: &str| m.get(key).and_then(Value::as_list).unwrap().clone();
        assert_eq!(m.len(), 3);
        assert_eq!(list("a").as_slice(), &[Value::from("3")]);
        assert_eq!(list("b").as_slice(), &[Value::from("1"), Value::from("2")]);
        assert_eq!(list("c").len(), 3);
        assert_eq!(list("c")[2], Value::from("6"));
        let keys: Vec<_> = m.iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let slab = |key: &str| list(key).items.as_ref().map(Arc::as_ptr).unwrap();
        assert_eq!(slab("a"), slab("c"), "one allocation for all lists");
        assert_eq!(
            Value::List(list("b")),
            Value::List(vec![Value::from("1"), Value::from("2")].into())
        );
        assert!(Map::from_grouped_lists(0, 0, std::iter::empty()).is_empty());
    }

    #[test]
    fn map_insert_is_persistent() {
        let m: Map = [("a", 1)].into();
        let n = m.insert("b", 2).insert("a", 0);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("a"), Some(&Value::Int(1)));
        assert_eq!(n.get("a"), Some(&Value::Int(0)));
        assert_eq!(n.get("b"), Some(&Value::Int(2)));
    }

    #[test]
    fn kinds_order_before_values() {
        assert_ne!(Value::Int(1), Value::Float(1.0));
        assert!(Value::Null < Value::Bool(false));
        assert!(Value::Int(5) < Value::from("a"));
    }

    #[test]
    fn empty_collections_do_not_allocate_and_are_falsy() {
        let l: List = Vec::new().into();
        let m: Map = Map::from_iter(std::iter::empty());
        assert!(l.items.is_none() && m.slots.is_none());
        assert!(!Value::List(l).is_truthy());
        assert!(!Value::Map(m).is_truthy());
        assert!(!Value::from("").is_truthy());
        assert!(Value::from("x").is_truthy());
        assert!(!Value::Int(0).is_truthy());
    }

    #[test]
    fn joined_error_matches_any_part() {
        let e = ErrorValue::join(vec![
            ErrorValue::new("unsupported type"),
            ErrorValue::new("boom"),
        ]);
        assert_eq!(&**e.message(), "unsupported type\nboom");
        assert!(e.is("boom"));
        assert!(e.is("unsupported type"));
        assert!(!e.is("other"));
    }

    #[test]
    fn large_u64_stays_unsigned() {
        assert_eq!(Value::from(u64::MAX), Value::Uint(u64::MAX));
        assert_eq!(Value::from(7u64), Value::Int(7));
    }
}
