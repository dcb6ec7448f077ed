// mor score (stub until its issue lands).
#include <iostream>

#include "commands.h"

int mor::cmd_score(int, char**) {
  std::cerr << "mor score: error: not implemented yet\n";
  return 1;
}
