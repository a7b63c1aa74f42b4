// The invariant checks over a set of histories (see history_checker.h for
// the definitions each check implements).
#include "tests/checker/history_checker.h"

#include <algorithm>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace rcpg::checker {

namespace {

struct Key {
  uint32_t origin = 0;
  uint64_t seq = 0;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    uint64_t x = k.seq * 0x9e3779b97f4a7c15ull ^ (uint64_t{k.origin} << 1);
    x ^= x >> 31;
    return static_cast<size_t>(x * 0xbf58476d1ce4e5b9ull);
  }
};

using KeySet = std::unordered_set<Key, KeyHash>;
template <class V>
using KeyMap = std::unordered_map<Key, V, KeyHash>;

struct Msg {
  Key key;
  uint32_t line = 0;
};

struct Segment {
  size_t hist = 0;
  uint64_t view = 0;
  uint32_t line = 0;   // of its V
  bool fresh = false;  // the history's first segment, or one after an F
  bool whole = true;   // starts at the view's beginning
  std::vector<Msg> ordered;
  std::vector<Msg> loose;  // u and f, in delivery order
  enum class End : uint8_t { View, Fresh, Kill, Finish } end = End::Finish;
  uint64_t next_view = 0;  // End::View
  uint32_t end_line = 0;   // of the event that ended it (0: the history's end)
};

struct SendRec {
  size_t hist = 0;
  size_t event = 0;
  Key key;
  uint32_t line = 0;
  size_t seg = SIZE_MAX;  // index into the history's segments: the send's view
};

struct HistInfo {
  std::vector<size_t> segs;    // global segment indices, in order
  KeyMap<uint32_t> delivered;  // key -> line
  KeySet unordered;            // delivered as `u`
  bool complete = false;
  size_t last_fx = SIZE_MAX;  // index of the last F or X event
};

// Does origin `o` belong to member `m` (m, "m:*" or "nm:*")?
bool belongs(std::string_view o, std::string_view m) {
  if (o == m) return true;
  if (o.size() > m.size() && o.compare(0, m.size(), m) == 0 && o[m.size()] == ':') return true;
  return o.size() > m.size() + 1 && o[0] == 'n' && o.compare(1, m.size(), m) == 0 &&
         o[m.size() + 1] == ':';
}

class Checker {
 public:
  Checker(const std::vector<History>& hs, const CheckOptions& opt, CheckResult& res)
      : hs_(hs), opt_(opt), res_(res), info_(hs.size()) {}

  void run() {
    std::unordered_map<std::string, size_t> names;
    for (size_t i = 0; i < hs_.size(); ++i) {
      auto [it, fresh] = names.emplace(hs_[i].name, i);
      if (!fresh) {
        res_.input_error = "two histories are named '" + hs_[i].name +
                           "': " + hs_[it->second].source + " and " + hs_[i].source;
        return;
      }
    }
    res_.stats.histories = hs_.size();
    for (size_t i = 0; i < hs_.size(); ++i) scan(i);
    if (!res_.input_error.empty()) return;
    res_.stats.views = views_.size();
    for (size_t i = 0; i < hs_.size(); ++i) check_fifo(i);
    check_total_order();
    check_virtual_synchrony();
    check_sends();
  }

 private:
  uint32_t intern(const std::string& origin) {
    auto [it, fresh] = origin_ids_.emplace(origin, static_cast<uint32_t>(origins_.size()));
    if (fresh) origins_.push_back(origin);
    return it->second;
  }
  std::string msg(Key k) const { return origins_[k.origin] + "#" + std::to_string(k.seq); }
  std::string at(size_t h, uint32_t line) const {
    return hs_[h].name + " (" + hs_[h].source + ":" + std::to_string(line) + ")";
  }
  std::string view_name(uint64_t v) const { return "view " + std::to_string(v); }
  bool full() const { return res_.violations.size() >= opt_.max_violations; }
  void report(std::string what) {
    if (full()) return;
    res_.violations.push_back(std::move(what));
    if (full()) res_.violations.back() += " [further violations not collected]";
  }

