//! TLS from the SDK to an in-process broker (`--tls-cert`, `--tls-client-ca`), with
//! certificates made in the test.

mod common;

use std::time::Duration;

use agora_client::{Client, Error, Reconnect};
use common::pki::{tls_config, Pki};
use common::{start, start_with, wait_until, within, Proxy};
use futures_lite::StreamExt;

/// Asserts `e` says `what`, names the broker's address, and is of the variant `is`.
fn assert_names(e: &Error, what: &str, addr: impl ToString, is: fn(&Error) -> bool) {
    let text = e.to_string();
    assert!(is(e), "{e:?}");
    assert!(text.contains(what), "{text}");
    assert!(text.contains(&addr.to_string()), "{text}");
}

fn not_trusted(e: &Error) -> bool {
    matches!(e, Error::CertificateNotTrusted { .. })
}

#[test]
fn publish_and_subscribe_over_tls() {
    let pki = Pki::new("test");
    let server = start_with(tls_config(&pki.issue("server"), None));
    smol::block_on(within(async {
        let client = Client::builder()
            .ca_file(pki.ca_file())
            .connect(server.addr)
            .await
            .unwrap();
        assert_eq!(client.server_info().server, "agora");
        let mut news = client.subscribe("news").await.unwrap();
        client.publish("news", "hello").await.unwrap();
        // Large enough to take several TLS records each way.
        let big = vec![b'x'; 100_000];
        client.publish("news", big.clone()).await.unwrap();
        assert_eq!(news.next().await.unwrap().payload(), "hello");
        assert_eq!(news.next().await.unwrap().payload().len(), big.len());

        let jobs = client.queue("jobs").unwrap();
        jobs.publish_confirmed("resize 42.png").await.unwrap();
        let mut consumer = jobs.consume(4).await.unwrap();
        let job = consumer.next().await.unwrap();
        assert_eq!(job.payload(), "resize 42.png");
        job.ack().await.unwrap();
        client.ping().await.unwrap();
        client.close().await.unwrap();
    }));
}

#[test]
fn a_certificate_from_another_ca_is_not_trusted() {
    let pki = Pki::new("broker");
    let other = Pki::new("other");
    let server = start_with(tls_config(&pki.issue("server"), None));
    let e = smol::block_on(within(
        Client::builder()
            .ca_file(other.ca_file())
            .connect(server.addr),
    ))
    .unwrap_err();
    assert_names(&e, "certificate not trusted", server.addr, not_trusted);
    // The system's CAs did not sign it either (or there are none to trust).
    let e = smol::block_on(within(Client::builder().tls(true).connect(server.addr))).unwrap_err();
    assert!(
        not_trusted(&e) || e.to_string().contains("no CA certificates"),
        "{e}"
    );
}

#[test]
fn an_expired_certificate_is_not_trusted() {
    let pki = Pki::new("test");
    let expired = pki.issue_with("expired", |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let server = start_with(tls_config(&expired, None));
    let e = smol::block_on(within(
        Client::builder()
            .ca_file(pki.ca_file())
            .connect(server.addr),
    ))
    .unwrap_err();
    assert_names(&e, "certificate not trusted", server.addr, not_trusted);
    assert!(e.to_string().contains("expired"), "{e}");
}

#[test]
fn the_server_name_is_checked() {
    let pki = Pki::new("test");
    let server = start_with(tls_config(&pki.issue("server"), None));
    smol::block_on(within(async {
        // The certificate names localhost and 127.0.0.1: the address's IP by default,
        // or a name given.
        let by_name = Client::builder()
            .ca_file(pki.ca_file())
            .server_name("localhost")
            .connect(server.addr)
            .await
            .unwrap();
        by_name.ping().await.unwrap();
        let e = Client::builder()
            .ca_file(pki.ca_file())
            .server_name("elsewhere.example")
            .connect(server.addr)
            .await
            .unwrap_err();
        assert_names(&e, "certificate not trusted", server.addr, not_trusted);
        let e = Client::builder()
            .server_name("not a name")
            .connect(server.addr)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidServerName(_)), "{e:?}");
    }));
}

