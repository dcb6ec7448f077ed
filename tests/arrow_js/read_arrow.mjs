// Reads Arrow IPC stream files with the apache-arrow npm package and prints, for each file, its
// schema (name and type of each field), its huggingface metadata and its rows as JSON. int64
// values print as numbers when exact, else as strings; binary as arrays of byte values.
// Usage: node read_arrow.mjs FILE...   (tests/test_arrow.cpp compares the output with mor's values)
import { readFileSync } from "node:fs";
import { tableFromIPC } from "apache-arrow";

function plain(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (v instanceof Uint8Array) return Array.from(v);
  if (typeof v === "object" && typeof v.toArray === "function" && typeof v.get === "function") // Vector
    return Array.from({ length: v.length }, (_, i) => plain(v.get(i)));
  if (typeof v === "object") {  // struct row
    const out = {};
    for (const [k, x] of Object.entries(typeof v.toJSON === "function" ? v.toJSON() : v)) out[k] = plain(x);
    return out;
  }
  return v;
}

const result = [];
for (const file of process.argv.slice(2)) {
  const table = tableFromIPC(readFileSync(file));
  const fields = table.schema.fields.map((f) => ({ name: f.name, type: String(f.type) }));
  const rows = [];
  for (let i = 0; i < table.numRows; ++i) {
    const row = {};
    for (const f of table.schema.fields) row[f.name] = plain(table.getChild(f.name).get(i));
    rows.push(row);
  }
  result.push({ file, fields, huggingface: table.schema.metadata.get("huggingface") ?? null, batches: table.batches.length, rows });
}
process.stdout.write(JSON.stringify(result));
