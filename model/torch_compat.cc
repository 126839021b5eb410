#include "model/torch_compat.h"

#include <sys/resource.h>
#include <unistd.h>

#include <fstream>

#if __has_include(<c10/cuda/CUDACachingAllocator.h>) && defined(CADDIE_WITH_CUDA_STATS)
#include <c10/cuda/CUDACachingAllocator.h>
#define CADDIE_HAVE_CUDA_STATS 1
#endif

namespace caddie::model {

std::string TorchVersionString() { return TORCH_VERSION; }

namespace {

int64_t RssBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

int64_t MemoryBytesNow(bool cuda, int device_index) {
#ifdef CADDIE_HAVE_CUDA_STATS
  if (cuda) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_index);
    return stats.allocated_bytes[0].current;
  }
#endif
  (void)cuda, (void)device_index;
  return RssBytes();
}

int64_t PeakMemoryBytes(bool cuda, int device_index) {
#ifdef CADDIE_HAVE_CUDA_STATS
  if (cuda) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_index);
    return stats.allocated_bytes[0].peak;
  }
#endif
  (void)cuda, (void)device_index;
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

}  // namespace caddie::model
