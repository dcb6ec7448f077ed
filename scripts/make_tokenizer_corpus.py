#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/corpus.json: the strings the tokenizer.json parity test encodes
(tests/test_tokenizer_bpe.cpp) besides the ScienceQA sample texts it reads from ../shared/testdata.
Deterministic (fixed seed, no input files): rerun and commit when the categories change.
    python3 scripts/make_tokenizer_corpus.py"""
import json
import os
import random

rng = random.Random(13)

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "const f = (x) => x ** 2; console.log(f(12));",
    "{\"key\": [1, 2.5, -3e10], \"nested\": {\"a\": null, \"b\": true}}",
    "if __name__ == '__main__':\n    main()\n",
    "x = [i for i in range(100) if i % 7 == 0]",
    "git commit -m 'fix: handle \\r\\n line endings' && git push origin HEAD:main",
    "    indented_with_spaces = True\n\t\tindented_with_tabs = False",
    "<div class=\"row\"><span>Hello</span></div>",
    "fn main() { println!(\"{}\", 0x1F600u32); }",
    "$ ls -la /usr/lib/x86_64-linux-gnu | grep 'libpcre2' | wc -l",
    "a=1;b=2;c=a+b;print(c)#comment",
    "/* block comment */ // line comment\n",
]
EMOJI = ["🤗", "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "🏳️‍🌈", "✨", "🔥🔥🔥", "🧪", "🦀", "☕", "👩🏿‍🔬", "🫠"]
CJK = ["日本語のテキストです。", "中文分词测试，你好世界！", "한국어 문장입니다.", "カタカナとひらがな", "漢字",
       "東京都渋谷区", "我爱北京天安门", "ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ", "「引用」と『二重引用』", "일이삼사오육칠팔구십",
       "\u1100\u1161\u11a8", "\u110b\u1161\u11ab\u1102\u1167\u11bc"]  # conjoining jamo: NFC composes them
COMBINING = ["e\u0301", "cafe\u0301", "A\u030a", "n\u0303o", "Ame\u0301lie", "o\u0308\u0304", "a\u0323\u0302",
             "Tiê\u0301ng Viê\u0323t", "\u0915\u094d\u0937", "हिन्दी", "עִבְרִית", "العَرَبِيَّة", "Z\u0351\u0307\u0330",
             "\u1e9b\u0323", "Å", "Ω", "ﬁ", "x\u20d7", "q\u0307\u0323"]
WORDS = ["the", "The", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "photosynthesis", "Which",
         "answer", "is", "correct", "Paris", "Zürich", "naïve", "coöperate", "résumé", "Straße", "ΑΘΗΝΑ",
         "Москва", "don't", "I'm", "we've", "they're", "she'll", "he'd", "IT'S", "Don'T", "x's", "O'Neil",
         "e-mail", "state-of-the-art", "3D", "COVID-19", "GPT-4", "iPhone", "McDonald's", "_private", "__init__"]
PUNCT = [".", ",", "!", "?", "...", "—", "–", ";", ":", "(", ")", "[", "]", "{", "}", "\"", "'", "«", "»", "¿",
         "¡", "•", "©", "®", "™", "°", "±", "§", "¶", "€", "£", "¥", "$", "%", "&", "*", "@", "#", "^", "~", "`", "|",
         "\\", "/", "<", ">", "=", "+", "-", "_"]
WS = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r\n\r\n", " \n ", "\t\t", "\u00a0", "\u3000", "\u2003", " \t\n",
      "\n    ", "          ", "\r", "\u2028", "\u200b"]
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|reserved_special_token_5|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>",
           "<|im_", "<|begin_of", "<|", "|>", "< s>", "<S>"]
RARE = ["𒀀", "𐀀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "ᚠᛇᚻ", "ⴰⵣⵓⵍ", "ꙮ", "ʕ•ᴥ•ʔ", "(╯°□°）╯︵ ┻━┻", "¯\\_(ツ)_/¯", "☃", "♞", "⌘", "∑∫∂√∞", "αβγδ"]


def digits():
    n = rng.randint(1, 24)
    s = "".join(rng.choice("0123456789") for _ in range(n))
    forms = [s, s + ".5", "-" + s, "{:,}".format(int(s)), s + "%", "$" + s, s[:3] + " " + s[3:],
             "".join(chr(0x660 + int(c)) for c in s), "".join(chr(0xFF10 + int(c)) for c in s), "v" + s + ".0.1"]
    return rng.choice(forms)


def fragment():
    kind = rng.randrange(9)
    if kind == 0: return rng.choice(CODE)
    if kind == 1: return rng.choice(EMOJI)
    if kind == 2: return rng.choice(CJK)
    if kind == 3: return rng.choice(COMBINING)
    if kind == 4: return digits()
    if kind == 5: return rng.choice(WS)
    if kind == 6: return rng.choice(SPECIAL)
    if kind == 7: return rng.choice(RARE)
    return rng.choice(WORDS) + rng.choice(["", " ", "", rng.choice(PUNCT)])


def sentence():
    parts = []
    for _ in range(rng.randint(1, 12)):
        parts.append(fragment())
        if rng.random() < 0.6: parts.append(" ")
    return "".join(parts)


cases = []
# Each category alone, then combinations of two, then random mixtures.
for group in (CODE, EMOJI, CJK, COMBINING, WORDS, PUNCT, WS, SPECIAL, RARE):
    cases.extend(group)
cases.extend([digits() for _ in range(60)])
cases.extend(["1", "12", "123", "1234", "12345", "123456", "1234567890123", " 42", "3.14159", "1e-10", "0x7FFF"])
cases.extend(["", " ", "a", " a", "a ", "  a  b   c    ", "\n", "Hello world", " Hello world", "Hello  world",
              "hello\r\nworld\r\n", "line1\nline2\n\nline4", "tab\tseparated\tvalues", "trailing spaces   ",
              "   leading spaces", "A" * 300, "ab" * 150, "🤗" * 40, " " * 50, "\n" * 20, "!" * 64])
cases.extend([rng.choice(SPECIAL) + sentence() + rng.choice(SPECIAL) for _ in range(60)])
cases.extend([sentence() + rng.choice(WS) + sentence() for _ in range(120)])
while len(cases) < 1000:
    cases.append(sentence())

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tokenizer", "corpus.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump({"generator": "scripts/make_tokenizer_corpus.py", "seed": 13, "strings": cases}, f, ensure_ascii=False, indent=0)
    f.write("\n")
print(out, len(cases), "strings")
