//! A three-node JetStream cluster: R3 streams, and the pipeline keeps going when a node dies.

use std::time::Duration;

use herald_nats::server::Cluster;
use herald_schemas::Status;
use herald_tests::{Options, TestEnv, welcome};

const PATIENCE: Duration = Duration::from_secs(40);

#[tokio::test]
async fn the_pipeline_runs_on_a_three_node_cluster_and_survives_losing_a_node() -> anyhow::Result<()> {
    let mut cluster = Cluster::start().await?;
    let urls = cluster.urls();
    // The test world's own server is unused; the cluster is the broker.
    let env = TestEnv::with(Options { url: Some(urls.clone()), replicas: 3, ..Options::default() }).await?;
    let report = env.provision().await?;
    assert!(report.contains("created    stream HERALD_REQUESTS"), "{report}");
    env.seed().await?;
    let up = env.spawn("up", &["up"])?;
    for i in 0..100 {
        env.publish("acme", welcome(["alice", "bob"][i % 2])).await?;
    }
    env.wait_for_records(100, PATIENCE).await?;

    // Lose one node: R3 streams keep quorum with two.
    cluster.nodes[2].kill().await;
    for i in 0..100 {
        let mut attempts = 0;
        loop {
            match env.nats.publish_request("acme", welcome(["carol", "dave"][i % 2]).into(), Some(&format!("after-loss-{i}"))).await {
                Ok(_) => break,
                Err(error) if attempts < 20 => {
                    attempts += 1;
                    eprintln!("publish retry after node loss: {error}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    if let Err(error) = env.wait_for_records(200, PATIENCE).await {
        let log = up.log();
        let tail: Vec<_> = log.lines().rev().take(40).collect();
        anyhow::bail!("{error}\nlast lines of herald up:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    env.wait_idle(PATIENCE).await?;
    assert_eq!(env.records().len(), 200, "every request delivered once across the node loss");
    assert_eq!(env.second_calls(), 0, "no delivery reached the provider twice across the node loss");
    let events = env.wait_for_events("acme", Status::Sent, 200, PATIENCE).await?;
    assert_eq!(events.iter().filter(|e| e.status == Status::Sent).count(), 200);
    up.terminate(PATIENCE).await?;
    Ok(())
}
