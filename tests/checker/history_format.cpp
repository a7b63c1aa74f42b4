// The history text format (see history_checker.h): building, writing and
// parsing histories.
#include <charconv>
#include <fstream>
#include <istream>
#include <ostream>
#include <sstream>

#include "tests/checker/history_checker.h"

namespace rcpg::checker {

namespace {

// Line of the next event appended in memory: the H line is line 1.
uint32_t next_line(const History& h) {
  return static_cast<uint32_t>(h.events.size() + 2);
}

std::vector<std::string_view> split(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\r') ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

bool parse_u64(std::string_view s, uint64_t& v) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

void History::view(uint64_t id, std::vector<std::string> members) {
  Event e;
  e.type = Event::Type::View;
  e.line = next_line(*this);
  e.number = id;
  e.members = std::move(members);
  events.push_back(std::move(e));
}

void History::fresh() {
  Event e;
  e.type = Event::Type::Fresh;
  e.line = next_line(*this);
  events.push_back(std::move(e));
}

void History::deliver(std::string origin, uint64_t seq, Order order) {
  Event e;
  e.type = Event::Type::Deliver;
  e.line = next_line(*this);
  e.number = seq;
  e.order = order;
  e.origin = std::move(origin);
  events.push_back(std::move(e));
}

void History::send(std::string origin, uint64_t seq) {
  Event e;
  e.type = Event::Type::Send;
  e.line = next_line(*this);
  e.number = seq;
  e.origin = std::move(origin);
  events.push_back(std::move(e));
}

void History::kill() {
  Event e;
  e.type = Event::Type::Kill;
  e.line = next_line(*this);
  events.push_back(std::move(e));
}

void History::write(std::ostream& out) const {
  out << "H " << name << "\n";
  for (const Event& e : events) {
    switch (e.type) {
      case Event::Type::View:
        out << "V " << e.number;
        for (const std::string& m : e.members) out << " " << m;
        out << "\n";
        break;
      case Event::Type::Fresh:
        out << "F\n";
        break;
      case Event::Type::Deliver:
        out << "M " << e.origin << " " << e.number
            << (e.order == Order::None   ? " u"
                : e.order == Order::Fifo ? " f"
                                         : "")
            << "\n";
        break;
      case Event::Type::Send:
        out << "S " << e.origin << " " << e.number << "\n";
        break;
      case Event::Type::Kill:
        out << "X\n";
        break;
    }
  }
}

bool parse_history(std::istream& in, const std::string& source, History& out, std::string& error) {
  out = History{};
  out.source = source;
  std::string line;
  uint32_t lineno = 0;
  bool have_name = false;
  auto bad = [&](const std::string& what) {
    error = source + ":" + std::to_string(lineno) + ": " + what;
    return false;
  };
  while (std::getline(in, line)) {
    ++lineno;
    std::vector<std::string_view> tok = split(line);
    if (tok.empty() || tok[0][0] == '#') continue;
    std::string_view kind = tok[0];
    if (!have_name) {
      if (kind != "H" || tok.size() != 2) return bad("expected 'H <name>' first");
      out.name = std::string(tok[1]);
      have_name = true;
      continue;
    }
    if (out.killed()) return bad("an event after X (X must end the history)");
    Event e;
    e.line = lineno;
    if (kind == "V") {
      if (tok.size() < 2 || !parse_u64(tok[1], e.number))
        return bad("expected 'V <view> <member>...' with a decimal uint64 view");
      e.type = Event::Type::View;
      for (size_t i = 2; i < tok.size(); ++i) e.members.emplace_back(tok[i]);
    } else if (kind == "M" || kind == "S") {
      bool m = kind == "M";
      if (tok.size() < 3 || tok.size() > (m ? 4u : 3u) || !parse_u64(tok[2], e.number))
        return bad(m ? "expected 'M <origin> <seq> [u|f]' with a decimal uint64 seq"
                     : "expected 'S <origin> <seq>' with a decimal uint64 seq");
      e.type = m ? Event::Type::Deliver : Event::Type::Send;
      e.origin = std::string(tok[1]);
      if (tok.size() == 4) {
        if (tok[3] == "u")
          e.order = Order::None;
        else if (tok[3] == "f")
          e.order = Order::Fifo;
        else
          return bad("the 4th field of M must be 'u' or 'f', not '" + std::string(tok[3]) + "'");
      }
    } else if (kind == "F" || kind == "X") {
      if (tok.size() != 1) return bad(std::string("'") + std::string(kind) + "' takes no fields");
      e.type = kind == "F" ? Event::Type::Fresh : Event::Type::Kill;
    } else if (kind == "H") {
      return bad("a second 'H' line (one history per file)");
    } else {
      return bad("unknown event '" + std::string(kind) + "' (expected V, F, M, S, X or #)");
    }
    out.events.push_back(std::move(e));
  }
  if (in.bad()) {
    error = source + ": read error";
    return false;
  }
  if (!have_name) {
    error = source + ": empty history (no 'H <name>' line)";
    return false;
  }
  return true;
}

bool read_history_file(const std::string& path, History& out, std::string& error) {
  std::ifstream f(path);
  if (!f) {
    error = path + ": cannot open for reading";
    return false;
  }
  return parse_history(f, path, out, error);
}

}  // namespace rcpg::checker
