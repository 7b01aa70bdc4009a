//! Durable state across restarts of the real binary: retained messages
//! and subscriptions come back; a corrupt or truncated journal makes the
//! node refuse to start, naming the file, instead of starting empty.
mod common;

use common::node::Node;
use common::{Connect, Raw};
use std::path::Path;
use std::time::Duration;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_and_subscriptions_survive_a_restart() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = tempfile::tempdir().expect("temp dir");
        let node = Node::start(data.path(), &[]).await;
        let (mut sub, _) = Raw::connect_ok(
            node.tcp,
            Connect::v5("keep-sub").clean(false).session_expiry(3600),
        )
        .await;
        sub.subscribe("s/#", 1).await;
        sub.disconnect().await;
        let mut publ = Raw::v5(node.tcp, "keep-pub").await;
        publ.publish_retained("r/a", b"kept", 1).await;
        publ.publish_retained("r/b", b"short-lived", 1).await;
        publ.publish_retained("r/b", b"", 1).await;
        node.kill9().await;

        let node = Node::start(data.path(), &[]).await;
        let mut publ = Raw::v5(node.tcp, "keep-pub").await;
        let code = publ
            .publish_msg(common::Publish::new("s/x", b"after").qos(1))
            .await;
        assert_eq!(code, 0, "the offline subscription is back in the table");
        let (mut sub, ack) = Raw::connect_ok(
            node.tcp,
            Connect::v5("keep-sub").clean(false).session_expiry(3600),
        )
        .await;
        assert!(ack.session_present);
        assert_eq!(sub.next_publish().await.payload, b"after");
        let mut fresh = Raw::v5(node.tcp, "keep-fresh").await;
        fresh.subscribe("r/#", 1).await;
        let got = fresh.next_publish().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("r/a", &b"kept"[..])
        );
        assert!(got.retain);
        assert!(
            fresh
                .next_publish_within(Duration::from_millis(300))
                .await
                .is_none(),
            "the deleted retained message stays deleted"
        );
        node.kill9().await;
    })
    .await
    .expect("test deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_journal_refuses_to_start() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let data = tempfile::tempdir().expect("temp dir");
        let node = Node::start(data.path(), &[]).await;
        let mut publ = Raw::v5(node.tcp, "corrupt-pub").await;
        publ.publish_retained("c/1", b"one", 1).await;
        // The watermark is written at most once a second, after a commit.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        publ.publish_retained("c/2", b"two", 1).await;
        node.kill9().await;

        let journal = |dir: &Path| dir.join("0.jnl");
        let mark = std::fs::read_to_string(data.path().join("tern-commit")).unwrap_or_default();
        assert!(!mark.trim().is_empty(), "the commit watermark was written");
        assert!(journal(data.path()).exists(), "fjall's journal is 0.jnl");

        let corrupt = tempfile::tempdir().expect("temp dir");
        copy_dir(data.path(), corrupt.path());
        let mut bytes = std::fs::read(journal(corrupt.path())).expect("read journal");
        bytes[40..56].copy_from_slice(b"GARBAGE GARBAGE!");
        std::fs::write(journal(corrupt.path()), bytes).expect("corrupt journal");

        let truncated = tempfile::tempdir().expect("temp dir");
        copy_dir(data.path(), truncated.path());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(journal(truncated.path()))
            .expect("open journal");
        f.set_len(100).expect("truncate journal");
        drop(f);

        for dir in [corrupt.path(), truncated.path()] {
            let (ok, stderr) = Node::start_refused(dir).await;
            assert!(!ok, "tern must not start on a damaged store: {stderr}");
            assert!(
                stderr.contains(&journal(dir).display().to_string())
                    && stderr.contains("refusing to start"),
                "the error names the journal file: {stderr}"
            );
        }

        // The undamaged directory still starts, with its state.
        let node = Node::start(data.path(), &[]).await;
        let mut sub = Raw::v5(node.tcp, "corrupt-sub").await;
        sub.subscribe("c/#", 1).await;
        let mut got = vec![
            sub.next_publish().await.payload,
            sub.next_publish().await.payload,
        ];
        got.sort();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
        node.kill9().await;
    })
    .await
    .expect("test deadline");
}
