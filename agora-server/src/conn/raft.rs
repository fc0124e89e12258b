//! Raft frames that come over a cluster link (a publish to `$cluster.raft` from
//! another node's link session): handed to their replicated queue's task, never to a
//! topic.

use super::*;
use agora_protocol::cluster::raft::RaftFrame;

impl Conn<'_> {
    /// A Raft frame another node sent: to its group's task, the group made first when
    /// this node replicates that queue and runs none of it yet. A frame that cannot be
    /// read, or is for a queue this node does not replicate, is dropped (a lost
    /// message, to Raft) and logged; the link carries on.
    pub(super) async fn raft_in(&mut self, payload: agora_protocol::bytes::Bytes) -> Flow {
        let Some(groups) = self.broker.replicated.clone() else {
            log::debug!("a Raft frame from another node, and this node replicates no queue");
            return Ok(());
        };
        let frame = match RaftFrame::decode(&payload) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("a cluster link sent {e}; dropped");
                return Ok(());
            }
        };
        let frame = match groups.deliver(frame) {
            Ok(()) => return Ok(()),
            Err(f) => f,
        };
        let Ok(dest) = Destination::queue(&frame.group) else {
            log::warn!(
                "a cluster link sent a Raft frame for '{}', no queue name; dropped",
                frame.group
            );
            return Ok(());
        };
        if !groups.replicates(&dest) {
            log::debug!(
                "node {} sent a Raft frame for {dest}, which this node does not replicate (is --replicated-queues the same on every node?)",
                frame.message.from
            );
            return Ok(());
        }
        if self.resolve_publish(&dest).await.is_ok() {
            let _ = groups.deliver(*frame);
        }
        Ok(())
    }
}
