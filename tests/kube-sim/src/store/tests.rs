use super::*;

fn setup() -> (Arc<Store>, impl Fn(&str) -> ResourceType) {
    let store = Store::new();
    let s2 = store.clone();
    let ty = move |plural: &str| s2.types().into_iter().find(|t| t.plural == plural).unwrap();
    let ns = ty("namespaces");
    store.create(&ns, "", json!({"metadata": {"name": "app"}}), &WriteOpts::default()).unwrap();
    (store, ty)
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

#[test]
fn create_stamps_metadata_and_rejects_duplicates() {
    let (store, ty) = setup();
    let cms = ty("configmaps");
    let o = store.create(&cms, "app", cm("a"), &WriteOpts::default()).unwrap();
    assert_eq!(o["metadata"]["namespace"], "app");
    assert!(o["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(o["metadata"]["resourceVersion"].is_string());
    assert_eq!(o["metadata"]["generation"], 1);
    assert!(matches!(store.create(&cms, "app", cm("a"), &WriteOpts::default()), Err(ApiError::AlreadyExists(_))));
    let err = store.create(&cms, "app", json!({"metadata": {}}), &WriteOpts::default()).unwrap_err();
    assert_eq!(err.code(), 422);
    let gen = store.create(&cms, "app", json!({"metadata": {"generateName": "x-"}}), &WriteOpts::default()).unwrap();
    assert!(gen["metadata"]["name"].as_str().unwrap().starts_with("x-"));
    assert_eq!(store.create(&cms, "nope", cm("b"), &WriteOpts::default()).unwrap_err().code(), 404);
    // The namespace got its default service account.
    assert!(store.get(&ty("serviceaccounts"), "app", "default").is_ok());
}

#[test]
fn update_checks_resource_version_and_bumps_generation() {
    let (store, ty) = setup();
    let deps = ty("deployments");
    let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1, "template": {}}});
    let created = store.create(&deps, "app", d, &WriteOpts::default()).unwrap();
    let mut next = created.clone();
    next["spec"]["replicas"] = json!(3);
    let updated = store.update(&deps, "app", "d", next.clone(), None, &WriteOpts::default()).unwrap();
    assert_eq!(updated["metadata"]["generation"], 2);
    let err = store.update(&deps, "app", "d", next, None, &WriteOpts::default()).unwrap_err();
    assert_eq!(err.code(), 409);
    // Status writes through the main resource are ignored, and do not bump generation.
    let mut st = updated.clone();
    st["status"] = json!({"replicas": 3});
    let after = store.update(&deps, "app", "d", st.clone(), Some("status"), &WriteOpts::default()).unwrap();
    assert_eq!(after["status"]["replicas"], 3);
    assert_eq!(after["metadata"]["generation"], 2);
}

#[test]
fn finalizers_delay_deletion() {
    let (store, ty) = setup();
    let cms = ty("configmaps");
    let mut o = cm("f");
    o["metadata"]["finalizers"] = json!(["example.com/keep"]);
    store.create(&cms, "app", o, &WriteOpts::default()).unwrap();
    let marked = store.delete(&cms, "app", "f", &DeleteOpts::default()).unwrap();
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let mut cur = store.get(&cms, "app", "f").unwrap();
    cur["metadata"]["finalizers"] = json!([]);
    store.update(&cms, "app", "f", cur, None, &WriteOpts::default()).unwrap();
    assert_eq!(store.get(&cms, "app", "f").unwrap_err().code(), 404);
}

#[test]
fn namespace_deletion_and_owner_garbage_collection() {
    let (store, ty) = setup();
    let rs = ty("replicasets");
    let pods = ty("pods");
    let owner = store.create(&rs, "app", json!({"metadata": {"name": "rs"}, "spec": {}}), &WriteOpts::default()).unwrap();
    let uid = owner["metadata"]["uid"].clone();
    let pod = json!({"metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid}]},
                     "spec": {"containers": [{"name": "c", "image": "x"}]}});
    store.create(&pods, "app", pod, &WriteOpts::default()).unwrap();
    store.delete(&rs, "app", "rs", &DeleteOpts::default()).unwrap();
    assert_eq!(store.get(&pods, "app", "p").unwrap_err().code(), 404, "dependent pod is collected");

    store.create(&ty("configmaps"), "app", cm("c"), &WriteOpts::default()).unwrap();
    store.delete(&ty("namespaces"), "", "app", &DeleteOpts::default()).unwrap();
    assert_eq!(store.get(&ty("namespaces"), "", "app").unwrap()["status"]["phase"], "Terminating");
    assert_eq!(store.create(&ty("configmaps"), "app", cm("d"), &WriteOpts::default()).unwrap_err().code(), 403);
    store.background_pass();
    store.background_pass();
    assert_eq!(store.get(&ty("configmaps"), "app", "c").unwrap_err().code(), 404);
    assert_eq!(store.get(&ty("namespaces"), "", "app").unwrap_err().code(), 404);
}

