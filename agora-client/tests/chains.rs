//! Mutator chains from the client: `chain_get`/`chain_set`/`chain_clear`, and the
//! outcome of a confirmed publish (`agora-cli chain` is tested with agora-cli).

mod common;

use agora_client::{Client, Destination, ErrorCode, PublishOutcome};
use common::{start, within};

#[test]
fn chain_calls_and_filtered_publishes() {
    let s = start();
    smol::block_on(within(async {
        let client = Client::connect(s.addr).await.unwrap();
        let t = Destination::topic("temps").unwrap();
        assert_eq!(client.chain_get(t.clone()).await.unwrap(), None);
        client
            .chain_set(t.clone(), "threshold . > 30")
            .await
            .unwrap();
        assert_eq!(
            client.chain_get(t.clone()).await.unwrap().as_deref(),
            Some("threshold . > 30")
        );
        let e = client
            .chain_set(t.clone(), "threshold . >")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadChain), "{e}");
        assert_eq!(
            client.chain_get(t.clone()).await.unwrap().as_deref(),
            Some("threshold . > 30"),
            "a bad chain changes nothing"
        );

        let topic = client.topic("temps").unwrap();
        let mut sub = topic.subscribe().await.unwrap();
        assert_eq!(
            topic.publish_outcome("12").await.unwrap(),
            PublishOutcome::Filtered
        );
        assert_eq!(
            topic.publish_outcome("31").await.unwrap(),
            PublishOutcome::Accepted
        );
        // The plain call is Ok either way.
        topic.publish_confirmed("5").await.unwrap();
        use futures_lite::StreamExt;
        assert_eq!(&sub.next().await.unwrap().payload()[..], b"31");

        let q = client.queue("jobs").unwrap();
        client
            .chain_set(q.destination().clone(), "set header:via=agora | sample 2")
            .await
            .unwrap();
        let mut h = agora_client::Headers::new();
        h.insert("n", "1").unwrap();
        assert_eq!(
            q.publish_outcome_with_headers(h, "a").await.unwrap(),
            PublishOutcome::Accepted
        );
        assert_eq!(
            q.publish_outcome("b").await.unwrap(),
            PublishOutcome::Filtered
        );

        client.chain_clear(t.clone()).await.unwrap();
        assert_eq!(client.chain_get(t).await.unwrap(), None);
        assert_eq!(
            topic.publish_outcome("1").await.unwrap(),
            PublishOutcome::Accepted
        );
    }));
}
