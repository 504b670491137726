//! What every backend does alike. Each `async fn` here runs once per backend (see
//! `on_every_backend!` at the bottom).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use uniflow_spec::{Chart, EnvValue, PortRef, ResourceKind, Secret, Spec};
use uniflow_store::{Change, Error, Event, Example, Op};
use uniflow_value::Value;

use crate::support::{Fixture, names, next, on_every_backend, quiet, spec};

fn map<V: Into<Value>, const N: usize>(entries: [(&'static str, V); N]) -> Value {
    Value::Map(entries.into())
}

fn secret(name: &str, data: Value) -> Secret {
    Secret {
        name: Some(name.into()),
        data,
        ..Secret::default()
    }
}

fn chart(name: &str) -> Chart {
    let mut inner = spec("inner", "default");
    inner.kind = "snippet".into();
    inner.fields = [("code", "{{ .GREETING }}")].into();
    Chart {
        name: Some(name.into()),
        namespace: "default".into(),
        annotations: [("owner".to_owned(), "me".to_owned())].into(),
        specs: vec![inner],
        ports: [(
            "in".to_owned(),
            vec![PortRef {
                id: None,
                name: Some("inner".into()),
                port: "in".into(),
            }],
        )]
        .into(),
        env: [(
            "GREETING".to_owned(),
            vec![EnvValue {
                id: None,
                name: Some("words".into()),
                value: "{{ .hello }}".into(),
            }],
        )]
        .into(),
        ..Chart::default()
    }
}

async fn every_kind_round_trips(f: &Fixture) {
    let store = &f.store;
    let mut s = spec("a", "");
    s.fields = [("code", Value::from("hi")), ("n", Value::Int(3))].into();
    s.env = [(
        "X".to_owned(),
        vec![EnvValue {
            id: None,
            name: None,
            value: Value::Int(1),
        }],
    )]
    .into();
    let specs = store.apply(vec![s, spec("b", "other")]).await.unwrap();
    assert_eq!(
        specs[0].namespace, "default",
        "a missing namespace is `default`"
    );
    let data = map([("password", "hunter2")]);
    let secrets = store
        .apply(vec![secret("db", data), secret("n", Value::Int(7))])
        .await
        .unwrap();
    let charts = store.apply(vec![chart("greet")]).await.unwrap();

    assert_eq!(store.load::<Spec>(&[]).await.unwrap(), specs);
    assert_eq!(store.load::<Secret>(&[]).await.unwrap(), secrets);
    assert_eq!(store.load::<Chart>(&[]).await.unwrap(), charts);
    // Names are unique per kind, not across kinds.
    store.apply(vec![secret("a", Value::Int(0))]).await.unwrap();
    assert_eq!(store.load::<Secret>(&[]).await.unwrap().len(), 3);
    // What could not be read back is not stored: here a secret without data.
    let err = store
        .apply(vec![secret("b", Value::Int(0)), secret("c", Value::Null)])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret `c` cannot be stored: field `data`: missing required field"
    );
    let err = store.apply(vec![Chart::default()]).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_eq!(store.load::<Secret>(&[]).await.unwrap().len(), 3);

    let gone = store
        .delete::<Secret>(&[Example::by_name("default", "db")])
        .await
        .unwrap();
    assert_eq!(gone, secrets[..1]);
    assert_eq!(
        store.delete::<Chart>(&[]).await.unwrap(),
        charts,
        "no example deletes every chart"
    );
    assert!(store.load::<Chart>(&[]).await.unwrap().is_empty());
    assert_eq!(
        store.load::<Spec>(&[]).await.unwrap(),
        specs,
        "other kinds stay"
    );
}

async fn apply_assigns_v7_ids_and_upserts_by_name(f: &Fixture) {
    let store = &f.store;
    let first = store
        .apply(vec![spec("a", "default"), spec("a", "other")])
        .await
        .unwrap();
    let id = first[0].id.clone().unwrap();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    let mut changed = spec("a", "default");
    changed.kind = "snippet".into();
    let second = store.apply(vec![changed]).await.unwrap();
    assert_eq!(second[0].id.as_deref(), Some(id.as_str()));
    let loaded = store
        .load::<Spec>(&[Example::in_namespace("default")])
        .await
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].kind, "snippet");
    assert_eq!(store.load::<Spec>(&[]).await.unwrap().len(), 2);
    // By id, whatever the name: the stored spec is renamed.
    let mut by_id = spec("renamed", "other");
    by_id.id.clone_from(&first[1].id);
    store.apply(vec![by_id]).await.unwrap();
    let other = store
        .load::<Spec>(&[Example::in_namespace("other")])
        .await
        .unwrap();
    assert_eq!(names(&other), ["renamed"]);
    assert_eq!(other[0].id, first[1].id);
}

