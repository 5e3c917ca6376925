use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use serde_json::{json, Value};

use super::*;
use crate::builders::ItemBuilder;
use crate::item::{GroupResource, Item, ItemRef};

fn write_archive(items: &[Item]) -> Vec<u8> {
    let mut writer = ArchiveWriter::new(Vec::new()).unwrap();
    for item in items {
        writer.add_item(item).unwrap();
    }
    assert_eq!(writer.items_written(), items.len() as u64);
    writer.finish().unwrap()
}

fn sample_items() -> Vec<Item> {
    vec![
        ItemBuilder::pod("shop", "web-0").label("app", "web").pvc_volume("data", "data-web-0").build(),
        ItemBuilder::pv("pvc-1234").claim_ref("shop", "data-web-0").build(),
        ItemBuilder::deployment("shop", "web").set("/spec/replicas", json!(3)).build(),
        ItemBuilder::widget("shop", "w1").build(),
    ]
}

#[test]
fn round_trip_through_tar_zst() {
    let items = sample_items();
    let bytes = write_archive(&items);
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame");
    let reader = ArchiveReader::new(bytes.as_slice()).unwrap();
    assert_eq!(reader.compression(), Compression::Zstd);
    let extracted = reader.extract_to_temp().unwrap();
    assert_eq!(extracted.format_version(), Some("1.1.0"));

    let resources = extracted.resources().unwrap();
    let names: Vec<String> = resources.iter().map(|r| r.group_resource.to_string()).collect();
    assert_eq!(names, vec!["deployments.apps", "persistentvolumes", "pods", "widgets.example.com"]);
    assert!(resources.iter().all(|r| r.version.as_deref() == Some("v1")));

    let mut read_back = Vec::new();
    for resource in &resources {
        for location in extracted.items(resource).unwrap() {
            read_back.push(extracted.read(&location).unwrap());
        }
    }
    for original in &items {
        let found = read_back.iter().find(|i| i.item_ref() == original.item_ref()).expect("item read back");
        assert_eq!(found.object, original.object);
        assert_eq!((found.version.as_str(), found.kind.as_str()), (original.version.as_str(), original.kind.as_str()));
    }
    assert_eq!(read_back.len(), items.len());
}

#[test]
fn every_item_is_written_twice_in_velero_layout() {
    let bytes = write_archive(&sample_items()[..2]);
    let mut reader = ArchiveReader::new(bytes.as_slice()).unwrap();
    let paths: Vec<String> = reader.entries().unwrap().map(|e| e.unwrap().path).collect();
    assert_eq!(
        paths,
        vec![
            "metadata/version",
            "resources/pods/namespaces/shop/web-0.json",
            "resources/pods/v1-preferredversion/namespaces/shop/web-0.json",
            "resources/persistentvolumes/cluster/pvc-1234.json",
            "resources/persistentvolumes/v1-preferredversion/cluster/pvc-1234.json",
        ]
    );
}

#[test]
fn long_names_survive_the_tar_header_limit() {
    let name = format!("web-{}", "x".repeat(200));
    let item = ItemBuilder::config_map("a-namespace-with-a-long-name", &name).build();
    let bytes = write_archive(std::slice::from_ref(&item));
    let extracted = ArchiveReader::new(bytes.as_slice()).unwrap().extract_to_temp().unwrap();
    let found = extracted.find(&item.item_ref()).unwrap().expect("found by identity");
    assert_eq!(found.name, name);
}

#[test]
fn the_archive_describes_its_resource_types() {
    let bytes = write_archive(&sample_items());
    let extracted = ArchiveReader::new(bytes.as_slice()).unwrap().extract_to_temp().unwrap();
    let infos = extracted.api_resources().unwrap();
    let widget = infos.iter().find(|i| i.plural == "widgets").unwrap();
    assert_eq!((widget.group.as_str(), widget.kind.as_str(), widget.version.as_str()), ("example.com", "Widget", "v1"));
    assert!(widget.namespaced && widget.preferred);
    let pv = infos.iter().find(|i| i.plural == "persistentvolumes").unwrap();
    assert!(!pv.namespaced);
    assert_eq!(infos.len(), 4);
}

