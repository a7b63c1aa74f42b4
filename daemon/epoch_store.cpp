#include "daemon/epoch_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace rcpg::daemon {

EpochStore::EpochStore(std::string dir, uint32_t nodeid) {
  if (!dir.empty()) path_ = dir + "/node" + std::to_string(nodeid) + ".epoch";
}

bool EpochStore::load(uint32_t& epoch, std::string& why) const {
  epoch = 0;
  if (path_.empty()) return true;
  std::ifstream in(path_);
  if (!in) {
    if (errno == ENOENT) return true;  // first start
    why = path_ + ": " + std::strerror(errno);
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), epoch);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
    why = path_ + ": not a view epoch (\"" + text.substr(0, 32) + "\")";
    epoch = 0;
    return false;
  }
  return true;
}

bool EpochStore::save(uint32_t epoch, std::string& why) {
  if (path_.empty() || epoch <= saved_) return true;
  ::mkdir(path_.substr(0, path_.rfind('/')).c_str(), 0755);  // EEXIST is fine
  std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    why = tmp + ": " + std::strerror(errno);
    return false;
  }
  std::string text = std::to_string(epoch) + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path_.c_str()) != 0) {
    why = path_ + ": " + std::strerror(ok ? errno : err);
    ::unlink(tmp.c_str());
    return false;
  }
  saved_ = epoch;
  return true;
}

}  // namespace rcpg::daemon
