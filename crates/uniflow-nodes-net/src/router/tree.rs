//! A radix tree that matches request paths against route patterns with the
//! priorities of Echo's router: static text first, then a `:name` parameter,
//! then a `*` wildcard, backtracking to the next alternative whenever a deeper
//! branch fails. The table is built once when a flow loads and only read
//! afterwards, so insertion favours simplicity while lookup avoids the heap:
//! captured values borrow slices of the request path, and a route without
//! parameters is matched without allocating. Unlike Echo, a parameter never
//! captures a `/`, even at a leaf; only `*` takes the rest of the path.

use std::error::Error;
use std::fmt;

/// Route patterns, each owning one value, arranged for prioritised matching.
#[derive(Debug)]
pub struct Tree<T> {
    /// The node reached after the leading `/`, which every normalised pattern
    /// and path has, so the tree never needs to store or compare it.
    root: Node,
    /// Values live outside the nodes so that splitting a node never moves
    /// them and `values` is a plain slice walk.
    routes: Vec<Route<T>>,
    /// The routes without a parameter or wildcard, by their text without the
    /// leading `/`, ordered by [`by_length`]. Static text wins at every branch
    /// of the walk, so a route whose whole text is the path is always the
    /// first candidate, and most requests (`GET /ping`) are answered by one
    /// search of this table instead of a walk of the tree.
    exact: Vec<(Box<[u8]>, usize)>,
}

/// A pattern is invalid: it names a parameter with nothing, or it repeats an
/// earlier pattern with different parameter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid route pattern {:?}: {}",
            self.pattern, self.message
        )
    }
}

impl Error for PatternError {}

/// The outcome of a lookup that found at least one pattern for the path.
#[derive(Debug)]
pub struct Match<'t, 'p, T> {
    /// The value of the route found.
    pub value: &'t T,
    /// (name, value) in pattern order; the wildcard is named "*".
    pub params: Vec<(&'t str, &'p str)>,
    /// false when no matching pattern's value was accepted (see lookup).
    pub accepted: bool,
}

/// One pattern shape with its value; the names are kept per pattern rather
/// than per node so that `/users/:id` and `/users/:name/x` share a node.
#[derive(Debug)]
struct Route<T> {
    /// The spelling first inserted, kept to explain a later name conflict.
    pattern: String,
    names: Vec<String>,
    value: T,
}

#[derive(Debug, Default)]
struct Node {
    /// Static bytes this node consumes. They are bytes rather than a `str`
    /// because two routes may share only the first byte of a multi-byte
    /// character, and the split between them then falls inside it.
    prefix: Vec<u8>,
    /// The first byte of each static child, kept beside `statics` so that
    /// choosing a child scans one small contiguous array.
    index: Vec<u8>,
    statics: Vec<Node>,
    /// The parameter that starts where this node's static text ends. Its own
    /// prefix is empty because it consumes a run of bytes up to a `/`.
    param: Option<Box<Node>>,
    /// The route whose wildcard starts where this node's static text ends; a
    /// wildcard always ends its pattern, so it needs no node of its own.
    wildcard: Option<usize>,
    /// The route whose pattern ends exactly here.
    leaf: Option<usize>,
}

/// A pattern broken into the parts the tree stores differently.
enum Piece<'a> {
    Static(Vec<u8>),
    Param(&'a str),
    Wildcard,
}