#[test]
fn find_looks_items_up_by_identity() {
    let bytes = write_archive(&sample_items());
    let extracted = ArchiveReader::new(bytes.as_slice()).unwrap().extract_to_temp().unwrap();
    let pv = extracted.find(&ItemRef::cluster(GroupResource::core("persistentvolumes"), "pvc-1234")).unwrap().unwrap();
    assert_eq!(pv.object["spec"]["claimRef"]["name"], "data-web-0");
    let missing = ItemRef::namespaced(GroupResource::core("pods"), "shop", "nope");
    assert!(extracted.find(&missing).unwrap().is_none());
    let sneaky = ItemRef::namespaced(GroupResource::core("pods"), "..", "web-0");
    assert!(extracted.find(&sneaky).unwrap().is_none());
}

#[test]
fn names_that_are_not_file_names_are_refused() {
    let mut item = ItemBuilder::config_map("shop", "ok").build();
    item.name = "../escape".into();
    let mut writer = ArchiveWriter::new(Vec::new()).unwrap();
    let err = writer.add_item(&item).unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafeName { field: "name", .. }), "{err}");
}

/// A Velero backup as Velero 1.x writes it: tar.gz, mode 0755, the plain copy of every item
/// plus the preferred-version copy, another version's copy, and a resource from an older
/// backup with only the plain copy.
fn velero_fixture() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut add = |path: &str, body: &Value| {
        let bytes = serde_json::to_vec(body).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(bytes.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, bytes.as_slice()).unwrap();
    };
    let svc = |marker: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop",
            "annotations": {"copy": marker}}, "spec": {"clusterIP": "10.0.0.7"}})
    };
    add("metadata/version", &json!(1));
    add("resources/services/namespaces/shop/web.json", &svc("plain"));
    add("resources/services/v1-preferredversion/namespaces/shop/web.json", &svc("preferred"));
    let hpa = |v: &str| {
        json!({"apiVersion": format!("autoscaling/{v}"), "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "shop"}})
    };
    add("resources/horizontalpodautoscalers.autoscaling/namespaces/shop/web.json", &hpa("v2"));
    add("resources/horizontalpodautoscalers.autoscaling/v2-preferredversion/namespaces/shop/web.json", &hpa("v2"));
    add("resources/horizontalpodautoscalers.autoscaling/v1/namespaces/shop/web.json", &hpa("v1"));
    add(
        "resources/namespaces/cluster/shop.json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    );
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn velero_tar_gz_restores_from_the_preferred_copies() {
    let fixture = velero_fixture();
    let reader = ArchiveReader::new(fixture.as_slice()).unwrap();
    assert_eq!(reader.compression(), Compression::Gzip);
    let extracted = reader.extract_to_temp().unwrap();
    let resources = extracted.resources().unwrap();
    let summary: Vec<(String, Option<String>)> =
        resources.iter().map(|r| (r.group_resource.to_string(), r.version.clone())).collect();
    assert_eq!(
        summary,
        vec![
            ("horizontalpodautoscalers.autoscaling".into(), Some("v2".into())),
            ("namespaces".into(), None),
            ("services".into(), Some("v1".into())),
        ]
    );
    let hpa = extracted.read(&extracted.items(&resources[0]).unwrap()[0]).unwrap();
    assert_eq!(hpa.object["apiVersion"], "autoscaling/v2", "not the v1 copy");
    assert_eq!(hpa.version, "v2");
    let services = extracted.items(&resources[2]).unwrap();
    assert_eq!(services.len(), 1);
    let svc = extracted.read(&services[0]).unwrap();
    assert_eq!(svc.object["metadata"]["annotations"]["copy"], "preferred");
    assert_eq!(svc.namespace.as_deref(), Some("shop"));
    let ns = extracted.read(&extracted.items(&resources[1]).unwrap()[0]).unwrap();
    assert_eq!((ns.name.as_str(), ns.namespace.clone()), ("shop", None), "old-format copies still read");
}

/// A tar entry with a path set byte for byte: the tar crate refuses to write unsafe paths,
/// which is exactly what a hostile archive would contain.
fn raw_entry(tar: &mut tar::Builder<impl Write>, path: &str, kind: tar::EntryType, link: Option<&str>, body: &[u8]) {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(target) = link {
        header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(body.len() as u64);
    header.set_cksum();
    tar.append(&header, body).unwrap();
}

fn hostile(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut tar = tar::Builder::new(zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap());
    raw_entry(&mut tar, "metadata/version", tar::EntryType::Regular, None, b"1.1.0");
    raw_entry(&mut tar, path, kind, link, b"{}");
    raw_entry(&mut tar, "resources/pods/namespaces/a/after.json", tar::EntryType::Regular, None, b"{}");
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn path_traversal_is_rejected_naming_the_entry() {
    use tar::EntryType as T;
    let cases = [
        ("../evil.json", T::Regular, None, "has a '..' component"),
        ("resources/../../evil.json", T::Regular, None, "has a '..' component"),
        ("/tmp/evil.json", T::Regular, None, "has an absolute path"),
        ("resources/pods/link", T::Symlink, Some("/etc"), "is a symbolic link"),
        ("resources/pods/hard", T::Link, Some("/etc/passwd"), "is a hard link"),
        ("resources/pods/fifo", T::Fifo, None, "is not a regular file or directory"),
    ];
    for (path, kind, link, reason) in cases {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join("restore");
        std::fs::create_dir(&target).unwrap();
        let bytes = hostile(path, kind, link);
        let Err(err) = ArchiveReader::new(bytes.as_slice()).unwrap().extract(&target) else {
            panic!("{path} was extracted");
        };
        match &err {
            ArchiveError::UnsafeEntry { entry, reason: why } => {
                assert_eq!((entry.as_str(), why.as_str()), (path, reason));
            }
            other => panic!("{path}: unexpected error {other}"),
        }
        assert!(err.to_string().contains(path), "{err}");
        assert!(!outer.path().join("evil.json").exists(), "{path} escaped");
        assert!(!target.join("resources/pods/namespaces/a/after.json").exists(), "extraction stops at {path}");
        let mut streaming = ArchiveReader::new(bytes.as_slice()).unwrap();
        assert!(streaming.entries().unwrap().any(|e| e.is_err()), "{path} passes when streamed");
    }
}

#[test]
fn unknown_formats_are_named_by_their_magic() {
    let err = ArchiveReader::new(&b"PK\x03\x04rest"[..]).err().expect("a zip is not an archive");
    assert_eq!(
        err.to_string(),
        "not a backup archive: it starts with bytes 50 4b 03 04; expected zstd (Stowage's .tar.zst) or gzip (Velero's .tar.gz)"
    );
}

/// Counts what reaches the sink; the counters are shared so the test can watch them while
/// the writer owns the sink.
#[derive(Clone, Default)]
struct CountingSink {
    bytes: Rc<Cell<u64>>,
    writes: Rc<Cell<u64>>,
}

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.set(self.bytes.get() + buf.len() as u64);
        self.writes.set(self.writes.get() + 1);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Deterministic filler that compresses like real objects do: not at all to nothing.
fn noise(seed: u64) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..160)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:x}", x & 0xffff)
        })
        .collect()
}

