//! MQTT packets to and from bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Connect, Filter, MqttError, Packet, Props, Publish, QoS, Reply, Version, Will};

fn malformed(m: impl Into<String>) -> MqttError {
    MqttError::Malformed(m.into())
}

/// Reads a variable byte integer at the start of `b`: `Ok(None)` if more bytes are
/// needed, else (value, bytes used).
fn varint(b: &[u8]) -> Result<Option<(usize, usize)>, MqttError> {
    let mut v = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return Ok(None);
        };
        v |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Err(malformed("a variable byte integer longer than 4 bytes"))
}

/// Decodes one packet from the front of `buf`, given the version the connection
/// speaks (`None` before its `CONNECT`). `max` bounds a packet's size in bytes.
pub fn decode(
    buf: &mut BytesMut,
    version: Option<Version>,
    max: usize,
) -> Result<Option<Packet>, MqttError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some((len, used)) = varint(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + used + len;
    if total > max {
        return Err(MqttError::TooLarge(total));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(1 + used);
    let body = buf.split_to(len).freeze();
    let mut r = Reader { b: body };
    let (kind, flags) = (first >> 4, first & 0x0F);
    let v5 = version == Some(Version::V5);
    let packet = match (kind, version) {
        (1, None) => Packet::Connect(Box::new(connect(&mut r, flags)?)),
        (1, Some(_)) => return Err(MqttError::ProtocolError("a second CONNECT".into())),
        (_, None) => {
            return Err(MqttError::ProtocolError(
                "the first packet must be CONNECT".into(),
            ))
        }
        (3, Some(_)) => Packet::Publish(publish(&mut r, flags, v5)?),
        (4..=7, Some(_)) => {
            let want = if kind == 6 { 2 } else { 0 };
            if flags != want {
                return Err(malformed("reserved flags set"));
            }
            let pkid = r.u16()?;
            let code = if r.b.has_remaining() { r.u8()? } else { 0 };
            if v5 && r.b.has_remaining() {
                r.props()?;
            }
            match kind {
                4 => Packet::PubAck(pkid, code),
                5 => Packet::PubRec(pkid, code),
                6 => Packet::PubRel(pkid, code),
                _ => Packet::PubComp(pkid, code),
            }
        }
        (8, Some(_)) => {
            if flags != 2 {
                return Err(malformed("SUBSCRIBE's reserved flags must be 0010"));
            }
            let pkid = r.u16()?;
            let props = if v5 { r.props()? } else { Props::default() };
            let mut filters = Vec::new();
            while r.b.has_remaining() {
                let filter = r.string()?;
                let o = r.u8()?;
                let qos = QoS::from_bits(o & 3).ok_or_else(|| malformed("QoS 3"))?;
                if (!v5 && o & 0xFC != 0) || (v5 && (o & 0xC0 != 0 || (o >> 4) & 3 == 3)) {
                    return Err(malformed("reserved subscription option bits set"));
                }
                filters.push(Filter {
                    filter,
                    qos,
                    no_local: v5 && o & 4 != 0,
                    retain_as_published: v5 && o & 8 != 0,
                    retain_handling: if v5 { (o >> 4) & 3 } else { 0 },
                });
            }
            if filters.is_empty() {
                return Err(MqttError::ProtocolError(
                    "a SUBSCRIBE with no filter".into(),
                ));
            }
            Packet::Subscribe {
                pkid,
                filters,
                props,
            }
        }
        (10, Some(_)) => {
            if flags != 2 {
                return Err(malformed("UNSUBSCRIBE's reserved flags must be 0010"));
            }
            let pkid = r.u16()?;
            if v5 {
                r.props()?;
            }
            let mut filters = Vec::new();
            while r.b.has_remaining() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                return Err(MqttError::ProtocolError(
                    "an UNSUBSCRIBE with no filter".into(),
                ));
            }
            Packet::Unsubscribe { pkid, filters }
        }
        (12, Some(_)) if len == 0 && flags == 0 => Packet::PingReq,
        (14, Some(_)) if flags == 0 => {
            let code = if r.b.has_remaining() { r.u8()? } else { 0 };
            let props = if v5 && r.b.has_remaining() {
                r.props()?
            } else {
                Props::default()
            };
            Packet::Disconnect(code, props)
        }
        (15, Some(Version::V5)) if flags == 0 => {
            let code = if r.b.has_remaining() { r.u8()? } else { 0 };
            if r.b.has_remaining() {
                r.props()?;
            }
            Packet::Auth(code)
        }
        (k, _) => return Err(malformed(format!("packet type {k} with flags {flags:04b}"))),
    };
    if r.b.has_remaining() && !matches!(packet, Packet::Publish(_)) {
        return Err(malformed("bytes past the end of the packet"));
    }
    Ok(Some(packet))
}

