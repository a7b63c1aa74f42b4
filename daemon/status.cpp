// The Status report served to rcpg-tool: text for people, JSON for scripts.
#include <fmt/format.h>

#include <chrono>

#include "daemon/server.h"

namespace rcpg::daemon {
namespace {

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20 || ch >= 0x7f) {
      out += fmt::format("\\u{:04x}", ch);
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

// Group names are arbitrary bytes: show printable ones as they are.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) out += (ch >= 0x20 && ch < 0x7f) ? static_cast<char>(ch) : '.';
  return out;
}

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::None:
      return "none";
    case Phase::Joining:
      return "joining";
    case Phase::Member:
      return "member";
    case Phase::Leaving:
      return "leaving";
    case Phase::Done:
      return "left";
  }
  return "?";
}

// Name/value rows shared by both formats.
using Rows = std::vector<std::pair<std::string, uint64_t>>;

}  // namespace

std::string Server::status_report(StatusWhat what, bool json) const {
  const auto& e = engine_->counters();
  Rows daemon = {
      {"clients", live_clients_},
      {"clients_accepted", counters_.clients_accepted},
      {"clients_refused", counters_.clients_refused},
      {"protocol_violations", counters_.protocol_violations},
      {"joins", counters_.joins},
      {"leaves", counters_.leaves},
      {"procdowns", counters_.procdowns},
      {"confchgs", counters_.confchgs},
      {"totem_confchgs", counters_.totem_confchgs},
      {"deliveries_by_log_reference", counters_.deliveries_log},
      {"deliveries_copied", counters_.deliveries_inline},
      {"delivered_bytes_not_copied", counters_.bytes_log},
      {"delivered_bytes_copied", counters_.bytes_inline},
      {"zcb_msgs", counters_.zcb_msgs},
      {"zcb_parts_zero_copy", counters_.zcb_parts_zero_copy},
      {"zcb_bytes_not_copied", counters_.zcb_bytes_not_copied},
      {"zcb_parts_copied", counters_.zcb_parts_copied},
      {"zcb_bytes_copied", counters_.zcb_bytes_copied},
      {"zcb_try_again", counters_.zcb_try_again},
      {"zcb_failed", counters_.zcb_failed},
      {"zcb_registered", counters_.zcb_registered},
      {"zcb_register_failures", counters_.zcb_register_failures},
      {"zcb_held_after_exit", counters_.zcb_held_after_exit},
      {"views_applied", counters_.views_applied},
      {"nodedown_members", counters_.nodedown_members},
      {"nodeup_members", counters_.nodeup_members},
      {"sync_announcements_sent", counters_.sync_announcements},
      {"sync_markers_sent", counters_.sync_markers},
      {"data_before_merge", counters_.data_before_merge},
      {"quorum_losses", counters_.quorum_losses},
      {"exclusions", counters_.exclusions},
      {"try_again_no_quorum", counters_.try_again_no_quorum},
      {"leaves_before_sync", counters_.leaves_before_sync},
      {"data_from_non_members", counters_.data_from_non_members},
      {"unknown_group_entries", counters_.unknown_group_entries},
      {"bad_membership_entries", counters_.bad_membership_entries},
      {"delivery_pauses", counters_.delivery_pauses},
      {"event_ring_overflows", counters_.ring_overflows},
      {"wakes_sent", counters_.wakes},
      {"sleeps", counters_.sleeps},
      {"loop_rounds", counters_.rounds},
  };
  Rows engine = {
      {"sent_msgs", e.sent_msgs},
      {"sent_bytes", e.sent_bytes},
      {"delivered_msgs", e.delivered_msgs},
      {"delivered_bytes", e.delivered_bytes},
      {"sequenced_entries", e.sequenced_entries},
      {"inbound_batches", e.inbound_batches},
      {"log_batches", e.log_batches},
      {"credit_stalls", e.credit_stalls},
      {"log_stalls", e.log_stalls},
      {"zero_copy_deliveries", e.zero_copy_deliveries},
      {"zero_copy_sends", e.zero_copy_sends},
      {"copied_sends", e.copied_sends},
      {"fragmented_msgs", e.reassembled},
      {"protocol_errors", e.protocol_errors},
      {"views_installed", e.views_installed},
      {"suspicions", e.suspicions},
      {"resent_records", e.resent_records},
      {"duplicates_dropped", e.duplicates_dropped},
      {"gap_fill_bytes", e.gap_fill_bytes},
      {"last_failover_us", e.last_failover_us},
      {"received_position", engine_->received_position()},
      {"delivered_position", engine_->delivered_position()},
      {"stable_position", engine_->stable_position()},
  };
  auto uptime =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_)
          .count();
  bool all = what == StatusWhat::All;
  bool groups = all || what == StatusWhat::Groups;
  bool counters = all || what == StatusWhat::Counters;
  auto active_groups = groups_.active();
  const ordering::ViewState& v = engine_->view();
  // A majority of the configured nodes (one of two with two_node); `have`
  // is how many this node reaches now (itself included).
  size_t quorum_needed = engine_->quorum_size();
  size_t quorum_have = engine_->reachable();

  if (json) {
    std::string o = "{";
    o += fmt::format("\"cluster\":{},\"nodeid\":{},\"fabric\":{},\"sequencer\":{},",
                     json_string(cfg_.cluster_name), cfg_.nodeid, json_string(cfg_.fabric),
                     engine_->sequencer());
    o += fmt::format("\"all_connected\":{},\"ring_id\":{{\"nodeid\":{},\"seq\":{}}},",
                     engine_->all_connected() ? "true" : "false", view_sequencer_, view_epoch_);
    o += "\"view\":[";
    for (size_t i = 0; i < view_.size(); ++i) o += fmt::format("{}{}", i ? "," : "", view_[i].id);
    // The engine's membership now (the view above is the last one the
    // clients were told about; they differ only while a change is under way).
    o += fmt::format(
        "],\"membership\":{{\"state\":\"{}\",\"why\":{},\"epoch\":{},\"sequencer\":{},"
        "\"quorate\":{},\"blocked\":{},\"quorum\":{{\"needed\":{},\"have\":{},\"two_node\":{}}},"
        "\"members\":[",
        ordering::to_string(v.state), json_string(v.why), v.epoch, v.sequencer,
        engine_->quorate() ? "true" : "false", blocked() ? "true" : "false", quorum_needed,
        quorum_have, cfg_.two_node ? "true" : "false");
    for (size_t i = 0; i < v.members.size(); ++i)
      o += fmt::format("{}{{\"id\":{},\"incarnation\":{}}}", i ? "," : "", v.members[i].id,
                       v.members[i].incarnation);
    o += fmt::format("]}},\"uptime_s\":{}", uptime);
    if (groups) {
      o += ",\"groups\":[";
      for (size_t i = 0; i < active_groups.size(); ++i) {
        const Group& g = *active_groups[i];
        o += fmt::format("{}{{\"name\":{},\"delivered_msgs\":{},\"members\":[", i ? "," : "",
                         json_string(g.name), g.delivered_msgs);
        for (size_t j = 0; j < g.members.size(); ++j)
          o += fmt::format("{}{{\"nodeid\":{},\"pid\":{}}}", j ? "," : "", g.members[j].nodeid,
                           g.members[j].pid);
        o += "]}";
      }
      o += "]";
    }
    if (counters) {
      auto rows = [&](const char* name, const Rows& r) {
        o += fmt::format(",\"{}\":{{", name);
        for (size_t i = 0; i < r.size(); ++i)
          o += fmt::format("{}\"{}\":{}", i ? "," : "", r[i].first, r[i].second);
        o += "}";
      };
      rows("daemon", daemon);
      rows("engine", engine);
    }
    if (all) {
      o += ",\"clients\":[";
      bool first = true;
      for (const Client* c : active_) {
        if (!c->hello) continue;
        const ClientStats& s = c->stats;
        o += fmt::format(
            "{}{{\"pid\":{},\"group\":{},\"state\":\"{}\",\"mcast_msgs\":{},\"mcast_bytes\":{},"
            "\"zcb_msgs\":{},\"zcb_try_again\":{},\"deliver_msgs\":{},\"deliver_bytes\":{},\"log_"
            "refs\":{},"
            "\"confchgs\":{},\"wakes\":{},\"engine_busy\":{},\"dropped_not_joined\":{},"
            "\"flow_control\":{}}}",
            first ? "" : ",", c->pid, json_string(c->handle.group), phase_name(c->handle.phase),
            s.mcast_msgs, s.mcast_bytes, s.zcb_msgs, s.zcb_try_again, s.deliver_msgs,
            s.deliver_bytes, s.log_refs, s.confchgs, s.wakes, s.engine_busy, s.dropped_not_joined,
            c->flow_control ? "true" : "false");
        first = false;
      }
      o += "]";
    }
    return o + "}\n";
  }

  std::string o;
  if (all) {
    o += fmt::format("cluster {}  node {}  fabric {}  uptime {}s\n", cfg_.cluster_name, cfg_.nodeid,
                     cfg_.fabric, uptime);
    o += fmt::format("sequencer {}  ring id ({}, {})  nodes {}  view {{", engine_->sequencer(),
                     view_sequencer_, view_epoch_,
                     engine_->all_connected() ? "all connected" : "not all connected");
    for (size_t i = 0; i < view_.size(); ++i) o += fmt::format("{}{}", i ? " " : "", view_[i].id);
    o += "}\n";
    o +=
        fmt::format("membership {}{}  epoch {}  sequencer {}  quorum {} needed, {} reachable{}{}\n",
                    ordering::to_string(v.state), v.why.empty() ? "" : " (" + v.why + ")", v.epoch,
                    v.sequencer, quorum_needed, quorum_have, cfg_.two_node ? " (two_node)" : "",
                    blocked() ? "  sends/joins/leaves: CS_ERR_TRY_AGAIN" : "");
    o += "members (id/incarnation) {" + format_view(v.members) + "}\n\n";
  }
  if (groups) {
    // corosync-cpgtool's layout: the group, then one line per member.
    o += "Group Name\t       PID\t Node ID\n";
    for (const Group* g : active_groups) {
      o += printable(g->name) + "\n";
      for (const auto& m : g->members) o += fmt::format("\t\t{:>10}\t{:>8}\n", m.pid, m.nodeid);
    }
    if (all) o += "\n";
  }
  if (counters) {
    o += "daemon counters\n";
    for (const auto& [k, v] : daemon) o += fmt::format("  {:<30} {}\n", k, v);
    o += "engine counters\n";
    for (const auto& [k, v] : engine) o += fmt::format("  {:<30} {}\n", k, v);
  }
  if (all) {
    o += "\nclients\n";
    o += fmt::format("  {:>8} {:<8} {:<20} {:>10} {:>10} {:>10} {:>8} {:>8}\n", "pid", "state",
                     "group", "sent", "delivered", "log refs", "confchg", "wakes");
    for (const Client* c : active_) {
      if (!c->hello) continue;
      const ClientStats& s = c->stats;
      o += fmt::format("  {:>8} {:<8} {:<20} {:>10} {:>10} {:>10} {:>8} {:>8}\n", c->pid,
                       phase_name(c->handle.phase), printable(c->handle.group), s.mcast_msgs,
                       s.deliver_msgs, s.log_refs, s.confchgs, s.wakes);
    }
  }
  return o;
}

}  // namespace rcpg::daemon
