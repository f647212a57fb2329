// Kernels instantiate their inner loops for a compile-time count (vectors of tokens, rows of a register tile), so
// that their accumulators stay in registers, and a short last chunk needs a smaller count: with_count picks the
// instantiation at run time. Inside an anonymous namespace, so that each ISA's file gets its own copy (no
// helper compiled with one ISA's flags can be linked into another's code).
#pragma once

#include <type_traits>

namespace sparsebert {
namespace {

// f(std::integral_constant<int, count>{}) for count in [1, Max] (counts above Max run as Max).
template <int Max, class F>
inline void with_count(int count, F&& f) {
  if constexpr (Max > 1) {
    if (count < Max) return with_count<Max - 1>(count, static_cast<F&&>(f));
  }
  f(std::integral_constant<int, Max>{});
}

}  // namespace
}  // namespace sparsebert
