//! Message ids: a publish may carry the header `agora-msg-id: <id>`; a queue remembers
//! the ids it accepted for a window and answers a repeat with the same confirm without
//! storing it again, so a publisher may retry a publish whose confirm it never saw.
//!
//! ```
//! use agora_protocol::{msg_id, Headers};
//! let mut h = Headers::new();
//! h.insert(msg_id::MSG_ID, "order-7781").unwrap();
//! assert_eq!(msg_id::msg_id(&h), Some(Ok("order-7781")));
//! ```

use crate::frame::Headers;

/// The header naming a publish's message id.
pub const MSG_ID: &str = "agora-msg-id";

/// The longest message id, in bytes.
pub const MAX_MSG_ID: usize = 256;

/// The message id a publish's headers name: `None` when there is none;
/// `Some(Err(why))` when the header is there but cannot be one (empty, longer than
/// [`MAX_MSG_ID`], or given twice).
pub fn msg_id(headers: &Headers) -> Option<Result<&str, String>> {
    if headers.is_empty() {
        return None;
    }
    let mut values = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(MSG_ID))
        .map(|(_, v)| v);
    let v = values.next()?;
    Some(if values.next().is_some() {
        Err(format!("{MSG_ID} may appear once"))
    } else if v.is_empty() {
        Err(format!("{MSG_ID} may not be empty"))
    } else if v.len() > MAX_MSG_ID {
        Err(format!(
            "{MSG_ID} is {} bytes; at most {MAX_MSG_ID}",
            v.len()
        ))
    } else {
        Ok(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_one_value_of_at_most_256_bytes() {
        let mut h = Headers::new();
        assert_eq!(msg_id(&h), None);
        h.append("trace", "1").unwrap();
        assert_eq!(msg_id(&h), None);
        h.append("Agora-Msg-Id", "a").unwrap();
        assert_eq!(msg_id(&h), Some(Ok("a")));
        h.append(MSG_ID, "b").unwrap();
        assert!(msg_id(&h).unwrap().unwrap_err().contains("once"));
        let mut long = Headers::new();
        long.append(MSG_ID, &"x".repeat(MAX_MSG_ID + 1)).unwrap();
        assert!(msg_id(&long).unwrap().unwrap_err().contains("256"));
    }
}
