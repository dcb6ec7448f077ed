#!/usr/bin/python3
"""PyTorch-side twin of mor's example building (src/examples.cpp): the reference's tokenize() and
generate_and_tokenize_prompt() (GCYZSL/MoLA mola_training.py, LlamaTokenizer = BOS + sentencepiece
pieces, truncation to cutoff_len) and DataCollatorForSeq2Seq's left padding to a multiple of 8.
Writes tests/golden/examples_*.json. Run with Debian's /usr/bin/python3 (python3-sentencepiece):
  /usr/bin/python3 scripts/twin_tokenize.py ../shared/testdata tests/golden

One deliberate difference from the reference, per the project's training issue: the reference calls
tokenize(full_prompt) with its default add_eos_token=True whatever --add_eos_token says; here (and in
mor) --add_eos_token governs the full prompt too. Both agree for the default add_eos_token=True.
"""
import json
import os
import sys

import sentencepiece as spm

ALPACA = {
    "prompt_input": "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
    "prompt_no_input": "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n",
}


def generate_prompt(instruction, input=None, label=None):
    if input:
        res = ALPACA["prompt_input"].format(instruction=instruction, input=input)
    else:
        res = ALPACA["prompt_no_input"].format(instruction=instruction)
    if label:
        res = f"{res}{label}"
    return res


def main():
    testdata, out_dir = sys.argv[1], sys.argv[2]
    sp = spm.SentencePieceProcessor(model_file=os.path.join(testdata, "llama2-tokenizer/tokenizer.model"))
    bos, eos = sp.bos_id(), sp.eos_id()
    rows = json.load(open(os.path.join(testdata, "sampled_scienceqa_json/train.json")))
    # rows with and without input, short and long; plus a synthetic one with an input column
    picks = [0, 1, 2, 3, 17, 42, 99]
    sample = [{k: rows[i][k] for k in ("instruction", "input", "output")} for i in picks]
    sample.append({"instruction": "Translate to French.", "input": "Good morning, friend!", "output": "Bonjour, mon ami !"})

    def tokenize(prompt, cutoff_len, add_eos_token):
        ids = [bos] + sp.encode(prompt)
        ids = ids[:cutoff_len]  # truncation=True, max_length=cutoff_len
        if ids[-1] != eos and len(ids) < cutoff_len and add_eos_token:
            ids.append(eos)
        return ids

    def generate_and_tokenize(dp, cutoff_len, train_on_inputs, add_eos_token):
        full = tokenize(generate_prompt(dp["instruction"], dp["input"], dp["output"]), cutoff_len, add_eos_token)
        labels = list(full)
        if not train_on_inputs:
            user = tokenize(generate_prompt(dp["instruction"], dp["input"]), cutoff_len, add_eos_token)
            n = len(user)
            if add_eos_token:
                n -= 1
            labels = [-100] * n + labels[n:]
        return {"input_ids": full, "labels": labels}

    cases = []
    for cutoff_len in (256, 100, 48):  # 100 cuts some outputs; 48 < every row's length: truncation, no EOS, the -1 quirk
        for train_on_inputs in (True, False):
            for add_eos_token in (True, False):
                cases.append({"cutoff_len": cutoff_len, "train_on_inputs": train_on_inputs,
                              "add_eos_token": add_eos_token,
                              "examples": [generate_and_tokenize(dp, cutoff_len, train_on_inputs, add_eos_token)
                                           for dp in sample]})
    # collator: left pad (pad 0, attention 0, labels -100) to the longest rounded up to 8
    ex = cases[1]["examples"][:3]
    T = max(len(e["input_ids"]) for e in ex)
    T = (T + 7) // 8 * 8
    coll = {"input_ids": [[0] * (T - len(e["input_ids"])) + e["input_ids"] for e in ex],
            "attention_mask": [[0] * (T - len(e["input_ids"])) + [1] * len(e["input_ids"]) for e in ex],
            "labels": [[-100] * (T - len(e["labels"])) + e["labels"] for e in ex]}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "examples_scienceqa.json"), "w") as f:
        json.dump({"rows": sample, "cases": cases, "collate_case": 1, "collate_n": 3, "collated": coll}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
