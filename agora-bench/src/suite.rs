//! Which cells a run measures: every scenario chosen, with its variants, sizes and
//! rates.

use crate::scenario::{Cell, Scenario};
use crate::RunArgs;

/// The suite's cells in order, grouped: each group runs against one fresh server.
pub(crate) fn suite(args: &RunArgs) -> Vec<Vec<Cell>> {
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        Scenario::ALL
            .into_iter()
            .filter(|s| args.scenarios.contains(s))
            .collect()
    };
    let sizes: Vec<usize> = if args.quick {
        vec![128]
    } else {
        args.sizes.iter().map(|&s| s as usize).collect()
    };
    let durable_sizes = if args.quick {
        &[128][..]
    } else {
        &[128, 4096][..]
    };
    let cell = |scenario, variant, payload, rate| Cell {
        scenario,
        variant,
        payload,
        rate,
    };
    let mut groups = Vec::new();
    for s in scenarios {
        match s {
            Scenario::Publish => {
                for variant in ["", "queue"] {
                    groups.push(sizes.iter().map(|&p| cell(s, variant, p, None)).collect());
                }
            }
            Scenario::Topic1x1 => {
                groups.push(sizes.iter().map(|&p| cell(s, "", p, None)).collect());
            }
            Scenario::DurableConfirm => {
                for variant in ["1", "16"] {
                    groups.push(
                        durable_sizes
                            .iter()
                            .map(|&p| cell(s, variant, p, None))
                            .collect(),
                    );
                }
            }
            Scenario::DurableQueue4 => {
                groups.push(
                    durable_sizes
                        .iter()
                        .map(|&p| cell(s, "", p, None))
                        .collect(),
                );
            }
            // 128 B: a request and its reply; the variants are the requesters.
            Scenario::RequestReply => {
                for variant in ["1", "16"] {
                    groups.push(vec![cell(s, variant, 128, None)]);
                }
            }
            Scenario::ClusterConfirm | Scenario::ClusterQueue4 | Scenario::ClusterFailover => {
                groups.push(vec![cell(s, "", 128, None)]);
            }
            // 4 KiB only: a backlog of 128 B messages takes JetStream's one-sync-a-message
            // an hour a gigabyte.
            Scenario::DurableBacklog => groups.push(vec![cell(s, "", 4096, None)]),
            Scenario::LatencyRate => {
                groups.push(
                    args.rates
                        .iter()
                        .map(|&r| cell(s, "", 128, Some(r)))
                        .collect(),
                );
            }
            _ => groups.push(vec![cell(s, "", 128, None)]),
        }
    }
    groups
}