  void scan(size_t hi) {
    const History& h = hs_[hi];
    HistInfo& inf = info_[hi];
    KeySet sent_here;
    bool in_view = false, pending_fresh = true, have_view = false;
    uint32_t fresh_line = 0;  // line of the last F
    uint64_t last_view = 0;
    uint32_t last_view_line = 0;
    std::vector<size_t> waiting_sends;  // sends made outside a view: their view is the next
    std::vector<int8_t> allowed;        // origin id -> belongs to the current view (-1: unknown)
    const std::vector<std::string>* members = nullptr;
    auto close = [&](Segment::End end, uint64_t next, uint32_t line) {
      if (!in_view) return;
      Segment& s = segs_[inf.segs.back()];
      s.end = end;
      s.next_view = next;
      s.end_line = line;
      in_view = false;
    };
    for (size_t ei = 0; ei < h.events.size(); ++ei) {
      const Event& e = h.events[ei];
      if (ei > 0 && h.events[ei - 1].type == Event::Type::Kill && res_.input_error.empty())
        res_.input_error = at(hi, e.line) + ": an event after X (X must end the history)";
      switch (e.type) {
        case Event::Type::View: {
          if (have_view && e.number <= last_view)
            report("(v) view order: " + at(hi, e.line) + " installs " + view_name(e.number) +
                   " after " + view_name(last_view) + " (line " + std::to_string(last_view_line) +
                   ")");
          close(Segment::End::View, e.number, e.line);
          have_view = true;
          last_view = e.number;
          last_view_line = e.line;
          Segment s;
          s.hist = hi;
          s.view = e.number;
          s.line = e.line;
          s.fresh = pending_fresh;
          s.whole = !pending_fresh || opt_.whole_views;
          pending_fresh = false;
          inf.segs.push_back(segs_.size());
          segs_.push_back(std::move(s));
          in_view = true;
          for (size_t w : waiting_sends) sends_[w].seg = inf.segs.size() - 1;
          waiting_sends.clear();
          agree_view(hi, e);
          members = &e.members;
          allowed.assign(origins_.size(), -1);
          break;
        }
        case Event::Type::Fresh:
          close(Segment::End::Fresh, 0, e.line);
          pending_fresh = true;
          fresh_line = e.line;
          inf.last_fx = ei;
          break;
        case Event::Type::Kill:
          close(Segment::End::Kill, 0, e.line);
          inf.last_fx = ei;
          break;
        case Event::Type::Deliver: {
          ++res_.stats.deliveries;
          Key k{intern(e.origin), e.number};
          auto [it, first] = inf.delivered.emplace(k, e.line);
          if (!first && it->second < fresh_line) {
            it->second = e.line;  // delivered in an earlier history: this one's first
            first = true;
          }
          if (!first) {
            report("(a) duplicate: " + at(hi, e.line) + " delivers " + msg(k) +
                   " again (first at line " + std::to_string(it->second) + ")");
            break;
          }
          if (e.order == Order::None) inf.unordered.insert(k);
          if (!in_view) {
            report("(v) delivery outside a view: " + at(hi, e.line) + " delivers " + msg(k) +
                   (have_view ? " after an F, before the next V" : " before its first V"));
            break;
          }
          if (allowed.size() <= k.origin) allowed.resize(k.origin + 1, -1);
          if (allowed[k.origin] < 0)
            allowed[k.origin] = std::any_of(members->begin(), members->end(),
                                            [&](auto& m) { return belongs(e.origin, m); });
          if (!allowed[k.origin])
            report("(v) sender not in view: " + at(hi, e.line) + " delivers " + msg(k) + " in " +
                   view_name(last_view) + " (line " + std::to_string(last_view_line) +
                   "), which has no member " + e.origin + " belongs to");
          Segment& s = segs_[inf.segs.back()];
          (e.order == Order::Total ? s.ordered : s.loose).push_back({k, e.line});
          break;
        }
        case Event::Type::Send: {
          ++res_.stats.sends;
          Key k{intern(e.origin), e.number};
          if (!sent_here.insert(k).second) {
            report("(e) sent twice: " + at(hi, e.line) + " records S " + msg(k) + " again");
            break;
          }
          SendRec r{hi, ei, k, e.line, in_view ? inf.segs.size() - 1 : SIZE_MAX};
          if (!in_view) waiting_sends.push_back(sends_.size());
          sends_.push_back(r);
          break;
        }
      }
    }
    close(Segment::End::Finish, 0, 0);
    inf.complete = !h.killed() && (h.events.empty() || h.events.back().type != Event::Type::Fresh);
  }

