#include "bindings/without_gil.h"

#include <signal.h>

#include <chrono>
#include <thread>

namespace sparsebert {
namespace {

std::atomic<bool> g_sigint{false};
struct sigaction g_previous;

extern "C" void chained_sigint(int sig, siginfo_t* info, void* context) {
  g_sigint.store(true, std::memory_order_relaxed);
  if (g_previous.sa_flags & SA_SIGINFO)
    g_previous.sa_sigaction(sig, info, context);
  else
    g_previous.sa_handler(sig);
}

bool on_main_thread() {
  py::object main = py::module_::import("threading").attr("main_thread")();
  return main.attr("ident").cast<unsigned long>() == PyThread_get_thread_ident();
}

bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

}  // namespace

SigintWatch::SigintWatch() {
  if (!on_main_thread()) return;
  struct sigaction current;
  if (sigaction(SIGINT, nullptr, &current) != 0) return;
  const bool is_function = (current.sa_flags & SA_SIGINFO) ||
                           (current.sa_handler != SIG_DFL && current.sa_handler != SIG_IGN);
  if (!is_function) return;  // the default action or none: nothing to chain to, nothing Python would raise
  g_previous = current;
  g_sigint.store(false, std::memory_order_relaxed);
  struct sigaction chained = current;
  chained.sa_sigaction = chained_sigint;
  chained.sa_flags = current.sa_flags | SA_SIGINFO;
  installed_ = sigaction(SIGINT, &chained, nullptr) == 0;
}

SigintWatch::~SigintWatch() {
  if (installed_) sigaction(SIGINT, &g_previous, nullptr);
}

const std::atomic<bool>* SigintWatch::flag() const { return installed_ ? &g_sigint : nullptr; }

void park_if_finalizing() {
  if (!interpreter_finalizing()) return;
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace sparsebert
