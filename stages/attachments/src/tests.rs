use std::time::Duration;

use super::*;

fn fs_store(dir: &std::path::Path) -> Attachments {
    Attachments::open(&AttachmentsConfig { root: dir.to_owned(), ..AttachmentsConfig::default() }).unwrap()
}

#[tokio::test]
async fn a_file_goes_in_and_comes_back_under_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = fs_store(dir.path());
    let bytes = Bytes::from(vec![7u8; 300_000]);
    let stored = store.put("acme", "invoices/42.pdf", bytes.clone()).await.unwrap();
    assert_eq!(stored.size, 300_000);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&bytes)));
    assert!(dir.path().join("acme/invoices/42.pdf").is_file(), "kept under <root>/<tenant>/<key>");
    assert_eq!(store.get("acme", "invoices/42.pdf").await.unwrap(), bytes);
    // Another tenant has no such file, and cannot climb out of its prefix.
    assert!(matches!(store.get("globex", "invoices/42.pdf").await, Err(AttachmentError::NotFound { .. })));
    assert!(matches!(store.get("globex", "../acme/invoices/42.pdf").await, Err(AttachmentError::Invalid(_))));
    assert!(matches!(store.get("../x", "k").await, Err(AttachmentError::Invalid(_))));
    store.delete("acme", "invoices/42.pdf").await.unwrap();
    assert!(matches!(store.get("acme", "invoices/42.pdf").await, Err(AttachmentError::NotFound { .. })));
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_and_leaves_nothing() {
    let store =
        Attachments::open(&AttachmentsConfig { backend: Backend::Memory, max_bytes: 1000, ..AttachmentsConfig::default() }).unwrap();
    let chunks = futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![1u8; 300]))));
    let err = store.put_stream("acme", "big", chunks).await.unwrap_err();
    assert!(matches!(err, AttachmentError::TooLarge { size: 1200, max: 1000, .. }), "{err}");
    assert!(matches!(store.get("acme", "big").await, Err(AttachmentError::NotFound { .. })));
}

#[tokio::test]
async fn the_sweep_deletes_what_is_past_retention_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = AttachmentsConfig { root: dir.path().to_owned(), retention: Duration::from_secs(60), ..AttachmentsConfig::default() };
    let store = Attachments::open(&config).unwrap();
    store.put("acme", "a", Bytes::from_static(b"a")).await.unwrap();
    store.put("globex", "b/c", Bytes::from_static(b"b")).await.unwrap();
    let now = jiff::Timestamp::now();
    assert_eq!(store.sweep(now).await.unwrap(), 0, "both are younger than a minute");
    assert_eq!(store.sweep(now + jiff::SignedDuration::from_secs(120)).await.unwrap(), 2);
    assert!(matches!(store.get("acme", "a").await, Err(AttachmentError::NotFound { .. })));
    assert!(matches!(store.get("globex", "b/c").await, Err(AttachmentError::NotFound { .. })));
}

#[test]
fn s3_needs_a_bucket() {
    let err = Attachments::open(&AttachmentsConfig { backend: Backend::S3, ..AttachmentsConfig::default() }).unwrap_err();
    assert!(err.to_string().contains("attachments.s3.bucket"), "{err}");
}
