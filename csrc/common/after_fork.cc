#include "common/after_fork.h"

#include <pthread.h>

#include <map>
#include <mutex>

namespace sparsebert {
namespace {

// The registry's own lock is taken before fork() (prepare) and released on both sides, so the child never
// inherits it locked and never sees the map half-changed.
std::mutex& registry_mutex() {
  static std::mutex* mu = new std::mutex;  // never destroyed: fork() may happen during static destruction
  return *mu;
}

std::map<const void*, std::function<void()>>& registry() {
  static auto* repairs = new std::map<const void*, std::function<void()>>;
  return *repairs;
}

void prepare() { registry_mutex().lock(); }
void parent() { registry_mutex().unlock(); }
void child() {
  for (auto& entry : registry()) entry.second();
  registry_mutex().unlock();
}

void install_once() {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(prepare, parent, child); });
}

}  // namespace

void add_fork_repair(const void* owner, std::function<void()> repair) {
  install_once();
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[owner] = std::move(repair);
}

void remove_fork_repair(const void* owner) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry().erase(owner);
}

}  // namespace sparsebert