impl<T> Default for Tree<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Tree<T> {
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            routes: Vec::new(),
            exact: Vec::new(),
        }
    }

    /// The value stored for this pattern, created with Default on first use
    /// (two routes with the same path but different methods share one value).
    /// Errors: an empty parameter name (`/a/:/b`), or the same pattern spelled
    /// with different parameter names than an earlier insert (`/u/:id` then
    /// `/u/:name`): return PatternError naming the pattern and what is wrong.
    pub fn entry(&mut self, pattern: &str) -> Result<&mut T, PatternError>
    where
        T: Default,
    {
        let error = |message| PatternError {
            pattern: pattern.to_owned(),
            message,
        };
        // Parsing completes before the tree is touched, so a rejected pattern
        // leaves no half-inserted nodes behind.
        let pieces = parse(pattern).map_err(error)?;
        let names: Vec<&str> = pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Static(_) => None,
                Piece::Param(name) => Some(*name),
                Piece::Wildcard => Some("*"),
            })
            .collect();
        let slot = self.root.slot(&pieces);
        let index = match *slot {
            Some(index) => {
                let route = &self.routes[index];
                // Matching returns names from the stored route, so a second
                // spelling would silently be answered with the first's names.
                if route.names != names {
                    return Err(error(format!(
                        "parameter names {names:?} differ from {:?} used by {:?}",
                        route.names, route.pattern
                    )));
                }
                index
            }
            None => {
                let index = self.routes.len();
                self.routes.push(Route {
                    pattern: pattern.to_owned(),
                    names: names.into_iter().map(str::to_owned).collect(),
                    value: T::default(),
                });
                *slot = Some(index);
                if let Some(text) = static_text(&pieces) {
                    let at = self
                        .exact
                        .binary_search_by(|(known, _)| by_length(known, text))
                        .expect_err("a new route has a new slot, so new text");
                    self.exact.insert(at, (text.into(), index));
                }
                index
            }
        };
        Ok(&mut self.routes[index].value)
    }

    /// Walks candidates in priority order (static > param > wildcard, with
    /// backtracking) and returns the first candidate whose value `accept`
    /// returns true for, with accepted = true. If candidates matched the path
    /// but none was accepted, returns the FIRST candidate in priority order
    /// with accepted = false (the caller answers 405 from it). None when no
    /// pattern matches the path at all.
    pub fn lookup<'t, 'p>(
        &'t self,
        path: &'p str,
        mut accept: impl FnMut(&'t T) -> bool,
    ) -> Option<Match<'t, 'p, T>> {
        let path = trim_root(path);
        if let Some(value) = self.exact(path)
            && accept(value)
        {
            return Some(Match {
                value,
                params: Vec::new(),
                accepted: true,
            });
        }
        // Not accepted (or not there): the walk offers that route first again and goes on
        // to the alternatives, exactly as without the table.
        self.walk(path, accept)
    }

    /// The value of the route whose whole text is `path` (without its leading `/`). Inlined
    /// into each lookup: a router looks up from two places (routing and `reads_body`), and a
    /// call here would cost every request.
    #[inline(always)]
    fn exact(&self, path: &str) -> Option<&T> {
        let at = self
            .exact
            .binary_search_by(|(text, _)| by_length(text, path.as_bytes()))
            .ok()?;
        Some(&self.routes[self.exact[at].1].value)
    }

    /// [`Tree::lookup`] by walking the tree alone; `path` is without its leading `/`.
    fn walk<'t, 'p>(
        &'t self,
        path: &'p str,
        accept: impl FnMut(&'t T) -> bool,
    ) -> Option<Match<'t, 'p, T>> {
        let mut search = Search {
            routes: &self.routes,
            path,
            accept,
            params: Vec::new(),
            first: None,
            found: None,
        };
        search.node(&self.root, 0);
        if let Some(index) = search.found {
            return Some(Match {
                value: &self.routes[index].value,
                params: search.params,
                accepted: true,
            });
        }
        search.first.map(|(index, params)| Match {
            value: &self.routes[index].value,
            params,
            accepted: false,
        })
    }

    /// Every stored value (the tests check the tree's contents with it).
    #[cfg(test)]
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.routes.iter().map(|route| &route.value)
    }
}