#[test]
fn twenty_thousand_items_stream_through_without_buffering() {
    const ITEMS: usize = 20_000;
    let sink = CountingSink::default();
    let mut writer = ArchiveWriter::new(sink.clone()).unwrap();
    let mut sink_after = Vec::with_capacity(ITEMS);
    let mut json_bytes = 0u64;
    for i in 0..ITEMS {
        let item = ItemBuilder::config_map(&format!("ns-{}", i % 50), &format!("cm-{i}"))
            .set("/data/payload", json!(noise(i as u64)))
            .build();
        json_bytes += serde_json::to_vec(&item.object).unwrap().len() as u64 * 2;
        writer.add_item(&item).unwrap();
        sink_after.push(sink.bytes.get());
    }
    writer.finish().unwrap();
    let total = sink.bytes.get();
    assert!(json_bytes > 20 << 20, "the test moves {json_bytes} bytes of JSON");
    // Compressed output reaches the sink as items are added, not at finish: at the half-way
    // point about half of it has been written, and it arrived in many writes.
    let halfway = sink_after[ITEMS / 2];
    assert!(halfway > total * 2 / 5 && halfway < total * 3 / 5, "halfway {halfway} of {total}");
    assert!(sink.writes.get() > 100, "{} writes", sink.writes.get());
    // What the writer holds back at any moment stays within zstd's block buffers.
    let per_item = total / ITEMS as u64;
    let max_lag = (sink_after.iter().enumerate())
        .map(|(i, written)| ((i as u64 + 1) * per_item).saturating_sub(*written))
        .max()
        .unwrap();
    assert!(max_lag < 1 << 20, "held back up to {max_lag} bytes");
}

