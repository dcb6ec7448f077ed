// mor eval-scienceqa (stub until its issue lands).
#include <iostream>

#include "commands.h"

int mor::cmd_eval_scienceqa(int, char**) {
  std::cerr << "mor eval-scienceqa: error: not implemented yet\n";
  return 1;
}