  // (v): the same view number names the same members everywhere.
  void agree_view(size_t hi, const Event& e) {
    std::vector<std::string> sorted = e.members;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
      report("(v) view members: " + at(hi, e.line) + " lists a member twice in " +
             view_name(e.number));
    auto [it, fresh] = views_.emplace(e.number, ViewRef{sorted, hi, e.line});
    if (!fresh && it->second.members != sorted) {
      auto list = [](const std::vector<std::string>& v) {
        std::string s;
        for (auto& m : v) s += (s.empty() ? "" : " ") + m;
        return "{" + s + "}";
      };
      report("(v) view agreement: " + at(hi, e.line) + " installs " + view_name(e.number) +
             " with members " + list(sorted) + ", " + at(it->second.hist, it->second.line) +
             " with " + list(it->second.members));
    }
  }

  void check_fifo(size_t hi) {
    const History& h = hs_[hi];
    const HistInfo& inf = info_[hi];
    struct State {
      bool has = false, excused = false;
      uint64_t last = 0;
      uint32_t line = 0;
    };
    std::vector<State> st(origins_.size());
    std::vector<uint32_t> active;  // origins with state
    for (const Event& e : h.events) {
      if (full()) return;
      if (e.type == Event::Type::View) {
        for (uint32_t o : active)
          if (!std::any_of(e.members.begin(), e.members.end(),
                           [&](auto& m) { return belongs(origins_[o], m); }))
            st[o].excused = true;
      } else if (e.type == Event::Type::Fresh) {
        // A new history: FIFO starts over (what it delivered before may
        // come again, see (a)).
        for (uint32_t o : active) st[o] = State{};
        active.clear();
      } else if (e.type == Event::Type::Deliver && e.order != Order::None) {
        uint32_t o = origin_ids_.at(e.origin);
        State& s = st[o];
        Key k{o, e.number};
        if (s.has) {
          if (e.number < s.last) {
            report("(b) FIFO: " + at(hi, e.line) + " delivers " + msg(k) + " after " +
                   msg({o, s.last}) + " (line " + std::to_string(s.line) + ")");
            continue;
          }
          if (e.number == s.last) continue;  // a duplicate, reported by (a)
          if (e.number > s.last + 1 && !s.excused) {
            // Everything in between must have been delivered as `u`.
            uint64_t limit = std::min(e.number, s.last + (uint64_t{1} << 20));
            for (uint64_t q = s.last + 1; q < limit; ++q)
              if (!inf.unordered.count({o, q})) {
                report("(b) FIFO gap: " + at(hi, e.line) + " delivers " + msg(k) + " after " +
                       msg({o, s.last}) + " (line " + std::to_string(s.line) +
                       ") but never delivers " + msg({o, q}) +
                       " (no F, and every view between has " + e.origin + ")");
                break;
              }
            if (limit < e.number)
              report("(b) FIFO gap: " + at(hi, e.line) + " delivers " + msg(k) + " after " +
                     msg({o, s.last}) + " (line " + std::to_string(s.line) +
                     "): a gap of more than 2^20 messages");
          }
        } else {
          active.push_back(o);
          s.has = true;
        }
        s.last = e.number;
        s.line = e.line;
        s.excused = false;
      }
    }
  }

