//! The broker's side: native frames from the session, as MQTT packets for the client.

use agora_protocol::mqtt::{reason, Props, Reply};
use agora_protocol::{ClientFrame, Destination, ErrorCode, ErrorReply, ServerFrame};

use super::{Bridge, Out, Pending, State, Sub, CONNECT_RID};
use crate::mqtt::state::MqttState;

/// The MQTT 5 reason code for a native error.
fn reason_of(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::NotPermitted | ErrorCode::NotAuthenticated => reason::NOT_AUTHORIZED,
        ErrorCode::BadName => reason::TOPIC_NAME_INVALID,
        ErrorCode::PayloadTooLarge => reason::PACKET_TOO_LARGE,
        ErrorCode::QueueFull
        | ErrorCode::MemoryLimit
        | ErrorCode::TooManySubscriptions
        | ErrorCode::TooManyDestinations
        | ErrorCode::StorageFull => reason::QUOTA_EXCEEDED,
        ErrorCode::ShuttingDown => reason::SERVER_SHUTTING_DOWN,
        _ => reason::UNSPECIFIED,
    }
}

impl Bridge {
    /// Acts on one frame from the broker's session.
    pub(crate) fn on_frame(&mut self, f: ServerFrame, retained: &MqttState, out: &mut Out) {
        // Once closed, only the answer to a will's retained publish still counts.
        if self.state == State::Closed && !matches!(f, ServerFrame::PubAck { .. }) {
            return;
        }
        match f {
            ServerFrame::Info(_) | ServerFrame::Dropped { .. } => {}
            ServerFrame::Ok { rid } | ServerFrame::PubAck { rid, .. } => {
                self.answered(rid, None, retained, out)
            }
            ServerFrame::Err(e) => self.answered(e.rid, Some(e), retained, out),
            ServerFrame::Msg(d) if self.session.as_ref().is_some_and(|p| p.sid == d.sid) => {
                self.deliver_queued(d, out)
            }
            ServerFrame::Msg(d) => {
                let Some((_, qos)) = self.by_sid.get(&d.sid) else {
                    return;
                };
                let qos = *qos;
                let p = self.deliver(d.dest.name.as_str(), qos, false, &d.headers, d.payload);
                out.client.push(p);
            }
            ServerFrame::PingReq { rid } => out.broker.push(ClientFrame::PingResp { rid }),
            ServerFrame::Cancel { sid, message, .. } => {
                if let Some((filter, _)) = self.by_sid.remove(&sid) {
                    log::warn!(
                        "MQTT client {}: the broker ended its subscription to {filter}: {message}",
                        self.client_id
                    );
                    self.subs.remove(&filter);
                }
            }
            ServerFrame::Shutdown { message } => {
                self.refuse(reason::SERVER_SHUTTING_DOWN, message, out)
            }
            ServerFrame::StatsResp { .. }
            | ServerFrame::HelpResp { .. }
            | ServerFrame::ChainResp { .. }
            | ServerFrame::PingResp { .. } => {}
        }
    }