#[test]
fn a_client_certificate_required_by_the_broker() {
    let pki = Pki::new("broker");
    let clients = Pki::new("clients");
    let server = start_with(tls_config(&pki.issue("server"), Some(&clients.ca_file())));
    let billing = clients.issue("billing");
    let stranger = pki.issue("stranger");
    smol::block_on(within(async {
        let client = Client::builder()
            .ca_file(pki.ca_file())
            .client_cert(&billing.cert, &billing.key)
            .connect(server.addr)
            .await
            .unwrap();
        client.publish("news", "signed").await.unwrap();
        client.ping().await.unwrap();

        // Without one, and with one the clients' CA did not sign, the broker refuses.
        let tls_failed = |e: &Error| matches!(e, Error::Tls { .. });
        let e = Client::builder()
            .ca_file(pki.ca_file())
            .connect(server.addr)
            .await
            .unwrap_err();
        assert_names(&e, "tls with the broker at", server.addr, tls_failed);
        let e = Client::builder()
            .ca_file(pki.ca_file())
            .client_cert(&stranger.cert, &stranger.key)
            .connect(server.addr)
            .await
            .unwrap_err();
        assert_names(&e, "tls with the broker at", server.addr, tls_failed);
        client.ping().await.unwrap();
    }));
}

#[test]
fn tls_to_a_clear_text_port_fails_as_tls() {
    let pki = Pki::new("test");
    let server = start();
    let e = smol::block_on(within(
        Client::builder()
            .ca_file(pki.ca_file())
            .connect(server.addr),
    ))
    .unwrap_err();
    assert_names(&e, "tls with the broker at", server.addr, |e| {
        matches!(e, Error::Tls { .. })
    });
}

#[test]
fn unusable_files_are_named() {
    let pki = Pki::new("test");
    let server = start_with(tls_config(&pki.issue("server"), None));
    let client = pki.issue("client");
    std::fs::write(pki.path("empty.pem"), "not a certificate\n").unwrap();
    let cases = [
        (
            Client::builder().ca_file(pki.path("missing.pem")),
            "missing.pem",
            "cannot be read",
        ),
        (
            Client::builder().ca_file(pki.path("empty.pem")),
            "empty.pem",
            "no PEM certificate",
        ),
        (
            Client::builder()
                .ca_file(pki.ca_file())
                .client_cert(&client.cert, pki.path("empty.pem")),
            "empty.pem",
            "no PEM private key",
        ),
        (
            Client::builder()
                .ca_file(pki.ca_file())
                .client_cert(&client.cert, pki.issue("other").key),
            "other.key",
            "not the private key",
        ),
    ];
    for (builder, file, why) in cases {
        let e = smol::block_on(within(builder.connect(server.addr))).unwrap_err();
        assert!(matches!(e, Error::TlsFile { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(file) && text.contains(why), "{text}");
    }
}

#[test]
fn a_reconnect_does_tls_again_and_resubscribes() {
    let pki = Pki::new("test");
    let server = start_with(tls_config(&pki.issue("server"), None));
    // The proxy copies bytes: TLS runs end to end, between the client and the broker.
    let proxy = Proxy::new(server.addr);
    smol::block_on(async {
        let client = Client::builder()
            .ca_file(pki.ca_file())
            .reconnect(Reconnect::default().initial_delay(Duration::from_millis(10)))
            .connect(proxy.addr)
            .await
            .unwrap();
        let mut news = client.subscribe("news").await.unwrap();
        let mut jobs = client.consume("jobs", 2).await.unwrap();
        client
            .queue("jobs")
            .unwrap()
            .publish_confirmed("a")
            .await
            .unwrap();
        let held = within(jobs.next()).await.unwrap();
        assert_eq!(held.generation(), 1);

        proxy.cut();
        let again = within(jobs.next()).await.unwrap();
        assert!(again.redelivered());
        assert_eq!(again.generation(), 2);
        again.ack().await.unwrap();
        wait_until("the client reconnected", || async {
            client.generation() == 2
        })
        .await;
        client.publish("news", "after").await.unwrap();
        assert_eq!(within(news.next()).await.unwrap().payload(), "after");
        within(client.close()).await.unwrap();
    });
}

#[test]
fn a_self_signed_certificate_is_trusted_as_its_own_ca_file_unless_it_is_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    for (is_ca, name) in [
        (rcgen::IsCa::ExplicitNoCa, "leaf"),
        (
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
            "ca",
        ),
    ] {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params.is_ca = is_ca;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let issued = common::pki::Issued {
            cert: dir.path().join(format!("{name}.pem")),
            key: dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        let server = start_with(tls_config(&issued, None));
        let connected = smol::block_on(within(
            Client::builder().ca_file(&issued.cert).connect(server.addr),
        ));
        match name {
            "leaf" => smol::block_on(connected.unwrap().close()).unwrap(),
            _ => {
                let e = connected.unwrap_err();
                assert_names(&e, "certificate not trusted", server.addr, not_trusted);
                assert!(e.to_string().contains("CA:FALSE"), "{e}");
            }
        }
    }
}