#[test]
fn list_pages_with_continue_and_selectors() {
    let (store, ty) = setup();
    let cms = ty("configmaps");
    for i in 0..5 {
        let mut o = cm(&format!("c{i}"));
        o["metadata"]["labels"] = json!({"even": (i % 2 == 0).to_string()});
        store.create(&cms, "app", o, &WriteOpts::default()).unwrap();
    }
    let none = FieldSelector::default();
    let page1 = store.list(&cms, Some("app"), &LabelSelector::default(), &none, Some(2), None).unwrap();
    assert_eq!(page1.items.len(), 2);
    let token = page1.continue_token.unwrap();
    let page2 = store.list(&cms, Some("app"), &LabelSelector::default(), &none, Some(10), Some(&token)).unwrap();
    assert_eq!(page2.items.len(), 3);
    assert!(page2.continue_token.is_none());
    let even = store.list(&cms, None, &LabelSelector::parse("even=true").unwrap(), &none, None, None).unwrap();
    assert_eq!(even.items.len(), 3);
}

#[test]
fn watch_replays_from_version_and_expires() {
    let (store, ty) = setup();
    let cms = ty("configmaps");
    let a = store.create(&cms, "app", cm("a"), &WriteOpts::default()).unwrap();
    let rv: u64 = a["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    store.create(&cms, "app", cm("b"), &WriteOpts::default()).unwrap();
    let w = store.watch(&cms, Some(rv), false, None).unwrap();
    assert_eq!(w.replay.len(), 1);
    assert_eq!(w.replay[0].object["metadata"]["name"], "b");
    store.compact();
    assert_eq!(store.watch(&cms, Some(rv), false, None).err().map(|e| e.code()), Some(410));
}

#[test]
fn crds_serve_new_types_and_take_their_objects_with_them() {
    let (store, ty) = setup();
    let crds = ty("customresourcedefinitions");
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget", "singular": "widget"},
        "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}]}});
    let created = store.create(&crds, "", crd, &WriteOpts::default()).unwrap();
    assert_eq!(created["status"]["conditions"][1]["type"], "Established");
    let widgets = store.resolve("example.com", "v1", "widgets").expect("type served");
    store.create(&widgets, "app", json!({"metadata": {"name": "w"}, "spec": {"size": 1}}), &WriteOpts::default()).unwrap();
    store.delete(&crds, "", "widgets.example.com", &DeleteOpts::default()).unwrap();
    assert!(store.resolve("example.com", "v1", "widgets").is_none());
}

#[test]
fn merge_patches_racing_on_one_object_all_apply() {
    // The API server re-applies a patch that names no resourceVersion to the newer object; only
    // a patch that names a version conflicts.
    let (store, ty) = setup();
    let cms = ty("configmaps");
    store.create(&cms, "app", cm("busy"), &WriteOpts::default()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (store, cms) = (store.clone(), cms.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let body = json!({"metadata": {"annotations": {format!("t{t}-{i}"): "x"}}}).to_string();
                    store.patch(&cms, "app", "busy", (PatchKind::Merge, body.as_bytes()), None, &WriteOpts::default()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let o = store.get(&cms, "app", "busy").unwrap();
    assert_eq!(o["metadata"]["annotations"].as_object().unwrap().len(), 400);
    let stale = json!({"metadata": {"resourceVersion": "1", "annotations": {"late": "x"}}}).to_string();
    let err = store.patch(&cms, "app", "busy", (PatchKind::Merge, stale.as_bytes()), None, &WriteOpts::default()).unwrap_err();
    assert_eq!(err.code(), 409);
}

#[test]
fn garbage_collection_looks_at_objects_with_owners_not_the_whole_store() {
    // The background pass runs every 100 ms under the store's lock: when it walked every
    // object, requests waited longer the more objects there were (loading 100k objects
    // slowed to a dozen creates a second).
    let (store, ty) = setup();
    let (cms, rs, pods) = (ty("configmaps"), ty("replicasets"), ty("pods"));
    for i in 0..5_000 {
        store.create(&cms, "app", cm(&format!("c{i}")), &WriteOpts::default()).unwrap();
    }
    let owner = store.create(&rs, "app", json!({"metadata": {"name": "rs"}, "spec": {}}), &WriteOpts::default()).unwrap();
    let owned_by = |uid: &Value| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid}]);
    for (name, refs) in [("p1", owned_by(&owner["metadata"]["uid"])), ("p2", owned_by(&owner["metadata"]["uid"])), ("stale", owned_by(&json!("gone")))] {
        let pod = json!({"metadata": {"name": name, "ownerReferences": refs}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        store.create(&pods, "app", pod, &WriteOpts::default()).unwrap();
    }

    let before = store.objects_examined();
    store.background_pass();
    assert_eq!(store.get(&pods, "app", "stale").unwrap_err().code(), 404, "the pod whose owner is gone is collected");
    assert!(store.get(&pods, "app", "p1").is_ok());
    assert_eq!(store.objects_examined() - before, 1, "only the pod naming a missing owner is looked at");
    let before = store.objects_examined();
    store.background_pass();
    assert_eq!(store.objects_examined() - before, 0, "nothing to collect, nothing looked at");

    // Deleting the owner looks at its two pods, not at the 5,000 ConfigMaps.
    let before = store.objects_examined();
    store.delete(&rs, "app", "rs", &DeleteOpts::default()).unwrap();
    assert_eq!(store.objects_examined() - before, 2);
    assert_eq!(store.get(&pods, "app", "p2").unwrap_err().code(), 404);
    assert_eq!(store.list(&pods, Some("app"), &LabelSelector::default(), &FieldSelector::default(), None, None).unwrap().items.len(), 0);
}

#[test]
fn owner_index_follows_updates_orphaning_and_crd_removal() {
    let (store, ty) = setup();
    let (rs, pods) = (ty("replicasets"), ty("pods"));
    let a = store.create(&rs, "app", json!({"metadata": {"name": "a"}, "spec": {}}), &WriteOpts::default()).unwrap();
    let b = store.create(&rs, "app", json!({"metadata": {"name": "b"}, "spec": {}}), &WriteOpts::default()).unwrap();
    let r = |o: &Value| json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": o["metadata"]["name"], "uid": o["metadata"]["uid"]});
    let pod = json!({"metadata": {"name": "p", "ownerReferences": [r(&a)]}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let created = store.create(&pods, "app", pod, &WriteOpts::default()).unwrap();
    // Moved from owner a to owner b: deleting a no longer takes it.
    let mut moved = created.clone();
    moved["metadata"]["ownerReferences"] = json!([r(&b)]);
    store.update(&pods, "app", "p", moved, None, &WriteOpts::default()).unwrap();
    store.delete(&rs, "app", "a", &DeleteOpts::default()).unwrap();
    store.background_pass();
    assert!(store.get(&pods, "app", "p").is_ok(), "the pod's owner is b now");
    // Orphaned from b: it stays, without the reference, and is no orphan.
    store.delete(&rs, "app", "b", &DeleteOpts { propagation: Propagation::Orphan, ..Default::default() }).unwrap();
    store.background_pass();
    let p = store.get(&pods, "app", "p").unwrap();
    assert_eq!(p["metadata"]["ownerReferences"], json!([]));

    // Objects of a deleted CRD leave the index with it: their dependents become orphans.
    let crds = ty("customresourcedefinitions");
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget", "singular": "widget"},
        "versions": [{"name": "v1", "served": true, "storage": true}]}});
    store.create(&crds, "", crd, &WriteOpts::default()).unwrap();
    let widgets = store.resolve("example.com", "v1", "widgets").unwrap();
    let w = store.create(&widgets, "app", json!({"metadata": {"name": "w"}}), &WriteOpts::default()).unwrap();
    let cm_owned = json!({"metadata": {"name": "of-w", "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": w["metadata"]["uid"]}]}});
    store.create(&ty("configmaps"), "app", cm_owned, &WriteOpts::default()).unwrap();
    store.background_pass();
    assert!(store.get(&ty("configmaps"), "app", "of-w").is_ok(), "its owner exists");
    store.delete(&crds, "", "widgets.example.com", &DeleteOpts::default()).unwrap();
    store.background_pass();
    assert_eq!(store.get(&ty("configmaps"), "app", "of-w").unwrap_err().code(), 404, "its owner went with the CRD");
}

