// SPDX-License-Identifier: Apache-2.0
#include "meshcut/obj/windows.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>
#include <sstream>

namespace meshcut::obj {
namespace {

using nlohmann::json;

constexpr uint32_t kRowsPerSvc = (MC_OBJ_MAX_BACKENDS + 1) * MC_OBJ_MAX_CLASSES;

// What a row is about under SERVICES, "" if nothing (no such service or backend).
std::string row_id(const Services& services, uint32_t row) {
  uint32_t svc = row / kRowsPerSvc;
  uint32_t backend = (row / MC_OBJ_MAX_CLASSES) % (MC_OBJ_MAX_BACKENDS + 1);
  const Service* s = services.find_id(svc);
  if (!s) return "";
  if (backend == MC_OBJ_BACKEND_ALL) return s->key() + "|all";
  const Endpoint* e = s->endpoint_at(backend);
  return e ? s->key() + "|" + e->addr() : "";
}

using Sparse = std::vector<std::array<uint32_t, 2>>;

Sparse sparse(const std::array<uint32_t, MC_OBJ_HIST_BUCKETS>& h) {
  Sparse s;
  for (uint32_t b = 0; b < MC_OBJ_HIST_BUCKETS; ++b)
    if (h[b]) s.push_back({b, h[b]});
  return s;
}

json summary_json(const LatencySummary& l, const Sparse& hist) {
  json h = json::array();
  for (const auto& [b, n] : hist) h.push_back({b, n});
  return {{"count", l.count},  {"p50", l.p50_ms},     {"p90", l.p90_ms},
          {"p95", l.p95_ms},   {"p99", l.p99_ms},     {"max_bucket", l.max_bucket_ms},
          {"mean", l.mean_ms}, {"hist", std::move(h)}};
}

// The accumulated rows of merged windows, keyed by names.
struct MergedRow {
  json first;  // the first row seen (ids, names)
  std::array<uint64_t, kStatCounters> delta{};
  std::array<double, 5> rate{};  // offered, admitted, blocked, completed, conns (merge_nodes: summed)
  std::array<uint32_t, MC_OBJ_HIST_BUCKETS> req{}, conn{};
};

constexpr const char* kRateNames[5] = {"offered", "admitted", "blocked", "completed", "conns"};

void add_hist(std::array<uint32_t, MC_OBJ_HIST_BUCKETS>& h, const json& summary) {
  if (!summary.is_object() || !summary.contains("hist") || !summary["hist"].is_array()) return;
  for (const json& e : summary["hist"]) {
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() || !e[1].is_number_unsigned()) continue;
    auto b = e[0].get<uint64_t>();
    if (b < MC_OBJ_HIST_BUCKETS) h[b] += e[1].get<uint32_t>();
  }
}

// CONCAT: rates from the summed deltas over the summed durations; else summed rates.
json merge(const std::vector<json>& windows, bool concat) {
  std::map<std::tuple<std::string, std::string, std::string>, MergedRow> rows;
  std::vector<std::tuple<std::string, std::string, std::string>> order;
  double dur = 0;
  size_t n = 0;
  uint64_t t0 = 0, t1 = 0;
  for (const json& w : windows) {
    if (!w.is_object() || !w.contains("rows") || !w["rows"].is_array()) continue;
    ++n;
    dur += w.value("duration_s", 0.0);
    uint64_t s = w.value("t_start_ns", uint64_t{0}), e = w.value("t_end_ns", uint64_t{0});
    if (n == 1 || s < t0) t0 = s;
    t1 = std::max(t1, e);
    for (const json& r : w["rows"]) {
      if (!r.is_object() || !r.contains("service") || !r.contains("backend") || !r.contains("class")) continue;
      auto key = std::make_tuple(r.value("service", ""), r.value("backend", ""), r.value("class", ""));
      auto [it, fresh] = rows.try_emplace(key);
      MergedRow& m = it->second;
      if (fresh) m.first = r, order.push_back(key);
      const json& d = r.value("delta", json::object());
      for (size_t i = 0; i < kStatCounters; ++i) m.delta[i] += d.value(kStatCounterNames[i], uint64_t{0});
      const json& rate = r.value("rate", json::object());
      for (size_t i = 0; i < 5; ++i) m.rate[i] += rate.value(kRateNames[i], 0.0);
      add_hist(m.req, r.value("latency_ms", json::object()));
      add_hist(m.conn, r.value("conn_duration_ms", json::object()));
    }
  }
  double mean_dur = n ? dur / static_cast<double>(n) : 0;
  constexpr size_t kDeltaOf[5] = {0, 1, 2, 5, 3};  // the delta each rate is of
  json out_rows = json::array();
  for (const auto& key : order) {
    MergedRow& m = rows[key];
    json r = m.first;
    json d = json::object();
    for (size_t i = 0; i < kStatCounters; ++i) d[kStatCounterNames[i]] = m.delta[i];
    r["delta"] = d;
    json rate = json::object();
    for (size_t i = 0; i < 5; ++i)
      rate[kRateNames[i]] = concat ? (dur > 0 ? static_cast<double>(m.delta[kDeltaOf[i]]) / dur : 0.0) : m.rate[i];
    r["rate"] = rate;
    r["latency_ms"] = summary_json(summarize(m.req.data(), m.delta[5], m.delta[7]), sparse(m.req));
    r["conn_duration_ms"] = summary_json(summarize(m.conn.data(), m.delta[9], m.delta[8]), sparse(m.conn));
    out_rows.push_back(std::move(r));
  }
  return {{"seq", 0},     {"t_start_ns", t0}, {"t_end_ns", t1}, {"duration_s", concat ? dur : mean_dur},
          {"sources", n}, {"rows", out_rows}};
}

}  // namespace

