// mor-spm-train: trains a sentencepiece model; a separate executable without LibTorch (the trainer
// logs through std::cerr, which crashes inside the deep-bound shim, and its protobuf must not meet
// LibTorch's). Tokenizer::train runs it. Usage: mor-spm-train '<sentencepiece trainer flags>'
#include <sentencepiece_trainer.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: mor-spm-train '--input=... --model_prefix=... --vocab_size=...'\n";
    return 2;
  }
  auto st = sentencepiece::SentencePieceTrainer::Train(argv[1]);
  if (!st.ok()) {
    std::cerr << st.ToString() << "\n";
    return 1;
  }
  return 0;
}
