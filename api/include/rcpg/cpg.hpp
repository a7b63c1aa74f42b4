// rcpg's C++ API over the CPG C API (<corosync/cpg.h>, libcpg.so.4).
//
// Errors: calls that set something up or change membership (Handle
// construction, join, leave, zcb allocation, membership queries) throw
// rcpg::cpg::Error (a std::system_error whose code() is in cs_category()).
// Calls on the message path (send, dispatch) return std::error_code instead,
// because CS_ERR_TRY_AGAIN is ordinary back-pressure there, not an exception.
//
// Ownership: Handle, Group and ZcbBuffer are move-only RAII types. A Group
// and a ZcbBuffer must not outlive the Handle they came from. Callbacks run
// inside Handle::dispatch, on the calling thread.
#pragma once

#include <corosync/cpg.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace rcpg::cpg {

// ---------------------------------------------------------------- errors

class ErrorCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "cpg"; }
  std::string message(int ev) const override {
    switch (static_cast<cs_error_t>(ev)) {
      case CS_OK:
        return "ok";
      case CS_ERR_LIBRARY:
        return "library error (daemon not reachable or gone)";
      case CS_ERR_TRY_AGAIN:
        return "try again (back-pressure)";
      case CS_ERR_INVALID_PARAM:
        return "invalid parameter";
      case CS_ERR_NO_MEMORY:
        return "out of memory";
      case CS_ERR_BAD_HANDLE:
        return "bad handle";
      case CS_ERR_BUSY:
        return "busy";
      case CS_ERR_NOT_EXIST:
        return "does not exist (not joined)";
      case CS_ERR_NAME_TOO_LONG:
        return "name too long";
      case CS_ERR_EXIST:
        return "already exists (already joined)";
      case CS_ERR_NO_SPACE:
        return "no space";
      case CS_ERR_NO_RESOURCES:
        return "no resources";
      case CS_ERR_TOO_BIG:
        return "message too big";
      case CS_ERR_NO_SECTIONS:
        return "no more sections";
      default:
        return "cs_error_t " + std::to_string(ev);
    }
  }
};

inline const std::error_category& cs_category() {
  static const ErrorCategory category;
  return category;
}

// CS_OK maps to the empty error_code.
inline std::error_code make_error_code(cs_error_t e) {
  return e == CS_OK ? std::error_code() : std::error_code(static_cast<int>(e), cs_category());
}

class Error : public std::system_error {
 public:
  Error(cs_error_t e, const std::string& what) : std::system_error(make_error_code(e), what) {}
  cs_error_t status() const { return static_cast<cs_error_t>(code().value()); }
};

inline void check(cs_error_t e, const char* what) {
  if (e != CS_OK) throw Error(e, what);
}

inline cpg_name to_name(std::string_view s) {
  if (s.size() > CPG_MAX_NAME_LENGTH) throw Error(CS_ERR_NAME_TOO_LONG, "group name");
  cpg_name n{};
  n.length = static_cast<uint32_t>(s.size());
  std::memcpy(n.value, s.data(), s.size());
  return n;
}

inline std::string_view to_view(const cpg_name& n) {
  return {n.value, n.length};
}

// ---------------------------------------------------------------- events

struct Message {
  std::string_view group;
  uint32_t nodeid;
  uint32_t pid;
  std::span<const std::byte> data;  // valid during the callback only
};

struct Membership {
  std::string_view group;
  std::span<const cpg_address> members, left, joined;
};

struct ClusterView {
  cpg_ring_id ring_id;
  std::span<const uint32_t> nodes;
};

struct Callbacks {
  std::function<void(const Message&)> on_message;
  std::function<void(const Membership&)> on_membership;
  std::function<void(const ClusterView&)> on_view;
  bool initial_view = false;  // CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF
};

class Handle;

