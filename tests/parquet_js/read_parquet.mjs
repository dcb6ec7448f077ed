// Reads Parquet files with hyparquet (+ hyparquet-compressors for GZIP/ZSTD) and prints their rows
// as JSON: one array of row objects per file. int64 values print as numbers when exact, else as
// strings; binary (un-annotated BYTE_ARRAY) as arrays of byte values.
// Usage: node read_parquet.mjs FILE...   (tests/test_parquet.cpp compares the output with mor's rows)
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parquetReadObjects } from "hyparquet";
import { compressors } from "hyparquet-compressors";

function plain(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return Array.from(v);
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === "object") {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = plain(x);
    return out;
  }
  return v;
}

export async function readRows(file) {
  const buf = readFileSync(file);
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  const rows = await parquetReadObjects({ file: ab, compressors, utf8: false });
  return rows.map(plain);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = [];
  for (const file of process.argv.slice(2)) result.push(await readRows(file));
  process.stdout.write(JSON.stringify(result));
}
