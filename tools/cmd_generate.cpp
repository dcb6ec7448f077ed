// mor generate (stub until its issue lands).
#include <iostream>

#include "commands.h"

int mor::cmd_generate(int, char**) {
  std::cerr << "mor generate: error: not implemented yet\n";
  return 1;
}