#[test]
fn list_pages_stay_in_their_namespace_and_cover_all_namespaces_without_one() {
    let (store, ty) = setup();
    let (cms, nss) = (ty("configmaps"), ty("namespaces"));
    for ns in ["a", "b", "c"] {
        store.create(&nss, "", json!({"metadata": {"name": ns}}), &WriteOpts::default()).unwrap();
        for i in 0..5 {
            store.create(&cms, ns, cm(&format!("{ns}{i}")), &WriteOpts::default()).unwrap();
        }
    }
    let (any, none) = (LabelSelector::default(), FieldSelector::default());
    let names = |ns: Option<&str>, page: usize| {
        let (mut out, mut token, mut more) = (Vec::new(), None::<String>, Vec::new());
        loop {
            let l = store.list(&cms, ns, &any, &none, Some(page), token.as_deref()).unwrap();
            out.extend(l.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()));
            more.push(l.continue_token.is_some());
            match l.continue_token {
                Some(t) => token = Some(t),
                None => return (out, more),
            }
        }
    };
    let (b, more) = names(Some("b"), 2);
    assert_eq!(b, ["b0", "b1", "b2", "b3", "b4"]);
    assert_eq!(more, [true, true, false]);
    let (all, _) = names(None, 4);
    assert_eq!(all.len(), 15);
    assert_eq!(all.first().map(String::as_str), Some("a0"));
    assert_eq!(all.last().map(String::as_str), Some("c4"));
    // A page that ends exactly at the last object has no continue token.
    let (c, more) = names(Some("c"), 5);
    assert_eq!((c.len(), more), (5, vec![false]));
}

