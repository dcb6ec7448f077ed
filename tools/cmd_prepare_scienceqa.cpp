// mor prepare-scienceqa (stub until its issue lands).
#include <iostream>

#include "commands.h"

int mor::cmd_prepare_scienceqa(int, char**) {
  std::cerr << "mor prepare-scienceqa: error: not implemented yet\n";
  return 1;
}
