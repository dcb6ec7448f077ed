// mor params (stub until its issue lands).
#include <iostream>

#include "commands.h"

int mor::cmd_params(int, char**) {
  std::cerr << "mor params: error: not implemented yet\n";
  return 1;
}