  // (c): one common order per view.
  void check_total_order() {
    std::map<uint64_t, std::vector<size_t>> by_view;
    for (size_t i = 0; i < segs_.size(); ++i) by_view[segs_[i].view].push_back(i);
    struct Link {
      Key other;
      size_t seg;
      uint32_t line;  // of the message with this link
    };
    for (auto& [view, list] : by_view) {
      if (full()) return;
      KeyMap<Link> succ, pred;
      const Segment* head = nullptr;
      bool bad = false;
      for (size_t si : list) {
        const Segment& s = segs_[si];
        if (s.ordered.empty()) continue;
        if (s.whole) {
          if (!head) {
            head = &s;
          } else if (!(head->ordered[0].key == s.ordered[0].key)) {
            report("(c) total order: in " + view_name(view) + " " + at(s.hist, s.ordered[0].line) +
                   " delivers " + msg(s.ordered[0].key) + " first, " +
                   at(head->hist, head->ordered[0].line) + " delivers " +
                   msg(head->ordered[0].key) + " first");
            bad = true;
            break;
          }
        }
        for (size_t p = 0; p + 1 < s.ordered.size() && !bad; ++p) {
          const Msg& a = s.ordered[p];
          const Msg& b = s.ordered[p + 1];
          auto [it, fresh] = succ.emplace(a.key, Link{b.key, si, b.line});
          if (!fresh && !(it->second.other == b.key)) {
            const Segment& o = segs_[it->second.seg];
            report("(c) total order: in " + view_name(view) + " " + at(s.hist, b.line) +
                   " delivers " + msg(b.key) + " right after " + msg(a.key) + ", " +
                   at(o.hist, it->second.line) + " delivers " + msg(it->second.other) +
                   " right after it");
            bad = true;
            break;
          }
          auto [jt, fresh2] = pred.emplace(b.key, Link{a.key, si, b.line});
          if (!fresh2 && !(jt->second.other == a.key)) {
            const Segment& o = segs_[jt->second.seg];
            report("(c) total order: in " + view_name(view) + " " + at(s.hist, b.line) +
                   " delivers " + msg(b.key) + " right after " + msg(a.key) + ", " +
                   at(o.hist, jt->second.line) + " delivers it right after " +
                   msg(jt->second.other));
            bad = true;
          }
        }
        if (bad) break;
      }
      if (bad) continue;
      if (head) {
        const Msg& first = head->ordered[0];
        if (auto it = pred.find(first.key); it != pred.end()) {
          const Segment& o = segs_[it->second.seg];
          report("(c) total order: in " + view_name(view) + " " + at(head->hist, first.line) +
                 " delivers " + msg(first.key) + " first, " + at(o.hist, it->second.line) +
                 " delivers " + msg(it->second.other) + " before it");
          continue;
        }
      }
      // Contradiction-free links can still close a cycle (a->b in one
      // history, b->a in another): every chain must start somewhere.
      KeySet seen;
      for (auto& [k, l] : succ) {
        if (pred.count(k)) continue;
        Key cur = k;
        seen.insert(cur);
        for (auto it = succ.find(cur); it != succ.end(); it = succ.find(cur)) {
          cur = it->second.other;
          seen.insert(cur);
        }
      }
      for (auto& [k, l] : succ)
        if (!seen.count(k)) {
          const Segment& o = segs_[l.seg];
          report("(c) total order: in " + view_name(view) + " the histories order " + msg(k) +
                 " and " + msg(l.other) + " in a cycle (e.g. " + at(o.hist, l.line) + ")");
          break;
        }
    }
  }

  // (d): members that move on together delivered the same in the old view.
  void check_virtual_synchrony() {
    std::map<std::pair<uint64_t, uint64_t>, std::vector<size_t>> groups;
    constexpr uint64_t kEnd = UINT64_MAX;
    for (size_t i = 0; i < segs_.size(); ++i) {
      const Segment& s = segs_[i];
      if (s.end == Segment::End::View)
        groups[{s.view, s.next_view}].push_back(i);
      else if (s.end == Segment::End::Finish && opt_.quiesced_end && info_[s.hist].complete)
        groups[{s.view, kEnd}].push_back(i);
    }
    for (auto& [tr, list] : groups) {
      if (full()) return;
      if (list.size() < 2) continue;
      // Reference: the longest segment that starts at the view's beginning.
      size_t ref = list[0];
      for (size_t si : list) {
        const Segment& a = segs_[si];
        const Segment& r = segs_[ref];
        if ((a.whole && !r.whole) || (a.whole == r.whole && a.ordered.size() + a.loose.size() >
                                                                r.ordered.size() + r.loose.size()))
          ref = si;
      }
      std::string how = tr.second == kEnd
                            ? "both end (quiesced) in " + view_name(tr.first)
                            : "both go from " + view_name(tr.first) + " to " + view_name(tr.second);
      for (size_t si : list)
        if (si != ref && !compare_vs(segs_[ref], segs_[si], how)) break;
    }
  }

