// Running engine code with the GIL released, as a server's threads and Ctrl-C need it:
// * on the main thread, a SIGINT during the call stops it between two layers (Python's own handler still runs and
//   records the signal; a C++ flag set beside it is what the engine polls), and Python's handlers then run with the
//   GIL back: KeyboardInterrupt, or, if they do not raise, the call runs again;
// * a thread that finishes while the interpreter is shutting down (a daemon thread at exit) parks instead of taking
//   the GIL back: CPython would end it with pthread_exit, whose forced unwinding through C++ frames aborts the
//   process ("terminate called without an active exception").
#pragma once

#include <pybind11/pybind11.h>

#include <atomic>
#include <exception>
#include <optional>
#include <utility>

#include "encoder/encoder.h"

namespace sparsebert {
namespace py = pybind11;

// While alive on the main thread, SIGINT also sets flag() (chained in front of the current handler, if that is a
// function); restores the handler when destroyed. Elsewhere it does nothing and flag() stays false.
class SigintWatch {
 public:
  SigintWatch();
  ~SigintWatch();
  SigintWatch(const SigintWatch&) = delete;
  SigintWatch& operator=(const SigintWatch&) = delete;
  const std::atomic<bool>* flag() const;

 private:
  bool installed_ = false;
};

// Blocks forever if the interpreter is finalizing (see above); returns otherwise.
void park_if_finalizing();

// compute(const std::atomic<bool>* cancel) with the GIL released; its exceptions are rethrown with the GIL held.
template <class F>
auto call_without_gil(F&& compute) -> decltype(compute(nullptr)) {
  for (;;) {
    std::optional<decltype(compute(nullptr))> result;
    std::exception_ptr error;
    bool cancelled = false;
    {
      SigintWatch watch;
      PyThreadState* state = PyEval_SaveThread();
      try {
        result.emplace(compute(watch.flag()));
      } catch (const Cancelled&) {
        cancelled = true;
      } catch (...) {
        error = std::current_exception();
      }
      park_if_finalizing();
      PyEval_RestoreThread(state);
    }
    if (error) std::rethrow_exception(error);
    if (!cancelled) return std::move(*result);
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

}  // namespace sparsebert