fn connect(r: &mut Reader, flags: u8) -> Result<Connect, MqttError> {
    if flags != 0 {
        return Err(malformed("CONNECT's reserved flags set"));
    }
    let name = r.string()?;
    let level = r.u8()?;
    let version = match (name.as_str(), level) {
        ("MQTT", 4) => Version::V311,
        ("MQTT", 5) => Version::V5,
        ("MQTT", l) | ("MQIsdp", l) => return Err(MqttError::UnsupportedVersion(l)),
        (n, _) => return Err(malformed(format!("protocol name {n:?}, not MQTT"))),
    };
    let v5 = version == Version::V5;
    let f = r.u8()?;
    if f & 1 != 0 {
        return Err(malformed("CONNECT's reserved flag set"));
    }
    let keep_alive = r.u16()?;
    let props = if v5 { r.props()? } else { Props::default() };
    let client_id = r.string()?;
    let will = if f & 0x04 != 0 {
        let props = if v5 { r.props()? } else { Props::default() };
        let topic = r.string()?;
        let payload = r.binary()?;
        let qos = QoS::from_bits((f >> 3) & 3).ok_or_else(|| malformed("will QoS 3"))?;
        Some(Will {
            topic,
            payload,
            qos,
            retain: f & 0x20 != 0,
            props,
        })
    } else {
        if f & 0x38 != 0 {
            return Err(malformed("will QoS or retain without a will"));
        }
        None
    };
    let user = if f & 0x80 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if f & 0x40 != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        version,
        client_id,
        clean: f & 0x02 != 0,
        keep_alive,
        user,
        password,
        will,
        props,
    })
}

fn publish(r: &mut Reader, flags: u8, v5: bool) -> Result<Publish, MqttError> {
    let qos = QoS::from_bits((flags >> 1) & 3).ok_or_else(|| malformed("PUBLISH at QoS 3"))?;
    let dup = flags & 8 != 0;
    if qos == QoS::AtMostOnce && dup {
        return Err(malformed("DUP set at QoS 0"));
    }
    let topic = r.string()?;
    let pkid = match qos {
        QoS::AtMostOnce => None,
        _ => match r.u16()? {
            0 => return Err(malformed("packet identifier 0")),
            id => Some(id),
        },
    };
    let props = if v5 { r.props()? } else { Props::default() };
    let payload = std::mem::take(&mut r.b);
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic,
        pkid,
        payload,
        props,
    })
}

struct Reader {
    b: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), MqttError> {
        match self.b.remaining() >= n {
            true => Ok(()),
            false => Err(malformed("a field overruns its packet")),
        }
    }

    fn u8(&mut self) -> Result<u8, MqttError> {
        self.need(1)?;
        Ok(self.b.get_u8())
    }

    fn u16(&mut self) -> Result<u16, MqttError> {
        self.need(2)?;
        Ok(self.b.get_u16())
    }

    fn u32(&mut self) -> Result<u32, MqttError> {
        self.need(4)?;
        Ok(self.b.get_u32())
    }

    fn binary(&mut self) -> Result<Bytes, MqttError> {
        let n = self.u16()? as usize;
        self.need(n)?;
        Ok(self.b.split_to(n))
    }

    fn string(&mut self) -> Result<String, MqttError> {
        let b = self.binary()?;
        match std::str::from_utf8(&b) {
            Ok(s) if !s.contains('\0') => Ok(s.to_owned()),
            _ => Err(malformed("a string that is not UTF-8, or holds a NUL")),
        }
    }

    fn varint(&mut self) -> Result<usize, MqttError> {
        match varint(&self.b)? {
            Some((v, used)) => {
                self.b.advance(used);
                Ok(v)
            }
            None => Err(malformed("a variable byte integer overruns its packet")),
        }
    }

    fn props(&mut self) -> Result<Props, MqttError> {
        let len = self.varint()?;
        self.need(len)?;
        let mut r = Reader {
            b: self.b.split_to(len),
        };
        let mut p = Props::default();
        while r.b.has_remaining() {
            let id = r.varint()?;
            match id {
                0x01 => p.payload_format = Some(r.u8()?),
                0x02 => p.message_expiry = Some(r.u32()?),
                0x03 => p.content_type = Some(r.string()?),
                0x08 => p.response_topic = Some(r.string()?),
                0x09 => p.correlation = Some(r.binary()?),
                0x0B => {
                    r.varint()?;
                }
                0x11 => p.session_expiry = Some(r.u32()?),
                0x12 => p.assigned_client_id = Some(r.string()?),
                0x13 => p.server_keep_alive = Some(r.u16()?),
                0x15 => p.auth_method = Some(r.string()?),
                0x16 => {
                    r.binary()?;
                }
                0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    let v = r.u8()?;
                    p.flags.push((id as u8, v));
                }
                0x18 => {
                    r.u32()?;
                }
                0x1A | 0x1C => {
                    r.string()?;
                }
                0x1F => p.reason = Some(r.string()?),
                0x21 => p.receive_maximum = Some(r.u16()?),
                0x22 => {
                    r.u16()?;
                }
                0x23 => p.topic_alias = Some(r.u16()?),
                0x26 => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user.push((k, v));
                }
                0x27 => p.maximum_packet_size = Some(r.u32()?),
                other => return Err(malformed(format!("unknown property {other:#04x}"))),
            }
        }
        Ok(p)
    }
}

