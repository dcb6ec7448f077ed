// Writes the Parquet fixtures of tests/test_parquet.cpp with two independent writers — hyparquet-writer
// (pure JS, data pages v2) and parquet-wasm (arrow-rs compiled to wasm, pages v1 or v2) — and, for each,
// the rows hyparquet reads back (tests/fixtures/parquet/expected/NAME.json, see read_parquet.mjs), so
// the C++ tests check mor against an independent reader even where node is absent.
// Usage (from this folder, after `npm ci`): node make_fixtures.mjs ../fixtures/parquet
import { mkdirSync, writeFileSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { createRequire } from "node:module";
import * as arrow from "apache-arrow";
import { parquetWriteBuffer } from "hyparquet-writer";
import { readRows } from "./read_parquet.mjs";

const require = createRequire(import.meta.url);
const pw = require("parquet-wasm");
const out = process.argv[2] ?? "../fixtures/parquet";
mkdirSync(`${out}/expected`, { recursive: true });
mkdirSync(`${out}/scienceqa`, { recursive: true });
const written = [];

async function save(name, bytes, writer, what) {
  const file = `${out}/${name}`;
  writeFileSync(file, new Uint8Array(bytes));
  const rows = await readRows(file);
  writeFileSync(`${out}/expected/${name.replace(/\//g, "_")}.json`, JSON.stringify(rows));
  written.push({ name, writer, what });
}

// --- flat columns of every type, with nulls (hyparquet-writer) --------------------------------
const N = 23;
const flat = {
  b: Array.from({ length: N }, (_, i) => (i % 5 === 4 ? null : i % 3 === 0)),
  i8: Array.from({ length: N }, (_, i) => (i % 6 === 5 ? null : (i % 2 ? -128 + i : 127 - i))),
  i16: Array.from({ length: N }, (_, i) => -32768 + 1000 * i),
  i32: Array.from({ length: N }, (_, i) => (i === 0 ? -2147483648 : i * 1000003)),
  u32: Array.from({ length: N }, (_, i) => 4294967295 - i),
  i64: Array.from({ length: N }, (_, i) => (i === 0 ? -(2n ** 63n) : i % 7 === 6 ? null : 2n ** BigInt(i * 2) + BigInt(i))),
  f32: Array.from({ length: N }, (_, i) => (i % 4 === 3 ? null : 0.5 * i - 1.25)),
  f64: Array.from({ length: N }, (_, i) => (i === 1 ? 1e-300 : 0.1 * i)),
  s: Array.from({ length: N }, (_, i) => (i % 4 === 2 ? null : "s".repeat(i % 5) + (i === 3 ? "é😀 中文" : String(i % 3)))),
  none: Array.from({ length: N }, () => null),
  k: Array.from({ length: N }, (_, i) => (i % 9 === 8 ? null : ["category-alpha", "category-beta", "category-gamma"][i % 3])),
  bin: Array.from({ length: N }, (_, i) => (i % 8 === 7 ? null : new Uint8Array(Array.from({ length: i % 4 }, (_, k) => (250 + k + i) % 256)))),
};
function flatColumns(encodings = {}) {
  return [
    { name: "b", data: flat.b },
    { name: "i8", data: flat.i8, ...encodings.int },
    { name: "i16", data: flat.i16, ...encodings.int },
    { name: "i32", data: flat.i32, ...encodings.int },
    { name: "u32", data: flat.u32, ...encodings.int },
    { name: "i64", data: flat.i64, ...encodings.int },
    { name: "f32", data: flat.f32, ...encodings.float },
    { name: "f64", data: flat.f64, ...encodings.float },
    { name: "s", data: flat.s, ...encodings.str },
    { name: "k", data: flat.k, ...encodings.str },
    { name: "none", data: flat.none, ...encodings.str },
    { name: "bin", data: flat.bin, ...encodings.bin },
  ];
}
// i8 and u32 carry INT logical types; the rest keep the basic types.
const flatSchema = [
  { name: "root", num_children: 12 },
  { name: "b", type: "BOOLEAN", repetition_type: "OPTIONAL" },
  { name: "i8", type: "INT32", repetition_type: "OPTIONAL", converted_type: "INT_8", logical_type: { type: "INTEGER", bitWidth: 8, isSigned: true } },
  { name: "i16", type: "INT32", repetition_type: "REQUIRED", converted_type: "INT_16", logical_type: { type: "INTEGER", bitWidth: 16, isSigned: true } },
  { name: "i32", type: "INT32", repetition_type: "OPTIONAL" },
  { name: "u32", type: "INT32", repetition_type: "OPTIONAL", converted_type: "UINT_32", logical_type: { type: "INTEGER", bitWidth: 32, isSigned: false } },
  { name: "i64", type: "INT64", repetition_type: "OPTIONAL" },
  { name: "f32", type: "FLOAT", repetition_type: "OPTIONAL" },
  { name: "f64", type: "DOUBLE", repetition_type: "OPTIONAL" },
  { name: "s", type: "BYTE_ARRAY", repetition_type: "OPTIONAL", converted_type: "UTF8", logical_type: { type: "STRING" } },
  { name: "k", type: "BYTE_ARRAY", repetition_type: "OPTIONAL", converted_type: "UTF8" },
  { name: "none", type: "BYTE_ARRAY", repetition_type: "OPTIONAL", converted_type: "UTF8" },
  { name: "bin", type: "BYTE_ARRAY", repetition_type: "OPTIONAL" },
];
const gzip = { GZIP: (b) => gzipSync(b) };

await save("hw_flat_snappy.parquet", parquetWriteBuffer({ columnData: flatColumns(), schema: flatSchema, codec: "SNAPPY", rowGroupSize: [20, 3] }),
  "hyparquet-writer", "every flat type with nulls, SNAPPY, RLE_DICTIONARY strings, RLE booleans, 2 row groups, pages v2");
await save("hw_flat_gzip_plain.parquet", parquetWriteBuffer({
  columnData: flatColumns({ int: { encoding: "PLAIN" }, float: { encoding: "PLAIN" }, str: { encoding: "PLAIN" }, bin: { encoding: "PLAIN" } }),
  schema: flatSchema, codec: "GZIP", compressors: gzip, rowGroupSize: 100, statistics: false }),
  "hyparquet-writer", "every flat type, GZIP, PLAIN values, one row group");
await save("hw_flat_delta.parquet", parquetWriteBuffer({
  columnData: flatColumns({ int: { encoding: "DELTA_BINARY_PACKED" }, float: { encoding: "BYTE_STREAM_SPLIT" },
    str: { encoding: "DELTA_BYTE_ARRAY" }, bin: { encoding: "DELTA_LENGTH_BYTE_ARRAY" } }),
  schema: flatSchema, codec: "UNCOMPRESSED", rowGroupSize: 12 }),
  "hyparquet-writer", "DELTA_BINARY_PACKED, BYTE_STREAM_SPLIT, DELTA_BYTE_ARRAY, DELTA_LENGTH_BYTE_ARRAY, uncompressed");

// --- nested: list<string> (3-level and 2-level), struct {bytes, path} (hyparquet-writer) ---------
const M = 9;
const choices = Array.from({ length: M }, (_, i) => (i === 4 ? null : Array.from({ length: i % 4 }, (_, k) => (k === 1 && i === 5 ? null : `c${i}.${k}`))));
const image = Array.from({ length: M }, (_, i) => (i % 3 === 1 ? null : { bytes: i % 3 === 2 ? null : new Uint8Array([0x89, 0x50, i]), path: i === 0 ? null : `img${i}.png` }));
const nested = parquetWriteBuffer({
  columnData: [
    { name: "id", data: Array.from({ length: M }, (_, i) => BigInt(i)) },
    { name: "choices", data: choices },
    { name: "image", data: image },
  ],
  schema: [
    { name: "root", num_children: 3 },
    { name: "id", type: "INT64", repetition_type: "REQUIRED" },
    { name: "choices", repetition_type: "OPTIONAL", converted_type: "LIST", logical_type: { type: "LIST" }, num_children: 1 },
    { name: "list", repetition_type: "REPEATED", num_children: 1 },
    { name: "element", type: "BYTE_ARRAY", repetition_type: "OPTIONAL", converted_type: "UTF8" },
    { name: "image", repetition_type: "OPTIONAL", num_children: 2 },
    { name: "bytes", type: "BYTE_ARRAY", repetition_type: "OPTIONAL" },
    { name: "path", type: "BYTE_ARRAY", repetition_type: "OPTIONAL", converted_type: "UTF8" },
  ],
  codec: "SNAPPY", rowGroupSize: 4,
});
await save("hw_nested.parquet", nested, "hyparquet-writer", "3-level list<string> with null lists and items, struct {bytes, path}, 3 row groups");

// --- arrow-rs through parquet-wasm ------------------------------------------------------------
function arrowTable(columns, metadata) {
  const fields = [], data = {};
  for (const [name, type, values] of columns) {
    fields.push(new arrow.Field(name, type, true));
    data[name] = arrow.vectorFromArray(values, type);
  }
  const t = new arrow.Table(data);
  const schema = new arrow.Schema(fields, new Map(Object.entries(metadata ?? {})));
  return new arrow.Table(schema, t.batches.map((b) => new arrow.RecordBatch(schema, b.data)));
}
function writeWasm(table, { codec, version = pw.WriterVersion.V1, rowGroup = 1024, dictionary = true, encoding, kv }) {
  let props = new pw.WriterPropertiesBuilder().setCompression(codec).setWriterVersion(version)
    .setMaxRowGroupSize(rowGroup).setDictionaryEnabled(dictionary);
  if (kv) props = props.setKeyValueMetadata(new Map(Object.entries(kv)));
  if (encoding !== undefined) props = props.setEncoding(encoding);
  return pw.writeParquet(pw.Table.fromIPCStream(arrow.tableToIPC(table, "stream")), props.build());
}
const utf8List = new arrow.List(new arrow.Field("item", new arrow.Utf8(), true));
const imageType = new arrow.Struct([new arrow.Field("bytes", new arrow.Binary(), true), new arrow.Field("path", new arrow.Utf8(), true)]);
const K = 30;
const mixed = arrowTable([
  ["i8", new arrow.Int8(), Array.from({ length: K }, (_, i) => (i % 7 === 3 ? null : i - 15))],
  ["u16", new arrow.Uint16(), Array.from({ length: K }, (_, i) => 65535 - i)],
  ["i64", new arrow.Int64(), Array.from({ length: K }, (_, i) => BigInt(i) * 123456789012n - 5n)],
  ["f32", new arrow.Float32(), Array.from({ length: K }, (_, i) => i / 4)],
  ["f64", new arrow.Float64(), Array.from({ length: K }, (_, i) => (i % 9 === 8 ? null : i * 1.5e10))],
  ["flag", new arrow.Bool(), Array.from({ length: K }, (_, i) => (i % 10 === 9 ? null : i % 2 === 1))],
  ["text", new arrow.Utf8(), Array.from({ length: K }, (_, i) => (i % 6 === 0 ? null : ["alpha", "beta", "γ"][i % 3] + (i % 2 ? "" : "!")))],
  ["raw", new arrow.Binary(), Array.from({ length: K }, (_, i) => (i % 5 === 0 ? null : new Uint8Array([i, 255 - i, 0])))],
  ["choices", utf8List, Array.from({ length: K }, (_, i) => (i % 8 === 7 ? null : Array.from({ length: i % 5 }, (_, k) => (k === 2 && i % 3 === 0 ? null : `choice ${k} of ${i}`))))],
  ["none", new arrow.Utf8(), Array.from({ length: K }, () => null)],
  ["image", imageType, Array.from({ length: K }, (_, i) => (i % 4 === 0 ? null : { bytes: i % 4 === 1 ? null : new Uint8Array([1, 2, i]), path: `p${i}` }))],
]);
await save("pw_v1_snappy.parquet", writeWasm(mixed, { codec: pw.Compression.SNAPPY, rowGroup: 8 }),
  "parquet-wasm", "arrow-rs, pages v1, SNAPPY, dictionary, int8/uint16/int64/float/double/bool/string/binary/list<string>/struct with nulls, 4 row groups");
await save("pw_v2_zstd.parquet", writeWasm(mixed, { codec: pw.Compression.ZSTD, version: pw.WriterVersion.V2, rowGroup: 16 }),
  "parquet-wasm", "arrow-rs, pages v2, ZSTD, dictionary, 2 row groups");
await save("pw_v1_gzip_plain.parquet", writeWasm(mixed, { codec: pw.Compression.GZIP, dictionary: false, encoding: pw.Encoding.PLAIN }),
  "parquet-wasm", "arrow-rs, pages v1, GZIP, PLAIN (no dictionary), one row group");
await save("pw_v2_uncompressed_delta.parquet", writeWasm(mixed, { codec: pw.Compression.UNCOMPRESSED, version: pw.WriterVersion.V2, dictionary: false, rowGroup: 10 }),
  "parquet-wasm", "arrow-rs, pages v2, uncompressed, arrow-rs's v2 fallback encodings (DELTA_BINARY_PACKED, DELTA_BYTE_ARRAY, RLE booleans), 3 row groups");

// --- ScienceQA as derek-thomas/ScienceQA's parquet files (parquet-wasm, pyarrow-like v1 + SNAPPY) ---
// The same problems as tests/fixtures/scienceqa (release folder), split by pid_splits.json.
const fx = new URL("../fixtures/scienceqa/", import.meta.url);
const problems = JSON.parse(readFileSync(new URL("problems.json", fx)));
const pidSplits = JSON.parse(readFileSync(new URL("pid_splits.json", fx)));
const str = { dtype: "string", _type: "Value" };
const features = { image: { _type: "Image" }, question: str, choices: { feature: str, _type: "Sequence" }, answer: { dtype: "int8", _type: "Value" } };
const textCols = ["hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution"];
for (const c of textCols) features[c] = str;
const hf = JSON.stringify({ info: { features } });
for (const [split, key] of [["train", "train"], ["validation", "val"], ["test", "test"]]) {
  const ps = pidSplits[key].map((id) => problems[id]);
  const cols = [
    ["image", imageType, ps.map((p) => (p.image === null ? null : { bytes: new Uint8Array([0x89, 0x50, 0x4e, 0x47]), path: null }))],
    ["question", new arrow.Utf8(), ps.map((p) => p.question)],
    ["choices", utf8List, ps.map((p) => p.choices)],
    ["answer", new arrow.Int8(), ps.map((p) => p.answer)],
    ...textCols.map((c) => [c, new arrow.Utf8(), ps.map((p) => p[c])]),
  ];
  const hash = { train: "1028f23e353fbe3e", validation: "6c7328ff6c84284c", test: "f0e719df791966ff" }[split];
  await save(`scienceqa/${split}-00000-of-00001-${hash}.parquet`, writeWasm(arrowTable(cols), { codec: pw.Compression.SNAPPY, rowGroup: 2, kv: { huggingface: hf } }),
    "parquet-wasm", `ScienceQA ${split} split in derek-thomas/ScienceQA's schema and huggingface metadata, 2-row row groups`);
}

const versions = Object.fromEntries(["hyparquet", "hyparquet-writer", "hyparquet-compressors", "parquet-wasm", "apache-arrow"]
  .map((p) => [p, JSON.parse(readFileSync(new URL(`node_modules/${p}/package.json`, import.meta.url))).version]));
writeFileSync(`${out}/MANIFEST.json`, JSON.stringify({ versions, files: written }, null, 1) + "\n");
console.log(`wrote ${written.length} fixtures to ${out}`);