async fn duplicate_names_in_one_batch_are_refused_whole(f: &Fixture) {
    let store = &f.store;
    store.apply(vec![spec("kept", "default")]).await.unwrap();
    let err = store
        .apply(vec![
            spec("a", "default"),
            spec("b", "default"),
            spec("a", "default"),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::DuplicateInBatch {
            kind: ResourceKind::Specs,
            namespace: "default".into(),
            name: "a".into(),
            first: 0,
            second: 2,
        }
    );
    assert!(err.to_string().starts_with("duplicated key"), "{err}");
    assert_eq!(names(&store.load::<Spec>(&[]).await.unwrap()), ["kept"]);
    // The same name in two namespaces is two specs.
    store
        .apply(vec![spec("a", "default"), spec("a", "other")])
        .await
        .unwrap();
    assert_eq!(store.load::<Spec>(&[]).await.unwrap().len(), 3);
}

async fn a_new_id_with_a_taken_name_is_refused(f: &Fixture) {
    let store = &f.store;
    store
        .apply(vec![spec("a", "default"), spec("b", "default")])
        .await
        .unwrap();
    let mut with_id = spec("b", "default");
    with_id.id = Some("x".into());
    // With a new resource before it, to show the whole batch is refused.
    let err = store
        .apply(vec![spec("c", "default"), with_id])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateName { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "duplicated key: a spec named `b` already exists in namespace `default`"
    );
    assert_eq!(names(&store.load::<Spec>(&[]).await.unwrap()), ["a", "b"]);
}

async fn renaming_by_id_onto_a_taken_name_is_refused(f: &Fixture) {
    let store = &f.store;
    let stored = store
        .apply(vec![spec("a", "default"), spec("b", "default")])
        .await
        .unwrap();
    let mut renamed = spec("b", "default");
    renamed.id.clone_from(&stored[0].id);
    let err = store.apply(vec![renamed]).await.unwrap_err();
    assert_eq!(
        err,
        Error::DuplicateName {
            kind: ResourceKind::Specs,
            namespace: "default".into(),
            name: "b".into(),
        }
    );
    assert_eq!(names(&store.load::<Spec>(&[]).await.unwrap()), ["a", "b"]);
    // Renaming onto a free name frees the old one.
    let mut renamed = spec("c", "default");
    renamed.id.clone_from(&stored[0].id);
    store.apply(vec![renamed]).await.unwrap();
    store.apply(vec![spec("a", "default")]).await.unwrap();
    assert_eq!(
        names(&store.load::<Spec>(&[]).await.unwrap()),
        ["c", "b", "a"]
    );
}

async fn one_id_twice_in_a_batch_is_refused(f: &Fixture) {
    let store = &f.store;
    let stored = store.apply(vec![spec("a", "default")]).await.unwrap();
    let id = stored[0].id.clone().unwrap();
    let mut by_id = spec("renamed", "default");
    by_id.id = Some(id.clone());
    // By name, the second spec is the same stored spec as the first, by id.
    let err = store
        .apply(vec![by_id, spec("a", "default")])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::DuplicateId {
            kind: ResourceKind::Specs,
            id,
            first: 0,
            second: 1
        }
    );
    assert_eq!(names(&store.load::<Spec>(&[]).await.unwrap()), ["a"]);
}

/// Upstream's MongoDB store swapped with `$set`, so a field removed from a spec survived.
async fn a_swap_replaces_the_whole_resource(f: &Fixture) {
    let store = &f.store;
    let mut full = spec("a", "default");
    full.fields = [("code", "hi"), ("language", "text")].into();
    full.annotations = [("x".to_owned(), "y".to_owned())].into();
    store.apply(vec![full]).await.unwrap();
    let mut lean = spec("a", "default");
    lean.fields = [("code", "bye")].into();
    store.apply(vec![lean.clone()]).await.unwrap();
    let loaded = store.load::<Spec>(&[]).await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].fields, lean.fields);
    assert!(loaded[0].annotations.is_empty());

    let data = map([("user", "u"), ("password", "p")]);
    store.apply(vec![secret("db", data)]).await.unwrap();
    store
        .apply(vec![secret("db", map([("user", "v")]))])
        .await
        .unwrap();
    let secrets = store.load::<Secret>(&[]).await.unwrap();
    assert_eq!(secrets[0].data, map([("user", "v")]));
}

