//! Request-reply through the SDK against an in-process broker: a request to a topic
//! (every responder gets it, the first reply wins), to a queue (one responder; one that
//! dies before answering leaves it to another), `no_responders` at once, timeouts and
//! late replies, many concurrent requests on one client, typed requests, and a lost
//! connection.

mod common;

use std::time::Duration;

use agora_client::{Client, Error, ErrorCode, Reconnect};
use common::*;
use futures_lite::StreamExt;

/// Answers each request on `sub` with `prefix` and the request's payload, until the
/// subscription ends.
fn echo(mut sub: agora_client::Subscription, prefix: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        smol::block_on(async {
            while let Some(req) = sub.next().await {
                let mut answer = prefix.as_bytes().to_vec();
                answer.extend_from_slice(req.payload());
                if req.respond(answer).await.is_err() {
                    break;
                }
            }
        })
    })
}

/// A client whose inbox is subscribed (one request answered on `warm`), so its next
/// request on an idle connection is written by the requester itself; and a
/// subscription to `topic` that answers nothing (with the responders' client).
async fn warmed(
    addr: std::net::SocketAddr,
    topic: &str,
) -> (
    Client,
    agora_client::Subscription,
    std::thread::JoinHandle<()>,
    Client,
) {
    let slow = Client::connect(addr).await.unwrap();
    let requests = slow.subscribe(topic).await.unwrap();
    let echoing = echo(slow.subscribe("warm").await.unwrap(), "");
    let client = Client::connect(addr).await.unwrap();
    within(client.request("warm", "inbox")).await.unwrap();
    (slow, requests, echoing, client)
}

/// A request to `topic` with its own timeout, asked on another task.
fn ask(
    client: &Client,
    topic: &'static str,
    payload: &'static str,
    timeout: Duration,
) -> smol::Task<agora_client::Result<agora_client::Message>> {
    let c = client.clone();
    smol::spawn(async move {
        c.request_with(topic, Default::default(), payload, timeout)
            .await
    })
}

#[test]
fn a_request_to_a_topic_gets_the_first_reply_and_later_ones_are_dropped() {
    let server = start();
    smol::block_on(async {
        let a = Client::connect(server.addr).await.unwrap();
        let b = Client::connect(server.addr).await.unwrap();
        let _ta = echo(a.subscribe("time").await.unwrap(), "a:");
        let _tb = echo(b.subscribe("time").await.unwrap(), "b:");
        let client = Client::connect(server.addr).await.unwrap();
        for i in 0..20 {
            let reply = within(client.request("topic:time", format!("{i}")))
                .await
                .unwrap();
            let text = String::from_utf8(reply.payload().to_vec()).unwrap();
            assert!(
                text == format!("a:{i}") || text == format!("b:{i}"),
                "{text}"
            );
            assert!(reply.reply_to().is_none());
            let me = client.server_info().inbox.unwrap();
            assert!(reply.destination().name.as_str().starts_with(&me));
        }
        // The second replies arrived for requests nobody waits for: dropped, and
        // nothing was reported as an error.
        client.flush().await.unwrap();
        assert!(client.errors().try_next().is_none());
    });
}

#[test]
fn a_request_to_a_queue_is_answered_once_and_by_another_when_its_responder_dies() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        // The first responder takes the request and dies without answering.
        let doomed = Client::connect(server.addr).await.unwrap();
        let mut work = doomed.consume("resize", 1).await.unwrap();
        let asking = {
            let client = client.clone();
            std::thread::spawn(move || smol::block_on(client.request("queue:resize", "img-1")))
        };
        let taken = within(work.next()).await.unwrap();
        assert_eq!(&taken.payload()[..], b"img-1");
        assert!(taken.reply_to().is_some());
        let survivor = Client::connect(server.addr).await.unwrap();
        let mut jobs = survivor.consume("resize", 4).await.unwrap();
        drop(taken);
        drop(work);
        doomed.close().await.unwrap();
        // The queue gives the request to the survivor, which answers and acks.
        let again = within(jobs.next()).await.unwrap();
        assert!(again.redelivered());
        again.respond("resized img-1").await.unwrap();
        let reply = asking.join().unwrap().unwrap();
        assert_eq!(&reply.payload()[..], b"resized img-1");
        // Acked: the queue is empty.
        survivor.flush().await.unwrap();
        queue_settles(&client, "resize", (0, 0)).await;
    });
}