const std::array<const char*, kStatCounters> kStatCounterNames = {
    "offered",   "admitted",   "blocked",    "conns",       "requests",
    "completed", "unanswered", "req_sum_ns", "conn_sum_ns", "conn_done"};

std::array<uint64_t, kStatCounters> stat_counters(const mc_obj_stat& s) {
  return {s.offered,   s.admitted,   s.blocked,    s.conns,       s.requests,
          s.completed, s.unanswered, s.req_sum_ns, s.conn_sum_ns, s.conn_done};
}

uint64_t hist_upper_ns(uint32_t b) {
  if (b + 1 >= MC_OBJ_HIST_BUCKETS) return mc_obj_hist_lower_ns(MC_OBJ_HIST_BUCKETS - 1);
  return mc_obj_hist_lower_ns(b + 1);
}

double percentile_ns(const uint32_t* hist, double q) {
  uint64_t n = 0;
  for (uint32_t b = 0; b < MC_OBJ_HIST_BUCKETS; ++b) n += hist[b];
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(n)));
  rank = std::clamp<uint64_t>(rank, 1, n);
  uint64_t seen = 0;
  for (uint32_t b = 0; b < MC_OBJ_HIST_BUCKETS; ++b) {
    seen += hist[b];
    if (seen >= rank) {
      uint64_t lo = mc_obj_hist_lower_ns(b);
      if (b == MC_OBJ_HIST_BUCKETS - 1) return static_cast<double>(lo);
      return static_cast<double>(lo) + static_cast<double>(hist_upper_ns(b) - lo) / 2.0;
    }
  }
  return static_cast<double>(mc_obj_hist_lower_ns(MC_OBJ_HIST_BUCKETS - 1));
}

LatencySummary summarize(const uint32_t* hist, uint64_t n_counted, uint64_t sum_ns) {
  LatencySummary l;
  for (uint32_t b = 0; b < MC_OBJ_HIST_BUCKETS; ++b) {
    l.count += hist[b];
    if (hist[b]) l.max_bucket_ms = static_cast<double>(hist_upper_ns(b)) / 1e6;
  }
  if (n_counted) l.mean_ms = static_cast<double>(sum_ns) / static_cast<double>(n_counted) / 1e6;
  if (l.count == 0) return l;
  l.p50_ms = percentile_ns(hist, 0.50) / 1e6;
  l.p90_ms = percentile_ns(hist, 0.90) / 1e6;
  l.p95_ms = percentile_ns(hist, 0.95) / 1e6;
  l.p99_ms = percentile_ns(hist, 0.99) / 1e6;
  return l;
}

WindowStore::WindowStore(size_t max_windows) : max_(max_windows == 0 ? 1 : max_windows) {}

