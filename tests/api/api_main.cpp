// main() of the libcpg API tests: one rcpgd for the whole binary.
#include <gtest/gtest.h>

#include <cstdio>

#include "api_test_util.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string why;
  if (!rcpg::test::shared_daemon().start(why)) {
    std::fprintf(stderr, "cannot start rcpgd for the API tests: %s\n", why.c_str());
    return 1;
  }
  rcpg::test::shared_daemon().export_socket();
  int rc = RUN_ALL_TESTS();
  rcpg::test::shared_daemon().stop();
  return rc;
}
