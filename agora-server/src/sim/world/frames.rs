//! What the simulated clients of `conns.rs` send: random batches of frames (publishes
//! with and without confirms, chains set and cleared, subscriptions, pings, UDP tokens),
//! and what each frame's answer must be.

use agora_protocol::bytes::{Bytes, BytesMut};
use agora_protocol::{ClientFrame, Connect, Destination, ErrorCode, Frame, Headers, Kind, Publish};

use super::conns::{Tag, CHAIN, CONN_KEY};
use super::{dest, World};

impl World {
    /// A random batch of frames from connection `id`, encoded; and what it holds.
    pub(super) fn batch(&mut self, id: u64) -> (BytesMut, String) {
        let mut out = BytesMut::new();
        let mut what = Vec::new();
        let n = 1 + self.rng.below(8);
        for i in 0..n {
            let roll = self.rng.below(100);
            let c = self.conns.get_mut(&id).expect("sending");
            let rid = match self.rng.chance(50) {
                true => {
                    c.next_rid += 1;
                    Some(c.next_rid)
                }
                false => None,
            };
            let frame = match roll {
                0..=64 => {
                    let (frame, w) = self.publish_frame(id, rid);
                    what.push(w);
                    frame
                }
                65..=72 => {
                    let on = self.rng.chance(50);
                    what.push(format!("SETACK {on}"));
                    ClientFrame::SetAck { rid, on }
                }
                73..=77 => {
                    let on = self.rng.chance(50);
                    what.push(format!("CONNECT confirm={on}"));
                    ClientFrame::Connect(Connect {
                        rid,
                        name: None,
                        proto: None,
                        confirm: Some(on),
                        ..Connect::default()
                    })
                }
                78..=82 => {
                    what.push("PING".to_owned());
                    ClientFrame::PingReq { rid }
                }
                83..=85 => {
                    what.push("STATS".to_owned());
                    ClientFrame::Stats {
                        rid,
                        page: Default::default(),
                    }
                }
                86..=88 if c.udp.is_some() => {
                    // The UDP rules: no subscription before the token is echoed, a
                    // wrong token changes nothing, large answers refused.
                    c.next_rid += 1;
                    let r = c.next_rid;
                    let (token, verified) = c.udp.clone().expect("udp");
                    let (frame, rule, w) = match self.rng.below(4) {
                        0 if !verified => (
                            ClientFrame::Sub(agora_protocol::Subscribe {
                                rid: Some(r),
                                dest: dest(Kind::Topic, "events0"),
                                sid: 7,
                                prefetch: None,
                                ack: None,
                            }),
                            Some(ErrorCode::Unverified),
                            "SUB before proving",
                        ),
                        1 => (
                            ClientFrame::Connect(Connect {
                                rid: Some(r),
                                token: Some(token),
                                ..Connect::default()
                            }),
                            None,
                            "CONNECT with its token",
                        ),
                        2 => (
                            ClientFrame::Connect(Connect {
                                rid: Some(r),
                                token: Some("0".repeat(16)),
                                ..Connect::default()
                            }),
                            Some(ErrorCode::Unverified),
                            "CONNECT with a wrong token",
                        ),
                        _ => (
                            ClientFrame::Help { rid: Some(r) },
                            Some(ErrorCode::NotPermitted),
                            "HELP over UDP",
                        ),
                    };
                    if matches!(&frame, ClientFrame::Connect(k) if k.token.as_ref() == c.udp.as_ref().map(|u| &u.0))
                    {
                        c.udp.as_mut().expect("udp").1 = true;
                    }
                    c.rule.push((r, rule));
                    c.owed.push_back((r, true));
                    what.push(w.to_owned());
                    frame.encode(&mut out);
                    continue;
                }
                86..=88 => {
                    what.push("UNSUB of nothing".to_owned());
                    ClientFrame::Unsub { rid, sid: 999 }
                }
                89..=90 => {
                    what.push("ACK of nothing".to_owned());
                    ClientFrame::Ack { rid, did: 1 << 40 }
                }
                91..=95 => {
                    let d = self.chain_target();
                    let set = self.rng.chance(50);
                    what.push(format!("CHAIN {} {d}", if set { "SET" } else { "CLEAR" }));
                    // The client's model of the chains, as they will be when this
                    // frame is acted on (the session keeps the order).
                    match set {
                        true => self.chain_model.insert(d.clone()),
                        false => self.chain_model.remove(&d),
                    };
                    match set {
                        true => ClientFrame::ChainSet {
                            rid,
                            dest: d,
                            chain: Bytes::from_static(CHAIN.as_bytes()),
                        },
                        false => ClientFrame::ChainClear { rid, dest: d },
                    }
                }
                _ if i == n - 1 => {
                    what.push("DISCONNECT".to_owned());
                    ClientFrame::Disconnect
                }
                _ => {
                    what.push("PONG".to_owned());
                    ClientFrame::PingResp { rid: None }
                }
            };
            let c = self.conns.get_mut(&id).expect("sending");
            match &frame {
                ClientFrame::SetAck { on, .. } => c.confirm = *on,
                ClientFrame::Connect(Connect {
                    confirm: Some(on), ..
                }) => c.confirm = *on,
                _ => {}
            }
            if let (Some(r), ClientFrame::Stats { .. }, Some(_)) = (rid, &frame, &c.udp) {
                c.rule.push((r, Some(ErrorCode::NotPermitted)));
            }
            if let Some(r) = rid {
                let owed = match &frame {
                    ClientFrame::Pub(_) => c.confirm,
                    ClientFrame::PingResp { .. } | ClientFrame::Disconnect => false,
                    _ => true,
                };
                if !matches!(
                    frame,
                    ClientFrame::PingResp { .. } | ClientFrame::Disconnect
                ) {
                    c.owed.push_back((r, owed));
                }
            }
            frame.encode(&mut out);
        }
        (out, what.join(", "))
    }

