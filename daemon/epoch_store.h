// The highest view epoch this node knew of, kept on disk across restarts
// (Corosync keeps its ring id the same way). Engine::decided_epoch() goes
// in, EngineConfig::epoch_floor comes out at the next start: nodes that
// restart while the last member of their old view is cut off then cannot
// number a view of theirs like one that member already has.
//
// One small text file, `<dir>/node<id>.epoch`, replaced atomically (write,
// fsync, rename). Views are rare, so the write is off every hot path.
#pragma once

#include <cstdint>
#include <string>

namespace rcpg::daemon {

class EpochStore {
 public:
  // dir empty: nothing is kept (load() is 0, save() does nothing).
  EpochStore(std::string dir, uint32_t nodeid);
  // The stored epoch; 0 when there is none. A file that is not a number
  // is an error (why): the operator should look, not have it ignored.
  bool load(uint32_t& epoch, std::string& why) const;
  // Stores `epoch` if it is higher than the last stored one. False + why
  // when the file cannot be written.
  bool save(uint32_t epoch, std::string& why);
  const std::string& path() const { return path_; }
  uint32_t saved() const { return saved_; }

 private:
  std::string path_;
  uint32_t saved_ = 0;
};

}  // namespace rcpg::daemon