async fn delete_takes_what_any_example_matches(f: &Fixture) {
    let store = &f.store;
    let stored = store
        .apply(vec![
            spec("a", "one"),
            spec("b", "one"),
            spec("c", "two"),
            spec("d", "two"),
            spec("e", "three"),
        ])
        .await
        .unwrap();
    let id_of = |i: usize| stored[i].id.clone().unwrap();
    // Nothing matches: nothing deleted, nothing emitted.
    assert!(
        store
            .delete::<Spec>(&[Example::by_name("one", "c")])
            .await
            .unwrap()
            .is_empty()
    );
    // Any example: by id, and by name; returned in stored order, not example order.
    let gone = store
        .delete::<Spec>(&[Example::by_name("two", "d"), Example::by_id(id_of(0))])
        .await
        .unwrap();
    assert_eq!(names(&gone), ["a", "d"]);
    // An example's fields must all match.
    let none = Example {
        id: Some(id_of(1)),
        namespace: Some("two".into()),
        name: None,
    };
    assert!(store.delete::<Spec>(&[none]).await.unwrap().is_empty());
    // Empty fields are no fields: this example is the namespace.
    let ns = Example {
        id: Some(String::new()),
        namespace: Some("one".into()),
        name: Some(String::new()),
    };
    assert_eq!(names(&store.delete::<Spec>(&[ns]).await.unwrap()), ["b"]);
    assert_eq!(names(&store.load::<Spec>(&[]).await.unwrap()), ["c", "e"]);
    assert_eq!(names(&store.delete::<Spec>(&[]).await.unwrap()), ["c", "e"]);
}

/// More examples than one query takes (100): split, merged, in stored order, each once.
async fn many_examples_load_in_stored_order(f: &Fixture) {
    let store = &f.store;
    let stored = store
        .apply(
            (0..250)
                .map(|i| spec(&format!("s{i}"), "default"))
                .collect(),
        )
        .await
        .unwrap();
    let mut examples: Vec<Example> = stored
        .iter()
        .rev()
        .map(|s| Example::by_id(s.id.clone().unwrap()))
        .collect();
    examples.push(Example::by_name("default", "s3"));
    examples.push(Example::by_name("default", "missing"));
    assert_eq!(store.load::<Spec>(&examples).await.unwrap(), stored);
    let deleted = store.delete::<Spec>(&examples[..120]).await.unwrap();
    assert_eq!(deleted, stored[130..]);
}

fn ev(op: Op, kind: ResourceKind, id: &Option<String>, ns: &str, name: &str) -> Change {
    Change::Event(Event {
        op,
        kind,
        id: id.clone().unwrap(),
        namespace: ns.into(),
        name: Some(name.into()),
        written: None,
    })
}

async fn watchers_see_store_swap_delete_in_order(f: &Fixture) {
    let store = &f.store;
    let mut all = store.watch(None).await.unwrap();
    let mut other = store.watch(Some("other")).await.unwrap();
    let specs = store
        .apply(vec![spec("a", "default"), spec("b", "other")])
        .await
        .unwrap();
    // A swap of an identical resource still emits one, as upstream's did.
    store.apply(vec![spec("a", "default")]).await.unwrap();
    let secrets = store.apply(vec![secret("s", Value::Int(1))]).await.unwrap();
    store
        .delete::<Spec>(&[Example::in_namespace("other")])
        .await
        .unwrap();
    let (a, b, s) = (&specs[0].id, &specs[1].id, &secrets[0].id);
    let expected = [
        ev(Op::Store, ResourceKind::Specs, a, "default", "a"),
        ev(Op::Store, ResourceKind::Specs, b, "other", "b"),
        ev(Op::Swap, ResourceKind::Specs, a, "default", "a"),
        ev(Op::Store, ResourceKind::Secrets, s, "default", "s"),
        ev(Op::Delete, ResourceKind::Specs, b, "other", "b"),
    ];
    for e in &expected {
        assert_eq!(&next(&mut all).await, e);
    }
    assert!(quiet(&mut all).await, "one event per resource changed");
    assert_eq!(next(&mut other).await, expected[1]);
    assert_eq!(next(&mut other).await, expected[4]);
    assert!(quiet(&mut other).await);
    // A refused batch emits nothing.
    store
        .apply(vec![spec("x", "default"), spec("x", "default")])
        .await
        .unwrap_err();
    assert!(quiet(&mut all).await);
}

