//! MQTT 3.1.1 and 5.0 packets, sans-IO: what the broker's MQTT front door reads and
//! writes, and the mapping between MQTT topics and Agora names ([`topic`]).
//!
//! The decoder frames the stream (a partial packet is `Ok(None)` and consumes
//! nothing), refuses a packet over the size limit from its fixed header alone, before
//! buffering it, and checks what the specifications call malformed (bad UTF-8, a
//! reserved flag set, a length that overruns its packet). It decodes what a client
//! sends; the encoder writes what a server sends.

mod codec;
pub mod topic;

pub use codec::{decode, encode};

use bytes::Bytes;

/// The protocol level a client named in `CONNECT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (level 4).
    V311,
    /// MQTT 5.0 (level 5).
    V5,
}

/// A quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    /// QoS 0: at most once.
    AtMostOnce = 0,
    /// QoS 1: at least once.
    AtLeastOnce = 1,
    /// QoS 2: exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    fn from_bits(b: u8) -> Option<QoS> {
        match b {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// MQTT 5 properties this broker reads or writes (others are read and skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    /// Payload Format Indicator: 1 says the payload is UTF-8.
    pub payload_format: Option<u8>,
    /// Message Expiry Interval, seconds.
    pub message_expiry: Option<u32>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic: where a reply goes.
    pub response_topic: Option<String>,
    /// Correlation Data, echoed by a reply.
    pub correlation: Option<Bytes>,
    /// Session Expiry Interval, seconds.
    pub session_expiry: Option<u32>,
    /// Receive Maximum: QoS 1 and 2 publishes in flight at once.
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size, bytes.
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias.
    pub topic_alias: Option<u16>,
    /// Reason String.
    pub reason: Option<String>,
    /// Assigned Client Identifier, in CONNACK.
    pub assigned_client_id: Option<String>,
    /// Server Keep Alive, seconds, in CONNACK.
    pub server_keep_alive: Option<u16>,
    /// Authentication Method (enhanced authentication).
    pub auth_method: Option<String>,
    /// `Retain Available`, `Maximum QoS`, `Wildcard`/`Shared Subscription Available`
    /// and the like, in CONNACK: (id, value).
    pub flags: Vec<(u8, u8)>,
    /// User Properties, in order: Agora headers.
    pub user: Vec<(String, String)>,
}

/// The last will in a `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The topic, as MQTT writes it.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// Quality of service.
    pub qos: QoS,
    /// Retained.
    pub retain: bool,
    /// MQTT 5 properties (empty on 3.1.1).
    pub props: Props,
}

/// `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level.
    pub version: Version,
    /// The client identifier; empty: the broker assigns one.
    pub client_id: String,
    /// Clean session (3.1.1) or clean start (5.0).
    pub clean: bool,
    /// Seconds; 0: none.
    pub keep_alive: u16,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// The last will: published if the connection ends without DISCONNECT.
    pub will: Option<Will>,
    /// MQTT 5 properties (empty on 3.1.1).
    pub props: Props,
}

/// `PUBLISH`, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// A resend of an earlier PUBLISH.
    pub dup: bool,
    /// Quality of service.
    pub qos: QoS,
    /// Retained.
    pub retain: bool,
    /// The topic, as MQTT writes it.
    pub topic: String,
    /// Present at QoS 1 and 2.
    pub pkid: Option<u16>,
    /// The payload.
    pub payload: Bytes,
    /// MQTT 5 properties (empty on 3.1.1).
    pub props: Props,
}

/// One filter of a `SUBSCRIBE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The topic filter, as MQTT writes it.
    pub filter: String,
    /// Quality of service.
    pub qos: QoS,
    /// MQTT 5: not sent this client's own publishes.
    pub no_local: bool,
    /// MQTT 5: deliveries keep the publish's retain flag.
    pub retain_as_published: bool,
    /// MQTT 5: 0 send retained at subscribe, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `CONNECT`.
    Connect(Box<Connect>),
    /// `PUBLISH`.
    Publish(Publish),
    /// `PUBACK`: (packet id, reason code).
    PubAck(u16, u8),
    /// `PUBREC`: (packet id, reason code).
    PubRec(u16, u8),
    /// `PUBREL`: (packet id, reason code).
    PubRel(u16, u8),
    /// `PUBCOMP`: (packet id, reason code).
    PubComp(u16, u8),
    /// `SUBSCRIBE`.
    Subscribe {
        /// The packet identifier.
        pkid: u16,
        /// Its filters, in order.
        filters: Vec<Filter>,
        /// MQTT 5 properties.
        props: Props,
    },
    /// `UNSUBSCRIBE`.
    Unsubscribe {
        /// The packet identifier.
        pkid: u16,
        /// Its filters, in order.
        filters: Vec<String>,
    },
    /// `PINGREQ`.
    PingReq,
    /// `DISCONNECT`, with its reason code (0 on 3.1.1).
    Disconnect(u8, Props),
    /// MQTT 5 `AUTH`.
    Auth(u8),
}

