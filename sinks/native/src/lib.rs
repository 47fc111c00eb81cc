//! COPY rows straight from Avro values: a table sink's row plan, compiled once per writer schema.
//!
//! `RowWriter` walks the bytes of one Avro value (written with the schema it was compiled for)
//! once, keeps the fields its columns name, and writes one tuple of PostgreSQL's binary COPY
//! format (each column in its PostgreSQL type's binary form): no Python object is built per
//! field, and the server parses no text. It only speeds up what the Python path
//! (`sinks.rows.RowPlan.row`) would store anyway. Anything it is not certain of (an unknown
//! framing header, bytes the guard would refuse, a branch the plan does not map, an
//! environment other than the worker's, a value COPY could not carry) makes `row` answer
//! None, and the caller takes the Python path, which stores the event or says why not.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use chrono::{DateTime, Datelike};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_json::Value as Json;

const MAX_DEPTH: usize = 32;
const NONCE_BYTES: usize = 12;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Logical {
    Plain,
    Uuid,
    TimestampMicros,
    TimestampMillis,
    Other,
}

#[derive(Clone, Debug)]
enum Kind {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize),
    Enum(Vec<String>),
    Array(Box<Node>),
    Map(Box<Node>),
    Record(String, Vec<(String, Node)>),
    Union(Vec<Node>),
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    logical: Logical,
    slot: Option<usize>,
}

fn plain(kind: Kind) -> Node {
    Node {
        kind,
        logical: Logical::Plain,
        slot: None,
    }
}

struct Parser {
    named: HashMap<String, Option<Node>>,
}

fn fullname(name: &str, ns: &str) -> String {
    if name.contains('.') || ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}.{name}")
    }
}

