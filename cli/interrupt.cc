#include "cli/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/mutex.h"

namespace caddie::cli {
namespace {

absl::Mutex g_mu;
std::function<void(int)>* g_handler ABSL_GUARDED_BY(g_mu) = nullptr;
std::atomic<int> g_count{0};

}  // namespace

void InstallInterruptHandling() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      const int n = ++g_count;
      std::function<void(int)> h;
      {
        absl::MutexLock l(&g_mu);
        if (g_handler != nullptr) h = *g_handler;
      }
      if (h) {
        h(n);
      } else {
        _exit(130);
      }
    }
  }).detach();
}

void OnInterrupt(std::function<void(int)> handler) {
  absl::MutexLock l(&g_mu);
  delete g_handler;
  g_handler = handler ? new std::function<void(int)>(std::move(handler)) : nullptr;
}

int InterruptCount() { return g_count.load(); }

}  // namespace caddie::cli
