//! The command table: every command word, who may send it, its parser for each
//! direction that reads it, the shape of its body, and its line in the broker's `HELP`.
//!
//! This module owns the mapping from a word on the wire to a frame variant; the decoder
//! dispatches through it and the `HELP` text is generated from it, so adding a command
//! is its family module under `cmd/`, its variant in [`ClientFrame`] or
//! [`ServerFrame`], and one row here.

use crate::args::Args;
use crate::cmd::{admin, chain, publish, session, subscribe};
use crate::decode::Draft;
use crate::error::ProtocolError;
use crate::{ClientFrame, ServerFrame};

/// A command's parser for one direction: its tokenized line (the size tokens of a
/// payload frame hidden) to a draft of the frame.
pub(crate) type Parser<F> = fn(&mut Args<'_>) -> Result<Draft<F>, ProtocolError>;

/// Who sends a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentBy {
    /// Only clients: the broker reads it as a [`ClientFrame`].
    Client,
    /// Only the broker: a client reads it as a [`ServerFrame`].
    Broker,
    /// Both sides (`PINGREQ`, `PINGRESP`).
    Either,
}

/// What follows a command's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// Nothing.
    None,
    /// `size` bytes, the line's last token.
    Sized,
    /// A header block and a body: `header-bytes total-bytes`, the line's last tokens.
    Headers,
    /// `CHAIN`: a body only in its `SET` form.
    SizedIfSet,
}

/// One command word.
#[derive(Debug)]
pub struct CommandSpec {
    /// The word senders write, upper case (the decoder ignores case).
    pub word: &'static str,
    /// Another word the decoder accepts for it (`PING`, `PONG`).
    pub alias: Option<&'static str>,
    /// Its line in the broker's `HELP` text; empty for frames only the broker sends.
    pub help: &'static str,
    /// One complete frame of it, as it goes over the wire.
    pub example: &'static [u8],
    pub(crate) body: Body,
    pub(crate) client: Option<Parser<ClientFrame>>,
    pub(crate) broker: Option<Parser<ServerFrame>>,
}

impl CommandSpec {
    /// Who may send it.
    pub fn sent_by(&self) -> SentBy {
        match (self.client.is_some(), self.broker.is_some()) {
            (true, true) => SentBy::Either,
            (true, false) => SentBy::Client,
            _ => SentBy::Broker,
        }
    }
}

/// A row for a command only clients send.
const fn client(
    word: &'static str,
    body: Body,
    parse: Parser<ClientFrame>,
    help: &'static str,
    example: &'static [u8],
) -> CommandSpec {
    CommandSpec {
        word,
        alias: None,
        help,
        example,
        body,
        client: Some(parse),
        broker: None,
    }
}

/// A row for a frame only the broker sends.
const fn broker(
    word: &'static str,
    body: Body,
    parse: Parser<ServerFrame>,
    example: &'static [u8],
) -> CommandSpec {
    CommandSpec {
        word,
        alias: None,
        help: "",
        example,
        body,
        client: None,
        broker: Some(parse),
    }
}

