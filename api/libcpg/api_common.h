// Shared by the files that implement the exported cpg_* functions.
#pragma once

#include <corosync/cpg.h>

#include <mutex>
#include <vector>

#include "api/libcpg/connection.h"
#include "api/libcpg/handle_table.h"

#define RCPG_EXPORT extern "C" __attribute__((visibility("default")))

namespace rcpg::cpg {

struct Iteration {
  std::mutex mu;
  std::vector<cpg_iteration_description_t> entries;
  size_t next = 0;
};

HandleTable<Connection>& connections();
HandleTable<Iteration>& iterations();

inline bool valid_guarantee(cpg_guarantee_t g) {
  return static_cast<unsigned>(g) <= CPG_TYPE_SAFE;
}

}  // namespace rcpg::cpg
