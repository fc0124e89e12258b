//! Credentials (`ClientBuilder::credentials`) on the wire, against a fake broker on a
//! raw socket: what `CONNECT` carries, and what `ERR auth_failed` becomes.

mod common;

use std::time::Duration;

use agora_client::{Client, Error, ErrorCode, Reconnect};
use common::fake::{connect_frame, fake_broker, Answer};
use common::{wait_until, within, DEADLINE};
use futures_lite::StreamExt;

#[test]
fn connect_carries_the_user_and_the_password_percent_encoded() {
    let (addr, connects) = fake_broker(vec![Answer::Ok]);
    let password = "p@ss word%=ü";
    smol::block_on(within(async {
        let client = Client::builder()
            .name("creds")
            .credentials("alice", password)
            .connect(addr)
            .await
            .unwrap();
        let line = connects.recv_timeout(DEADLINE).unwrap();
        assert!(line.starts_with("CONNECT #0 "), "{line:?}");
        assert!(line.contains(" user=alice "), "{line:?}");
        assert!(line.contains(" password="), "{line:?}");
        assert!(!line.contains(password), "sent as it is: {line:?}");
        let c = connect_frame(&line);
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.password.as_ref().map(|p| p.expose()), Some(password));
        // Nothing of the password in the builder's or the client's Debug form.
        let shown = format!(
            "{:?} {client:?}",
            Client::builder().credentials("alice", password)
        );
        assert!(!shown.contains(password), "{shown}");
        client.close().await.unwrap();
    }));
}

#[test]
fn auth_failed_is_an_error_naming_the_address() {
    let (addr, connects) = fake_broker(vec![Answer::AuthFailed]);
    let e = smol::block_on(within(
        Client::builder()
            .credentials("alice", "wrong")
            .connect(addr),
    ))
    .unwrap_err();
    assert!(matches!(e, Error::AuthFailed { .. }), "{e:?}");
    assert_eq!(e.code(), Some(ErrorCode::AuthFailed));
    let text = e.to_string();
    assert!(text.contains("auth_failed"), "{text}");
    assert!(text.contains(&addr.to_string()), "{text}");
    assert!(text.contains("bad credentials"), "{text}");
    assert!(connects
        .recv_timeout(DEADLINE)
        .unwrap()
        .contains("user=alice"));
}

#[test]
fn a_reconnect_sends_the_credentials_again() {
    let (addr, connects) = fake_broker(vec![Answer::OkThenClose, Answer::Ok]);
    smol::block_on(within(async {
        let client = Client::builder()
            .credentials("alice", "secret")
            .reconnect(Reconnect::default().initial_delay(Duration::from_millis(10)))
            .connect(addr)
            .await
            .unwrap();
        for _ in 0..2 {
            let c = connect_frame(&connects.recv_timeout(DEADLINE).unwrap());
            assert_eq!(c.user.as_deref(), Some("alice"));
            assert_eq!(c.password.as_ref().map(|p| p.expose()), Some("secret"));
        }
        wait_until("the client reconnected", || async {
            client.generation() == 2
        })
        .await;
        client.close().await.unwrap();
    }));
}

/// Against the real broker with users: the right password lets the SDK in (and it
/// publishes and consumes within its rights), a wrong one or none is `AuthFailed`
/// naming the address, and an operation outside its rights is `not_permitted`.
#[test]
fn a_real_broker_with_users() {
    use agora_server::auth::{hash_password, Pattern, Rights, User};
    let mut config = agora_server::Config::ephemeral();
    let rights = Rights {
        publish: vec![Pattern::parse("queue:jobs").unwrap()],
        subscribe: vec![Pattern::parse("queue:jobs").unwrap()],
        admin: false,
    };
    let hash = hash_password("s3cret").unwrap();
    config
        .users
        .insert(User::new("alice", Some(&hash), None, rights).unwrap())
        .unwrap();
    let s = common::start_with(config);
    let addr = s.addr;
    smol::block_on(within(async {
        let client = Client::builder()
            .credentials("alice", "s3cret")
            .connect(addr)
            .await
            .unwrap();
        let jobs = client.queue("jobs").unwrap();
        jobs.publish_confirmed("work").await.unwrap();
        let mut consumer = jobs.consume(1).await.unwrap();
        let m = consumer.next().await.unwrap();
        assert_eq!(&m.payload()[..], b"work");
        m.ack().await.unwrap();
        let e = client
            .queue("other")
            .unwrap()
            .publish_confirmed("x")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotPermitted), "{e}");
        client.close().await.unwrap();

        for builder in [
            Client::builder().credentials("alice", "wrong"),
            Client::builder(),
        ] {
            let e = builder.connect(addr).await.unwrap_err();
            assert!(matches!(e, Error::AuthFailed { .. }), "{e:?}");
            assert!(e.to_string().contains(&addr.to_string()), "{e}");
        }
    }));
}
