// rcpg/cpg.hpp: the C++ API over libcpg.
#include <rcpg/cpg.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <string>
#include <type_traits>
#include <vector>

#include "api_test_util.h"

namespace rc = rcpg::cpg;
using rcpg::test::unique_group;

namespace {

static_assert(!std::is_copy_constructible_v<rc::Handle>);
static_assert(std::is_nothrow_move_constructible_v<rc::Handle>);
static_assert(!std::is_copy_constructible_v<rc::Group>);
static_assert(!std::is_copy_constructible_v<rc::ZcbBuffer>);

std::span<const std::byte> bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

TEST(CppApi, JoinSendReceiveLeave) {
  std::vector<std::string> got;
  std::vector<size_t> member_counts;
  rc::Callbacks cb;
  cb.on_message = [&](const rc::Message& m) {
    got.emplace_back(reinterpret_cast<const char*>(m.data.data()), m.data.size());
  };
  cb.on_membership = [&](const rc::Membership& m) { member_counts.push_back(m.members.size()); };
  rc::Handle h(std::move(cb));
  rc::Handle moved = std::move(h);  // the callbacks follow the move
  EXPECT_EQ(moved.local_nodeid(), 1u);
  EXPECT_GT(moved.max_atomic_msgsize(), 0u);
  EXPECT_FALSE(moved.flow_control());
  std::string name = unique_group();
  {
    rc::Group g = moved.join(name);
    EXPECT_TRUE(g.joined());
    // The join is an entry in the log: membership shows it once delivered.
    for (int i = 0; i < 2000 && moved.members(name).empty(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(moved.members(name).size(), 1u);
    EXPECT_FALSE(moved.send(bytes("one")));
    iovec iov[2] = {{const_cast<char*>("tw"), 2}, {const_cast<char*>("o"), 1}};
    EXPECT_FALSE(moved.send(std::span<const iovec>(iov, 2)));
    rc::ZcbBuffer buf = moved.alloc(16);
    std::memcpy(buf.get(), "three", 5);
    EXPECT_FALSE(moved.send(buf, 5));
    for (int i = 0; i < 1000 && got.size() < 3; ++i) {
      ASSERT_FALSE(moved.dispatch());
      rcpg::test::fd_readable(moved.fd(), 10);
    }
  }  // the Group leaves here
  for (int i = 0; i < 1000 && member_counts.size() < 2; ++i) {
    ASSERT_FALSE(moved.dispatch());
    rcpg::test::fd_readable(moved.fd(), 10);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_EQ(member_counts, (std::vector<size_t>{1, 0}));
  EXPECT_TRUE(moved.members(name).empty());
}

TEST(CppApi, ErrorsAreErrorCodesOrExceptions) {
  rc::Handle h;
  std::error_code ec = h.send(bytes("x"));  // not joined: an error code, no exception
  EXPECT_EQ(ec, rc::make_error_code(CS_ERR_NOT_EXIST));
  EXPECT_EQ(ec.category(), rc::cs_category());
  EXPECT_THROW(h.join(std::string(200, 'x')), rc::Error);
  std::string name = unique_group();
  rc::Group g = h.join(name);
  try {
    h.join(name);
    FAIL() << "joining twice did not throw";
  } catch (const rc::Error& e) {
    EXPECT_EQ(e.status(), CS_ERR_EXIST);
  }
  EXPECT_THROW(h.alloc(size_t{1} << 40), rc::Error);
  EXPECT_EQ(h.dispatch(static_cast<cs_dispatch_flags_t>(42)),
            rc::make_error_code(CS_ERR_INVALID_PARAM));
  g.leave();
  EXPECT_FALSE(g.joined());
}

}  // namespace