  bool compare_vs(const Segment& a, const Segment& b, const std::string& how) {
    auto last_line = [](const Segment& s) { return s.end_line ? s.end_line : s.line; };
    std::string pair = at(a.hist, a.line) + " and " + at(b.hist, b.line) + " " + how + ": ";
    if (a.whole && b.whole) {
      size_t n = std::min(a.ordered.size(), b.ordered.size());
      for (size_t i = 0; i < n; ++i)
        if (!(a.ordered[i].key == b.ordered[i].key)) {
          report("(d) virtual synchrony: " + pair + "ordered delivery #" + std::to_string(i + 1) +
                 " in the old view is " + msg(a.ordered[i].key) + " at line " +
                 std::to_string(a.ordered[i].line) + " and " + msg(b.ordered[i].key) + " at line " +
                 std::to_string(b.ordered[i].line));
          return false;
        }
      if (a.ordered.size() != b.ordered.size()) {
        const Segment& l = a.ordered.size() > n ? a : b;
        const Segment& s = a.ordered.size() > n ? b : a;
        report("(d) virtual synchrony: " + pair + at(l.hist, l.ordered[n].line) + " delivers " +
               msg(l.ordered[n].key) + " in the old view, " + hs_[s.hist].name +
               " does not (its segment ends at line " + std::to_string(last_line(s)) + ")");
        return false;
      }
      return same_set(a, b, pair, last_line(b)) && same_set(b, a, pair, last_line(a));
    }
    // One starts mid-view (s): its deliveries are the end of the other's (l).
    const Segment* s = &a;
    const Segment* l = &b;
    if (a.whole != b.whole ? a.whole : a.ordered.size() > b.ordered.size()) std::swap(s, l);
    if (s->ordered.size() > l->ordered.size()) {
      report("(d) virtual synchrony: " + pair + hs_[s->hist].name +
             " joined mid-view but delivered more ordered messages in it (" +
             std::to_string(s->ordered.size()) + ") than " + hs_[l->hist].name + " (" +
             std::to_string(l->ordered.size()) + ")");
      return false;
    }
    size_t off = l->ordered.size() - s->ordered.size();
    for (size_t i = 0; i < s->ordered.size(); ++i)
      if (!(s->ordered[i].key == l->ordered[off + i].key)) {
        report("(d) virtual synchrony: " + pair + "the ordered deliveries of " + hs_[s->hist].name +
               " in the old view are not the end of " + hs_[l->hist].name +
               "'s: " + msg(s->ordered[i].key) + " at line " + std::to_string(s->ordered[i].line) +
               " vs " + msg(l->ordered[off + i].key) + " at line " +
               std::to_string(l->ordered[off + i].line));
        return false;
      }
    // Both fresh with the same ordered messages: either may have joined first.
    if (s->ordered.size() == l->ordered.size() && s->whole == l->whole && !is_subset(*s, *l))
      std::swap(s, l);
    return same_set(*s, *l, pair, last_line(*l));
  }

  bool is_subset(const Segment& s, const Segment& l) const {
    KeySet have;
    for (const Msg& m : l.loose) have.insert(m.key);
    return std::all_of(s.loose.begin(), s.loose.end(),
                       [&](const Msg& m) { return have.count(m.key) > 0; });
  }

  // Every u/f message of `s` is in `l`.
  bool same_set(const Segment& s, const Segment& l, const std::string& pair, uint32_t l_end) {
    KeySet have;
    for (const Msg& m : l.loose) have.insert(m.key);
    for (const Msg& m : s.loose)
      if (!have.count(m.key)) {
        report("(d) virtual synchrony: " + pair + at(s.hist, m.line) + " delivers " + msg(m.key) +
               " (u/f) in the old view, " + hs_[l.hist].name +
               " does not (its segment ends at line " + std::to_string(l_end) + ")");
        return false;
      }
    return true;
  }

