// Small helpers: logging, events, status mapping, IPv4 address parsing.
#include <arpa/inet.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "transport/verbs/verbs_internal.h"

namespace rcpg::transport::verbs {

std::string sys_error(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

void VerbsEndpoint::log(const std::string& msg) const {
  if (cfg_.log) {
    cfg_.log("verbs: " + msg);
  } else {
    std::fprintf(stderr, "rcpg verbs[node %u]: %s\n", cfg_.node_id, msg.c_str());
  }
}

void VerbsEndpoint::push_event(EventType type, Conn* c, std::string detail) {
  Event e;
  e.type = type;
  e.conn = c ? c->id : kNoConn;
  e.peer = c ? c->peer : 0;
  e.inbound = c ? c->inbound : false;
  e.detail = std::move(detail);
  events_.push_back(std::move(e));
}

Status map_status(ibv_wc_status status) {
  switch (status) {
    case IBV_WC_SUCCESS:
      return Status::Ok;
    case IBV_WC_WR_FLUSH_ERR:
      return Status::Flushed;
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_REM_INV_REQ_ERR:
    case IBV_WC_REM_OP_ERR:
    case IBV_WC_REM_INV_RD_REQ_ERR:
      return Status::RemoteAccess;
    case IBV_WC_LOC_LEN_ERR:
    case IBV_WC_LOC_QP_OP_ERR:
    case IBV_WC_LOC_EEC_OP_ERR:
    case IBV_WC_LOC_PROT_ERR:
    case IBV_WC_LOC_ACCESS_ERR:
    case IBV_WC_MW_BIND_ERR:
    case IBV_WC_LOC_RDD_VIOL_ERR:
      return Status::LocalAccess;
    default:
      return Status::Flushed;  // retry exceeded, fatal, ...: the connection broke
  }
}

bool parse_ipv4(std::string_view text, bool need_port, sockaddr_in& out, std::string& why) {
  out = sockaddr_in{};
  out.sin_family = AF_INET;
  std::string host(text);
  size_t colon = host.rfind(':');
  long port = 0;
  if (colon != std::string::npos) {
    std::string p = host.substr(colon + 1);
    char* end = nullptr;
    port = std::strtol(p.c_str(), &end, 10);
    if (p.empty() || *end != '\0' || port < 0 || port > 65535) {
      why = "bad port in address '" + std::string(text) + "'";
      return false;
    }
    host.resize(colon);
  } else if (need_port) {
    why = "address '" + std::string(text) + "' needs IPv4:PORT";
    return false;
  }
  if (inet_pton(AF_INET, host.c_str(), &out.sin_addr) != 1) {
    why = "bad IPv4 address '" + std::string(text) + "'";
    return false;
  }
  out.sin_port = htons(static_cast<uint16_t>(port));
  return true;
}

std::string format_addr(const sockaddr* sa) {
  if (!sa || sa->sa_family != AF_INET) return "?";
  const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
  return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
}

}  // namespace rcpg::transport::verbs
