#include "ordering/node_runtime.h"

#include "transport/factory.h"

namespace rcpg::ordering {

using Clock = std::chrono::steady_clock;

NodeRuntime::NodeRuntime(NodeConfig cfg, Engine::DeliverFn deliver)
    : cfg_(std::move(cfg)),
      deliver_(std::move(deliver)),
      spin_(cfg_.spin_iterations, std::chrono::milliseconds(1)) {
  spin_.set_yield(cfg_.spin_yield);
}

bool NodeRuntime::start(std::string& why) {
  if (cfg_.pin)
    placement_ = transport::pin_current_thread(cfg_.endpoint.device_hint, cfg_.pin_core);
  ep_ = transport::make_endpoint(cfg_.fabric, cfg_.endpoint, why);
  if (!ep_) return false;
  cfg_.engine.self = cfg_.endpoint.node_id;
  engine_ = std::make_unique<Engine>(*ep_, cfg_.engine, deliver_);
  return engine_->start(why);
}

void NodeRuntime::run_once() {
  if (engine_->progress())
    spin_.busy();
  else if (spin_.idle(*ep_))
    ++blocked_;
}

bool NodeRuntime::run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline || engine_->failed()) return false;
    run_once();
  }
  return true;
}

bool NodeRuntime::send_blocking(EntryKind kind, Guarantee g, uint32_t group, uint32_t pid,
                                std::span<const std::byte> payload,
                                std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    SendResult r = engine_->send(kind, g, group, pid, payload);
    if (r == SendResult::Ok) break;
    if (r == SendResult::TooLarge || Clock::now() > deadline || engine_->failed()) return false;
    run_once();
  }
  return run_until([&] { return !engine_->large_send_pending(); },
                   std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

}  // namespace rcpg::ordering
