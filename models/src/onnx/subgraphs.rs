//! Names the unnamed subgraphs of an ONNX model, editing its protobuf encoding directly.
//!
//! ONNX Runtime can write out the graph of a `.ort` model as `.onnx`, but leaves the branches of
//! `If` nodes without a name, and then refuses to read the file back ("Field 'name' of 'graph' is
//! required to be non-empty"). Only the path model → graph → node → attribute → graph is
//! decoded; every other field, initializer data included, is copied as it is.

/// Protobuf wire type of length-delimited fields (messages, strings, bytes).
const LEN: u64 = 2;

/// ModelProto.graph, GraphProto.node / .name, NodeProto.attribute, AttributeProto.g / .graphs.
const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const GRAPH_NAME: u64 = 2;
const NODE_ATTRIBUTE: u64 = 5;
const ATTRIBUTE_GRAPH: u64 = 6;
const ATTRIBUTE_GRAPHS: u64 = 11;

/// One field of a message: its number, wire type, the whole encoding (key included) and, for
/// length-delimited fields, the payload.
struct Field<'a> {
    number: u64,
    wire: u64,
    raw: &'a [u8],
    payload: &'a [u8],
}

/// A serialized `ModelProto` whose graphs all have names (unnamed ones get unique, path-derived
/// names; named ones are kept).
pub fn name_subgraphs(model: &[u8]) -> Result<Vec<u8>, String> {
    rewrite(model, |field, out| {
        if field.number == MODEL_GRAPH && field.wire == LEN {
            write_len(out, MODEL_GRAPH, &graph(field.payload, "main")?);
            Ok(true)
        } else {
            Ok(false)
        }
    })
}

fn graph(buf: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let mut named = false;
    let mut nodes = 0usize;
    let mut out = rewrite(buf, |field, out| match (field.number, field.wire) {
        (GRAPH_NAME, LEN) if field.payload.is_empty() => Ok(true), // replaced below
        (GRAPH_NAME, LEN) => {
            named = true;
            Ok(false)
        }
        (GRAPH_NODE, LEN) => {
            nodes += 1;
            write_len(
                out,
                GRAPH_NODE,
                &node(field.payload, &format!("{name}_n{nodes}"))?,
            );
            Ok(true)
        }
        _ => Ok(false),
    })?;
    if !named {
        write_len(&mut out, GRAPH_NAME, name.as_bytes());
    }
    Ok(out)
}

fn node(buf: &[u8], prefix: &str) -> Result<Vec<u8>, String> {
    let mut attributes = 0usize;
    rewrite(buf, |field, out| {
        if field.number != NODE_ATTRIBUTE || field.wire != LEN {
            return Ok(false);
        }
        attributes += 1;
        let prefix = format!("{prefix}_a{attributes}");
        let mut graphs = 0usize;
        let attribute = rewrite(field.payload, |field, out| {
            if field.wire != LEN || !matches!(field.number, ATTRIBUTE_GRAPH | ATTRIBUTE_GRAPHS) {
                return Ok(false);
            }
            graphs += 1;
            write_len(
                out,
                field.number,
                &graph(field.payload, &format!("{prefix}_g{graphs}"))?,
            );
            Ok(true)
        })?;
        write_len(out, NODE_ATTRIBUTE, &attribute);
        Ok(true)
    })
}

