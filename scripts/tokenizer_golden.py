#!/usr/bin/python3
"""Writes tests/golden/tokenizer_scienceqa.json: sentencepiece's own encoding (with BOS prepended, as
transformers' LlamaTokenizer does) of a few ScienceQA texts from ../shared/testdata/sampled_scienceqa_json,
for the LLaMA-2 tokenizer. Run with Debian's /usr/bin/python3 (python3-sentencepiece)."""
import json
import os

import sentencepiece as spm

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "..")
data = os.path.join(root, "..", "shared", "testdata")
sp = spm.SentencePieceProcessor(model_file=os.path.join(data, "llama2-tokenizer", "tokenizer.model"))
rows = json.load(open(os.path.join(data, "sampled_scienceqa_json", "test.json")))
texts = []
for r in rows[:6]:
    texts += [r["instruction"], r["output"]]
texts += [rows[7]["lecture"], "", " leading space", "Hello world", "naïve café — 3.5°C ✓ 日本語"]
cases = [{"text": t, "ids": [sp.bos_id()] + sp.encode(t)} for t in texts]
with open(os.path.join(root, "tests", "golden", "tokenizer_scienceqa.json"), "w") as f:
    json.dump({"tokenizer": "llama2-tokenizer/tokenizer.model", "cases": cases}, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(len(cases), "cases")