    pub(super) fn chain_target(&mut self) -> Destination {
        match self.rng.below(2) {
            0 => self.queues[2].shared.dest.clone(),
            _ => self.topics[1].topic.dest.clone(),
        }
    }

    /// A `PUB` to a work queue or a topic (now and then to a reserved name), with the
    /// header the sim's chain tests; notes what the answer must be.
    pub(super) fn publish_frame(&mut self, id: u64, rid: Option<u64>) -> (ClientFrame, String) {
        let v = self.rng.below(6);
        let mut headers = Headers::default();
        headers.insert("v", &v.to_string()).expect("a valid header");
        let pad = self.rng.below(80) as usize;
        let (d, tag, body) = match self.rng.below(10) {
            0 => (dest(Kind::Queue, "$sys.x"), None, vec![0; 8]),
            1..=5 => {
                let q = (self.rng.below(2) * 2) as usize;
                let mid = self.next_id;
                self.next_id += 1;
                let mut body = mid.to_le_bytes().to_vec();
                body.resize(8 + pad, b'.');
                (
                    self.queues[q].shared.dest.clone(),
                    Some(Tag::Queue(mid)),
                    body,
                )
            }
            _ => {
                let t = self.rng.below(2) as usize;
                let c = self.conns.get_mut(&id).expect("sending");
                let seq = c.topic_seq;
                c.topic_seq += 1;
                let mut body = (CONN_KEY + id).to_le_bytes().to_vec();
                body.extend_from_slice(&seq.to_le_bytes());
                body.resize(16 + pad, b'.');
                (
                    self.topics[t].topic.dest.clone(),
                    Some(Tag::Topic(seq)),
                    body,
                )
            }
        };
        // Now and then a request: nobody listening refuses it (`no_responders`).
        let request = tag.is_some() && self.rng.below(4) == 0;
        if request {
            let to = format!("topic:r.{id}");
            headers
                .insert(agora_protocol::reply::REPLY_TO, &to)
                .expect("a valid header");
        }
        let what = match request {
            true => format!("PUB {d} v={v} (a request)"),
            false => format!("PUB {d} v={v}"),
        };
        if let (Some(tag), Some(r)) = (tag, rid) {
            let filtered = v < 3 && self.chain_model.contains(&d);
            let c = self.conns.get_mut(&id).expect("sending");
            c.expect.push((r, tag, filtered));
        }
        let frame = ClientFrame::Pub(Publish {
            rid,
            dest: d,
            headers,
            payload: Bytes::from(body),
        });
        (frame, what)
    }
}
