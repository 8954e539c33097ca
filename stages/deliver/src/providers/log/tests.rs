use super::*;

fn delivery() -> Delivery {
    herald_stage::memory::delivery(7)
}

fn config(dir: &std::path::Path, record_calls: bool) -> LogConfig {
    LogConfig { dir: dir.to_owned(), record_calls }
}

#[tokio::test]
async fn records_once_per_delivery_id() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LogSink::from_config(&config(dir.path(), false)).unwrap();
    assert!(!sink.send(&delivery()).await.unwrap().duplicate);
    assert!(sink.send(&delivery()).await.unwrap().duplicate);
    let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(
        files,
        vec![format!("{}.json", uuid::Uuid::from_u128(7)), DUPLICATES_FILE.to_owned()],
        "one record, the duplicate noted, no temporaries left"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{}.json", uuid::Uuid::from_u128(7)))).unwrap()).unwrap();
    assert_eq!(record["user_id"], "alice");
}

#[tokio::test]
async fn counts_every_call_repeats_included() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LogSink::from_config(&config(dir.path(), true)).unwrap();
    sink.send(&delivery()).await.unwrap();
    sink.send(&delivery()).await.unwrap();
    sink.send(&herald_stage::memory::delivery(8)).await.unwrap();
    let calls = std::fs::read_to_string(dir.path().join(CALLS_FILE)).unwrap();
    let ids: Vec<String> =
        calls.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["delivery_id"].as_str().unwrap().to_owned()).collect();
    let (seven, eight) = (uuid::Uuid::from_u128(7).to_string(), uuid::Uuid::from_u128(8).to_string());
    assert_eq!(ids, [seven.clone(), seven, eight], "three calls, the repeated one included");
}

#[tokio::test]
async fn a_torn_record_is_completed_not_counted_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.json", uuid::Uuid::from_u128(7)));
    std::fs::write(&path, b"{\"delivery_id\":").unwrap();
    let receipt = LogSink::new(dir.path()).send(&delivery()).await.unwrap();
    assert!(!receipt.duplicate);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(record["template"], "t");
}

#[tokio::test]
async fn an_unwritable_sink_is_a_retryable_outage() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let error = LogSink::new(&not_a_dir).send(&delivery()).await.unwrap_err();
    assert!(error.retryable());
    assert_eq!(error.code, "io_error");
}

#[test]
fn an_uncreatable_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let error = LogSink::from_config(&config(&file.join("sub"), false)).unwrap_err();
    assert!(error.to_string().contains("deliver.log.dir"), "{error}");
}