/// What the broker sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `CONNACK`.
    ConnAck {
        /// The broker kept a session for this client id.
        session_present: bool,
        /// The 3.1.1 return code, or the MQTT 5 reason code.
        code: u8,
        /// MQTT 5 properties.
        props: Props,
    },
    /// `PUBLISH`.
    Publish(Publish),
    /// `PUBACK`: (packet id, reason code).
    PubAck(u16, u8),
    /// `SUBACK`.
    SubAck {
        /// The packet identifier.
        pkid: u16,
        /// One return or reason code per filter, in order.
        codes: Vec<u8>,
    },
    /// `UNSUBACK`.
    UnsubAck {
        /// The packet identifier.
        pkid: u16,
        /// One reason code per filter (MQTT 5; none on 3.1.1).
        codes: Vec<u8>,
    },
    /// `PINGRESP`.
    PingResp,
    /// `DISCONNECT` from the broker: MQTT 5 only (a 3.1.1 connection is just closed).
    Disconnect(u8, Props),
}

/// Why bytes are not an MQTT packet this broker takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttError {
    /// The specification calls it malformed; says what.
    Malformed(String),
    /// The packet is this many bytes, over the limit.
    TooLarge(usize),
    /// The first packet was not `CONNECT`, or a second `CONNECT` came.
    ProtocolError(String),
    /// A `CONNECT` for a protocol level this broker does not speak (3 is MQTT 3.1).
    UnsupportedVersion(u8),
}

impl std::fmt::Display for MqttError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MqttError::Malformed(m) => write!(f, "malformed packet: {m}"),
            MqttError::TooLarge(n) => write!(f, "a packet of {n} bytes is over the limit"),
            MqttError::ProtocolError(m) => write!(f, "protocol error: {m}"),
            MqttError::UnsupportedVersion(v) => write!(
                f,
                "protocol level {v} is not spoken here (4: MQTT 3.1.1, 5: MQTT 5.0)"
            ),
        }
    }
}

impl std::error::Error for MqttError {}

/// MQTT 5 reason codes the broker uses.
pub mod reason {
    /// Success (0x00).
    pub const SUCCESS: u8 = 0x00;
    /// Granted qos 1 (0x01).
    pub const GRANTED_QOS_1: u8 = 0x01;
    /// No matching subscribers (0x10).
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    /// No subscription existed (0x11).
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// Unspecified (0x80).
    pub const UNSPECIFIED: u8 = 0x80;
    /// Malformed (0x81).
    pub const MALFORMED: u8 = 0x81;
    /// Protocol error (0x82).
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// Implementation specific (0x83).
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    /// Unsupported version (0x84).
    pub const UNSUPPORTED_VERSION: u8 = 0x84;
    /// Client id not valid (0x85).
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    /// Bad user or password (0x86).
    pub const BAD_USER_OR_PASSWORD: u8 = 0x86;
    /// Not authorized (0x87).
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Server unavailable (0x88).
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    /// Server shutting down (0x8B).
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// Bad authentication method (0x8C).
    pub const BAD_AUTH_METHOD: u8 = 0x8C;
    /// Session taken over (0x8E).
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// Keep alive timeout (0x8D).
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// Topic filter invalid (0x8F).
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// Topic name invalid (0x90).
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// Topic alias invalid (0x94).
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    /// Packet too large (0x95).
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// Quota exceeded (0x97).
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// Payload format invalid (0x99).
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    /// Qos not supported (0x9B).
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    /// Shared subscriptions not supported (0x9E).
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: u8 = 0x9E;
    /// Wildcards not supported (0xA2).
    pub const WILDCARDS_NOT_SUPPORTED: u8 = 0xA2;
    /// The 3.1.1 SUBACK failure code (0x80).
    pub const V311_SUBSCRIBE_FAILURE: u8 = 0x80;
}