/// Every command word of the protocol, the client's first, in the order of the broker's
/// `HELP` text.
pub static COMMANDS: &[CommandSpec] = &[
    client(
        "PUB",
        Body::Sized,
        publish::decode_pub,
        "PUB [#id] <queue:NAME|topic:NAME> <bytes>        then the payload and CRLF",
        b"PUB topic:t 2\r\nhi\r\n",
    ),
    client(
        "HPUB",
        Body::Headers,
        publish::decode_pub,
        "HPUB [#id] <dest> <header-bytes> <total-bytes>   headers 'key: value' CRLF..., CRLF, payload",
        b"HPUB topic:t 8 10\r\nk: v\r\n\r\nhi\r\n",
    ),
    client(
        "SUB",
        Body::None,
        subscribe::decode_sub,
        "SUB [#id] <dest> <sid> [prefetch=N] [ack=auto|manual]",
        b"SUB queue:q 1 prefetch=8\r\n",
    ),
    client(
        "UNSUB",
        Body::None,
        subscribe::decode_unsub,
        "UNSUB [#id] <sid>",
        b"UNSUB 1\r\n",
    ),
    client(
        "HOLD",
        Body::None,
        subscribe::decode_hold,
        "HOLD [#id] <sid>                                 send the subscription nothing until RESUME",
        b"HOLD 1\r\n",
    ),
    client(
        "RESUME",
        Body::None,
        subscribe::decode_resume,
        "RESUME [#id] <sid>",
        b"RESUME 1\r\n",
    ),
    client(
        "ACK",
        Body::None,
        subscribe::decode_ack,
        "ACK [#id] <delivery-id>",
        b"ACK 42\r\n",
    ),
    client(
        "NACK",
        Body::None,
        subscribe::decode_nack,
        "NACK [#id] <delivery-id>",
        b"NACK #3 42\r\n",
    ),
    client(
        "SETACK",
        Body::None,
        session::decode_setack,
        "SETACK [#id] on|off          publisher confirms (PUBACK)",
        b"SETACK on\r\n",
    ),
    client(
        "CONNECT",
        Body::None,
        session::decode_connect,
        "CONNECT [#id] [name=N] [proto=1] [confirm=on|off] [user=U password=P]",
        b"CONNECT #1 name=x proto=1\r\n",
    ),
    client(
        "PURGE",
        Body::None,
        admin::decode_purge,
        "PURGE [#id] <queue:NAME>     drop a queue's pending messages",
        b"PURGE queue:q\r\n",
    ),
    client(
        "DELETE",
        Body::None,
        admin::decode_delete,
        "DELETE [#id] <dest>          remove a destination",
        b"DELETE topic:t\r\n",
    ),
    client(
        "BIND",
        Body::None,
        admin::decode_bind,
        "BIND [#id] <queue:NAME> <topic:PATTERN>     also put what the topics matching PATTERN get in the queue",
        b"BIND queue:q topic:sensors.>\r\n",
    ),
    client(
        "UNBIND",
        Body::None,
        admin::decode_bind,
        "UNBIND [#id] <queue:NAME> <topic:PATTERN>   remove that binding",
        b"UNBIND #6 queue:q topic:sensors.>\r\n",
    ),
    client(
        "CHAIN",
        Body::SizedIfSet,
        chain::decode_chain,
        "CHAIN [#id] GET|CLEAR <dest>   CHAIN [#id] SET <dest> <bytes>   then the chain text",
        b"CHAIN #4 SET queue:q 5\r\nupper\r\n",
    ),
    client(
        "STATS",
        Body::None,
        admin::decode_stats,
        "STATS [#id] [prefix=<text>] [after=<dest>] [limit=<n>] [connections=<n>] [connections_after=<id>]   the broker's state, as JSON, a page of its destinations and, if asked, of its connections",
        b"STATS\r\n",
    ),
    client(
        "HELP",
        Body::None,
        session::decode_help,
        "HELP [#id]                   this text",
        b"HELP #5\r\n",
    ),
    CommandSpec {
        word: "PINGREQ",
        alias: Some("PING"),
        help: "PINGREQ [#id]                answered by PINGRESP",
        example: b"PINGREQ #6\r\n",
        body: Body::None,
        client: Some(session::decode_pingreq_client),
        broker: Some(session::decode_pingreq_server),
    },
    CommandSpec {
        word: "PINGRESP",
        alias: Some("PONG"),
        help: "PINGRESP [#id]               the answer to the broker's PINGREQ",
        example: b"PINGRESP\r\n",
        body: Body::None,
        client: Some(session::decode_pingresp_client),
        broker: Some(session::decode_pingresp_server),
    },
    client(
        "DISCONNECT",
        Body::None,
        session::decode_disconnect,
        "DISCONNECT                   leave; the broker flushes and closes",
        b"DISCONNECT\r\n",
    ),
    broker(
        "MSG",
        Body::Sized,
        publish::decode_msg,
        b"MSG topic:t 1 0 1 2\r\nhi\r\n",
    ),
    broker(
        "HMSG",
        Body::Headers,
        publish::decode_msg,
        b"HMSG queue:q 1 7 2 8 10\r\nk: v\r\n\r\nhi\r\n",
    ),
    broker(
        "PUBACK",
        Body::None,
        publish::decode_puback,
        b"PUBACK #3\r\n",
    ),
    broker("OK", Body::None, session::decode_ok, b"OK #1\r\n"),
    broker(
        "ERR",
        Body::None,
        session::decode_err,
        b"ERR #2 bad_args what went wrong\r\n",
    ),
    broker(
        "INFO",
        Body::None,
        session::decode_info,
        b"INFO server=agora version=1.0 proto=1 max_payload=1048576 max_line=4096\r\n",
    ),
    broker(
        "STATSRESP",
        Body::Sized,
        admin::decode_statsresp,
        b"STATSRESP #7 2\r\n{}\r\n",
    ),
    broker(
        "HELPRESP",
        Body::Sized,
        session::decode_helpresp,
        b"HELPRESP 2\r\nhi\r\n",
    ),
    broker(
        "CHAINRESP",
        Body::Sized,
        chain::decode_chainresp,
        b"CHAINRESP #8 queue:q 0\r\n\r\n",
    ),
    broker(
        "CANCEL",
        Body::None,
        subscribe::decode_cancel,
        b"CANCEL 1 slow_consumer too far behind\r\n",
    ),
    broker(
        "DROPPED",
        Body::None,
        subscribe::decode_dropped,
        b"DROPPED 1 42\r\n",
    ),
    broker(
        "SHUTDOWN",
        Body::None,
        session::decode_shutdown,
        b"SHUTDOWN the broker is stopping\r\n",
    ),
];

/// The row of a command word, compared without regard to ASCII case.
pub(crate) fn lookup(word: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|s| {
        word.eq_ignore_ascii_case(s.word.as_bytes())
            || s.alias
                .is_some_and(|a| word.eq_ignore_ascii_case(a.as_bytes()))
    })
}

/// The broker's answer to `HELP`: one line for each command a client may send, from
/// [`COMMANDS`].
///
/// ```
/// let help = agora_protocol::help_text();
/// assert!(help.contains("SUB [#id] <dest> <sid>"));
/// assert!(!help.contains("MSG <dest>")); // the broker sends MSG; clients do not
/// ```
pub fn help_text() -> String {
    let mut s = String::from(
        "Agora protocol, version 1. Commands (case-insensitive; #id is an optional request id):\n",
    );
    for c in COMMANDS.iter().filter(|c| c.sent_by() != SentBy::Broker) {
        s.push_str("  ");
        s.push_str(c.help);
        s.push('\n');
    }
    s.push_str("The book's Protocol chapter has the full grammar.");
    s
}
