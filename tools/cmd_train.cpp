// mor train (stub until its issue lands).
#include <iostream>

#include "commands.h"

int mor::cmd_train(int, char**) {
  std::cerr << "mor train: error: not implemented yet\n";
  return 1;
}