fn put_varint(out: &mut BytesMut, mut v: usize) {
    loop {
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            return;
        }
    }
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

fn put_props(out: &mut BytesMut, p: &Props) {
    let mut b = BytesMut::new();
    if let Some(v) = p.payload_format {
        b.put_u8(0x01);
        b.put_u8(v);
    }
    if let Some(v) = p.message_expiry {
        b.put_u8(0x02);
        b.put_u32(v);
    }
    if let Some(v) = &p.content_type {
        b.put_u8(0x03);
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = &p.response_topic {
        b.put_u8(0x08);
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = &p.correlation {
        b.put_u8(0x09);
        put_str(&mut b, v);
    }
    if let Some(v) = p.session_expiry {
        b.put_u8(0x11);
        b.put_u32(v);
    }
    if let Some(v) = &p.assigned_client_id {
        b.put_u8(0x12);
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = p.server_keep_alive {
        b.put_u8(0x13);
        b.put_u16(v);
    }
    if let Some(v) = &p.reason {
        b.put_u8(0x1F);
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = p.receive_maximum {
        b.put_u8(0x21);
        b.put_u16(v);
    }
    for &(id, v) in &p.flags {
        b.put_u8(id);
        b.put_u8(v);
    }
    for (k, v) in &p.user {
        b.put_u8(0x26);
        put_str(&mut b, k.as_bytes());
        put_str(&mut b, v.as_bytes());
    }
    if let Some(v) = p.maximum_packet_size {
        b.put_u8(0x27);
        b.put_u32(v);
    }
    put_varint(out, b.len());
    out.put_slice(&b);
}

fn frame(out: &mut BytesMut, first: u8, body: &[u8]) {
    out.put_u8(first);
    put_varint(out, body.len());
    out.put_slice(body);
}

/// Encodes what the broker sends, for a connection speaking `version`.
pub fn encode(reply: &Reply, version: Version, out: &mut BytesMut) {
    let v5 = version == Version::V5;
    let mut b = BytesMut::new();
    match reply {
        Reply::ConnAck {
            session_present,
            code,
            props,
        } => {
            b.put_u8(*session_present as u8);
            b.put_u8(*code);
            if v5 {
                put_props(&mut b, props);
            }
            frame(out, 0x20, &b);
        }
        Reply::Publish(p) => {
            let flags = (p.dup as u8) << 3 | (p.qos as u8) << 1 | p.retain as u8;
            put_str(&mut b, p.topic.as_bytes());
            if let Some(id) = p.pkid {
                b.put_u16(id);
            }
            if v5 {
                put_props(&mut b, &p.props);
            }
            out.put_u8(0x30 | flags);
            put_varint(out, b.len() + p.payload.len());
            out.put_slice(&b);
            out.put_slice(&p.payload);
        }
        Reply::PubAck(pkid, code) => {
            b.put_u16(*pkid);
            if v5 && *code != 0 {
                b.put_u8(*code);
            }
            frame(out, 0x40, &b);
        }
        Reply::SubAck { pkid, codes } => {
            b.put_u16(*pkid);
            if v5 {
                put_props(&mut b, &Props::default());
            }
            b.put_slice(codes);
            frame(out, 0x90, &b);
        }
        Reply::UnsubAck { pkid, codes } => {
            b.put_u16(*pkid);
            if v5 {
                put_props(&mut b, &Props::default());
                b.put_slice(codes);
            }
            frame(out, 0xB0, &b);
        }
        Reply::PingResp => frame(out, 0xD0, &[]),
        Reply::Disconnect(code, props) => {
            if v5 {
                b.put_u8(*code);
                put_props(&mut b, props);
                frame(out, 0xE0, &b);
            }
        }
    }
}

#[cfg(test)]
mod tests;