impl Node {
    /// The slot that holds the route index for these pieces, creating and
    /// splitting nodes on the way.
    fn slot(&mut self, pieces: &[Piece<'_>]) -> &mut Option<usize> {
        let mut node = self;
        for piece in pieces {
            node = match piece {
                Piece::Static(text) => node.static_descendant(text),
                Piece::Param(_) => node.param.get_or_insert_default(),
                Piece::Wildcard => return &mut node.wildcard,
            };
        }
        &mut node.leaf
    }

    /// The node that ends after `text` below this one, splitting an existing
    /// child where it shares only part of its prefix with `text` so that each
    /// node keeps at most one static child per first byte.
    fn static_descendant(&mut self, mut text: &[u8]) -> &mut Node {
        let mut node = self;
        while let Some(&first) = text.first() {
            let Some(position) = node.index.iter().position(|&byte| byte == first) else {
                let position = node.statics.len();
                node.index.push(first);
                node.statics.push(Node {
                    prefix: text.to_vec(),
                    ..Node::default()
                });
                return &mut node.statics[position];
            };
            let child = &mut node.statics[position];
            let common = child
                .prefix
                .iter()
                .zip(text)
                .take_while(|(a, b)| a == b)
                .count();
            if common < child.prefix.len() {
                child.split(common);
            }
            text = &text[common..];
            node = child;
        }
        node
    }

    /// Keeps the first `at` bytes here and moves the rest, with everything
    /// hanging below, into a single new child.
    fn split(&mut self, at: usize) {
        let tail = Node {
            prefix: self.prefix.split_off(at),
            index: std::mem::take(&mut self.index),
            statics: std::mem::take(&mut self.statics),
            param: self.param.take(),
            wildcard: self.wildcard.take(),
            leaf: self.leaf.take(),
        };
        self.index = vec![tail.prefix[0]];
        self.statics = vec![tail];
    }

    /// The static child whose whole prefix starts `rest`, if any; at most one
    /// can, because children differ in their first byte.
    fn child(&self, rest: &[u8]) -> Option<&Node> {
        let first = *rest.first()?;
        let position = self.index.iter().position(|&byte| byte == first)?;
        let child = &self.statics[position];
        let head = rest.get(..child.prefix.len())?;
        uniflow_value::eq_bytes(head, &child.prefix).then_some(child)
    }

    /// Whether a failure below this node still leaves other candidates here.
    fn branches(&self) -> bool {
        self.param.is_some() || self.wildcard.is_some()
    }
}

/// The state of one lookup, kept in one place so the recursive walk passes
/// only the node and the position.
struct Search<'t, 'p, T, F> {
    routes: &'t [Route<T>],
    /// The request path without its leading `/`, matching how patterns are
    /// stored.
    path: &'p str,
    accept: F,
    /// Values captured on the way down, with names filled in only when a
    /// route is reached because names belong to routes, not to nodes.
    params: Vec<(&'t str, &'p str)>,
    /// The first candidate met, returned unaccepted when nothing is accepted.
    first: Option<(usize, Vec<(&'t str, &'p str)>)>,
    found: Option<usize>,
}

impl<'t, 'p, T, F> Search<'t, 'p, T, F>
where
    F: FnMut(&'t T) -> bool,
{
    /// Searches below `node`, whose text has been matched up to byte `pos`
    /// of the path, and reports whether an accepted route was found.
    ///
    /// Only nodes with a parameter or wildcard alternative get a stack frame;
    /// plain static runs are walked in a loop because a failure there has
    /// nothing to fall back to. The depth is thus bounded by the branch
    /// points on one path through the tree, which in practice is one or two
    /// per path segment, and never by the length of the request path.
    fn node(&mut self, mut node: &'t Node, mut pos: usize) -> bool {
        let path = self.path;
        let bytes = path.as_bytes();
        while !node.branches() {
            if pos == bytes.len() {
                return node.leaf.is_some_and(|leaf| self.visit(leaf));
            }
            let Some(child) = node.child(&bytes[pos..]) else {
                return false;
            };
            pos += child.prefix.len();
            node = child;
        }
        if pos == bytes.len() {
            if let Some(leaf) = node.leaf
                && self.visit(leaf)
            {
                return true;
            }
        } else if let Some(child) = node.child(&bytes[pos..])
            && self.node(child, pos + child.prefix.len())
        {
            return true;
        }
        if let Some(param) = node.param.as_deref() {
            // A parameter ends at the next `/`, so it needs no search of its
            // own and a failure below it has no other length to try. Slicing
            // cannot split a character: `pos` follows whole pattern text,
            // which is valid UTF-8, and `end` sits at a `/` or the end.
            let end = bytes[pos..]
                .iter()
                .position(|&byte| byte == b'/')
                .map_or(bytes.len(), |offset| pos + offset);
            if end > pos {
                self.params.push(("", &path[pos..end]));
                if self.node(param, end) {
                    return true;
                }
                self.params.pop();
            }
        }
        if let Some(wildcard) = node.wildcard {
            self.params.push(("*", &path[pos..]));
            if self.visit(wildcard) {
                return true;
            }
            self.params.pop();
        }
        false
    }

    /// Offers one candidate route to `accept`, remembering it as the answer
    /// for a 405 if it is the first one met.
    fn visit(&mut self, index: usize) -> bool {
        let routes = self.routes;
        let route = &routes[index];
        if (self.accept)(&route.value) {
            name(&mut self.params, route);
            self.found = Some(index);
            return true;
        }
        if self.first.is_none() {
            let mut params = self.params.clone();
            name(&mut params, route);
            self.first = Some((index, params));
        }
        false
    }
}

/// Labels captured values with the names of the route they matched; each
/// parameter and wildcard on the way to a route pushed exactly one value.
fn name<'t, T>(params: &mut [(&'t str, &str)], route: &'t Route<T>) {
    for (param, name) in params.iter_mut().zip(&route.names) {
        param.0 = name;
    }
}

