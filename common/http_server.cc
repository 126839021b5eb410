#include "common/http_server.h"

#include <httplib.h>

#include <atomic>
#include <charconv>
#include <chrono>
#include <type_traits>

#include "common/str_cat.h"

namespace caddie {

absl::Status ParseHostPort(std::string_view address, std::string* host, int* port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(
        Cat("listen address '", address, "' is not host:port"));
  }
  std::string_view h = address.substr(0, colon);
  const std::string_view p = address.substr(colon + 1);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') {
      return absl::InvalidArgumentError(
          Cat("listen address '", address, "' has an unterminated [IPv6] host"));
    }
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string_view::npos) {
    return absl::InvalidArgumentError(
        Cat("listen address '", address, "': write an IPv6 host as [host]:port"));
  }
  int value = -1;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
  if (p.empty() || ec != std::errc() || end != p.data() + p.size() || value < 0 ||
      value > 65535) {
    return absl::InvalidArgumentError(
        Cat("listen address '", address, "' has port '", p, "', not 0..65535"));
  }
  *host = std::string(h);
  *port = value;
  return absl::OkStatus();
}

HttpServer::HttpServer(const metrics::Registry* registry)
    : registry_(registry), server_(std::make_unique<httplib::Server>()) {
  // A scrape endpoint needs few threads; httplib's default is one per core, at least 8.
  server_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  // httplib's default also sets SO_REUSEPORT, which would let a second daemon
  // bind the same port silently; keep only SO_REUSEADDR (fast restarts).
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(registry_ == nullptr ? std::string() : registry_->Render(),
                    std::string(metrics::kContentType));
  });
  server_->Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
    std::function<absl::Status()> check;
    {
      absl::MutexLock lock(&mu_);
      check = health_check_;
    }
    const absl::Status status = check ? check() : absl::OkStatus();
    if (status.ok()) {
      res.set_content("ok\n", "text/plain; charset=utf-8");
    } else {
      res.status = 503;
      res.set_content(std::string(status.message()) + "\n", "text/plain; charset=utf-8");
    }
  });
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::SetHealthCheck(std::function<absl::Status()> check) {
  absl::MutexLock lock(&mu_);
  health_check_ = std::move(check);
}

void HttpServer::AddGet(std::string path, std::string content_type,
                        std::function<std::string()> body) {
  server_->Get(path, [content_type = std::move(content_type), body = std::move(body)](
                         const httplib::Request&, httplib::Response& res) {
    res.set_content(body(), content_type);
  });
}

absl::Status HttpServer::Start(std::string_view listen_address) {
  std::string host;
  int port = 0;
  if (absl::Status s = ParseHostPort(listen_address, &host, &port); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (started_) {
    return absl::FailedPreconditionError(
        Cat("HTTP server already started on ", host_, ":", port_));
  }
  if (port == 0) {
    port = server_->bind_to_any_port(host);
    if (port < 0) port = -1;
  } else if (!server_->bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    return absl::UnavailableError(
        Cat("cannot bind HTTP listen address '", listen_address, "'"));
  }
  host_ = host;
  port_ = port;
  started_ = true;
  auto exited = std::make_shared<std::atomic<bool>>(false);
  thread_ = std::thread([this, exited] {
    server_->listen_after_bind();
    *exited = true;
  });
  // httplib's stop() is a no-op until the accept loop runs, so a Stop() right
  // after Start() would leave the thread in accept() forever: wait for it.
  while (!server_->is_running() && !*exited) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return absl::OkStatus();
}

int HttpServer::port() const {
  absl::MutexLock lock(&mu_);
  return port_;
}

std::string HttpServer::address() const {
  absl::MutexLock lock(&mu_);
  if (!started_) return "";
  if (host_.find(':') != std::string::npos) return Cat("[", host_, "]:", port_);
  return Cat(host_, ":", port_);
}

void HttpServer::Stop() {
  std::thread t;
  {
    absl::MutexLock lock(&mu_);
    server_->stop();
    t = std::move(thread_);
  }
  if (t.joinable()) t.join();
}

}  // namespace caddie