#[test]
fn truncated_archives_fail_to_extract_wherever_they_are_cut() {
    for (format, whole) in [("tar.zst", write_archive(&sample_items())), ("tar.gz", velero_fixture())] {
        assert!(ArchiveReader::new(whole.as_slice()).unwrap().extract_to_temp().is_ok(), "{format} whole");
        for cut in (10..whole.len()).step_by(7).chain([whole.len() - 1]) {
            let result = ArchiveReader::new(&whole[..cut]).and_then(|r| r.extract_to_temp());
            match result {
                Err(ArchiveError::Damaged(_)) => {}
                Err(e) => panic!("{format} cut at {cut}: not reported as damaged: {e}"),
                Ok(_) => panic!("{format} cut at {cut} of {} bytes extracted without an error", whole.len()),
            }
        }
    }
}

#[test]
fn a_damaged_byte_anywhere_fails_extraction() {
    for (format, whole) in [("tar.zst", write_archive(&sample_items())), ("tar.gz", velero_fixture())] {
        for at in (12..whole.len()).step_by(5) {
            let mut damaged = whole.clone();
            damaged[at] ^= 0x55;
            let result = ArchiveReader::new(damaged.as_slice()).and_then(|r| r.extract_to_temp());
            assert!(result.is_err(), "{format} with byte {at} of {} damaged extracted without an error", whole.len());
        }
    }
}

/// A highly compressible archive: `files` entries of `size` zero bytes each.
fn bomb(files: usize, size: usize) -> Vec<u8> {
    let mut tar = tar::Builder::new(zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap());
    raw_entry(&mut tar, "metadata/version", tar::EntryType::Regular, None, b"1.1.0");
    let body = vec![0u8; size];
    for i in 0..files {
        raw_entry(&mut tar, &format!("resources/configmaps/namespaces/a/c{i}.json"), tar::EntryType::Regular, None, &body);
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn extraction_stops_at_its_limits_before_filling_the_disk() {
    let limits = ExtractLimits { max_entries: 50, max_total_bytes: 1 << 20, max_entry_bytes: 256 << 10 };
    let cases = [
        (bomb(100, 10), "has more than 50 entries"),
        (bomb(20, 100 << 10), "holds more than 1048576 bytes uncompressed"),
        (bomb(2, 300 << 10), "is larger than 262144 bytes"),
    ];
    for (bytes, says) in cases {
        assert!(bytes.len() < 64 << 10, "the archive itself is small: {}", bytes.len());
        let dir = tempfile::tempdir().unwrap();
        let err = ArchiveReader::new(bytes.as_slice()).unwrap().with_limits(limits).extract(dir.path()).err().expect("over a limit");
        assert!(matches!(err, ArchiveError::OverLimit(_)), "{err}");
        assert!(err.to_string().contains(says) && err.to_string().contains("nothing is restored"), "{err}");
        let written: u64 = walk(dir.path()).iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        assert!(written <= limits.max_total_bytes, "wrote {written} bytes");
    }
    // Within the limits, the same archives extract.
    ArchiveReader::new(bomb(40, 10).as_slice()).unwrap().with_limits(limits).extract(tempfile::tempdir().unwrap().path()).unwrap();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