/// The text of a pattern made of static text alone (`""` for the root), or
/// `None` when it has a parameter or a wildcard.
fn static_text<'a>(pieces: &'a [Piece<'_>]) -> Option<&'a [u8]> {
    match pieces {
        [] => Some(&[]),
        [Piece::Static(text)] => Some(text),
        _ => None,
    }
}

/// The order of the exact-match table: by length, then by bytes, so that most
/// comparisons of a search stop at the lengths.
fn by_length(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Drops the leading `/`, which also makes an empty path equal to `/` and a
/// path without the slash equal to one with it, without allocating.
fn trim_root(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path)
}

/// Splits a pattern into static text, parameters and an optional final
/// wildcard, or explains why it is invalid.
fn parse(pattern: &str) -> Result<Vec<Piece<'_>>, String> {
    let body = trim_root(pattern);
    // Error positions refer to the pattern as written, slash included.
    let offset = pattern.len() - body.len();
    let bytes = body.as_bytes();
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'\\' if bytes.get(i + 1) == Some(&b':') => {
                text.push(b':');
                i += 2;
            }
            b':' => {
                let start = i + 1;
                let end = bytes[start..]
                    .iter()
                    .position(|&byte| byte == b'/')
                    .map_or(bytes.len(), |length| start + length);
                if end == start {
                    return Err(format!(
                        "the ':' at byte {} has no parameter name",
                        offset + i
                    ));
                }
                flush(&mut pieces, &mut text);
                pieces.push(Piece::Param(&body[start..end]));
                i = end;
            }
            b'*' => {
                // The wildcard has already taken the rest of any path, so
                // whatever the pattern says after it could never match.
                flush(&mut pieces, &mut text);
                pieces.push(Piece::Wildcard);
                return Ok(pieces);
            }
            _ => {
                text.push(byte);
                i += 1;
            }
        }
    }
    flush(&mut pieces, &mut text);
    Ok(pieces)
}