#[test]
fn a_request_nobody_listens_to_fails_at_once_with_no_responders() {
    let server = start();
    smol::block_on(async {
        // A request timeout far longer than the test's deadline: an answer within the
        // deadline is the broker's refusal, not the timeout.
        let client = Client::builder()
            .request_timeout(Duration::from_secs(3600))
            .connect(server.addr)
            .await
            .unwrap();
        for dest in ["topic:nobody", "queue:nobody"] {
            match within(client.request(dest, "x")).await {
                Err(e) => assert_eq!(e.code(), Some(ErrorCode::NoResponders), "{dest}: {e}"),
                Ok(m) => panic!("{dest}: answered {m:?}"),
            }
        }
    });
}

#[test]
fn a_request_times_out_and_its_late_reply_is_dropped() {
    let server = start();
    smol::block_on(async {
        let slow = Client::connect(server.addr).await.unwrap();
        let mut requests = slow.subscribe("slow").await.unwrap();
        let client = Client::connect(server.addr).await.unwrap();
        let short = Duration::from_millis(50);
        let r = client
            .request_with("slow", agora_client::Headers::new(), "1", short)
            .await;
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        // Answered after the requester gave up: dropped by the client.
        let late = within(requests.next()).await.unwrap();
        late.respond("late").await.unwrap();
        slow.flush().await.unwrap();
        client.flush().await.unwrap();
        // The next request gets its own answer, not the late one.
        let _t = echo(requests, "on time:");
        let reply = within(client.request("slow", "2")).await.unwrap();
        assert_eq!(&reply.payload()[..], b"on time:2");
    });
}

#[test]
fn a_request_written_by_its_requester_times_out_by_the_drivers_alarm_earliest_first() {
    // Once the inbox is subscribed, a request on an idle connection is written by the
    // requester itself and timed out by the driver's alarm, which a later request with
    // an earlier deadline must move forward.
    let server = start();
    smol::block_on(async {
        let (_slow, mut requests, _echo, client) = warmed(server.addr, "slower").await;
        let long = ask(&client, "slower", "long", Duration::from_secs(60));
        let first = within(requests.next()).await.unwrap();
        assert_eq!(&first.payload()[..], b"long");
        let short = within(client.request_with(
            "slower",
            Default::default(),
            "short",
            Duration::from_millis(50),
        ))
        .await;
        assert!(matches!(short, Err(Error::Timeout)), "{short:?}");

        // The long one still waits, and gets its answer.
        first.respond("answer").await.unwrap();
        let reply = within(long).await.unwrap();
        assert_eq!(&reply.payload()[..], b"answer");
        // And the client goes on.
        within(client.request("warm", "again")).await.unwrap();
    });
}

#[test]
fn a_request_written_by_its_requester_times_out_while_its_client_streams_publishes() {
    // The driver's alarm must ring even while publishes keep it busy.
    let server = start();
    smol::block_on(async {
        let (_slow, mut requests, _echo, client) = warmed(server.addr, "silent").await;
        // Asked on an idle connection (so written by the requester, and left to the
        // alarm), and seen by the subscriber before the stream starts.
        let asking = ask(&client, "silent", "anyone?", Duration::from_millis(50));
        within(requests.next()).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let streaming = {
            let (c, stop) = (client.clone(), stop.clone());
            std::thread::spawn(move || {
                smol::block_on(async {
                    // Bounded: until told, or 20 million.
                    for i in 0..20_000_000u64 {
                        if i % 1024 == 0 && stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        c.publish("stream", "x").await.unwrap();
                    }
                })
            })
        };
        let r = within(asking).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        streaming.join().unwrap();
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    });
}

#[test]
fn many_concurrent_requests_on_one_client_each_get_their_own_reply() {
    let server = start();
    smol::block_on(async {
        let responders = Client::connect(server.addr).await.unwrap();
        let _t = echo(responders.subscribe("echo").await.unwrap(), "");
        let client = Client::connect(server.addr).await.unwrap();
        let asks: Vec<_> = (0..200)
            .map(|i| {
                let c = client.clone();
                async move { (i, c.request("echo", format!("{i}")).await) }
            })
            .collect();
        let mut done = 0;
        for ask in asks.into_iter().map(smol::spawn).collect::<Vec<_>>() {
            let (i, r) = within(ask).await;
            assert_eq!(r.unwrap().payload(), format!("{i}").as_bytes());
            done += 1;
        }
        assert_eq!(done, 200);
    });
}