void WindowStore::add_snapshot(uint64_t t_ns, std::vector<mc_obj_stat> rows, const Services& services) {
  if (last_t_ && t_ns <= *last_t_) return;
  rows.resize(MC_OBJ_STAT_ROWS, mc_obj_stat{});
  std::vector<std::string> ids(MC_OBJ_STAT_ROWS);
  for (uint32_t r = 0; r < MC_OBJ_STAT_ROWS; ++r) ids[r] = row_id(services, r);
  if (last_t_) {
    Window w;
    w.seq = seq_ + 1;
    w.t_start_ns = *last_t_;
    w.t_end_ns = t_ns;
    for (uint32_t r = 0; r < MC_OBJ_STAT_ROWS; ++r) {
      if (ids[r].empty() || ids[r] != row_ids_[r]) continue;  // vanished, new, or now about something else
      const mc_obj_stat& cur = rows[r];
      const mc_obj_stat& old = last_[r];
      auto c = stat_counters(cur);
      auto o = stat_counters(old);
      bool reset = false;  // u64 counters only grow: a decrease is a row zeroed by the daemon
      for (size_t i = 0; i < kStatCounters; ++i) reset = reset || c[i] < o[i];
      WindowRow row;
      bool any = false;
      for (size_t i = 0; i < kStatCounters; ++i) {
        row.delta[i] = reset ? c[i] : c[i] - o[i];
        any = any || row.delta[i] != 0;
      }
      // u32 buckets may wrap between snapshots: unsigned subtraction still gives the delta.
      std::array<uint32_t, MC_OBJ_HIST_BUCKETS> rh{}, ch{};
      for (uint32_t b = 0; b < MC_OBJ_HIST_BUCKETS; ++b) {
        rh[b] = reset ? cur.req_hist[b] : cur.req_hist[b] - old.req_hist[b];
        ch[b] = reset ? cur.conn_hist[b] : cur.conn_hist[b] - old.conn_hist[b];
        any = any || rh[b] || ch[b];
      }
      if (!any) continue;
      row.svc = r / kRowsPerSvc;
      row.backend = (r / MC_OBJ_MAX_CLASSES) % (MC_OBJ_MAX_BACKENDS + 1);
      row.cls = r % MC_OBJ_MAX_CLASSES;
      const Service* s = services.find_id(row.svc);
      row.service = s->key();
      row.backend_name = row.backend == MC_OBJ_BACKEND_ALL ? "all" : s->endpoint_at(row.backend)->addr();
      row.class_name = services.class_name(row.cls);
      row.req = summarize(rh.data(), row.delta[5], row.delta[7]);
      row.conn = summarize(ch.data(), row.delta[9], row.delta[8]);
      row.req_hist = sparse(rh);
      row.conn_hist = sparse(ch);
      w.rows.push_back(std::move(row));
    }
    ++seq_;
    windows_.push_back(std::move(w));
    while (windows_.size() > max_) windows_.pop_front();
  }
  last_t_ = t_ns;
  last_ = std::move(rows);
  row_ids_ = std::move(ids);
}

json to_json(const Window& w) {
  double dt = static_cast<double>(w.t_end_ns - w.t_start_ns) / 1e9;
  json rows = json::array();
  for (const WindowRow& r : w.rows) {
    json d = json::object();
    for (size_t i = 0; i < kStatCounters; ++i) d[kStatCounterNames[i]] = r.delta[i];
    auto rate = [&](size_t i) { return dt > 0 ? static_cast<double>(r.delta[i]) / dt : 0.0; };
    rows.push_back({{"service", r.service},
                    {"svc", r.svc},
                    {"backend", r.backend_name},
                    {"backend_index", r.backend},
                    {"class", r.class_name},
                    {"cls", r.cls},
                    {"delta", d},
                    {"rate",
                     {{"offered", rate(0)},
                      {"admitted", rate(1)},
                      {"blocked", rate(2)},
                      {"completed", rate(5)},
                      {"conns", rate(3)}}},
                    {"latency_ms", summary_json(r.req, r.req_hist)},
                    {"conn_duration_ms", summary_json(r.conn, r.conn_hist)}});
  }
  return {{"seq", w.seq}, {"t_start_ns", w.t_start_ns}, {"t_end_ns", w.t_end_ns}, {"duration_s", dt}, {"rows", rows}};
}

