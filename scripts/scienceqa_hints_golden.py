# Writes tests/fixtures/scienceqa_hints/: a ScienceQA release folder (problems.json, pid_splits.json)
# whose hints carry leading/trailing whitespace of every kind Python's str.strip() removes (and some it
# keeps), and expected/scienceq_{train,validation,test}.json: the rows by the seed's rule
# (context = " ".join([hint, ""]).strip(), "N/A" when empty), written with Python's json.dump.
# Run with Debian's python3 from the repo root: /usr/bin/python3 scripts/scienceqa_hints_golden.py
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "scienceqa_hints")


def problem(q, choices, answer, hint, split, image=None):
    return {"question": q, "choices": choices, "answer": answer, "hint": hint, "image": image,
            "task": "closed choice", "grade": "grade3", "subject": "language science", "topic": "punctuation",
            "category": "Sentences", "skill": "Whitespace", "lecture": "", "solution": "", "split": split}


# The seed's get_context_text(problem, use_caption=False), literally.
def context_of(p):
    context = " ".join([p["hint"], ""]).strip()
    return context if context != "" else "N/A"


hints = [
    "  hint with spaces  ",
    "\thint with tabs\t\t",
    "\n\nhint with newlines\n",
    "\u00a0hint with no-break spaces\u00a0",
    "\u3000ideographic space hint\u3000",
    "\x1funit separator hint\x1f",
    "\r\n\x0b\x0c mixed ASCII \x1c\x1d\x1e\r\n",
    "\x85\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f other Unicode spaces \u3000\u00a0",
    "\u200bzero-width space is not whitespace\u200b",
    "inner  \t spacing kept, outer stripped \u00a0\n",
    " \t\n\u00a0\u3000\x1f\x85\u2028 ",
    "\ufeffBOM is not whitespace either ",
]
problems = {}
for i, h in enumerate(hints):
    split = ["train", "val", "test"][i % 3]
    problems[str(i + 1)] = problem("Hint %d: which is right?" % (i + 1), ["left", "right", "both"][: 2 + i % 2], i % 2, h, split)
problems["13"] = problem("An image problem with a padded hint.", ["a", "b"], 0, "  padded  ", "train", image="13.png")
pid_splits = {k: [pid for pid, p in problems.items() if p["split"] == k] for k in ["train", "val", "test"]}

os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)
with open(os.path.join(OUT, "problems.json"), "w") as f:
    json.dump(problems, f, indent=1)
with open(os.path.join(OUT, "pid_splits.json"), "w") as f:
    json.dump(pid_splits, f)

letters = ["A", "B", "C", "D", "E"]
for split, key in [("train", "train"), ("validation", "val"), ("test", "test")]:
    rows = []
    for pid in pid_splits[key]:
        p = problems[pid]
        if p["image"] is not None:
            continue
        options = " ".join("(%s) %s" % (letters[i], c) for i, c in enumerate(p["choices"]))
        letter = letters[p["answer"]]
        row = {"image": None, "question": p["question"], "choices": p["choices"], "answer": letter}
        for k in ["hint", "task", "grade", "subject", "topic", "category", "skill", "lecture", "solution"]:
            row[k] = p[k]
        row["input"] = ""
        row["instruction"] = "Context: %s\nQuestion: %s\nOptions: %s\n" % (context_of(p), p["question"], options)
        row["output"] = "Answer: The answer is %s." % letter
        rows.append(row)
    with open(os.path.join(OUT, "expected", "scienceq_%s.json" % split), "w") as f:
        json.dump(rows, f)