/// Copies a message field by field; `edit` may write a field itself (returning true) instead.
fn rewrite(
    buf: &[u8],
    mut edit: impl FnMut(&Field<'_>, &mut Vec<u8>) -> Result<bool, String>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(buf.len() + 64);
    let mut pos = 0;
    while pos < buf.len() {
        let field = next_field(buf, &mut pos)?;
        if !edit(&field, &mut out)? {
            out.extend_from_slice(field.raw);
        }
    }
    Ok(out)
}

fn next_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Field<'a>, String> {
    let start = *pos;
    let key = varint(buf, pos)?;
    let (number, wire) = (key >> 3, key & 7);
    let payload_start;
    match wire {
        0 => {
            varint(buf, pos)?;
            payload_start = *pos;
        }
        1 => {
            *pos += 8;
            payload_start = *pos;
        }
        LEN => {
            let len = usize::try_from(varint(buf, pos)?).map_err(|_| "length overflows")?;
            payload_start = *pos;
            *pos = pos.checked_add(len).ok_or("length overflows")?;
        }
        5 => {
            *pos += 4;
            payload_start = *pos;
        }
        other => {
            return Err(format!(
                "unsupported protobuf wire type {other} at byte {start}"
            ));
        }
    }
    if *pos > buf.len() {
        return Err(format!("truncated protobuf field at byte {start}"));
    }
    Ok(Field {
        number,
        wire,
        raw: &buf[start..*pos],
        payload: if wire == LEN {
            &buf[payload_start..*pos]
        } else {
            &[]
        },
    })
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or("truncated protobuf varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("protobuf varint longer than 64 bits".into())
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn write_len(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    write_varint(out, (number << 3) | LEN);
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fields: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (number, payload) in fields {
            write_len(&mut out, *number, payload);
        }
        out
    }

    /// The `name` of every graph in a serialized graph, depth first.
    fn names(graph_bytes: &[u8], found: &mut Vec<String>) {
        let mut pos = 0;
        while pos < graph_bytes.len() {
            let field = next_field(graph_bytes, &mut pos).unwrap();
            match field.number {
                GRAPH_NAME => found.push(String::from_utf8(field.payload.to_vec()).unwrap()),
                GRAPH_NODE => {
                    let mut p = 0;
                    while p < field.payload.len() {
                        let attr = next_field(field.payload, &mut p).unwrap();
                        if attr.number != NODE_ATTRIBUTE {
                            continue;
                        }
                        let mut q = 0;
                        while q < attr.payload.len() {
                            let g = next_field(attr.payload, &mut q).unwrap();
                            if g.number == ATTRIBUTE_GRAPH {
                                names(g.payload, found);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn unnamed_branches_get_names_and_everything_else_is_kept() {
        let then_branch = message(&[(GRAPH_NAME, b"")]);
        let else_branch = message(&[(GRAPH_NAME, b"kept")]);
        let attribute_then = message(&[(1, b"then_branch"), (ATTRIBUTE_GRAPH, &then_branch)]);
        let attribute_else = message(&[(1, b"else_branch"), (ATTRIBUTE_GRAPH, &else_branch)]);
        let if_node = message(&[
            (NODE_ATTRIBUTE, &attribute_then),
            (NODE_ATTRIBUTE, &attribute_else),
        ]);
        // A varint field (ir_version = 10) before the graph, a named main graph with an
        // initializer-like bytes field that must survive untouched.
        let mut model = vec![0x08, 10];
        let weights = [0xffu8; 300];
        let main = message(&[(GRAPH_NODE, &if_node), (GRAPH_NAME, b"main"), (5, &weights)]);
        write_len(&mut model, MODEL_GRAPH, &main);

        let fixed = name_subgraphs(&model).unwrap();
        assert_eq!(&fixed[..2], &[0x08, 10]);
        let mut pos = 2;
        let graph = next_field(&fixed, &mut pos).unwrap();
        let mut found = Vec::new();
        names(graph.payload, &mut found);
        assert_eq!(found, ["main_n1_a1_g1", "kept", "main"]);
        assert!(graph.payload.windows(300).any(|w| w == weights));
    }

    #[test]
    fn a_truncated_model_is_an_error_not_a_panic() {
        let mut model = Vec::new();
        write_len(&mut model, MODEL_GRAPH, &message(&[(GRAPH_NAME, b"main")]));
        model.truncate(model.len() - 2);
        assert!(name_subgraphs(&model).is_err());
        assert!(name_subgraphs(&[0x0b]).is_err()); // wire type 3 (groups) is not supported
    }
}
