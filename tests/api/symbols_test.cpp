// libcpg.so.4 of this build exports exactly the dynamic symbols, with the
// same symbol versions, as the distribution's Corosync libcpg.so.4.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

// "g DF .text COROSYNC_CPG_1.0 cpg_join" for every defined dynamic symbol.
std::set<std::string> defined_symbols(const std::string& lib, std::string& error) {
  std::set<std::string> out;
  std::string cmd = "objdump -T '" + lib + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    error = "cannot run objdump";
    return out;
  }
  char line[1024];
  bool table = false;
  while (std::fgets(line, sizeof(line), p)) {
    std::string s(line);
    if (s.find("DYNAMIC SYMBOL TABLE") != std::string::npos) {
      table = true;
      continue;
    }
    if (!table) continue;
    std::istringstream in(s);
    std::vector<std::string> tok;
    for (std::string t; in >> t;) tok.push_back(t);
    if (tok.size() < 5) continue;
    // addr, flag tokens..., section, size, version, name
    const std::string& name = tok.back();
    const std::string& version = tok[tok.size() - 2];
    const std::string& section = tok[tok.size() - 4];
    if (section == "*UND*") continue;
    std::string flags;
    for (size_t i = 1; i + 4 < tok.size(); ++i) flags += tok[i] + " ";
    out.insert(flags + section + " " + version + " " + name);
  }
  int rc = ::pclose(p);
  if (rc != 0) error = "objdump -T " + lib + " failed";
  return out;
}

std::string join(const std::set<std::string>& s) {
  std::string r;
  for (auto& x : s) r += "  " + x + "\n";
  return r;
}

TEST(Symbols, SameDynamicSymbolsAndVersionsAsCorosync) {
  std::string e1, e2;
  auto ours = defined_symbols(RCPG_LIBCPG_PATH, e1);
  auto theirs = defined_symbols(SYSTEM_LIBCPG_PATH, e2);
  ASSERT_TRUE(e1.empty()) << e1;
  ASSERT_TRUE(e2.empty()) << e2 << " (package libcpg4 provides the reference library)";
  ASSERT_EQ(theirs.size(), 21u) << join(theirs);  // 20 functions + the version node
  EXPECT_EQ(ours, theirs) << "rcpg:\n" << join(ours) << "corosync:\n" << join(theirs);
}

TEST(Symbols, SonameIsLibcpgSo4) {
  std::string cmd = std::string("objdump -p '") + RCPG_LIBCPG_PATH + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string soname;
  char line[512];
  while (std::fgets(line, sizeof(line), p)) {
    std::istringstream in(line);
    std::string k, v;
    in >> k >> v;
    if (k == "SONAME") soname = v;
  }
  ::pclose(p);
  EXPECT_EQ(soname, "libcpg.so.4");
}

}  // namespace
