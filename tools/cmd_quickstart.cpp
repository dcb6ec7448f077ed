// mor quickstart (stub until its issue lands).
#include <iostream>

#include "commands.h"

int mor::cmd_quickstart(int, char**) {
  std::cerr << "mor quickstart: error: not implemented yet\n";
  return 1;
}
