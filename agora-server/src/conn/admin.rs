//! `STATS`, `PURGE`, `DELETE`, `BIND`, `UNBIND`, `CHAIN GET|SET|CLEAR`: the questions only the broker
//! answers ([`Ask`]), answered after the registry or the queue has acted. The
//! session has already applied its rules (reserved names, queues only for `PURGE`).

use super::*;

impl Conn<'_> {
    pub(super) async fn stats(
        &mut self,
        rid: RequestId,
        page: StatsPage,
        only: Option<Arc<crate::auth::User>>,
    ) -> Flow {
        let list = |reply| ManagerCmd::List {
            page: page.clone(),
            only: only.clone(),
            reply,
        };
        let listing = ask(&self.broker.manager, list).await.ok_or(End::Stopping)?;
        let json = crate::stats::document(self.broker, &page, &listing, only.as_deref());
        self.reply(&ServerFrame::StatsResp {
            rid,
            json: Bytes::from(json),
        })
        .await
    }

    /// `BIND` (`on`) or `UNBIND`: the registry binds (making the queue) or unbinds, and
    /// keeps it in the log.
    pub(super) async fn bind(
        &mut self,
        rid: RequestId,
        queue: Destination,
        topic: Destination,
        on: bool,
    ) -> Flow {
        let pattern = crate::auth::Pattern::of(&topic);
        let bind = |reply| ManagerCmd::Bind {
            queue,
            pattern,
            on,
            reply,
        };
        match ask(&self.broker.manager, bind).await.ok_or(End::Stopping)? {
            Ok(()) => self.reply(&ServerFrame::Ok { rid }).await,
            Err((code, why)) => self.error(rid, code, &why).await,
        }
    }

    pub(super) async fn purge(&mut self, rid: RequestId, dest: Destination) -> Flow {
        // Purging never creates the queue it names.
        let lookup = |reply| ManagerCmd::Lookup {
            dest: dest.clone(),
            reply,
        };
        let found = ask(&self.broker.manager, lookup)
            .await
            .ok_or(End::Stopping)?;
        let Some(Handle::Queue(q)) = found else {
            let why = format!("there is no {dest}");
            return self.error(rid, ErrorCode::UnknownDestination, &why).await;
        };
        let Some(n) = ask(&q.tx, |reply| QueueCmd::Purge { reply }).await else {
            let why = format!("{dest} was deleted");
            return self.error(rid, ErrorCode::UnknownDestination, &why).await;
        };
        log::info!("purged {n} messages from {dest}");
        self.reply(&ServerFrame::Ok { rid }).await
    }

    pub(super) async fn delete(&mut self, rid: RequestId, dest: Destination) -> Flow {
        let delete = |reply| ManagerCmd::Delete {
            dest: dest.clone(),
            reply,
        };
        let deleted = ask(&self.broker.manager, delete)
            .await
            .ok_or(End::Stopping)?;
        self.handles.remove(&dest);
        match deleted {
            Some(_) => self.reply(&ServerFrame::Ok { rid }).await,
            None => {
                self.error(
                    rid,
                    ErrorCode::UnknownDestination,
                    &format!("there is no {dest}"),
                )
                .await
            }
        }
    }

    /// `CHAIN SET` (`Some` text; blank text clears) or `CHAIN CLEAR` (`None`). A chain
    /// that does not parse, or names an undeclared database, changes nothing.
    pub(super) async fn chain_set(
        &mut self,
        rid: RequestId,
        dest: Destination,
        text: Option<Bytes>,
    ) -> Flow {
        let chain = match text {
            None => None,
            Some(b) => {
                let parsed = std::str::from_utf8(&b)
                    .map_err(|_| "the chain is not UTF-8".to_owned())
                    .and_then(|t| {
                        Chain::parse(t, &self.broker.mutators).map_err(|e| e.to_string())
                    });
                match parsed {
                    Ok(c) if c.is_empty() => None,
                    Ok(c) => Some(Arc::new(c)),
                    Err(why) => return self.error(rid, ErrorCode::BadChain, &why).await,
                }
            }
        };
        let set = |reply| ManagerCmd::SetChain { dest, chain, reply };
        match ask(&self.broker.manager, set).await.ok_or(End::Stopping)? {
            Ok(()) => self.reply(&ServerFrame::Ok { rid }).await,
            Err((code, why)) => self.error(rid, code, &why).await,
        }
    }

    /// `CHAIN GET`: the chain's text, empty for none.
    pub(super) async fn chain_get(&mut self, rid: RequestId, dest: Destination) -> Flow {
        let get = |reply| ManagerCmd::GetChain {
            dest: dest.compact(),
            reply,
        };
        let chain = ask(&self.broker.manager, get).await.ok_or(End::Stopping)?;
        let text = chain.map_or_else(Bytes::new, |c| Bytes::copy_from_slice(c.text().as_bytes()));
        self.reply(&ServerFrame::ChainResp {
            rid,
            dest,
            chain: text,
        })
        .await
    }
}
