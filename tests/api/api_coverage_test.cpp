// The binary really runs this build's libcpg.so.4, and every function that
// library exports has a test suite here (named after the function).
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <link.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

std::string loaded_libcpg() {
  std::string found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* out) {
        std::string name = info->dlpi_name ? info->dlpi_name : "";
        if (name.find("/libcpg.so") != std::string::npos) *static_cast<std::string*>(out) = name;
        return 0;
      },
      &found);
  return found;
}

std::string real(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? buf : p;
}

// Exported function -> test suites that exercise it.
const std::map<std::string, std::vector<std::string>> kTestsOf = {
    {"cpg_initialize", {"cpg_initialize"}},
    {"cpg_model_initialize", {"cpg_model_initialize"}},
    {"cpg_finalize", {"cpg_finalize", "DaemonGone"}},
    {"cpg_fd_get", {"cpg_fd_get"}},
    {"cpg_max_atomic_msgsize_get", {"cpg_max_atomic_msgsize_get"}},
    {"cpg_context_get", {"cpg_context_get"}},
    {"cpg_context_set", {"cpg_context_set"}},
    {"cpg_dispatch", {"cpg_dispatch", "DaemonGone"}},
    {"cpg_join", {"cpg_join"}},
    {"cpg_leave", {"cpg_leave"}},
    {"cpg_mcast_joined", {"cpg_mcast_joined", "Threads"}},
    {"cpg_membership_get", {"cpg_membership_get"}},
    {"cpg_local_get", {"cpg_local_get"}},
    {"cpg_flow_control_state_get", {"cpg_flow_control_state_get"}},
    {"cpg_zcb_alloc", {"cpg_zcb_alloc"}},
    {"cpg_zcb_free", {"cpg_zcb_free"}},
    {"cpg_zcb_mcast_joined", {"cpg_zcb_mcast_joined"}},
    {"cpg_iteration_initialize", {"cpg_iteration_initialize"}},
    {"cpg_iteration_next", {"cpg_iteration_next"}},
    {"cpg_iteration_finalize", {"cpg_iteration_finalize"}},
};

TEST(LoadedLibrary, IsThisBuildsLibcpg) {
  std::string path = loaded_libcpg();
  ASSERT_FALSE(path.empty()) << "no libcpg.so loaded";
  EXPECT_EQ(real(path), real(RCPG_LIBCPG_PATH));
}

TEST(ExportCoverage, EveryExportedFunctionHasTests) {
  std::string path = loaded_libcpg();
  ASSERT_FALSE(path.empty());
  std::string cmd = "nm -D --defined-only '" + path + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::set<std::string> functions;
  char line[512];
  while (std::fgets(line, sizeof(line), p)) {
    char addr[64], type[8], name[400];
    if (std::sscanf(line, "%63s %7s %399s", addr, type, name) == 3 &&
        (type[0] == 'T' || type[0] == 'W' || type[0] == 'i'))
      functions.insert(name);
  }
  ASSERT_EQ(::pclose(p), 0);
  ASSERT_EQ(functions.size(), 20u);
  std::map<std::string, int> tests_in_suite;
  auto* ut = ::testing::UnitTest::GetInstance();
  for (int i = 0; i < ut->total_test_suite_count(); ++i)
    tests_in_suite[ut->GetTestSuite(i)->name()] = ut->GetTestSuite(i)->total_test_count();
  for (const auto& fn : functions) {
    std::string base = fn.substr(0, fn.find('@'));
    auto it = kTestsOf.find(base);
    ASSERT_NE(it, kTestsOf.end()) << base << " is exported but has no entry in kTestsOf";
    for (const auto& suite : it->second)
      EXPECT_GT(tests_in_suite[suite], 0) << base << ": suite " << suite << " has no tests";
  }
}

}  // namespace
