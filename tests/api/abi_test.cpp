// rcpg's cpg.h/corotypes.h against the distribution's: every fact that
// abi_probe.cpp gathers must be identical. Also checks that rcpg's headers
// compile as C (c_header_check.c is part of this test's sources).
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

using AbiFacts = std::vector<std::pair<std::string, std::string>>;
void abi_probe_rcpg(AbiFacts& facts);
void abi_probe_system(AbiFacts& facts);
extern "C" int rcpg_c_header_check(void);

TEST(HeaderAbi, SameAsDistributionHeader) {
  AbiFacts ours, theirs;
  abi_probe_rcpg(ours);
  abi_probe_system(theirs);
  ASSERT_EQ(ours.size(), theirs.size());
  ASSERT_GT(ours.size(), 150u);
  for (size_t i = 0; i < ours.size(); ++i) {
    ASSERT_EQ(ours[i].first, theirs[i].first);
    EXPECT_EQ(ours[i].second, theirs[i].second) << ours[i].first;
  }
}

TEST(HeaderAbi, CompilesAsC) {
  EXPECT_EQ(rcpg_c_header_check(), 132 + 12);
}
