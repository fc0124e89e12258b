//! The nodes a data directory's replicated queues were made over, kept beside their
//! logs (`<data-dir>/raft/nodes`): each queue's voters follow from `--peers`, and a node
//! started with other `--peers` would choose other voters for queues whose logs a
//! majority of the first ones hold, and could elect a leader that lacks what was
//! confirmed. Membership changes are not built, so such a start is refused.

use std::io::{self, Write};
use std::path::Path;

/// The file's name in the raft directory.
pub(crate) const NODES_FILE: &str = "nodes";

fn listed(nodes: &[u64]) -> String {
    let mut ids = nodes.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    ids.join(",")
}

/// Checks that the replicated queues in `dir` were made over `nodes` (the ids of
/// `--peers`), or records that they are (a new directory, or one from before the
/// record was kept). Refused, saying what to do, when they were made over others.
pub(crate) fn pin(dir: &Path, nodes: &[u64]) -> io::Result<()> {
    let path = dir.join(NODES_FILE);
    let want = listed(nodes);
    match std::fs::read_to_string(&path) {
        Ok(had) if had.trim() == want => Ok(()),
        Ok(had) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: this node's replicated queues were made by a cluster of nodes {}, and \
                 --peers now lists nodes {want}: a replicated queue's voters follow from \
                 the nodes, and membership changes are not built; start every node with \
                 --peers naming nodes {} again (their addresses may change), or start \
                 the whole cluster anew with every node's {} moved away (what its \
                 replicated queues held is then gone)",
                path.display(),
                had.trim(),
                had.trim(),
                dir.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!("{NODES_FILE}.new"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{want}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_keeps_the_nodes_it_was_made_over() {
        let dir = std::env::temp_dir().join(format!(
            "agora-nodes-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let raft = dir.join("raft");
        pin(&raft, &[3, 1, 2]).unwrap();
        assert_eq!(
            std::fs::read_to_string(raft.join(NODES_FILE)).unwrap(),
            "1,2,3\n"
        );
        // The same nodes, in any order: started.
        pin(&raft, &[1, 2, 3]).unwrap();
        pin(&raft, &[2, 3, 1, 1]).unwrap();
        // Another set: refused, saying which and what to do.
        for other in [&[1, 2, 3, 4][..], &[1, 2], &[1, 2, 4]] {
            let e = pin(&raft, other).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            let why = e.to_string();
            assert!(
                why.contains("made by a cluster of nodes 1,2,3")
                    && why.contains(&format!("--peers now lists nodes {}", listed(other)))
                    && why.contains("membership changes are not built"),
                "{why}"
            );
        }
        // Still as recorded.
        pin(&raft, &[1, 2, 3]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
