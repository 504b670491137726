//! The kinds the binary registers, the pages in `docs/nodes/` and the README's table of kinds
//! name the same kinds, so adding a kind without its page or its README entry fails here.

use std::collections::BTreeSet;

use crate::support::root;

#[tokio::test]
async fn registry_docs_and_readme_list_the_same_kinds() {
    let store = uniflow_store::Store::open("mem://").await.unwrap();
    let registered: BTreeSet<String> = uniflow::registry_with_system(&store, "default")
        .kinds()
        .map(str::to_owned)
        .collect();
    let pages: BTreeSet<String> = std::fs::read_dir(root().join("docs/nodes"))
        .expect("docs/nodes")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".md").map(str::to_owned)
        })
        .collect();
    assert_eq!(
        registered, pages,
        "registered kinds (left) and docs/nodes/*.md (right) differ"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let table: String = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Node kinds"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect::<Vec<_>>()
        .join("\n");
    let missing: Vec<&String> = registered
        .iter()
        .filter(|kind| !table.contains(&format!("`{kind}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "the README's section \"Node kinds\" does not name {missing:?}"
    );
}
