'use strict';

// Just enough of the protobuf wire format to replace one field of an encoded
// message and keep every other byte — unknown fields included — as it was.
// Call mode answers with the request, Payload replaced, this way.

/** Raised for bytes that are not a protobuf message this code can walk. */
class WireError extends Error {}

function readVarint(buf, pos) {
  let value = 0;
  let factor = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw new WireError('truncated varint');
    const byte = buf[pos++];
    value += (byte & 0x7f) * factor;
    if ((byte & 0x80) === 0) return [value, pos];
    factor *= 128;
  }
  throw new WireError('varint too long');
}

function encodeVarint(value) {
  const bytes = [];
  while (value >= 0x80) {
    bytes.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  bytes.push(value);
  return Buffer.from(bytes);
}

/**
 * `message` with every occurrence of length-delimited field `field` removed
 * and, unless `value` is empty, one occurrence with `value` appended (proto3
 * leaves an empty bytes field out).
 * @throws {WireError} message is not well-formed
 */
function replaceBytesField(message, field, value) {
  const parts = [];
  let pos = 0;
  let kept = 0;
  while (pos < message.length) {
    const start = pos;
    let tag;
    [tag, pos] = readVarint(message, pos);
    const number = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (number === 0) throw new WireError('field number 0');
    switch (wireType) {
      case 0:
        [, pos] = readVarint(message, pos);
        break;
      case 1:
        pos += 8;
        break;
      case 2: {
        let length;
        [length, pos] = readVarint(message, pos);
        pos += length;
        break;
      }
      case 5:
        pos += 4;
        break;
      default:
        throw new WireError(`unsupported wire type ${wireType}`);
    }
    if (pos > message.length) throw new WireError('truncated field');
    if (number === field) {
      if (start > kept) parts.push(message.subarray(kept, start));
      kept = pos;
    }
  }
  if (kept < message.length) parts.push(message.subarray(kept));
  if (value.length > 0) parts.push(encodeVarint(field * 8 + 2), encodeVarint(value.length), value);
  return Buffer.concat(parts);
}

module.exports = { WireError, replaceBytesField };
