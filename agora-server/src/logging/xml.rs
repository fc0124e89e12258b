//! The XML reader under the log configuration: quick-xml events into a tree of
//! [`Elem`]s, each with the line and column it starts at, plus the generic checks an
//! element can fail (unknown attribute, unexpected child).
//!
//! Knows nothing of Seelog's vocabulary: which elements and attributes mean what is
//! `config.rs`'s business. Never reads a file; it is given the text.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

/// An element of the file, read into a tree first so validation can look ahead
/// (formats are defined after the outputs that use them).
pub(super) struct Elem {
    /// The tag name, as written.
    pub(super) name: String,
    /// Attributes in document order, values unescaped; no key appears twice.
    pub(super) attrs: Vec<(String, String)>,
    /// Line and column (from 1) of the `<`, for errors.
    pub(super) pos: (usize, usize),
    /// Child elements in document order.
    pub(super) children: Vec<Elem>,
}

impl Elem {
    /// The value of attribute `name`, if given.
    pub(super) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An error naming the first attribute of `e` not in `allowed`.
pub(super) fn check_attrs(e: &Elem, allowed: &[&str]) -> Result<(), String> {
    for (k, _) in &e.attrs {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "unknown or unsupported attribute {k:?} on <{}>",
                e.name
            ));
        }
    }
    Ok(())
}

/// An error naming the first child of `e`, for elements that must be empty.
pub(super) fn no_children(e: &Elem) -> Result<(), String> {
    match e.children.first() {
        Some(c) => Err(format!("<{}> cannot contain <{}>", e.name, c.name)),
        None => Ok(()),
    }
}

/// Line and column (from 1, column in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary_compat(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// Reads the whole document into a tree of elements.
pub(super) fn read_tree(text: &str) -> Result<Elem, ((usize, usize), String)> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Elem> = Vec::new();
    let mut root = None;
    loop {
        // The event starts at the first non-blank byte after the current position.
        let at = reader.buffer_position() as usize;
        let start = at + text[at..].len() - text[at..].trim_start().len();
        let pos = line_col(text, start);
        let event = reader.read_event().map_err(|e| {
            (
                line_col(text, reader.error_position() as usize),
                format!("malformed XML: {e}"),
            )
        })?;
        match event {
            Event::Start(s) => stack.push(element(&s, pos)?),
            Event::Empty(s) => {
                let e = element(&s, pos)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None if root.is_none() => root = Some(e),
                    None => return Err((pos, "more than one root element".into())),
                }
            }
            Event::End(_) => {
                let e = stack.pop().expect("quick-xml checks end tags");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None if root.is_none() => root = Some(e),
                    None => return Err((pos, "more than one root element".into())),
                }
            }
            Event::Text(t) => {
                let t = String::from_utf8_lossy(&t);
                if !t.trim().is_empty() {
                    return Err((pos, format!("unexpected text {:?}", t.trim())));
                }
            }
            Event::CData(_) | Event::GeneralRef(_) => return Err((pos, "unexpected text".into())),
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err((
            open.pos,
            format!("malformed XML: <{}> is never closed", open.name),
        ));
    }
    root.ok_or(((1, 1), "malformed XML: no root element".into()))
}

fn element(s: &BytesStart<'_>, pos: (usize, usize)) -> Result<Elem, ((usize, usize), String)> {
    let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| (pos, format!("malformed XML: {e}")))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| (pos, format!("malformed XML in attribute {key:?}: {e}")))?
            .into_owned();
        if attrs.iter().any(|(k, _)| *k == key) {
            return Err((pos, format!("attribute {key:?} given twice")));
        }
        attrs.push((key, value));
    }
    Ok(Elem {
        name,
        attrs,
        pos,
        children: Vec::new(),
    })
}
