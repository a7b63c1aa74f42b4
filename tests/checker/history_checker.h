// Histories of group-communication processes, and a checker of the
// invariants a virtually synchronous total-order multicast must keep across
// them. Used by the ordering engine's fault simulation (in memory) and by
// rcpg-check-history on the files the soft-RoCE fault runs write.
//
// File format, one history per file, one event per line:
//   H <name>                first non-comment line: this history's name
//   V <view> <m1> <m2> ...  a view was installed; <view> (uint64) increases
//                           strictly along a history, and the same number in
//                           two histories means the same view
//   F                       the next V starts a fresh history: this process
//                           was excluded and is back (it missed what happened
//                           meanwhile). A history's first V is always fresh.
//   M <origin> <seq> [u|f]  a message was delivered. seq (uint64) counts the
//                           origin's messages. `u`: outside the total order
//                           and outside FIFO (UNORDERED); `f`: outside the
//                           total order but in the origin's FIFO order.
//   S <origin> <seq>        this process's send of <origin, seq> was accepted
//   X                       the process was killed here (must be the last event)
//   # ...                   comment; blank lines are ignored
// Tokens are separated by blanks. Names contain no blanks.
//
// Terms. A history's *segment* of view v is what it did from its V v to its
// next V, F, X or end. A segment is *fresh* if it is the history's first or
// follows an F; a fresh segment may start in the middle of the view (a CPG
// process that joins a group mid-view) unless CheckOptions::whole_views.
// An origin *belongs to* a member if it equals it, or if the origin is
// "<member>:<anything>" or "n<member>:<anything>" (so "n2:77" belongs to
// member "2", "n2" and "n2:77"). A history is *complete* if it has no X and
// its last event is not F. Messages are "ordered" unless marked u or f.
//
// Invariants (each violation names the invariant, the histories, the
// source files and lines):
//  (v) views: view numbers increase strictly along each history; every
//      history that installs view v lists the same members (as a set);
//      every M lies inside a view; its origin belongs to a member of it.
//  (a) no duplicates: a history delivers each <origin, seq> at most once
//      between two F's. A process that was excluded and is back starts a
//      new history (F; CPG shows every other member leave and come back):
//      what it delivered on the losing side beyond the cut the others
//      agreed on reaches it again, re-sent by its senders, as to everyone.
//  (b) FIFO: in each history, the u-less deliveries (ordered and f) of an
//      origin have strictly increasing seq, and when seq jumps from a to
//      b > a + 1, every seq in between was delivered as a `u` message by that
//      history - unless a V without a member the origin belongs to lies
//      between the two deliveries. An F starts FIFO over (see (a)).
//  (c) total order: in each view, every segment's ordered messages form a
//      contiguous piece of one common sequence: no message has two different
//      successors or predecessors in two histories, and there is no cycle.
//      Segments that start at the view's beginning (non-fresh ones, or all
//      with whole_views) start with the same message, so they are prefixes
//      of one another.
//  (d) virtual synchrony: two histories whose segments of v both end with
//      the same next view v' (no F or X between) delivered in v the same
//      ordered sequence and the same set of u/f messages. For a fresh
//      segment (without whole_views) only a suffix: its ordered sequence is
//      a suffix of the other's and its u/f set a subset.
//      With quiesced_end the same holds for complete histories whose last
//      view is the same (the end acts as a common next view).
//  (e) no loss, no invention:
//      - a history that records S <o, s> and has no F and no X after that S
//        delivers <o, s> itself;
//      - with quiesced_end, every other complete history R delivers it too
//        if R installed the same views as the sender from the send's view
//        (the view current at S, else the next one installed) to the end,
//        with no F in R after the first of them;
//      - an <o, s> delivered anywhere must have been sent: if any history
//        records an S for origin o, every delivered <o, s> has a matching S,
//        except seqs above the highest recorded one when a sender history of
//        o ends with X (its last lines may be lost);
//      - a history records each S at most once.
// Together (d) and (e) give no loss for survivors: a sender that stays
// delivers its own message in some view v, and everyone who goes from v to
// the same next view with it delivers it in v too.
//
// CheckOptions::quiesced_end is for runs that stop every process only after
// everything in flight was delivered everywhere (the simulation); processes
// that stop on their own schedule (the CPG fault runs) must not set it.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace rcpg::checker {

enum class Order : uint8_t {
  Total,  // ordered (AGREED/SAFE, and membership changes)
  Fifo,   // `f`: FIFO per origin only
  None,   // `u`: no order at all
};

struct Event {
  enum class Type : uint8_t { View, Fresh, Deliver, Send, Kill };
  Type type = Type::Deliver;
  Order order = Order::Total;        // Deliver
  uint32_t line = 0;                 // line in the source (in memory: in what write() prints)
  uint64_t number = 0;               // View: view number; Deliver/Send: seq
  std::string origin;                // Deliver/Send
  std::vector<std::string> members;  // View
};

struct History {
  std::string name;
  std::string source;  // file name, or a label for an in-memory history
  std::vector<Event> events;

  History() = default;
  History(std::string name_, std::string source_)
      : name(std::move(name_)), source(std::move(source_)) {}

  // Builders: append one event (line numbers as write() will print them).
  void view(uint64_t id, std::vector<std::string> members);
  void fresh();
  void deliver(std::string origin, uint64_t seq, Order order = Order::Total);
  void send(std::string origin, uint64_t seq);
  void kill();
  bool killed() const { return !events.empty() && events.back().type == Event::Type::Kill; }

  // Writes the file format above (no comments).
  void write(std::ostream& out) const;
};

// Parses one history. On malformed input returns false with `error` naming
// source:line and what was expected.
bool parse_history(std::istream& in, const std::string& source, History& out, std::string& error);
// Opens and parses `path` (error on an unreadable file too).
bool read_history_file(const std::string& path, History& out, std::string& error);

struct CheckOptions {
  bool whole_views = false;    // fresh segments start at the view's beginning too
  bool quiesced_end = false;   // complete histories ended with nothing in flight
  size_t max_violations = 20;  // stop collecting after this many
};

struct CheckStats {
  size_t histories = 0, views = 0, deliveries = 0, sends = 0;
};

struct CheckResult {
  std::string input_error;              // set: the input itself is unusable (duplicate names)
  std::vector<std::string> violations;  // "(x) ..." one per violation
  CheckStats stats;
  bool ok() const { return input_error.empty() && violations.empty(); }
};

CheckResult check_histories(const std::vector<History>& histories, const CheckOptions& opt = {});

}  // namespace rcpg::checker
