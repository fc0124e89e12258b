//! Credentials (`ClientBuilder::credentials`) on the wire, against a fake broker on a
//! raw socket: what `CONNECT` carries, and what `ERR auth_failed` becomes.

mod common;

use std::time::Duration;

use agora_client::{Client, Error, ErrorCode, Reconnect};
use common::fake::{connect_frame, fake_broker, Answer};
use common::{wait_until, within, DEADLINE};

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