    /// The answer to a native request: `err` is `None` for `OK` and `PUBACK`.
    fn answered(
        &mut self,
        rid: Option<u64>,
        err: Option<ErrorReply>,
        retained: &MqttState,
        out: &mut Out,
    ) {
        let Some(p) = rid.and_then(|r| self.pending.remove(&r)) else {
            if let Some(e) = err {
                // A fire-and-forget publish (QoS 0) the broker refused: MQTT has no
                // way to say so.
                log::debug!("MQTT client {}: {} {}", self.client_id, e.code, e.message);
            }
            return;
        };
        match p {
            Pending::Connect => self.connected(err, retained, out),
            Pending::Session => {
                if let Some(e) = err {
                    self.refuse(
                        reason_of(e.code),
                        format!("the persistent session's queue: {} {}", e.code, e.message),
                        out,
                    );
                }
            }
            Pending::Quiet(what) => {
                if let Some(e) = err {
                    log::warn!(
                        "MQTT client {}: {what} was refused: {} {}",
                        self.client_id,
                        e.code,
                        e.message
                    );
                }
            }
            Pending::Publish { pkid, retain } => match (err, pkid) {
                (None, pkid) => {
                    if let Some((name, kept)) = retain {
                        retained.retained.set(name, kept);
                    }
                    if let Some(pkid) = pkid {
                        out.client.push(Reply::PubAck(pkid, reason::SUCCESS));
                    }
                }
                (Some(e), Some(pkid)) if self.v5() => {
                    out.client.push(Reply::PubAck(pkid, reason_of(e.code)))
                }
                // 3.1.1 has no negative PUBACK, and a PUBACK is a promise: the
                // connection is closed instead.
                (Some(e), Some(_)) => self.refuse(
                    reason_of(e.code),
                    format!("a QoS 1 publish was refused: {} {}", e.code, e.message),
                    out,
                ),
                (Some(e), None) => log::debug!(
                    "MQTT client {}: a retained publish was refused: {} {}",
                    self.client_id,
                    e.code,
                    e.message
                ),
            },
            Pending::Sub {
                pkid,
                index,
                sid,
                parent,
            } => {
                if let Some(e) = err
                    .as_ref()
                    .filter(|e| parent && e.code == ErrorCode::NotPermitted)
                {
                    // `a/#` for a user who may read `a.>` but not `a`: the filter is
                    // granted for what the user may read.
                    log::debug!(
                        "MQTT client {}: the parent level of a # filter is not permitted: {}",
                        self.client_id,
                        e.message
                    );
                    if let Some(ack) = self.subacks.get_mut(&pkid) {
                        ack.filters[index].natives.retain(|(s, _)| *s != sid);
                    }
                } else if let Some(e) = err {
                    let code = match self.v5() {
                        true => reason_of(e.code),
                        false => reason::V311_SUBSCRIBE_FAILURE,
                    };
                    if let Some(ack) = self.subacks.get_mut(&pkid) {
                        ack.codes[index] = code;
                        ack.filters[index].natives.retain(|(s, _)| *s != sid);
                    }
                    log::debug!(
                        "MQTT client {}: a subscription was refused: {} {}",
                        self.client_id,
                        e.code,
                        e.message
                    );
                }
                if let Some(ack) = self.subacks.get_mut(&pkid) {
                    ack.waiting -= 1;
                }
                self.suback_if_done(pkid, retained, out);
            }
        }
    }

    fn connected(&mut self, err: Option<ErrorReply>, st: &MqttState, out: &mut Out) {
        let v5 = self.v5();
        match err {
            None => {
                self.state = State::Open;
                let present = self.open_session(st, out);
                let mut props = Props::default();
                if v5 {
                    // What this broker does not do, said up front: QoS 2, shared
                    // subscriptions, subscription ids. The session expiry granted
                    // (capped by --mqtt-session-expiry).
                    props.flags = vec![(0x24, 1), (0x29, 0), (0x2A, 0)];
                    props.session_expiry = Some(self.session.as_ref().map_or(0, |p| p.expiry));
                    if self.assigned {
                        props.assigned_client_id = Some(self.client_id.clone());
                    }
                }
                out.client.push(Reply::ConnAck {
                    session_present: present,
                    code: reason::SUCCESS,
                    props,
                });
            }
            Some(e) => {
                let (v311, v5code) = match e.code {
                    ErrorCode::AuthFailed => (4, reason::BAD_USER_OR_PASSWORD),
                    ErrorCode::NotAuthenticated | ErrorCode::NotPermitted => {
                        (5, reason::NOT_AUTHORIZED)
                    }
                    ErrorCode::ShuttingDown => (3, reason::SERVER_SHUTTING_DOWN),
                    _ => (3, reason::SERVER_UNAVAILABLE),
                };
                out.client.push(Reply::ConnAck {
                    session_present: false,
                    code: if v5 { v5code } else { v311 },
                    props: Props {
                        reason: v5.then(|| e.message.clone()),
                        ..Props::default()
                    },
                });
                self.state = State::Closed;
                out.close(format!("CONNECT refused: {} {}", e.code, e.message));
            }
        }
        debug_assert!(!self.pending.contains_key(&CONNECT_RID));
    }

