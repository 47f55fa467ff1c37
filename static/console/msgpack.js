// A small MessagePack codec for the call protocol: maps with string keys, strings, bin
// (Uint8Array), integers, float64, booleans, nil, arrays; ext type 0 (undefined) -> null.
// Integers are decoded as Numbers (never BigInt), as the protocol requires.

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export function encode(value) {
  const parts = [];
  let size = 0;
  const push = (bytes) => { parts.push(bytes); size += bytes.length; };
  const header = (...bytes) => push(Uint8Array.from(bytes));
  const u16 = (n) => [(n >> 8) & 0xff, n & 0xff];
  const u32 = (n) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

  const write = (v) => {
    if (v === null || v === undefined) return header(0xc0);
    if (v === false) return header(0xc2);
    if (v === true) return header(0xc3);
    if (typeof v === "number") {
      if (Number.isInteger(v) && Math.abs(v) < 2 ** 31) {
        if (v >= 0 && v < 128) return header(v);
        if (v < 0 && v >= -32) return header(0xe0 | (v + 32));
        if (v >= 0 && v < 256) return header(0xcc, v);
        if (v >= 0 && v < 65536) return header(0xcd, ...u16(v));
        if (v >= 0) return header(0xce, ...u32(v));
        const view = new DataView(new ArrayBuffer(5));
        view.setUint8(0, 0xd2); view.setInt32(1, v);
        return push(new Uint8Array(view.buffer));
      }
      const view = new DataView(new ArrayBuffer(9));
      view.setUint8(0, 0xcb); view.setFloat64(1, v);
      return push(new Uint8Array(view.buffer));
    }
    if (typeof v === "string") {
      const bytes = textEncoder.encode(v);
      if (bytes.length < 32) header(0xa0 | bytes.length);
      else if (bytes.length < 256) header(0xd9, bytes.length);
      else if (bytes.length < 65536) header(0xda, ...u16(bytes.length));
      else header(0xdb, ...u32(bytes.length));
      return push(bytes);
    }
    if (v instanceof Uint8Array || v instanceof ArrayBuffer) {
      const bytes = v instanceof Uint8Array ? v : new Uint8Array(v);
      if (bytes.length < 256) header(0xc4, bytes.length);
      else if (bytes.length < 65536) header(0xc5, ...u16(bytes.length));
      else header(0xc6, ...u32(bytes.length));
      return push(bytes);
    }
    if (Array.isArray(v)) {
      if (v.length < 16) header(0x90 | v.length);
      else if (v.length < 65536) header(0xdc, ...u16(v.length));
      else header(0xdd, ...u32(v.length));
      return v.forEach(write);
    }
    if (typeof v === "object") {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined);
      if (keys.length < 16) header(0x80 | keys.length);
      else if (keys.length < 65536) header(0xde, ...u16(keys.length));
      else header(0xdf, ...u32(keys.length));
      for (const key of keys) { write(key); write(v[key]); }
      return undefined;
    }
    throw new TypeError(`cannot encode ${typeof v}`);
  };

  write(value);
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) { out.set(part, offset); offset += part.length; }
  return out;
}

export function decode(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;

  const str = (n) => { const s = textDecoder.decode(bytes.subarray(pos, pos + n)); pos += n; return s; };
  const bin = (n) => { const b = bytes.slice(pos, pos + n); pos += n; return b; };
  const arr = (n) => { const a = new Array(n); for (let i = 0; i < n; i++) a[i] = read(); return a; };
  const map = (n) => { const m = {}; for (let i = 0; i < n; i++) { const k = read(); m[k] = read(); } return m; };
  const ext = (n) => { const type = view.getInt8(pos); pos += 1 + n; return type === 0 ? null : { extType: type }; };
  const u8 = () => view.getUint8(pos++);
  const u16 = () => { const v = view.getUint16(pos); pos += 2; return v; };
  const u32 = () => { const v = view.getUint32(pos); pos += 4; return v; };

  function read() {
    const b = u8();
    if (b < 0x80) return b;
    if (b < 0x90) return map(b & 0x0f);
    if (b < 0xa0) return arr(b & 0x0f);
    if (b < 0xc0) return str(b & 0x1f);
    if (b >= 0xe0) return b - 0x100;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xc7: return ext(u8());
      case 0xc8: return ext(u16());
      case 0xc9: return ext(u32());
      case 0xca: { const v = view.getFloat32(pos); pos += 4; return v; }
      case 0xcb: { const v = view.getFloat64(pos); pos += 8; return v; }
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: { const v = Number(view.getBigUint64(pos)); pos += 8; return v; }
      case 0xd0: { const v = view.getInt8(pos); pos += 1; return v; }
      case 0xd1: { const v = view.getInt16(pos); pos += 2; return v; }
      case 0xd2: { const v = view.getInt32(pos); pos += 4; return v; }
      case 0xd3: { const v = Number(view.getBigInt64(pos)); pos += 8; return v; }
      case 0xd4: return ext(1);
      case 0xd5: return ext(2);
      case 0xd6: return ext(4);
      case 0xd7: return ext(8);
      case 0xd8: return ext(16);
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return arr(u16());
      case 0xdd: return arr(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new Error(`invalid MessagePack byte 0x${b.toString(16)}`);
    }
  }
  return read();
}