#[test]
fn writes_and_the_background_pass_cost_the_same_with_20k_objects_as_with_10() {
    // Loading 100k objects slowed down the more were loaded while anything a write or the
    // background pass (every 100 ms, under the store's lock) did walked every object. The
    // counter counts every object the store walks beyond the one a request names.
    let examined_by_writes = |preloaded: usize| {
        let (store, ty) = setup();
        let (cms, pods, svcs, pvcs) = (ty("configmaps"), ty("pods"), ty("services"), ty("persistentvolumeclaims"));
        for i in 0..preloaded {
            store.create(&cms, "app", cm(&format!("pre-{i:05}")), &WriteOpts::default()).unwrap();
        }
        store.background_pass();
        let before = store.objects_examined();
        for i in 0..20 {
            let name = format!("new-{i}");
            store.create(&cms, "app", cm(&name), &WriteOpts::default()).unwrap();
            let patch = json!({"metadata": {"annotations": {"n": i.to_string()}}}).to_string();
            store.patch(&cms, "app", &name, (PatchKind::Merge, patch.as_bytes()), None, &WriteOpts::default()).unwrap();
            store.background_pass();
        }
        store.delete(&cms, "app", "new-0", &DeleteOpts::default()).unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        store.create(&pods, "app", pod, &WriteOpts::default()).unwrap();
        let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        store.create(&svcs, "app", svc, &WriteOpts::default()).unwrap();
        let pvc = json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"]}});
        store.create(&pvcs, "app", pvc, &WriteOpts::default()).unwrap();
        store.background_pass();
        // A watch resuming from a recent version looks at the events after it, not the log.
        let rv = store.current_rv();
        store.create(&cms, "app", cm("last"), &WriteOpts::default()).unwrap();
        let watch = store.watch(&cms, Some(rv), false, Some("app")).unwrap();
        assert_eq!(watch.replay.len(), 1);
        store.objects_examined() - before
    };
    let few = examined_by_writes(10);
    assert_eq!(examined_by_writes(20_000), few, "writes look at no more objects when there are more");
    // The watch's one event; the Service's allocation finds no other Service.
    assert_eq!(few, 1);
}

#[test]
fn list_pages_walk_from_where_the_last_ended() {
    let (store, ty) = setup();
    let cms = ty("configmaps");
    let nss = ty("namespaces");
    store.create(&nss, "", json!({"metadata": {"name": "other"}}), &WriteOpts::default()).unwrap();
    for i in 0..2_000 {
        let mut o = cm(&format!("c{i:04}"));
        o["metadata"]["labels"] = json!({"tenth": (i % 10 == 0).to_string()});
        store.create(&cms, "app", o.clone(), &WriteOpts::default()).unwrap();
        store.create(&cms, "other", o, &WriteOpts::default()).unwrap();
    }
    let none = FieldSelector::default();
    let tenth = LabelSelector::parse("tenth=true").unwrap();
    // A page with a selector walks to its last item and one more match; the next page starts
    // after the last item, in the namespace asked for.
    let before = store.objects_examined();
    let page = store.list(&cms, Some("app"), &tenth, &none, Some(10), None).unwrap();
    assert_eq!(page.items.len(), 10);
    assert_eq!(store.objects_examined() - before, 101, "c0000 to c0090 for the page, to c0100 for the next match");
    let before = store.objects_examined();
    let page = store.list(&cms, Some("app"), &tenth, &none, Some(10), page.continue_token.as_deref()).unwrap();
    assert_eq!(page.items[0]["metadata"]["name"], "c0100");
    assert_eq!(store.objects_examined() - before, 110, "c0091 to c0190 for the page, to c0200 for the next match");
    // Without a selector, the same: a page of 500 in the middle of 2,000 walks 501, not the
    // rest of the list (counting the rest made a list in pages of 500 cost quadratic time).
    let page = store.list(&cms, Some("app"), &LabelSelector::default(), &none, Some(500), None).unwrap();
    let before = store.objects_examined();
    let page = store.list(&cms, Some("app"), &LabelSelector::default(), &none, Some(500), page.continue_token.as_deref()).unwrap();
    assert_eq!(page.items[0]["metadata"]["name"], "c0500");
    assert!(page.continue_token.is_some());
    assert_eq!(store.objects_examined() - before, 501);
}