#[test]
fn typed_requests_and_respond_to_a_message_that_is_no_request() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Add {
        a: u32,
        b: u32,
    }
    let server = start();
    smol::block_on(async {
        let calc = Client::connect(server.addr).await.unwrap();
        let mut work = calc.consume("add", 4).await.unwrap();
        let t = std::thread::spawn(move || {
            smol::block_on(async {
                let d = work.next().await.unwrap();
                let sum: Add = d.json().unwrap();
                d.respond(serde_json::to_vec(&(sum.a + sum.b)).unwrap())
                    .await
                    .unwrap();
            })
        });
        let client = Client::connect(server.addr).await.unwrap();
        let sum: u32 = within(client.request_json("queue:add", &Add { a: 2, b: 3 }))
            .await
            .unwrap();
        assert_eq!(sum, 5);
        t.join().unwrap();
        // A plain message has no reply address.
        let mut sub = client.subscribe("plain").await.unwrap();
        client.publish("plain", "x").await.unwrap();
        let m = within(sub.next()).await.unwrap();
        assert!(matches!(m.respond("y").await, Err(Error::NoReplyAddress)));
    });
}

#[test]
fn a_lost_connection_fails_waiting_requests_and_the_next_uses_the_new_inbox() {
    let server = start();
    let proxy = common::Proxy::new(server.addr);
    smol::block_on(async {
        let silent = Client::connect(server.addr).await.unwrap();
        let mut requests = silent.subscribe("svc").await.unwrap();
        let client = Client::builder()
            .reconnect(Reconnect::default().initial_delay(Duration::from_millis(10)))
            .request_timeout(Duration::from_secs(3600))
            .connect(proxy.addr)
            .await
            .unwrap();
        let first_inbox = client.server_info().inbox.unwrap();
        let waiting = {
            let c = client.clone();
            smol::spawn(async move { c.request("svc", "1").await })
        };
        // The request is in (the silent responder has it); then the connection goes.
        let _held = within(requests.next()).await.unwrap();
        proxy.cut();
        let r = within(waiting).await;
        assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
        wait_until("the client reconnected", || async {
            client.generation() == 2
        })
        .await;
        let _t = echo(requests, "ok:");
        let reply = within(client.request("svc", "2")).await.unwrap();
        assert_eq!(&reply.payload()[..], b"ok:2");
        assert_ne!(client.server_info().inbox.unwrap(), first_inbox);
    });
}

#[test]
fn responding_to_a_queued_message_that_is_no_request_gives_it_back() {
    let server = start();
    smol::block_on(async {
        let client = Client::connect(server.addr).await.unwrap();
        let mut work = client.consume("mixed", 1).await.unwrap();
        client
            .queue("mixed")
            .unwrap()
            .publish_confirmed("plain")
            .await
            .unwrap();
        let d = within(work.next()).await.unwrap();
        assert!(d.reply_to().is_none());
        assert!(matches!(d.respond("x").await, Err(Error::NoReplyAddress)));
        // Given back: it comes again.
        let again = within(work.next()).await.unwrap();
        assert!(again.redelivered());
        again.ack().await.unwrap();
    });
}

#[test]
fn a_request_after_confirmed_publishes_ignores_their_confirm_setting() {
    let server = start();
    smol::block_on(async {
        let responders = Client::connect(server.addr).await.unwrap();
        let _t = echo(responders.subscribe("echo").await.unwrap(), "re:");
        let client = Client::connect(server.addr).await.unwrap();
        // Confirms are on for the connection after this: the request gets a PUBACK
        // too, which it must not take for the reply.
        client
            .topic("other")
            .unwrap()
            .publish_confirmed("x")
            .await
            .unwrap();
        let reply = within(client.request("echo", "1")).await.unwrap();
        assert_eq!(&reply.payload()[..], b"re:1");
        client.publish("other", "y").await.unwrap();
        let reply = within(client.request("echo", "2")).await.unwrap();
        assert_eq!(&reply.payload()[..], b"re:2");
    });
}