// A buffer from the handle's zero-copy pool; freed on destruction.
class ZcbBuffer {
 public:
  ZcbBuffer() = default;
  ZcbBuffer(ZcbBuffer&& o) noexcept
      : h_(std::exchange(o.h_, 0)), p_(std::exchange(o.p_, nullptr)), n_(o.n_) {}
  ZcbBuffer& operator=(ZcbBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, 0);
      p_ = std::exchange(o.p_, nullptr);
      n_ = o.n_;
    }
    return *this;
  }
  ~ZcbBuffer() { reset(); }

  std::span<std::byte> data() const { return {static_cast<std::byte*>(p_), n_}; }
  void* get() const { return p_; }
  size_t size() const { return n_; }
  void reset() {
    if (p_ != nullptr) cpg_zcb_free(h_, p_);
    p_ = nullptr;
    h_ = 0;
  }

 private:
  friend class Handle;
  ZcbBuffer(cpg_handle_t h, void* p, size_t n) : h_(h), p_(p), n_(n) {}
  cpg_handle_t h_ = 0;
  void* p_ = nullptr;
  size_t n_ = 0;
};

class Group;

// One CPG handle (one connection to rcpgd).
class Handle {
 public:
  explicit Handle(Callbacks cb = {}) : state_(std::make_unique<State>(std::move(cb))) {
    cpg_model_v1_data_t m{};
    m.model = CPG_MODEL_V1;
    m.cpg_deliver_fn = &Handle::deliver;
    m.cpg_confchg_fn = &Handle::confchg;
    m.cpg_totem_confchg_fn = &Handle::totem;
    m.flags = state_->cb.initial_view ? CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF : 0;
    check(cpg_model_initialize(&h_, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(&m),
                               state_.get()),
          "cpg_model_initialize");
  }
  Handle(Handle&& o) noexcept : h_(std::exchange(o.h_, 0)), state_(std::move(o.state_)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      close();
      h_ = std::exchange(o.h_, 0);
      state_ = std::move(o.state_);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { close(); }

  cpg_handle_t native() const { return h_; }

  int fd() const {
    int fd = -1;
    check(cpg_fd_get(h_, &fd), "cpg_fd_get");
    return fd;
  }
  uint32_t local_nodeid() const {
    unsigned id = 0;
    check(cpg_local_get(h_, &id), "cpg_local_get");
    return id;
  }
  uint32_t max_atomic_msgsize() const {
    uint32_t n = 0;
    check(cpg_max_atomic_msgsize_get(h_, &n), "cpg_max_atomic_msgsize_get");
    return n;
  }
  bool flow_control() const {
    cpg_flow_control_state_t s = CPG_FLOW_CONTROL_DISABLED;
    check(cpg_flow_control_state_get(h_, &s), "cpg_flow_control_state_get");
    return s == CPG_FLOW_CONTROL_ENABLED;
  }

  // Runs callbacks (see cpg_dispatch for the flags).
  std::error_code dispatch(cs_dispatch_flags_t flags = CS_DISPATCH_ALL) {
    return make_error_code(cpg_dispatch(h_, flags));
  }

  // Joins `name`; the returned Group leaves it when destroyed.
  Group join(std::string_view name);

  // Members of any group (not only a joined one).
  std::vector<cpg_address> members(std::string_view group) const {
    cpg_name n = to_name(group);
    std::vector<cpg_address> v(CPG_MEMBERS_MAX);
    for (;;) {
      int count = static_cast<int>(v.size());
      cs_error_t e = cpg_membership_get(h_, &n, v.data(), &count);
      if (e == CS_ERR_NO_SPACE) {
        v.resize(static_cast<size_t>(count));
        continue;
      }
      check(e, "cpg_membership_get");
      v.resize(static_cast<size_t>(count));
      return v;
    }
  }

  std::error_code send(std::span<const std::byte> data, cpg_guarantee_t g = CPG_TYPE_AGREED) {
    iovec iov{const_cast<std::byte*>(data.data()), data.size()};
    return make_error_code(cpg_mcast_joined(h_, g, &iov, 1));
  }
  std::error_code send(std::span<const iovec> iov, cpg_guarantee_t g = CPG_TYPE_AGREED) {
    return make_error_code(cpg_mcast_joined(h_, g, iov.data(), static_cast<unsigned>(iov.size())));
  }

  ZcbBuffer alloc(size_t size) {
    void* p = nullptr;
    check(cpg_zcb_alloc(h_, size, &p), "cpg_zcb_alloc");
    return ZcbBuffer(h_, p, size);
  }
  // Sends the first `len` bytes of `buf`; the buffer is reusable on return.
  std::error_code send(const ZcbBuffer& buf, size_t len, cpg_guarantee_t g = CPG_TYPE_AGREED) {
    return make_error_code(cpg_zcb_mcast_joined(h_, g, buf.get(), len));
  }

 private:
  // Heap-held so the context pointer given to libcpg survives moves.
  struct State {
    explicit State(Callbacks c) : cb(std::move(c)) {}
    Callbacks cb;
  };

  static State* state_of(cpg_handle_t h) {
    void* ctx = nullptr;
    return cpg_context_get(h, &ctx) == CS_OK ? static_cast<State*>(ctx) : nullptr;
  }
  static void deliver(cpg_handle_t h, const cpg_name* g, uint32_t nodeid, uint32_t pid, void* msg,
                      size_t len) {
    State* s = state_of(h);
    if (s != nullptr && s->cb.on_message)
      s->cb.on_message(
          Message{to_view(*g), nodeid, pid, {static_cast<const std::byte*>(msg), len}});
  }
  static void confchg(cpg_handle_t h, const cpg_name* g, const cpg_address* m, size_t mn,
                      const cpg_address* l, size_t ln, const cpg_address* j, size_t jn) {
    State* s = state_of(h);
    if (s != nullptr && s->cb.on_membership)
      s->cb.on_membership(Membership{to_view(*g), {m, mn}, {l, ln}, {j, jn}});
  }
  static void totem(cpg_handle_t h, cpg_ring_id id, uint32_t n, const uint32_t* nodes) {
    State* s = state_of(h);
    if (s != nullptr && s->cb.on_view) s->cb.on_view(ClusterView{id, {nodes, n}});
  }

  void close() {
    if (h_ != 0) cpg_finalize(h_);
    h_ = 0;
  }

  cpg_handle_t h_ = 0;
  std::unique_ptr<State> state_;
};

// Membership of one group through one handle; leaves on destruction.
class Group {
 public:
  Group(Group&& o) noexcept : h_(std::exchange(o.h_, 0)), name_(std::move(o.name_)) {}
  Group& operator=(Group&& o) noexcept {
    if (this != &o) {
      if (h_ != 0) leave_quietly();
      h_ = std::exchange(o.h_, 0);
      name_ = std::move(o.name_);
    }
    return *this;
  }
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;
  ~Group() {
    if (h_ != 0) leave_quietly();
  }

  const std::string& name() const { return name_; }
  bool joined() const { return h_ != 0; }

  void leave() {
    cpg_name n = to_name(name_);
    cpg_handle_t h = std::exchange(h_, 0);
    check(cpg_leave(h, &n), "cpg_leave");
  }

 private:
  friend class Handle;
  Group(cpg_handle_t h, std::string name) : h_(h), name_(std::move(name)) {}
  void leave_quietly() noexcept {
    cpg_name n{};
    n.length = static_cast<uint32_t>(name_.size());
    std::memcpy(n.value, name_.data(), name_.size());
    cpg_leave(h_, &n);
    h_ = 0;
  }
  cpg_handle_t h_ = 0;
  std::string name_;
};

inline Group Handle::join(std::string_view name) {
  cpg_name n = to_name(name);
  check(cpg_join(h_, &n), "cpg_join");
  return Group(h_, std::string(name));
}

}  // namespace rcpg::cpg