  void check_sends() {
    // (e) invention: per origin, what was recorded as sent.
    struct Sent {
      KeySet seqs;
      uint64_t max = 0;
      bool sender_killed = false;
      std::string where;
    };
    std::vector<Sent> sent(origins_.size());
    std::vector<bool> has_sent(origins_.size(), false);
    for (const SendRec& r : sends_) {
      Sent& s = sent[r.key.origin];
      if (!has_sent[r.key.origin] || s.where.find(hs_[r.hist].source) == std::string::npos)
        s.where += (s.where.empty() ? "" : ", ") + hs_[r.hist].source;
      has_sent[r.key.origin] = true;
      s.seqs.insert(r.key);
      s.max = std::max(s.max, r.key.seq);
      s.sender_killed |= hs_[r.hist].killed();
    }
    for (size_t hi = 0; hi < hs_.size() && !full(); ++hi)
      for (const Event& e : hs_[hi].events) {
        if (e.type != Event::Type::Deliver) continue;
        uint32_t o = origin_ids_.at(e.origin);
        if (!has_sent[o]) continue;
        const Sent& s = sent[o];
        Key k{o, e.number};
        if (s.seqs.count(k) || (s.sender_killed && e.number > s.max)) continue;
        report("(e) invented: " + at(hi, e.line) + " delivers " + msg(k) +
               ", which no history recorded sending (S lines of " + e.origin + " are in " +
               s.where + ")");
        if (full()) return;
      }

    // (e) loss.
    std::map<std::pair<size_t, size_t>, std::vector<size_t>> receivers;  // (hist, seg) -> hists
    for (const SendRec& r : sends_) {
      if (full()) return;
      const HistInfo& p = info_[r.hist];
      if (p.last_fx != SIZE_MAX && p.last_fx > r.event) continue;  // F or X after the send
      if (!p.delivered.count(r.key)) {
        report("(e) loss: " + at(r.hist, r.line) + " sent " + msg(r.key) +
               " and stayed (no F or X after it), but never delivered it");
        continue;
      }
      if (!opt_.quiesced_end || r.seg == SIZE_MAX) continue;
      auto [it, fresh] = receivers.try_emplace({r.hist, r.seg});
      if (fresh) it->second = together_to_the_end(r.hist, r.seg);
      for (size_t ri : it->second)
        if (!info_[ri].delivered.count(r.key)) {
          report("(e) loss: " + at(r.hist, r.line) + " sent " + msg(r.key) + " in " +
                 view_name(segs_[p.segs[r.seg]].view) + "; " + hs_[ri].name + " (" +
                 hs_[ri].source + ") installed the same views to the end but never delivered it");
          if (full()) return;
        }
    }
  }

  // Complete histories other than `hi` whose views from P's segment k to the
  // end are exactly P's, with no F after the first of them.
  std::vector<size_t> together_to_the_end(size_t hi, size_t k) const {
    std::vector<size_t> out;
    const std::vector<size_t>& ps = info_[hi].segs;
    size_t len = ps.size() - k;
    for (size_t ri = 0; ri < hs_.size(); ++ri) {
      if (ri == hi || !info_[ri].complete) continue;
      const std::vector<size_t>& rs = info_[ri].segs;
      if (rs.size() < len) continue;
      size_t j = rs.size() - len;
      bool same = segs_[rs[j]].whole;
      for (size_t x = 0; same && x < len; ++x)
        same =
            segs_[rs[j + x]].view == segs_[ps[k + x]].view && (x == 0 || !segs_[rs[j + x]].fresh);
      if (same && segs_[rs.back()].end == Segment::End::Finish) out.push_back(ri);
    }
    return out;
  }

  struct ViewRef {
    std::vector<std::string> members;
    size_t hist;
    uint32_t line;
  };

  const std::vector<History>& hs_;
  const CheckOptions& opt_;
  CheckResult& res_;
  std::vector<HistInfo> info_;
  std::vector<Segment> segs_;
  std::vector<SendRec> sends_;
  std::unordered_map<std::string, uint32_t> origin_ids_;
  std::vector<std::string> origins_;
  std::map<uint64_t, ViewRef> views_;
};

}  // namespace

CheckResult check_histories(const std::vector<History>& histories, const CheckOptions& opt) {
  CheckResult res;
  Checker(histories, opt, res).run();
  return res;
}

}  // namespace rcpg::checker