/// A big batch keeps its order in the log too.
async fn a_batch_is_watched_in_batch_order(f: &Fixture) {
    let store = &f.store;
    let mut watch = store.watch(Some("default")).await.unwrap();
    let batch: Vec<Spec> = (0..300)
        .map(|i| spec(&format!("s{i}"), "default"))
        .collect();
    let stored = store.apply(batch).await.unwrap();
    for s in &stored {
        let Change::Event(e) = next(&mut watch).await else {
            panic!("300 events fit every backend's buffer");
        };
        assert_eq!((e.op, Some(&e.id)), (Op::Store, s.id.as_ref()));
    }
}

/// A watcher further behind than the store keeps events for (4096 in memory, 10,000 rows of
/// log in SQL) is told to reload, then goes on with new events.
async fn a_watcher_far_behind_resyncs(f: &Fixture) {
    let store = &f.store;
    let mut watch = store.watch(None).await.unwrap();
    store
        .apply(
            (0..12_000)
                .map(|i| spec(&format!("s{i}"), "default"))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut watch).await, Change::Resync);
    let stored = store.apply(vec![spec("late", "default")]).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        ev(
            Op::Store,
            ResourceKind::Specs,
            &stored[0].id,
            "default",
            "late"
        )
    );
}

/// Another `Store` on the same data (another process) sees this one's changes through watch,
/// and an apply racing another one either lands whole or fails whole.
async fn another_store_shares_data_and_events(f: &Fixture) {
    let Some(second) = f.reopen().await else {
        return;
    };
    let mut watch = second.watch(None).await.unwrap();
    let mut stored = Vec::new();
    for round in 0..5 {
        // The watcher waits (polling, or listening) before the change is made.
        let waiting = tokio::spawn(async move {
            let change = next(&mut watch).await;
            (change, Instant::now(), watch)
        });
        tokio::time::sleep(Duration::from_millis(60)).await;
        let name = format!("s{round}");
        let start = Instant::now();
        let one = f.store.apply(vec![spec(&name, "default")]).await.unwrap();
        let (change, at, back) = waiting.await.unwrap();
        watch = back;
        let expected = ev(Op::Store, ResourceKind::Specs, &one[0].id, "default", &name);
        assert_eq!(change, expected);
        let seen = at.duration_since(start);
        eprintln!(
            "{}: another store saw the change {seen:?} after the apply began",
            f.url
        );
        assert!(seen < Duration::from_secs(1), "{seen:?}");
        stored.extend(one);
    }
    assert_eq!(second.load::<Spec>(&[]).await.unwrap(), stored);

    // Two batches naming the same 200 resources with different ids, at once: whatever the
    // interleaving, one lands whole and the other is refused whole.
    let batch = |tag: &str| -> Vec<Spec> {
        (0..200)
            .map(|i| {
                let mut s = spec(&format!("r{i}"), "race");
                s.id = Some(format!("{tag}-{i}"));
                s
            })
            .collect()
    };
    let (one, two) = tokio::join!(f.store.apply(batch("one")), second.apply(batch("two")));
    let ((Ok(_), Err(failed)) | (Err(failed), Ok(_))) = (&one, &two) else {
        panic!("exactly one batch lands: {one:?} / {two:?}")
    };
    assert!(failed.to_string().starts_with("duplicated key"), "{failed}");
    let race = f
        .store
        .load::<Spec>(&[Example::in_namespace("race")])
        .await
        .unwrap();
    let tags: HashSet<&str> = race
        .iter()
        .map(|s| s.id.as_deref().unwrap().split('-').next().unwrap())
        .collect();
    assert_eq!((race.len(), tags.len()), (200, 1), "{tags:?}");
}