impl Parser {
    fn parse(&mut self, json: &Json, ns: &str, depth: usize) -> Result<Node, String> {
        if depth > MAX_DEPTH {
            return Err("schema nested too deep".into());
        }
        match json {
            Json::String(name) => self.primitive_or_named(name, ns),
            Json::Array(branches) => {
                let nodes = branches
                    .iter()
                    .map(|b| self.parse(b, ns, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(plain(Kind::Union(nodes)))
            }
            Json::Object(obj) => {
                let kind = obj.get("type").ok_or("a schema object without a type")?;
                let logical = match obj.get("logicalType").and_then(Json::as_str) {
                    None => Logical::Plain,
                    Some("uuid") => Logical::Uuid,
                    Some("timestamp-micros") => Logical::TimestampMicros,
                    Some("timestamp-millis") => Logical::TimestampMillis,
                    Some(_) => Logical::Other,
                };
                let kind_name = match kind {
                    Json::String(k) => k.as_str(),
                    other => return self.parse(other, ns, depth + 1),
                };
                let mut node = match kind_name {
                    "record" | "error" => return self.record(obj, ns, depth),
                    "enum" => {
                        let symbols = obj
                            .get("symbols")
                            .and_then(Json::as_array)
                            .ok_or("an enum without symbols")?
                            .iter()
                            .map(|s| {
                                s.as_str()
                                    .map(str::to_string)
                                    .ok_or("a symbol that is not a string")
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        self.define(obj, ns, Kind::Enum(symbols))?
                    }
                    "fixed" => {
                        let size = obj
                            .get("size")
                            .and_then(Json::as_u64)
                            .ok_or("a fixed without a size")?;
                        self.define(obj, ns, Kind::Fixed(size as usize))?
                    }
                    "array" => {
                        let items = obj.get("items").ok_or("an array without items")?;
                        plain(Kind::Array(Box::new(self.parse(items, ns, depth + 1)?)))
                    }
                    "map" => {
                        let values = obj.get("values").ok_or("a map without values")?;
                        plain(Kind::Map(Box::new(self.parse(values, ns, depth + 1)?)))
                    }
                    other => self.primitive_or_named(other, ns)?,
                };
                node.logical = logical;
                Ok(node)
            }
            _ => Err(format!("not a schema: {json}")),
        }
    }

    /// A named enum or fixed: kept under its full name for later references.
    fn define(
        &mut self,
        obj: &serde_json::Map<String, Json>,
        ns: &str,
        kind: Kind,
    ) -> Result<Node, String> {
        let name = obj
            .get("name")
            .and_then(Json::as_str)
            .ok_or("a named type without a name")?;
        let own_ns = obj.get("namespace").and_then(Json::as_str).unwrap_or(ns);
        let node = plain(kind);
        self.named
            .insert(fullname(name, own_ns), Some(node.clone()));
        Ok(node)
    }

    fn record(
        &mut self,
        obj: &serde_json::Map<String, Json>,
        ns: &str,
        depth: usize,
    ) -> Result<Node, String> {
        let name = obj
            .get("name")
            .and_then(Json::as_str)
            .ok_or("a record without a name")?;
        let own_ns = if name.contains('.') {
            name.rsplit_once('.').map(|(n, _)| n).unwrap_or("")
        } else {
            obj.get("namespace").and_then(Json::as_str).unwrap_or(ns)
        };
        let full = fullname(name, own_ns);
        self.named.insert(full.clone(), None); // a reference to it before it is done: recursive
        let mut fields = Vec::new();
        for field in obj
            .get("fields")
            .and_then(Json::as_array)
            .ok_or("a record without fields")?
        {
            let fname = field
                .get("name")
                .and_then(Json::as_str)
                .ok_or("a field without a name")?;
            let ftype = field.get("type").ok_or("a field without a type")?;
            fields.push((fname.to_string(), self.parse(ftype, own_ns, depth + 1)?));
        }
        let node = plain(Kind::Record(full.clone(), fields));
        self.named.insert(full, Some(node.clone()));
        Ok(node)
    }

    fn primitive_or_named(&mut self, name: &str, ns: &str) -> Result<Node, String> {
        let kind = match name {
            "null" => Kind::Null,
            "boolean" => Kind::Boolean,
            "int" => Kind::Int,
            "long" => Kind::Long,
            "float" => Kind::Float,
            "double" => Kind::Double,
            "bytes" => Kind::Bytes,
            "string" => Kind::Str,
            _ => {
                let found = self
                    .named
                    .get(&fullname(name, ns))
                    .or_else(|| self.named.get(name))
                    .ok_or_else(|| format!("unknown type {name}"))?;
                return found
                    .clone()
                    .ok_or_else(|| format!("recursive type {name}"));
            }
        };
        Ok(plain(kind))
    }
}

/// What a captured value is (its Avro type and logical type), which decides the PostgreSQL
/// types it may go into (`fits`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Render {
    Text,
    Uuid,
    Integer,
    Boolean,
    TimestampMicros,
    TimestampMillis,
}

fn render_of(node: &Node) -> Result<Option<Render>, String> {
    Ok(Some(match (&node.kind, node.logical) {
        (Kind::Null, _) => return Ok(None),
        (Kind::Str, Logical::Uuid) => Render::Uuid,
        (Kind::Str, Logical::Plain) | (Kind::Enum(_), Logical::Plain) => Render::Text,
        (Kind::Int, Logical::Plain) | (Kind::Long, Logical::Plain) => Render::Integer,
        (Kind::Long, Logical::TimestampMicros) => Render::TimestampMicros,
        (Kind::Long, Logical::TimestampMillis) => Render::TimestampMillis,
        (Kind::Boolean, Logical::Plain) => Render::Boolean,
        (kind, logical) => {
            return Err(format!(
                "a column of {kind:?} ({logical:?}) is not written natively"
            ))
        }
    }))
}

/// The render of a path's end: a value, or a union of null and values of one render.
fn render_at(node: &Node) -> Result<Render, String> {
    if let Kind::Union(branches) = &node.kind {
        let mut found: Option<Render> = None;
        for branch in branches {
            if let Some(r) = render_of(branch)? {
                if found.is_some_and(|f| f != r) {
                    return Err("a union whose branches are written differently".into());
                }
                found = Some(r);
            }
        }
        return found.ok_or_else(|| "a union of null alone".into());
    }
    render_of(node)?.ok_or_else(|| "a null column".into())
}

fn branch_name(node: &Node) -> String {
    match &node.kind {
        Kind::Record(name, _) => name.clone(),
        Kind::Null => "null".into(),
        Kind::Str => "string".into(),
        Kind::Long => "long".into(),
        Kind::Int => "int".into(),
        Kind::Boolean => "boolean".into(),
        other => format!("{other:?}"),
    }
}

/// The slot of the node at `path` (a new one, `next`, unless another column named it); and how
/// its value is written.
fn mark(root: &mut Node, path: &[String], next: usize) -> Result<(usize, Render), String> {
    let mut node = root;
    for segment in path {
        node = match &mut node.kind {
            Kind::Record(_, fields) => {
                &mut fields
                    .iter_mut()
                    .find(|(name, _)| name == segment)
                    .ok_or_else(|| format!("no field {segment}"))?
                    .1
            }
            Kind::Union(branches) => branches
                .iter_mut()
                .find(|b| branch_name(b) == *segment)
                .ok_or_else(|| format!("no branch {segment}"))?,
            _ => return Err(format!("{segment}: not a record or a union")),
        };
    }
    let render = render_at(node)?;
    Ok((*node.slot.get_or_insert(next), render))
}

#[derive(Clone, Copy)]
enum Cap<'a> {
    Missing,
    Null,
    Bool(bool),
    Long(i64),
    Text(&'a str),
}

/// A column's PostgreSQL type (its binary form).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Pg {
    Text,
    Uuid,
    Numeric,
    Int2,
    Int4,
    Int8,
    Timestamptz,
    Bytea,
    Bool,
}

fn pg_type(name: &str) -> Result<Pg, String> {
    Ok(match name {
        "text" => Pg::Text,
        "uuid" => Pg::Uuid,
        "numeric" => Pg::Numeric,
        "smallint" => Pg::Int2,
        "integer" => Pg::Int4,
        "bigint" => Pg::Int8,
        "timestamp with time zone" => Pg::Timestamptz,
        "bytea" => Pg::Bytea,
        "boolean" => Pg::Bool,
        other => return Err(format!("a column of type {other} is not written natively")),
    })
}

fn fits(render: Render, pg: Pg) -> bool {
    matches!(
        (render, pg),
        (Render::Text, Pg::Text)
            | (Render::Uuid, Pg::Uuid | Pg::Text)
            | (
                Render::Integer,
                Pg::Int2 | Pg::Int4 | Pg::Int8 | Pg::Numeric
            )
            | (
                Render::TimestampMicros | Render::TimestampMillis,
                Pg::Timestamptz
            )
            | (Render::Boolean, Pg::Bool)
    )
}

enum Col {
    Value(usize, Render, Pg),
    Sealed(usize),
    Topic,
    Partition(Pg),
    Offset(Pg),
}

struct Seal {
    cipher: Aes256Gcm,
    header: Vec<u8>,
    aad: Vec<u8>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self, max_bytes: usize) -> Option<u64> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return None; // past 64 bits
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A zigzag-encoded long of at most `max_bytes` bytes.
    fn zigzag(&mut self, max_bytes: usize) -> Option<i64> {
        let v = self.varint(max_bytes)?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn long(&mut self) -> Option<i64> {
        self.zigzag(10)
    }

    fn int(&mut self) -> Option<i64> {
        let v = self.zigzag(5)?;
        (i64::from(i32::MIN)..=i64::from(i32::MAX))
            .contains(&v)
            .then_some(v)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn length(&mut self) -> Option<usize> {
        let n = self.long()?;
        usize::try_from(n).ok()
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
}

fn walk<'a>(
    node: &'a Node,
    r: &mut Reader<'a>,
    caps: &mut [Cap<'a>],
    outer: Option<usize>,
) -> Option<()> {
    let slot = node.slot.or(outer);
    let cap = match &node.kind {
        Kind::Null => Cap::Null,
        Kind::Boolean => match r.take(1)?[0] {
            0 => Cap::Bool(false),
            1 => Cap::Bool(true),
            _ => return None,
        },
        Kind::Int => Cap::Long(r.int()?),
        Kind::Long => Cap::Long(r.long()?),
        Kind::Float => {
            r.take(4)?;
            Cap::Missing
        }
        Kind::Double => {
            r.take(8)?;
            Cap::Missing
        }
        Kind::Bytes => {
            let n = r.length()?;
            r.take(n)?;
            Cap::Missing
        }
        Kind::Str => {
            let n = r.length()?;
            Cap::Text(std::str::from_utf8(r.take(n)?).ok()?)
        }
        Kind::Fixed(size) => {
            r.take(*size)?;
            Cap::Missing
        }
        Kind::Enum(symbols) => {
            let i = usize::try_from(r.int()?).ok()?;
            Cap::Text(symbols.get(i)?.as_str())
        }
        Kind::Array(item) => {
            skip_blocks(r, item, false)?;
            Cap::Missing
        }
        Kind::Map(value) => {
            skip_blocks(r, value, true)?;
            Cap::Missing
        }
        Kind::Record(_, fields) => {
            for (_, field) in fields {
                walk(field, r, caps, None)?;
            }
            Cap::Missing
        }
        Kind::Union(branches) => {
            let i = usize::try_from(r.long()?).ok()?;
            let branch = branches.get(i)?;
            walk(branch, r, caps, slot)?;
            return Some(());
        }
    };
    if let Some(s) = slot {
        caps[s] = cap;
    }
    Some(())
}

/// Skips an array's or a map's blocks. No column is inside one: `mark` walks records and
/// unions only, so the items are walked with no slots to fill.
fn skip_blocks<'a>(r: &mut Reader<'a>, item: &'a Node, keyed: bool) -> Option<()> {
    loop {
        let count = r.long()?;
        if count == 0 {
            return Some(());
        }
        if count < 0 {
            r.long()?; // the block's size in bytes
        }
        let count = usize::try_from(count.checked_abs()?).ok()?;
        if count > r.left() {
            return None; // left to the guard, which bounds it
        }
        for _ in 0..count {
            if keyed {
                let n = r.length()?;
                std::str::from_utf8(r.take(n)?).ok()?;
            }
            walk(item, r, &mut [], None)?;
        }
    }
}

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One field: its length, then its bytes.
fn field(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    out.extend_from_slice(&i32::try_from(bytes.len()).ok()?.to_be_bytes());
    out.extend_from_slice(bytes);
    Some(())
}

fn text(out: &mut Vec<u8>, t: &str) -> Option<()> {
    if t.as_bytes().contains(&0) {
        return None; // PostgreSQL text cannot hold NUL: the Python path says so
    }
    field(out, t.as_bytes())
}

fn integer(out: &mut Vec<u8>, v: i64, pg: Pg) -> Option<()> {
    match pg {
        Pg::Int2 => field(out, &i16::try_from(v).ok()?.to_be_bytes()),
        Pg::Int4 => field(out, &i32::try_from(v).ok()?.to_be_bytes()),
        Pg::Int8 => field(out, &v.to_be_bytes()),
        Pg::Numeric => numeric(out, v),
        _ => None,
    }
}

/// An integer as PostgreSQL's binary numeric: base-10000 digits, most significant first, with
/// the weight of the first, the sign, and a display scale of 0 (trailing zero digits dropped).
fn numeric(out: &mut Vec<u8>, v: i64) -> Option<()> {
    let mut rest = v.unsigned_abs();
    let mut digits: Vec<u16> = Vec::with_capacity(5);
    while rest > 0 {
        digits.push((rest % 10_000) as u16);
        rest /= 10_000;
    }
    digits.reverse();
    let weight = i16::try_from(digits.len()).ok()? - 1;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let sign: u16 = if v < 0 { 0x4000 } else { 0 };
    let ndigits = i16::try_from(digits.len()).ok()?;
    let mut body = Vec::with_capacity(8 + 2 * digits.len());
    body.extend_from_slice(&ndigits.to_be_bytes());
    body.extend_from_slice(&(if digits.is_empty() { 0 } else { weight }).to_be_bytes());
    body.extend_from_slice(&sign.to_be_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    for d in digits {
        body.extend_from_slice(&d.to_be_bytes());
    }
    field(out, &body)
}

fn timestamp(out: &mut Vec<u8>, micros: i64) -> Option<()> {
    let year = DateTime::from_timestamp_micros(micros)?.naive_utc().year();
    if !(1..=9999).contains(&year) {
        return None; // beyond Python's datetime: the Python path refuses it
    }
    field(out, &micros.checked_sub(PG_EPOCH_MICROS)?.to_be_bytes())
}

#[pyclass(module = "ledgerstream_native")]
struct RowWriter {
    root: Node,
    slots: usize,
    columns: Vec<Col>,
    expects: Vec<(usize, String)>,
    seal: Option<Seal>,
    accepted: Vec<Vec<u8>>,
}

#[pymethods]
impl RowWriter {
    /// `schema`: the writer schema (JSON text). `columns`: per column `(kind, path, type)` with
    /// kind `value` (the field at `path`, a list of field names and union branch names), `sealed`
    /// (the string at `path`, sealed), `topic`, `partition` or `offset`, and the column's
    /// PostgreSQL type as `regtype` names it (`text`, `uuid`, `numeric`, `smallint`, `integer`,
    /// `bigint`, `timestamp with time zone`, `bytea`, `boolean`). `expects`: `(path, text)` that
    /// must hold. `seal`: `(key, header, associated data)` for a sealed column.
    #[new]
    #[pyo3(signature = (schema, columns, expects, seal=None))]
    fn new(
        schema: &str,
        columns: Vec<(String, Vec<String>, String)>,
        expects: Vec<(Vec<String>, String)>,
        seal: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    ) -> PyResult<Self> {
        let json: Json =
            serde_json::from_str(schema).map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut parser = Parser {
            named: HashMap::new(),
        };
        let mut root = parser.parse(&json, "", 0).map_err(PyValueError::new_err)?;
        let mut slots = 0;
        let mut cols = Vec::new();
        let mut sealed = false;
        for (kind, path, type_name) in &columns {
            let pg = pg_type(type_name).map_err(PyValueError::new_err)?;
            let col = match kind.as_str() {
                "value" | "sealed" => {
                    let (slot, render) =
                        mark(&mut root, path, slots).map_err(PyValueError::new_err)?;
                    slots = slots.max(slot + 1);
                    if kind == "sealed" {
                        if render != Render::Text || pg != Pg::Bytea || sealed {
                            return Err(PyValueError::new_err(
                                "one sealed column, of a string, into bytea",
                            ));
                        }
                        sealed = true;
                        Col::Sealed(slot)
                    } else if fits(render, pg) {
                        Col::Value(slot, render, pg)
                    } else {
                        return Err(PyValueError::new_err(format!(
                            "{}: {render:?} does not go into {pg:?}",
                            path.join(".")
                        )));
                    }
                }
                "topic" if pg == Pg::Text => Col::Topic,
                "partition" if matches!(pg, Pg::Int4 | Pg::Int8) => Col::Partition(pg),
                "offset" if pg == Pg::Int8 => Col::Offset(pg),
                other => {
                    return Err(PyValueError::new_err(format!(
                        "no column of kind {other} and type {type_name}"
                    )))
                }
            };
            cols.push(col);
        }
        let mut checks = Vec::new();
        for (path, text) in expects {
            let (slot, render) = mark(&mut root, &path, slots).map_err(PyValueError::new_err)?;
            if render != Render::Text {
                return Err(PyValueError::new_err(
                    "an expectation on a value that is not text",
                ));
            }
            checks.push((slot, text));
            slots = slots.max(slot + 1);
        }
        let seal = match (sealed, seal) {
            (false, _) => None,
            (true, None) => return Err(PyValueError::new_err("a sealed column needs a key")),
            (true, Some((key, header, aad))) => Some(Seal {
                cipher: Aes256Gcm::new_from_slice(&key)
                    .map_err(|_| PyValueError::new_err("a 32-byte key"))?,
                header,
                aad,
            }),
        };
        if !matches!(root.kind, Kind::Record(..)) {
            return Err(PyValueError::new_err("the schema is not a record"));
        }
        Ok(RowWriter {
            root,
            slots,
            columns: cols,
            expects: checks,
            seal,
            accepted: Vec::new(),
        })
    }

    /// Values whose framing header is `header` were written with this writer's schema (the
    /// codec checked it): `row` reads them, from the byte after it.
    fn accept(&mut self, header: Vec<u8>) {
        if !self.accepted.contains(&header) {
            self.accepted.push(header);
        }
    }

    /// The binary COPY tuple of one value, or None for the Python path.
    fn row<'py>(
        &self,
        py: Python<'py>,
        value: &[u8],
        topic: &str,
        partition: i64,
        offset: i64,
    ) -> Option<Bound<'py, PyBytes>> {
        let line = self.line(value, topic, partition, offset)?;
        Some(PyBytes::new(py, &line))
    }
}

impl RowWriter {
    fn line(&self, value: &[u8], topic: &str, partition: i64, offset: i64) -> Option<Vec<u8>> {
        let start = self.accepted.iter().find(|h| value.starts_with(h))?.len();
        let mut caps = vec![Cap::Missing; self.slots];
        let mut r = Reader {
            buf: value,
            pos: start,
        };
        walk(&self.root, &mut r, &mut caps, None)?;
        if r.pos != value.len() {
            return None;
        }
        for (slot, text) in &self.expects {
            match caps[*slot] {
                Cap::Text(t) if t == text => {}
                _ => return None,
            }
        }
        let mut out = Vec::with_capacity(value.len() + 16 * self.columns.len() + 64);
        out.extend_from_slice(&i16::try_from(self.columns.len()).ok()?.to_be_bytes());
        for col in &self.columns {
            match col {
                Col::Topic => text(&mut out, topic)?,
                Col::Partition(pg) => integer(&mut out, partition, *pg)?,
                Col::Offset(pg) => integer(&mut out, offset, *pg)?,
                Col::Value(slot, render, pg) => match (caps[*slot], render, pg) {
                    (Cap::Null, _, _) => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    (Cap::Text(t), Render::Text, _) => text(&mut out, t)?,
                    (Cap::Text(t), Render::Uuid, Pg::Uuid) => {
                        field(&mut out, uuid::Uuid::try_parse(t).ok()?.as_bytes())?
                    }
                    (Cap::Text(t), Render::Uuid, _) => {
                        let id = uuid::Uuid::try_parse(t).ok()?;
                        let mut buf = uuid::Uuid::encode_buffer();
                        field(&mut out, id.hyphenated().encode_lower(&mut buf).as_bytes())?
                    }
                    (Cap::Long(v), Render::Integer, pg) => integer(&mut out, v, *pg)?,
                    (Cap::Long(v), Render::TimestampMicros, _) => timestamp(&mut out, v)?,
                    (Cap::Long(v), Render::TimestampMillis, _) => {
                        timestamp(&mut out, v.checked_mul(1000)?)?
                    }
                    (Cap::Bool(b), Render::Boolean, _) => field(&mut out, &[u8::from(b)])?,
                    _ => return None, // a branch the plan does not map (e.g. crypto money)
                },
                Col::Sealed(slot) => match caps[*slot] {
                    Cap::Null => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Cap::Text(t) => {
                        let seal = self.seal.as_ref()?;
                        let mut nonce = [0u8; NONCE_BYTES];
                        getrandom::getrandom(&mut nonce).ok()?;
                        let body = seal
                            .cipher
                            .encrypt(
                                Nonce::from_slice(&nonce),
                                Payload {
                                    msg: t.as_bytes(),
                                    aad: &seal.aad,
                                },
                            )
                            .ok()?;
                        let size = seal.header.len() + NONCE_BYTES + body.len();
                        out.extend_from_slice(&i32::try_from(size).ok()?.to_be_bytes());
                        out.extend_from_slice(&seal.header);
                        out.extend_from_slice(&nonce);
                        out.extend_from_slice(&body);
                    }
                    _ => return None,
                },
            }
        }
        Some(out)
    }
}

#[pymodule]
fn ledgerstream_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RowWriter>()?;
    Ok(())
}
