/** Columnar values (Parquet via hyparquet, Arrow via apache-arrow) as the JSON a record would hold. */
export function toPlain(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  switch (typeof v) {
    case 'bigint':
      return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
    case 'number':
      return Number.isFinite(v) ? v : null;
    case 'string':
    case 'boolean':
      return v;
    case 'object':
      break;
    default:
      // symbols, functions, undefined: nothing a dataset can hold
      return null;
  }
  // Tags, not instanceof: hyparquet may run in another realm (see ./esm.ts).
  const tag = Object.prototype.toString.call(v);
  if (tag === '[object Date]') return (v as Date).toISOString();
  if (tag === '[object Uint8Array]')
    return Buffer.from((v as Uint8Array).buffer, (v as Uint8Array).byteOffset, (v as Uint8Array).byteLength).toString('base64');
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<unknown>, toPlain);
  if (Array.isArray(v)) return v.map(toPlain);
  // apache-arrow: a Vector (a list cell) gives its values, a StructRow or MapRow an object.
  const o = v as { toJSON?: () => unknown };
  if (typeof o.toJSON === 'function') {
    const j = o.toJSON();
    if (j !== o) return toPlain(j);
  }
  return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, toPlain(x)]));
}