    /// Once connected: a clean start ends the client id's persistent session, if it
    /// had one (its queue and bindings are deleted); a persistent session is taken up
    /// again or begun, and its queue consumed. True if a session was there.
    fn open_session(&mut self, st: &MqttState, out: &mut Out) -> bool {
        if let Some(q) = self.session_name.clone().filter(|_| self.clean) {
            if st.sessions.forget(&q) {
                let rid = self.rid(Pending::Quiet("deleting the previous session's queue"));
                out.broker.push(ClientFrame::Delete {
                    rid: Some(rid),
                    dest: super::session_dest(&q),
                });
            }
        }
        let Some((queue, expiry)) = self.session.as_ref().map(|p| (p.queue.clone(), p.expiry))
        else {
            return false;
        };
        let filters = st.sessions.resume(&queue, self.number, expiry);
        let sid = self.next_sid;
        self.next_sid += 1;
        if let Some(p) = &mut self.session {
            p.sid = sid;
        }
        let rid = self.rid(Pending::Session);
        out.broker.push(ClientFrame::Sub(agora_protocol::Subscribe {
            rid: Some(rid),
            dest: super::session_dest(&queue),
            sid,
            prefetch: Some(super::SESSION_PREFETCH),
            ack: None,
        }));
        let present = filters.is_some();
        for (filter, qos) in filters.unwrap_or_default() {
            self.restore(filter, qos, out);
        }
        present
    }

    /// Sends `SUBACK` `pkid` once every native subscription it waits for is answered,
    /// then the retained messages its filters match (retained, at most at the QoS each
    /// was published and granted with).
    pub(super) fn suback_if_done(&mut self, pkid: u16, retained: &MqttState, out: &mut Out) {
        if self.subacks.get(&pkid).is_none_or(|a| a.waiting > 0) {
            return;
        }
        let Some(ack) = self.subacks.remove(&pkid) else {
            return;
        };
        out.client.push(Reply::SubAck {
            pkid,
            codes: ack.codes.clone(),
        });
        for (i, a) in ack.filters.into_iter().enumerate() {
            let (filter, qos, natives) = (a.filter, a.qos, a.natives);
            if ack.codes[i] >= 0x80 {
                // A filter refused in part (one of `a` and `a.>`) ends the part that
                // was not.
                let queue = self.session_queue().map(super::session_dest);
                for (sid, p) in natives.iter().filter(|(s, _)| *s != 0) {
                    out.broker.push(match (&queue, a.bound) {
                        (Some(q), true) => match Destination::topic_pattern(p) {
                            Ok(topic) => ClientFrame::Unbind {
                                rid: None,
                                queue: q.clone(),
                                topic,
                            },
                            Err(_) => continue,
                        },
                        _ => ClientFrame::Unsub {
                            rid: None,
                            sid: *sid,
                        },
                    });
                }
                continue;
            }
            // A new subscription's sids; 0 marks a filter subscribed before.
            let sids: Vec<u64> = natives
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| *s != 0)
                .collect();
            if !sids.is_empty() && a.bound {
                let bound = natives.iter().map(|(_, p)| p.clone()).collect();
                self.subs.insert(
                    filter.clone(),
                    Sub {
                        qos,
                        sids: Vec::new(),
                        bound,
                    },
                );
            } else if !sids.is_empty() {
                for sid in &sids {
                    self.by_sid.insert(*sid, (filter.clone(), qos));
                }
                self.subs.insert(
                    filter.clone(),
                    Sub {
                        qos,
                        sids,
                        bound: Vec::new(),
                    },
                );
            }
            if let Some(q) = self.session_queue() {
                retained.sessions.set_filter(q, &filter, Some(qos));
            }
            let patterns: Vec<&str> = natives.iter().map(|(_, p)| p.as_str()).collect();
            for (name, kept) in retained.retained.matching(&patterns) {
                let p = self.deliver(&name, kept.qos.min(qos), true, &kept.headers, kept.payload);
                out.client.push(p);
            }
        }
    }
}