/// Ends the static text gathered so far, if there is any.
fn flush(pieces: &mut Vec<Piece<'_>>, text: &mut Vec<u8>) {
    if !text.is_empty() {
        pieces.push(Piece::Static(std::mem::take(text)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Params = &'static [(&'static str, &'static str)];
    /// The pattern a path should resolve to and the parameters it captures.
    type Expected = Option<(&'static str, Params)>;
    /// As `Expected`, plus whether the resolved route is the accepted one.
    type Candidate = Option<(&'static str, Params, bool)>;

    /// Builds a tree whose values are the patterns that created them and
    /// checks which pattern, with which parameters, `path` resolves to.
    fn check(patterns: &[&str], path: &str, expected: Expected) {
        let mut tree = Tree::<String>::new();
        for pattern in patterns {
            let value = tree.entry(pattern).unwrap();
            if value.is_empty() {
                *value = (*pattern).to_owned();
            }
        }
        let found = tree.lookup(path, |_| true);
        if let Some(found) = &found {
            assert!(found.accepted, "patterns {patterns:?}, path {path:?}");
        }
        let actual = found.map(|found| (found.value.as_str(), found.params));
        let expected = expected.map(|(pattern, params)| (pattern, params.to_vec()));
        assert_eq!(actual, expected, "patterns {patterns:?}, path {path:?}");
    }

    #[test]
    fn matches() {
        for (patterns, path, expected) in match_cases() {
            check(patterns, path, expected);
        }
    }

    /// Patterns, a path, and the pattern it resolves to.
    fn match_cases() -> Vec<(&'static [&'static str], &'static str, Expected)> {
        let users: &[&str] = &["/users/:id", "/users/new"];
        let backtrack: &[&str] = &["/a/b/c/d", "/a/:x/c/e", "/*"];
        let files: &[&str] = &["/files/*", "/files/:name"];
        let versions: &[&str] = &["/v:version/x", "/v1/x"];
        vec![
            // The root and normalisation of paths and patterns.
            (&["/"], "/", Some(("/", &[]))),
            (&["/"], "", Some(("/", &[]))),
            (&["/"], "/a", None),
            (&[""], "/", Some(("", &[]))),
            (
                &["/users/:id"],
                "users/42",
                Some(("/users/:id", &[("id", "42")])),
            ),
            (
                &["users/:id"],
                "/users/42",
                Some(("users/:id", &[("id", "42")])),
            ),
            (&["/a", "/b"], "/c", None),
            // Static text wins over a parameter, which needs at least one
            // character and never crosses a slash.
            (users, "/users/new", Some(("/users/new", &[]))),
            (users, "/users/42", Some(("/users/:id", &[("id", "42")]))),
            (
                users,
                "/users/newer",
                Some(("/users/:id", &[("id", "newer")])),
            ),
            (users, "/users/ne", Some(("/users/:id", &[("id", "ne")]))),
            (&["/users/:id"], "/users/42/x", None),
            (&["/users/:id"], "/users/", None),
            (&["/users/:id"], "/users", None),
            // Backtracking from a dead static branch.
            (
                &["/a/b/c", "/a/:x/d"],
                "/a/b/d",
                Some(("/a/:x/d", &[("x", "b")])),
            ),
            (
                &["/a/b/c", "/a/*"],
                "/a/b/x",
                Some(("/a/*", &[("*", "b/x")])),
            ),
            (
                &["/a/:x/b", "/a/*"],
                "/a/1/c",
                Some(("/a/*", &[("*", "1/c")])),
            ),
            (backtrack, "/a/b/c/d", Some(("/a/b/c/d", &[]))),
            (backtrack, "/a/b/c/e", Some(("/a/:x/c/e", &[("x", "b")]))),
            (backtrack, "/a/b/c/f", Some(("/*", &[("*", "a/b/c/f")]))),
            // Parameters starting mid-segment, and several parameters.
            (
                &["/v:version/x"],
                "/v2/x",
                Some(("/v:version/x", &[("version", "2")])),
            ),
            (&["/v:version/x"], "/v/x", None),
            (versions, "/v1/x", Some(("/v1/x", &[]))),
            (
                versions,
                "/v12/x",
                Some(("/v:version/x", &[("version", "12")])),
            ),
            (
                &["/orgs/:org/repos/:repo"],
                "/orgs/acme/repos/web",
                Some((
                    "/orgs/:org/repos/:repo",
                    &[("org", "acme"), ("repo", "web")],
                )),
            ),
            (
                &["/:a/:b/:c"],
                "/1/2/3",
                Some(("/:a/:b/:c", &[("a", "1"), ("b", "2"), ("c", "3")])),
            ),
            (
                &["/users/:id", "/users/:name/x"],
                "/users/1",
                Some(("/users/:id", &[("id", "1")])),
            ),
            (
                &["/users/:id", "/users/:name/x"],
                "/users/1/x",
                Some(("/users/:name/x", &[("name", "1")])),
            ),
            // Wildcards take the rest of the path, possibly empty.
            (
                &["/files/*"],
                "/files/a/b.txt",
                Some(("/files/*", &[("*", "a/b.txt")])),
            ),
            (&["/files/*"], "/files/", Some(("/files/*", &[("*", "")]))),
            (&["/files/*"], "/files", None),
            (&["/*"], "/", Some(("/*", &[("*", "")]))),
            (&["/*"], "", Some(("/*", &[("*", "")]))),
            (&["/*"], "/a/b", Some(("/*", &[("*", "a/b")]))),
            (
                &["/img*"],
                "/img/a.png",
                Some(("/img*", &[("*", "/a.png")])),
            ),
            (
                &["/files/*/ignored"],
                "/files/a/b",
                Some(("/files/*/ignored", &[("*", "a/b")])),
            ),
            (files, "/files/x", Some(("/files/:name", &[("name", "x")]))),
            (files, "/files/x/y", Some(("/files/*", &[("*", "x/y")]))),
            (files, "/files/", Some(("/files/*", &[("*", "")]))),
            (&["/files/", "/files/*"], "/files/", Some(("/files/", &[]))),
            // An escaped colon is plain text.
            (&["/a\\:b"], "/a:b", Some(("/a\\:b", &[]))),
            (&["/a\\:b"], "/a:c", None),
            (
                &["/time/12\\:00"],
                "/time/12:00",
                Some(("/time/12\\:00", &[])),
            ),
            (
                &["/ns\\::name"],
                "/ns:foo",
                Some(("/ns\\::name", &[("name", "foo")])),
            ),
            // A trailing slash is significant.
            (&["/a"], "/a/", None),
            (&["/a/"], "/a", None),
            (&["/a", "/a/"], "/a/", Some(("/a/", &[]))),
            (&["/a", "/a/"], "/a", Some(("/a", &[]))),
            // Multi-byte characters, including routes that share only the
            // first byte of one.
            (&["/é", "/è"], "/è", Some(("/è", &[]))),
            (&["/é", "/è"], "/é", Some(("/é", &[]))),
            (&["/é/:x", "/è"], "/é/ü", Some(("/é/:x", &[("x", "ü")]))),
            (
                &["/u/:name"],
                "/u/józef",
                Some(("/u/:name", &[("name", "józef")])),
            ),
        ]
    }

    /// What a lookup found, comparable: the value's address, the parameters and
    /// whether it was accepted.
    type Found<'t, 'p> = Option<(*const String, Vec<(&'t str, &'p str)>, bool)>;

    fn found<'t, 'p>(found: Option<Match<'t, 'p, String>>) -> Found<'t, 'p> {
        found.map(|m| (std::ptr::from_ref(m.value), m.params, m.accepted))
    }

    #[test]
    fn the_exact_table_agrees_with_the_walk() {
        // Which routes a lookup accepts: all, none, only those with parameters or a
        // wildcard (so a static route is found in the table and then refused), and
        // only static ones.
        let accepts: [fn(&String) -> bool; 4] = [
            |_| true,
            |_| false,
            |p| p.contains([':', '*']),
            |p| !p.contains([':', '*']),
        ];
        let cases = match_cases();
        let mut every_path: Vec<&str> = cases.iter().map(|(_, path, _)| *path).collect();
        every_path.extend(cases.iter().flat_map(|(patterns, _, _)| patterns.iter()));
        let mut union = Tree::<String>::new();
        let mut trees: Vec<Tree<String>> = Vec::new();
        for (patterns, _, _) in &cases {
            let mut tree = Tree::<String>::new();
            for pattern in *patterns {
                for tree in [&mut tree, &mut union] {
                    // The union may spell one pattern with two sets of names; the
                    // first spelling stays.
                    if let Ok(value) = tree.entry(pattern)
                        && value.is_empty()
                    {
                        *value = (*pattern).to_owned();
                    }
                }
            }
            trees.push(tree);
        }
        trees.push(union);
        let mut table_hits = 0;
        for tree in &trees {
            for path in &every_path {
                table_hits += usize::from(tree.exact(trim_root(path)).is_some());
                for accept in accepts {
                    assert_eq!(
                        found(tree.lookup(path, accept)),
                        found(tree.walk(trim_root(path), accept)),
                        "path {path:?} in a tree of {:?}",
                        tree.values().collect::<Vec<_>>()
                    );
                }
            }
        }
        // The comparison means something only if the table answers often.
        assert!(table_hits > 100, "the table answered {table_hits} lookups");
    }

    #[test]
    fn the_exact_table_holds_the_static_routes_only() {
        let mut tree = Tree::<String>::new();
        for pattern in [
            "/",
            "/ping",
            "ping",
            "/a\\:b",
            "/users/:id",
            "/files/*",
            "/v1/x/",
        ] {
            let value = tree.entry(pattern).unwrap();
            if value.is_empty() {
                *value = pattern.to_owned();
            }
        }
        let texts: Vec<&[u8]> = tree.exact.iter().map(|(text, _)| &**text).collect();
        assert_eq!(texts, [&b""[..], b"a:b", b"ping", b"v1/x/"]);
        assert_eq!(tree.exact("ping").map(String::as_str), Some("/ping"));
        assert_eq!(tree.exact("users/1"), None);
        assert_eq!(tree.exact("").map(String::as_str), Some("/"));
    }

    #[derive(Default)]
    struct Endpoint {
        pattern: &'static str,
        methods: Vec<&'static str>,
    }

    #[test]
    fn accept() {
        let mut tree = Tree::<Endpoint>::new();
        for (pattern, method) in [
            ("/users/new", "GET"),
            ("/users/:id", "POST"),
            ("/users/*", "PUT"),
            ("/users/new", "HEAD"),
        ] {
            let endpoint = tree.entry(pattern).unwrap();
            endpoint.pattern = pattern;
            endpoint.methods.push(method);
        }
        let cases: &[(&str, &str, Candidate)] = &[
            ("/users/new", "GET", Some(("/users/new", &[], true))),
            ("/users/new", "HEAD", Some(("/users/new", &[], true))),
            (
                "/users/new",
                "POST",
                Some(("/users/:id", &[("id", "new")], true)),
            ),
            (
                "/users/new",
                "PUT",
                Some(("/users/*", &[("*", "new")], true)),
            ),
            ("/users/new", "DELETE", Some(("/users/new", &[], false))),
            (
                "/users/7",
                "DELETE",
                Some(("/users/:id", &[("id", "7")], false)),
            ),
            (
                "/users/7/x",
                "DELETE",
                Some(("/users/*", &[("*", "7/x")], false)),
            ),
            (
                "/users/7/x",
                "PUT",
                Some(("/users/*", &[("*", "7/x")], true)),
            ),
            ("/nope", "GET", None),
        ];
        for (path, method, expected) in cases {
            let found = tree.lookup(path, |endpoint| endpoint.methods.contains(method));
            let actual = found.map(|found| (found.value.pattern, found.params, found.accepted));
            let expected =
                expected.map(|(pattern, params, accepted)| (pattern, params.to_vec(), accepted));
            assert_eq!(actual, expected, "path {path:?}, method {method}");
        }
    }

    #[test]
    fn entry_is_shared() {
        let mut tree = Tree::<Vec<u32>>::new();
        let cases: &[(&str, u32)] = &[
            ("/a/:id", 1),
            ("/a/:id", 2),
            ("a/:id", 3),
            ("/files/*", 4),
            ("/files/*rest", 5),
            ("/b", 6),
        ];
        for (pattern, value) in cases {
            tree.entry(pattern).unwrap().push(*value);
        }
        let values: Vec<&Vec<u32>> = tree.values().collect();
        assert_eq!(values, [&vec![1, 2, 3], &vec![4, 5], &vec![6]]);
        assert_eq!(tree.lookup("/a/9", |_| true).unwrap().value, &vec![1, 2, 3]);
    }

    #[test]
    fn pattern_errors() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&[], "/a/:/b", "the ':' at byte 3 has no parameter name"),
            (&[], "/a/:", "the ':' at byte 3 has no parameter name"),
            (&[], ":", "the ':' at byte 0 has no parameter name"),
            (
                &["/u/:id"],
                "/u/:name",
                "parameter names [\"name\"] differ from [\"id\"] used by \"/u/:id\"",
            ),
            (
                &["/:a/:b"],
                "/:b/:a",
                "parameter names [\"b\", \"a\"] differ from [\"a\", \"b\"] used by \"/:a/:b\"",
            ),
        ];
        for (earlier, pattern, message) in cases {
            let mut tree = Tree::<u8>::new();
            for earlier in *earlier {
                tree.entry(earlier).unwrap();
            }
            let error = tree.entry(pattern).unwrap_err();
            let expected = PatternError {
                pattern: (*pattern).to_owned(),
                message: (*message).to_owned(),
            };
            assert_eq!(error, expected);
            assert_eq!(
                error.to_string(),
                format!("invalid route pattern {pattern:?}: {message}")
            );
            // A rejected pattern must leave the earlier routes untouched.
            assert_eq!(tree.values().count(), earlier.len());
        }
        let mut tree = Tree::<u8>::new();
        tree.entry("/u/:id").unwrap();
        assert!(tree.entry("/u/:name").is_err());
        assert_eq!(tree.lookup("/u/1", |_| true).unwrap().params, [("id", "1")]);
    }

    /// Checks the radix shape: static children have non-empty prefixes,
    /// distinct first bytes, and an index that agrees with them.
    fn assert_radix(node: &Node) -> usize {
        let firsts: Vec<u8> = node.statics.iter().map(|child| child.prefix[0]).collect();
        assert_eq!(node.index, firsts);
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), firsts.len());
        let below = node.statics.iter().chain(node.param.as_deref());
        1 + below.map(assert_radix).max().unwrap_or(0)
    }

    #[test]
    fn thousand_routes() {
        let mut tree = Tree::<String>::new();
        for i in 0..1000 {
            let pattern = match i % 4 {
                0 => format!("/api/v{}/items{i}", i % 7),
                1 => format!("/api/v{}/items{i}/:id", i % 7),
                2 => format!("/users{i}/:user/posts/:post"),
                _ => format!("/static{i}/*"),
            };
            let value = tree.entry(&pattern).unwrap();
            *value = pattern;
        }
        assert_eq!(tree.values().count(), 1000);
        let depth = assert_radix(&tree.root);
        assert!(depth < 20, "depth {depth}");
        let cases: &[(&str, Expected)] = &[
            ("/api/v0/items0", Some(("/api/v0/items0", &[]))),
            ("/api/v2/items996", Some(("/api/v2/items996", &[]))),
            (
                "/api/v1/items1/abc",
                Some(("/api/v1/items1/:id", &[("id", "abc")])),
            ),
            ("/api/v1/items99/x", None),
            (
                "/users998/ann/posts/3",
                Some((
                    "/users998/:user/posts/:post",
                    &[("user", "ann"), ("post", "3")],
                )),
            ),
            (
                "/static999/css/site.css",
                Some(("/static999/*", &[("*", "css/site.css")])),
            ),
            ("/static1000/x", None),
            ("/api/v0/items", None),
        ];
        for (path, expected) in cases {
            let actual = tree
                .lookup(path, |_| true)
                .map(|found| (found.value.as_str(), found.params));
            let expected = expected.map(|(pattern, params)| (pattern, params.to_vec()));
            assert_eq!(actual, expected, "path {path:?}");
        }
    }
}