std::string prometheus_escape(const std::string& v) {
  std::string o;
  for (char c : v) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

json concat_windows(const std::vector<json>& windows) { return merge(windows, true); }
json merge_nodes(const std::vector<json>& windows) { return merge(windows, false); }

json WindowStore::windows_since(uint64_t seq, size_t max) const {
  json out = {{"last_seq", seq_}, {"oldest_seq", windows_.empty() ? 0 : windows_.front().seq}};
  uint64_t missed = 0;
  if (!windows_.empty() && seq + 1 < windows_.front().seq) missed = windows_.front().seq - seq - 1;
  out["missed"] = missed;
  json ws = json::array();
  for (const Window& w : windows_) {
    if (w.seq <= seq) continue;
    if (ws.size() >= max) break;
    ws.push_back(to_json(w));
  }
  out["windows"] = ws;
  return out;
}

std::string WindowStore::prometheus(const Services& services) const {
  std::ostringstream o;
  auto labels = [](const std::string& s, const std::string& b, const std::string& c) {
    return "service=\"" + prometheus_escape(s) + "\",backend=\"" + prometheus_escape(b) + "\",class=\"" +
           prometheus_escape(c) + "\"";
  };
  struct Metric {
    const char* name;
    size_t field;
    const char* help;
  };
  const Metric counters[] = {
      {"meshcut_obj_offered_total", 0, "Connects to the service (all) or routed to the backend."},
      {"meshcut_obj_admitted_total", 1, "Connects the token bucket let through."},
      {"meshcut_obj_blocked_total", 2, "Connects refused by the token bucket."},
      {"meshcut_obj_connections_total", 3, "Connections established and measured."},
      {"meshcut_obj_requests_total", 4, "Requests sent."},
      {"meshcut_obj_completed_total", 5, "Requests answered (first response byte)."},
      {"meshcut_obj_unanswered_total", 6, "Connections closed while a request was outstanding."},
  };
  for (const Metric& m : counters) {
    o << "# HELP " << m.name << " " << m.help << "\n# TYPE " << m.name << " counter\n";
    for (uint32_t r = 0; r < last_.size() && r < row_ids_.size(); ++r) {
      if (row_ids_[r].empty() || row_id(services, r) != row_ids_[r]) continue;
      auto c = stat_counters(last_[r]);
      if (c[0] == 0 && c[1] == 0 && c[2] == 0 && c[3] == 0 && c[4] == 0) continue;
      std::string id = row_ids_[r];
      size_t bar = id.find('|');
      o << m.name << "{" << labels(id.substr(0, bar), id.substr(bar + 1), services.class_name(r % MC_OBJ_MAX_CLASSES))
        << "} " << c[m.field] << "\n";
    }
  }
  const char* lat[] = {"meshcut_obj_latency_seconds", "meshcut_obj_connection_duration_seconds"};
  const char* lat_help[] = {"Request latency (first request byte to first response byte) in the last window.",
                            "Connection duration (connect to the first FIN) in the last window."};
  for (int k = 0; k < 2; ++k) {
    o << "# HELP " << lat[k] << " " << lat_help[k] << "\n# TYPE " << lat[k] << " gauge\n";
    if (windows_.empty()) continue;
    for (const WindowRow& r : windows_.back().rows) {
      const LatencySummary& l = k == 0 ? r.req : r.conn;
      if (l.count == 0) continue;
      // "percentile", not "quantile": Prometheus reserves that label for summaries.
      std::pair<const char*, double> qs[] = {{"50", l.p50_ms}, {"95", l.p95_ms}, {"99", l.p99_ms}};
      for (auto& [q, v] : qs)
        o << lat[k] << "{" << labels(r.service, r.backend_name, r.class_name) << ",percentile=\"" << q << "\"} "
          << v / 1e3 << "\n";
    }
  }
  o << "# HELP meshcut_obj_window_seq Sequence number of the last window.\n# TYPE meshcut_obj_window_seq gauge\n"
    << "meshcut_obj_window_seq " << seq_ << "\n";
  return o.str();
}

}  // namespace meshcut::obj