/// Lookups go through an index; at 20,000 specs every upsert and refusal must still find
/// the right spec.
async fn upserts_and_refusals_stay_right_at_20k_specs(f: &Fixture) {
    const N: usize = 20_000;
    let store = &f.store;
    let batch: Vec<Spec> = (0..N)
        .map(|i| spec(&format!("s{i}"), if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    let start = Instant::now();
    let stored = store.apply(batch).await.unwrap();
    eprintln!("{}: applied {N} specs in {:?}", f.url, start.elapsed());
    assert_eq!(
        store
            .load::<Spec>(&[Example::in_namespace("even")])
            .await
            .unwrap()
            .len(),
        N / 2
    );
    let ids: HashSet<_> = stored.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids.len(), N);

    // Upsert by name (no id): keeps the stored id and the stored position.
    let mut by_name = spec("s4000", "even");
    by_name.kind = "snippet".into();
    let again = store.apply(vec![by_name]).await.unwrap();
    assert_eq!(again[0].id, stored[4000].id);
    // Upsert by id: replaces that spec, whatever its name was.
    let mut by_id = spec("t7001", "odd");
    by_id.id.clone_from(&stored[7001].id);
    store.apply(vec![by_id]).await.unwrap();
    let all = store.load::<Spec>(&[]).await.unwrap();
    assert_eq!(all.len(), N);
    assert_eq!(all[4000].kind, "snippet");
    assert_eq!(all[7001].name.as_deref(), Some("t7001"));
    // The old name is free again and the new one is taken.
    store.apply(vec![spec("s7001", "odd")]).await.unwrap();
    let mut clash = spec("t7001", "odd");
    clash.id = Some("new".into());
    assert!(matches!(
        store.apply(vec![clash]).await,
        Err(Error::DuplicateName { .. })
    ));
    // A duplicate at the end of a large batch is found, and nothing of the batch stored.
    let mut batch: Vec<Spec> = (0..N).map(|i| spec(&format!("u{i}"), "even")).collect();
    batch.push(spec("u123", "even"));
    assert_eq!(
        store.apply(batch).await.err(),
        Some(Error::DuplicateInBatch {
            kind: ResourceKind::Specs,
            namespace: "even".into(),
            name: "u123".into(),
            first: 123,
            second: N,
        })
    );
    assert_eq!(store.load::<Spec>(&[]).await.unwrap().len(), N + 1);
}

/// Values come back as they went in, as far as JSON holds them.
async fn values_survive_the_store(f: &Fixture) {
    let store = &f.store;
    let data = map::<Value, 5>([
        (
            "list",
            Value::from(vec![Value::Int(-1), Value::Bool(true), Value::Null]),
        ),
        ("float", Value::Float(1.5)),
        ("big", Value::Uint(u64::MAX)),
        ("nested", map([("k", "v")])),
        ("text", "ünïcode \"quoted\"\n".into()),
    ]);
    store.apply(vec![secret("v", data.clone())]).await.unwrap();
    let back = store.load::<Secret>(&[]).await.unwrap();
    assert_eq!(back[0].data, data);
    let annotations: BTreeMap<String, String> =
        [("a".to_owned(), "'; DROP TABLE resources; --".to_owned())].into();
    let mut s = spec("it's", "name\"space");
    s.annotations = annotations.clone();
    store.apply(vec![s]).await.unwrap();
    let back = store
        .load::<Spec>(&[Example::by_name("name\"space", "it's")])
        .await
        .unwrap();
    assert_eq!(back[0].annotations, annotations);
}

on_every_backend!(
    every_kind_round_trips,
    apply_assigns_v7_ids_and_upserts_by_name,
    duplicate_names_in_one_batch_are_refused_whole,
    a_new_id_with_a_taken_name_is_refused,
    renaming_by_id_onto_a_taken_name_is_refused,
    one_id_twice_in_a_batch_is_refused,
    a_swap_replaces_the_whole_resource,
    delete_takes_what_any_example_matches,
    many_examples_load_in_stored_order,
    watchers_see_store_swap_delete_in_order,
    a_batch_is_watched_in_batch_order,
    a_watcher_far_behind_resyncs,
    another_store_shares_data_and_events,
    upserts_and_refusals_stay_right_at_20k_specs,
    values_survive_the_store,
);
