//! `set_shared_threads`: the process's shared I/O threads are as many as the application
//! asked for before its first client, and cannot be resized once they run. A file of its
//! own: the threads are the process's, started once.

mod common;

use agora_client::{set_shared_threads, Client};
use common::*;
use futures_lite::StreamExt;

#[test]
fn the_application_sets_how_many_shared_threads_start_before_they_do() {
    assert_eq!(shared_io_threads(), 0);
    assert!(set_shared_threads(3));
    let server = start();
    smol::block_on(async {
        // Three clients, one to a thread, each carrying messages.
        let mut clients = Vec::new();
        for i in 0..3 {
            let c = Client::connect(server.addr).await.unwrap();
            let mut s = c.subscribe(&format!("t{i}")).await.unwrap();
            c.publish(&format!("t{i}"), "hello").await.unwrap();
            assert_eq!(within(s.next()).await.unwrap().payload(), "hello");
            clients.push((c, s));
        }
        assert_eq!(shared_io_threads(), 3);
        // Running now: too late to resize.
        assert!(!set_shared_threads(1));
        assert!(!set_shared_threads(0));
        let more = Client::connect(server.addr).await.unwrap();
        more.ping().await.unwrap();
        assert_eq!(shared_io_threads(), 3);
    });
    server.stop();
}
